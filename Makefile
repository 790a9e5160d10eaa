# Tests that need the QEMU test guest's kernel (flowtable, nft queue, VLAN, VRF,
# dummy links, arm64) or its systemd: builds the guest if needed (with the
# appliance's Debian package installed), boots it, runs them there.
# ARCH=amd64 (default) or ARCH=arm64. See qemu/README.md.
ARCH ?= amd64

.PHONY: test-guest test-guest-systemd
test-guest:
	qemu/test-guest.sh $(ARCH)

# Only the shipped units under the guest's systemd (one boot).
test-guest-systemd:
	qemu/test-guest.sh $(ARCH) tests/guest/test_systemd.py

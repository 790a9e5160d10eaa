# Tests that need the QEMU test guest's kernel (flowtable, nft queue, VLAN, VRF,
# dummy links, arm64): builds the guest if needed, boots it, runs them there.
# ARCH=amd64 (default) or ARCH=arm64. See qemu/README.md.
ARCH ?= amd64

.PHONY: test-guest
test-guest:
	qemu/test-guest.sh $(ARCH)

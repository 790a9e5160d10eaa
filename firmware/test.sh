#!/bin/bash
# Build the firmware test images and boot them: the tests of the A/B update.
#
#   firmware/test.sh [--build-only] [PYTEST ARGS...]
#
# In firmware/out/test/: a test key; the image (version 1, slot A) trusting it; the slot
# images of version 2 (good), 3 (its appliance never gets READY) and a version 2 signed
# by another key, each with its signed manifest. The test images carry a hook unit
# (firmware/test-overlay) that runs the test's script from a virtio-9p share. Then
# tests/firmware/test_boot.py boots the image in qemu-system-aarch64 (TCG, AAVMF):
# READY under systemd, the bad signature refused, the good update switching slot, the
# broken one falling back. Exits non-zero if anything failed. Needs root.
set -euo pipefail
{
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
OUT="$HERE/out/test"
BUILD_ONLY=0
if [ "${1:-}" = --build-only ]; then BUILD_ONLY=1; shift; fi
[ "$(id -u)" = 0 ] || { echo "test.sh: must run as root" >&2; exit 2; }

PACKAGES=(mmdebstrap arch-test qemu-system-arm qemu-user-static qemu-efi-aarch64 grub-common
    mtools dosfstools fdisk e2fsprogs cpio kmod gzip)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2> /dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "test.sh: apt-get install ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" > /dev/null \
        || { apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; }
fi

PY=/usr/bin/python3
[ -x "$REPO/.venv/bin/python" ] && PY="$REPO/.venv/bin/python"
appliance() { PYTHONPATH="$REPO" "$PY" -m appliance "$@"; }

start=$(date +%s)
log() { printf '[%4ds] test.sh: %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }

build() {
    rm -rf "$OUT.new"
    mkdir -p "$OUT.new/deb" "$OUT.new/good" "$OUT.new/broken" "$OUT.new/badsig"
    appliance bundle keygen "$OUT.new/test.key" > /dev/null
    appliance bundle keygen "$OUT.new/other.key" > /dev/null
    local deb
    if [ -x "$REPO/packaging/build-deb.sh" ]; then
        log "the Debian package"
        deb=$("$REPO/packaging/build-deb.sh" "$OUT.new/deb" | tail -n1)
    fi
    local common=(--trust "$OUT.new/test.key.pub" ${deb:+--deb "$deb"} --overlay "$HERE/test-overlay")
    log "image, version 1"
    nice -n 10 "$HERE/build.sh" --version 1 --out "$OUT.new/v1" "${common[@]}" > /dev/null
    log "slot image, version 2"
    nice -n 10 "$HERE/build.sh" --version 2 --out "$OUT.new/v2" "${common[@]}" > /dev/null
    log "slot image, version 3 (never READY)"
    mkdir -p "$OUT.new/overlay-broken"
    cp -a "$HERE/test-overlay/." "$HERE/test-overlay-broken/." "$OUT.new/overlay-broken/"
    nice -n 10 "$HERE/build.sh" --version 3 --out "$OUT.new/v3" --trust "$OUT.new/test.key.pub" \
        ${deb:+--deb "$deb"} --overlay "$OUT.new/overlay-broken" > /dev/null
    mv "$OUT.new/v2/slot.img" "$OUT.new/good/slot.img"
    mv "$OUT.new/v3/slot.img" "$OUT.new/broken/slot.img"
    ln "$OUT.new/good/slot.img" "$OUT.new/badsig/slot.img"
    appliance firmware sign "$OUT.new/good/slot.img" --version 2 --key "$OUT.new/test.key" >&2
    appliance firmware sign "$OUT.new/broken/slot.img" --version 3 --key "$OUT.new/test.key" >&2
    appliance firmware sign "$OUT.new/badsig/slot.img" --version 2 --key "$OUT.new/other.key" >&2
    rm -rf "$OUT.new/v2" "$OUT.new/v3" "$OUT.new/overlay-broken" "$OUT.new/deb"
    rm -rf "$OUT"
    mv "$OUT.new" "$OUT"
    log "built: $(du -h --apparent-size "$OUT/v1/firmware.img" | cut -f1) image ($(du -h "$OUT/v1/firmware.img" | cut -f1) used), slot $(du -h --apparent-size "$OUT/good/slot.img" | cut -f1)"
}

build
[ "$BUILD_ONLY" = 1 ] && exit 0
log "boot tests"
cd "$REPO"
FIRMWARE_TEST_DIR="$OUT" "$PY" -m pytest -q -p no:cacheprovider --guest=arm64 \
    tests/firmware/test_boot.py "$@"
status=$?
log "done (status $status)"
exit "$status"
}

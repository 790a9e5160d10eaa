#!/bin/bash
# Build the QEMU test guest for ARCH (amd64 or arm64) from Debian packages.
#
#   qemu/build-image.sh ARCH [--rebuild] [--quiet]
#
# Output in qemu/out/ARCH/: rootfs.img (ext4, raw), vmlinuz, initrd.img,
# manifest.txt (package versions), build.log. The Debian root is staged in
# qemu/out/ARCH/root and rebuilt only when this recipe changes (or with
# --rebuild); the appliance (its Debian package, built from the current
# checkout by packaging/build-deb.sh and installed with dpkg), the initramfs
# and the disk image are redone on every run, which takes seconds.
#
# The kernel package is unpacked from the host rather than installed, so no
# initramfs generator runs (under arm64 emulation that was most of the build):
# the initramfs (busybox-static plus the modules the root file system needs) is
# assembled on the host. No loop device and no mount is used: the disk image
# is made with mke2fs -d. For arm64 the qemu-aarch64 binfmt handler is
# registered for the build only and removed afterwards (and binfmt_misc
# unmounted if this script mounted it).
set -euo pipefail
# The body is one block, read whole before it runs: editing this file
# while it runs cannot change what a running build does.
{

die() { echo "build-image.sh: $*" >&2; exit 2; }

ARCH=${1:-}
REBUILD=0
QUIET=0
[ $# -gt 0 ] && shift
for opt in "$@"; do
    case "$opt" in
        --rebuild) REBUILD=1 ;;
        --quiet) QUIET=1 ;;
        *) die "unknown option '$opt'" ;;
    esac
done
case "$ARCH" in
    amd64) KARCH=amd64 ;;
    arm64) KARCH=arm64 ;;
    "") die "usage: build-image.sh amd64|arm64 [--rebuild] [--quiet]" ;;
    *) die "unsupported architecture '$ARCH' (amd64 or arm64)" ;;
esac
[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root)"
for tool in mmdebstrap mke2fs cpio dpkg-deb modprobe depmod; do
    command -v "$tool" > /dev/null || die "missing $tool (run qemu/ci.sh --deps or see qemu/README.md)"
done

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
OUT="$HERE/out/$ARCH"
ROOT="$OUT/root"
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

# The guest's packages: init, nftables and the product's Python deps. The
# kernel (KERNEL_PACKAGE and what it depends on) is unpacked apart, below.
KERNEL_PACKAGE="linux-image-$KARCH"
PACKAGES=(
    kmod systemd systemd-sysv
    iproute2 nftables busybox-static procps
    python3 python3-nftables python3-pyroute2 python3-scapy
    python3-prometheus-client python3-cryptography python3-pytest python3-hypothesis
)
# The inspection engine's compiled fast path, built and checked in the guest by
# tests/inspect/test_core_guest.py: its toolchain costs the emulated arm64 root minutes.
[ "${APPLIANCE_GUEST_CORE:-0}" = 1 ] && PACKAGES+=(gcc libpython3-dev)
# Modules the root file system needs before it is mounted (the initramfs).
INITRD_MODULES=(virtio_pci virtio_blk ext4)
# No docs, man pages, locales or firmware in the guest.
MMDEBSTRAP_OPTS=(
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/lintian/*'
    --dpkgopt='path-exclude=/usr/share/zoneinfo/*'
    --dpkgopt='path-exclude=/usr/share/bash-completion/*'
    --dpkgopt='path-exclude=/usr/lib/firmware/*'
    --dpkgopt='force-unsafe-io'
    --aptopt='Acquire::Languages "none"'
)
# Kernel module trees no test guest needs: dropped to keep the image small.
PRUNE_MODULES=(
    drivers/gpu drivers/media drivers/infiniband drivers/staging drivers/net/wireless
    drivers/net/ethernet drivers/scsi drivers/usb drivers/hid drivers/input drivers/iio
    drivers/mtd drivers/isdn drivers/video drivers/bluetooth drivers/thunderbolt
    drivers/mmc drivers/nfc drivers/hwmon drivers/edac drivers/ata drivers/pinctrl
    drivers/power drivers/leds drivers/platform drivers/crypto drivers/misc
    drivers/firmware drivers/nvme drivers/target drivers/md drivers/soc drivers/phy
    drivers/clk drivers/regulator drivers/mfd drivers/i2c drivers/spi drivers/rtc
    drivers/watchdog drivers/gnss drivers/comedi drivers/fpga drivers/remoteproc
    sound net/bluetooth net/wireless net/mac80211 net/nfc fs/nls fs/ocfs2 fs/btrfs
    fs/xfs fs/gfs2 fs/nfs fs/nfsd fs/smb fs/cifs fs/ceph fs/f2fs fs/jfs fs/reiserfs
)

mkdir -p "$OUT"
if [ "$QUIET" = 1 ]; then
    exec > "$OUT/build.log" 2>&1
else
    exec > >(tee "$OUT/build.log") 2>&1
fi
start=$(date +%s)
log() { printf '[%4ds] %s\n' "$(( $(date +%s) - start ))" "$*"; }
stamp() {
    local line now
    while IFS= read -r line; do
        printf -v now '%(%s)T' -1
        printf '%4ds %s\n' "$(( now - start ))" "$line"
    done
}

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)}

# Anything this script must undo, whatever happens.
BINFMT_REGISTERED=0
BINFMT_MOUNTED=0
TMP=$(mktemp -d "$OUT/.tmp.XXXXXX")
MMDEBSTRAP_PID=""

# rm -rf that never crosses into a mount (a chroot left with /proc or /dev
# mounted is unmounted first).
remove_tree() {
    local dir=$1
    [ -e "$dir" ] || return 0
    unmount_under "$dir"
    rm -rf --one-file-system "$dir"
}

# Unmount whatever is mounted at or under DIR (mmdebstrap may leave the chroot's
# /proc mounted when a process there kept it busy).
unmount_under() {
    local mnt
    awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r \
        | while read -r mnt; do umount -l "$mnt" || true; done
}

# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    if [ -n "$MMDEBSTRAP_PID" ] && kill -0 "$MMDEBSTRAP_PID" 2> /dev/null; then
        kill -TERM "$MMDEBSTRAP_PID" 2> /dev/null || true
        wait "$MMDEBSTRAP_PID" 2> /dev/null || true
    fi
    if [ "$BINFMT_REGISTERED" = 1 ] && [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64 || true
    fi
    if [ "$BINFMT_MOUNTED" = 1 ]; then
        umount /proc/sys/fs/binfmt_misc || true
    fi
    rm -rf "$TMP"
    remove_tree "$OUT/root.new"
}
trap cleanup EXIT
trap 'echo "build-image.sh: failed (line $LINENO, status $?)" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- stage 1: the Debian root (cached on the recipe's hash) -------------------

# Stage 1 depends on these definitions only: change one and the root is rebuilt.
recipe_hash() {
    {
        declare -p PACKAGES MMDEBSTRAP_OPTS PRUNE_MODULES ARCH SUITE MIRROR SECURITY_MIRROR
        declare -p KERNEL_PACKAGE KERNEL_HOOK
        declare -f configure_root
    } | sha256sum | cut -d' ' -f1
}

binfmt_setup() {
    [ "$ARCH" = arm64 ] || return 0
    [ "$(uname -m)" = aarch64 ] && return 0
    local handler=/usr/libexec/qemu-binfmt/aarch64-binfmt-P
    [ -x "$handler" ] || die "missing $handler (apt-get install qemu-user-static)"
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        BINFMT_MOUNTED=1
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        # Debian's entry has the F flag: the handler is opened now, so it also
        # runs inside the chroot.
        grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
        BINFMT_REGISTERED=1
    fi
}

# The kernel is not installed through dpkg: its package is fetched with the
# guest's apt configuration and unpacked from the host. So no initramfs
# generator is needed (the initramfs is made on the host, below) and none of
# its maintainer scripts runs under emulation; depmod runs on the host too.
# shellcheck disable=SC2016  # expanded by the hook's shell
KERNEL_HOOK='set -e
export APT_CONFIG="$MMDEBSTRAP_APT_CONFIG"
dir=$(mktemp -d)
pkg=$(apt-cache depends "$KERNEL_PACKAGE" | sed -n "s/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p" | head -n1)
[ -n "$pkg" ] || { echo "no kernel behind $KERNEL_PACKAGE" >&2; exit 1; }
(cd "$dir" && apt-get download -q "$pkg")
dpkg-deb --fsys-tarfile "$dir"/*.deb \
    | tar -x -C "$1" --keep-directory-symlink --exclude=./usr/share/doc
rm -rf "$dir"'

build_root() {
    local include
    binfmt_setup
    remove_tree "$OUT/root.new"
    log "mmdebstrap $SUITE $ARCH: ${PACKAGES[*]} (and $KERNEL_PACKAGE unpacked)"
    include=$(IFS=,; echo "${PACKAGES[*]}")
    # In the background, so that a signal reaches the cleanup at once (which
    # stops mmdebstrap and lets it unmount what it mounted in the chroot).
    mmdebstrap --mode=root --variant=essential --arch="$ARCH" \
        --include="$include" "${MMDEBSTRAP_OPTS[@]}" \
        --customize-hook="KERNEL_PACKAGE=$KERNEL_PACKAGE; $KERNEL_HOOK" \
        "$SUITE" "$OUT/root.new" \
        "deb $MIRROR $SUITE main" \
        "deb $MIRROR $SUITE-updates main" \
        "deb $SECURITY_MIRROR $SUITE-security main" > >(stamp) 2>&1 &
    MMDEBSTRAP_PID=$!
    wait "$MMDEBSTRAP_PID"
    MMDEBSTRAP_PID=""
    unmount_under "$OUT/root.new"
    remove_tree "$ROOT"
    mv "$OUT/root.new" "$ROOT"
}

configure_root() {
    local kver
    kver=$(kernel_version)
    log "configure the root (kernel $kver)"
    echo appliance-guest > "$ROOT/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 appliance-guest\n::1 localhost\n' > "$ROOT/etc/hosts"
    : > "$ROOT/etc/fstab"
    : > "$ROOT/etc/machine-id"
    sed -i 's/^root:[^:]*:/root::/' "$ROOT/etc/shadow"
    mkdir -p "$ROOT/etc/systemd/journald.conf.d"
    ln -sf /lib/systemd/system/multi-user.target "$ROOT/etc/systemd/system/default.target"
    printf '[Journal]\nStorage=volatile\n' > "$ROOT/etc/systemd/journald.conf.d/guest.conf"
    # No udev in the guest: nothing would ever start a getty on a device unit.
    ln -sf /dev/null "$ROOT/etc/systemd/system/serial-getty@.service"
    ln -sf /dev/null "$ROOT/etc/systemd/system/getty@.service"
    local dir
    for dir in "${PRUNE_MODULES[@]}"; do
        rm -rf "$ROOT/lib/modules/$kver/kernel/$dir"
    done
    depmod -b "$ROOT" "$kver"
    rm -rf "$ROOT/var/cache/apt"/*.bin "$ROOT/var/lib/apt/lists"/* "$ROOT/var/log"/*.log
    dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f '${Package} ${Version} ${Architecture}\n' \
        | sort > "$OUT/manifest.txt"
}

kernel_version() {
    local k
    k=$(find "$ROOT/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -n1)
    [ -n "$k" ] || die "no kernel in $ROOT/boot"
    echo "${k#vmlinuz-}"
}

# --- stage 2: guest files, appliance, initramfs, disk image (every run) -------

# The guest's own units: each is enabled where its [Install] WantedBy= says.
GUEST_UNITS=(guest-run.service guest-seed.service guest-after-restore.service guest-nics.service)

install_guest_files() {
    local script unit target
    for script in guest-run guest-seed guest-nics guest-table-check; do
        install -m 0755 "$HERE/guest/$script" "$ROOT/usr/local/sbin/$script"
    done
    install -m 0644 "$HERE/guest/modules.conf" "$ROOT/etc/modules-load.d/guest.conf"
    for unit in "${GUEST_UNITS[@]}"; do
        install -m 0644 "$HERE/guest/$unit" "$ROOT/etc/systemd/system/$unit"
        target=$(sed -n 's/^WantedBy=//p' "$HERE/guest/$unit")
        mkdir -p "$ROOT/etc/systemd/system/$target.wants"
        ln -sf "/etc/systemd/system/$unit" "$ROOT/etc/systemd/system/$target.wants/$unit"
    done
}

# The appliance as it ships: the Debian package built from the checkout
# (packaging/build-deb.sh), installed with dpkg in the root, so the guest runs
# /usr/bin/appliance and the package's units, enabled by its maintainer scripts.
# For arm64 dpkg and the scripts run under qemu-user (the binfmt handler).
install_appliance() {
    log "build the Debian package from $REPO"
    local deb
    mkdir -p "$TMP/deb"
    deb=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin "$REPO/packaging/build-deb.sh" "$TMP/deb" \
        2> "$OUT/deb-build.log" | tail -n 1) || true
    [ -n "$deb" ] && [ -f "$deb" ] \
        || die "packaging/build-deb.sh made no package (see $OUT/deb-build.log)"
    log "install $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB) with dpkg"
    # Whatever an older build put in /usr/local or /etc/systemd/system would shadow the package.
    rm -rf "$ROOT/usr/local/lib/python3.11" "$ROOT/usr/local/bin/appliance" \
        "$ROOT/etc/systemd/system/appliance.service" \
        "$ROOT/etc/systemd/system/multi-user.target.wants/appliance.service"
    binfmt_setup
    # Every build installs afresh (the root is kept between builds): an upgrade would
    # keep an older build's unit state and conffiles.
    if chroot "$ROOT" /usr/bin/dpkg-query -W appliance > /dev/null 2>&1; then
        chroot "$ROOT" /usr/bin/dpkg --purge appliance
    fi
    cp "$deb" "$ROOT/tmp/appliance.deb"
    chroot "$ROOT" /usr/bin/dpkg -i /tmp/appliance.deb
    rm -f "$ROOT/tmp/appliance.deb"
    cp "$deb" "$OUT/appliance.deb"
    dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f '${Package} ${Version} ${Architecture}\n' \
        | sort > "$OUT/manifest.txt"
}

build_initrd() {
    local kver
    kver=$(kernel_version)
    log "initramfs: busybox-static + ${INITRD_MODULES[*]}"
    "$HERE/make-initramfs.sh" "$ROOT" "$kver" "$HERE/guest/init" "$OUT/initrd.img.new" \
        "${INITRD_MODULES[@]}"
    mv "$OUT/initrd.img.new" "$OUT/initrd.img"
    cp "$ROOT/boot/vmlinuz-$kver" "$OUT/vmlinuz"
    echo "$kver" > "$OUT/kernel-version"
    if [ "$ARCH" = amd64 ]; then
        # The ELF kernel inside the bzImage: QEMU starts it directly at its PVH
        # entry, which skips the firmware's real-mode loader and the in-guest
        # decompression (about 5 s of a TCG boot).
        local offset
        offset=$(LC_ALL=C grep -obUaP -m1 '\xfd7zXZ\x00' "$OUT/vmlinuz" | awk -F: 'NR == 1 { print $1 }')
        [ -n "$offset" ] || die "no xz payload in the amd64 kernel image"
        tail -c "+$((offset + 1))" "$OUT/vmlinuz" | xz -dcq > "$OUT/vmlinux.new" 2> /dev/null || true
        [ -s "$OUT/vmlinux.new" ] || die "could not unpack the amd64 kernel"
        mv "$OUT/vmlinux.new" "$OUT/vmlinux"
    fi
}

build_disk() {
    log "disk image (mke2fs -d)"
    local used size
    used=$(du -sm --apparent-size "$ROOT" | cut -f1)
    size=$(( used + used / 4 + 512 ))
    rm -f "$OUT/rootfs.img.new"
    E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mke2fs -q -F -t ext4 -L guest-root \
        -U 6f3c6f0e-6a6b-4d0e-9a55-0a11a0c0ffee -E "root_owner=0:0,hash_seed=3b1a1d3e-5c4f-4e8e-8d7f-1f2e3d4c5b6a" \
        -O ^has_journal -d "$ROOT" "$OUT/rootfs.img.new" "${size}M"
    mv "$OUT/rootfs.img.new" "$OUT/rootfs.img"
}

hash=$(recipe_hash)
if [ "$REBUILD" = 1 ] || [ ! -d "$ROOT" ] || [ "$(cat "$OUT/root.stamp" 2>/dev/null)" != "$hash" ]; then
    rm -f "$OUT/root.stamp"
    build_root
    configure_root
    echo "$hash" > "$OUT/root.stamp"
    log "Debian root built: $(du -sh "$ROOT" | cut -f1)"
    cp "$OUT/build.log" "$OUT/root-build.log"
else
    log "Debian root is current ($OUT/root)"
fi
unmount_under "$ROOT"
install_guest_files
install_appliance
build_initrd
build_disk
log "done: $OUT/rootfs.img ($(du -h --apparent-size "$OUT/rootfs.img" | cut -f1) apparent, $(du -h "$OUT/rootfs.img" | cut -f1) used), vmlinuz, initrd.img"
# shellcheck disable=SC2317
exit
}

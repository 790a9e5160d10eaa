#!/bin/bash
# Build the arm64 firmware image of the appliance from Debian packages.
#
#   firmware/build.sh [--rebuild] [--version N] [--trust PUB]... [--deb FILE] [--out DIR]
#                     [--overlay DIR]
#
# Output in DIR (default firmware/out/):
#   firmware.img   the GPT disk: EFI system partition (GRUB), root slots A and B
#                  (ext4, mounted read-only), state partition (/var/lib/appliance
#                  and the boot state: grubenv)
#   slot.img       the root file system alone: the payload of a firmware update
#   manifest.txt   every Debian package and version in the root
#
# The Debian root (mmdebstrap, arm64) is staged in firmware/out/root and rebuilt
# only when its package list changes (or with --rebuild). Everything else is
# redone on every run, in seconds. No loop device and no mount is used: the
# file systems are made with mke2fs -d and mtools, the disk assembled with dd.
# Reproducible: SOURCE_DATE_EPOCH (the last commit), fixed UUIDs and hash seeds.
#
# --version N    the firmware version written into the root (default: 1)
# --deb FILE     the appliance's Debian package (default: packaging/build-deb.sh,
#                else the checkout installed with pip into /usr/local)
# --rebuild      stage the Debian root again (--root-only: only that)
# --trust PUB    a public key (appliance bundle keygen) the image trusts for updates
#                (repeat); without one, the image takes no update
# --overlay DIR  files copied over the root before the slot image is made
set -euo pipefail
{

die() { echo "build.sh: $*" >&2; exit 2; }

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
CACHE="$HERE/out"
OUT="$CACHE"
REBUILD=0
VERSION=1
DEB=""
OVERLAY=""
TRUST=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rebuild) REBUILD=1; shift ;;
        --version) VERSION=${2:?}; shift 2 ;;
        --deb) DEB=${2:?}; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        --overlay) OVERLAY=${2:?}; shift 2 ;;
        --trust) TRUST+=("${2:?}"); shift 2 ;;
        --root-only) ROOT_ONLY=1; shift ;;
        *) die "unknown option '$1'" ;;
    esac
done
[[ "$VERSION" =~ ^[0-9]+$ ]] || die "--version needs a whole number"
[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root)"
for tool in mmdebstrap mke2fs cpio dpkg-deb modprobe depmod grub-mkimage mcopy mkfs.vfat sfdisk; do
    command -v "$tool" > /dev/null || die "missing $tool (see firmware/README.md)"
done

ROOT="$CACHE/root"
GRUBDIR="$CACHE/grub-arm64-efi"
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
KERNEL_PACKAGE=linux-image-arm64
# The root: systemd, nftables and the appliance's dependencies, nothing else.
PACKAGES=(
    kmod systemd systemd-sysv iproute2 nftables netbase busybox-static
    python3 python3-nftables python3-pyroute2 python3-prometheus-client python3-cryptography
)
INITRD_MODULES=(virtio_pci virtio_blk ext4)
MMDEBSTRAP_OPTS=(
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/lintian/*'
    --dpkgopt='path-exclude=/usr/share/zoneinfo/*'
    --dpkgopt='path-exclude=/usr/lib/firmware/*'
    --dpkgopt='force-unsafe-io'
    --aptopt='Acquire::Languages "none"'
)
# Kernel modules for hardware a virtual or small ARM box does not have.
PRUNE_MODULES=(
    drivers/gpu drivers/media drivers/infiniband drivers/staging drivers/net/wireless
    drivers/scsi drivers/usb drivers/hid drivers/input drivers/iio drivers/isdn
    drivers/video drivers/bluetooth drivers/thunderbolt drivers/nfc drivers/comedi
    drivers/fpga drivers/gnss drivers/target drivers/md sound net/bluetooth net/wireless
    net/mac80211 net/nfc fs/ocfs2 fs/btrfs fs/xfs fs/gfs2 fs/nfs fs/nfsd fs/smb fs/cifs
    fs/ceph fs/f2fs fs/jfs fs/reiserfs
)

mkdir -p "$CACHE" "$OUT"
start=$(date +%s)
log() { printf '[%4ds] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)}

BINFMT_REGISTERED=0
BINFMT_MOUNTED=0
TMP=$(mktemp -d "$CACHE/.tmp.XXXXXX")
MMDEBSTRAP_PID=""

remove_tree() {
    local dir=$1 mnt
    [ -e "$dir" ] || return 0
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r \
        | while read -r mnt; do umount -l "$mnt" || true; done
    rm -rf --one-file-system "$dir"
}

# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    if [ -n "$MMDEBSTRAP_PID" ] && kill -0 "$MMDEBSTRAP_PID" 2> /dev/null; then
        kill -TERM "$MMDEBSTRAP_PID" 2> /dev/null || true
        wait "$MMDEBSTRAP_PID" 2> /dev/null || true
    fi
    remove_tree "$TMP"
    remove_tree "$CACHE/root.new"
    if [ "$BINFMT_REGISTERED" = 1 ] && [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64 || true
    fi
    if [ "$BINFMT_MOUNTED" = 1 ]; then
        umount /proc/sys/fs/binfmt_misc || true
    fi
}
trap cleanup EXIT
trap 'echo "build.sh: failed (line $LINENO, status $?)" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

binfmt_setup() {
    [ "$(uname -m)" = aarch64 ] && return 0
    local handler=/usr/libexec/qemu-binfmt/aarch64-binfmt-P
    [ -x "$handler" ] || die "missing $handler (apt-get install qemu-user-static)"
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        BINFMT_MOUNTED=1
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
        BINFMT_REGISTERED=1
    fi
}

recipe_hash() {
    { declare -p PACKAGES MMDEBSTRAP_OPTS PRUNE_MODULES SUITE MIRROR SECURITY_MIRROR KERNEL_PACKAGE
      declare -p FETCH_HOOK; } | sha256sum | cut -d' ' -f1
}

# The kernel and GRUB's arm64-efi modules are fetched with the root's apt
# configuration and unpacked from the host: no initramfs generator and no
# bootloader maintainer script runs under emulation.
# shellcheck disable=SC2016  # expanded by the hook's shell
FETCH_HOOK='set -e
export APT_CONFIG="$MMDEBSTRAP_APT_CONFIG"
dir=$(mktemp -d)
pkg=$(apt-cache depends linux-image-arm64 | sed -n "s/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p" | head -n1)
[ -n "$pkg" ] || { echo "no kernel behind linux-image-arm64" >&2; exit 1; }
(cd "$dir" && apt-get download -q "$pkg" grub-efi-arm64-bin)
dpkg-deb --fsys-tarfile "$dir"/linux-image-*.deb \
    | tar -x -C "$1" --keep-directory-symlink --exclude=./usr/share/doc
mkdir -p "$1/.grub"
dpkg-deb -x "$dir"/grub-efi-arm64-bin_*.deb "$1/.grub"
rm -rf "$dir"'

build_root() {
    local include
    binfmt_setup
    remove_tree "$CACHE/root.new"
    log "mmdebstrap $SUITE arm64: ${PACKAGES[*]} (and $KERNEL_PACKAGE, grub-efi-arm64-bin unpacked)"
    include=$(IFS=,; echo "${PACKAGES[*]}")
    mmdebstrap --mode=root --variant=essential --arch=arm64 \
        --include="$include" "${MMDEBSTRAP_OPTS[@]}" \
        --customize-hook="$FETCH_HOOK" \
        "$SUITE" "$CACHE/root.new" \
        "deb $MIRROR $SUITE main" \
        "deb $MIRROR $SUITE-updates main" \
        "deb $SECURITY_MIRROR $SUITE-security main" >&2 &
    MMDEBSTRAP_PID=$!
    wait "$MMDEBSTRAP_PID"
    MMDEBSTRAP_PID=""
    local kver dir
    kver=$(kernel_version "$CACHE/root.new")
    for dir in "${PRUNE_MODULES[@]}"; do
        rm -rf "$CACHE/root.new/lib/modules/$kver/kernel/$dir"
    done
    depmod -b "$CACHE/root.new" "$kver"
    rm -rf "$CACHE/root.new/var/cache/apt"/*.bin "$CACHE/root.new/var/lib/apt/lists"/* \
        "$CACHE/root.new/var/log"/*.log
    rm -rf "$GRUBDIR"
    mv "$CACHE/root.new/.grub/usr/lib/grub/arm64-efi" "$GRUBDIR"
    rm -rf "$CACHE/root.new/.grub"
    remove_tree "$ROOT"
    mv "$CACHE/root.new" "$ROOT"
}

kernel_version() {
    local k
    k=$(find "$1/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -n1)
    [ -n "$k" ] || die "no kernel in $1/boot"
    echo "${k#vmlinuz-}"
}

hash=$(recipe_hash)
if [ "$REBUILD" = 1 ] || [ ! -d "$ROOT" ] || [ "$(cat "$CACHE/root.stamp" 2>/dev/null)" != "$hash" ]; then
    rm -f "$CACHE/root.stamp"
    build_root
    echo "$hash" > "$CACHE/root.stamp"
    log "Debian root built: $(du -sh "$ROOT" | cut -f1)"
else
    log "Debian root is current ($ROOT)"
fi
[ "${ROOT_ONLY:-0}" = 1 ] && exit 0

# --- stage 2: the slot's root, initramfs, ESP, state and disk (every run) ------

STAGE="$TMP/root"
SLOT_MB=${SLOT_MB:-768}     # each root slot: room for later, larger images
ESP_MB=64
STATE_MB=${STATE_MB:-256}
DISK_GUID=8a2b6c1e-3f4d-4e5a-9b7c-0d1e2f3a4b5c
ESP_UUID=1c6f2d3e-4a5b-4c7d-8e9f-0a1b2c3d4e01
ROOTA_UUID=1c6f2d3e-4a5b-4c7d-8e9f-0a1b2c3d4e02
ROOTB_UUID=1c6f2d3e-4a5b-4c7d-8e9f-0a1b2c3d4e03
STATE_UUID=1c6f2d3e-4a5b-4c7d-8e9f-0a1b2c3d4e04
ROOTFS_UUID=5e1f0a2b-6c3d-4e7f-8a9b-0c1d2e3f4a01
STATEFS_UUID=5e1f0a2b-6c3d-4e7f-8a9b-0c1d2e3f4a02
HASH_SEED=3b1a1d3e-5c4f-4e8e-8d7f-1f2e3d4c5b6a
GRUB_MODULES=(part_gpt fat ext2 normal configfile linux gzio loadenv test regexp echo
    reboot halt sleep)

stage_root() {
    log "stage the root (version $VERSION)"
    cp -a "$ROOT" "$STAGE"
}

install_deb() {
    local deb=$DEB
    if [ -z "$deb" ] && [ -x "$REPO/packaging/build-deb.sh" ]; then
        log "build the Debian package (packaging/build-deb.sh)"
        deb=$("$REPO/packaging/build-deb.sh" "$TMP/deb" | tail -n1)
    fi
    if [ -n "$deb" ]; then
        [ -f "$deb" ] || die "no package $deb"
        log "install $(basename "$deb")"
        binfmt_setup
        cp "$deb" "$STAGE/tmp/appliance.deb"
        chroot "$STAGE" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/appliance.deb >&2
        rm -f "$STAGE/tmp/appliance.deb"
        dpkg-query --admindir="$STAGE/var/lib/dpkg" -W -f '${Version}\n' appliance > "$TMP/appliance-version"
        return
    fi
    log "no Debian package: install the checkout with pip into /usr/local"
    local site="$STAGE/usr/local/lib/python3.11/dist-packages" python=/usr/bin/python3
    [ -x "$REPO/.venv/bin/python" ] && python="$REPO/.venv/bin/python"
    mkdir -p "$TMP/src" "$site"
    git -C "$REPO" ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -f "$REPO/$f" ] && printf '%s\0' "$f"; done \
        | (cd "$REPO" && xargs -0 -r cp --parents -t "$TMP/src")
    "$python" -m pip install --quiet --no-deps --no-build-isolation --no-compile \
        --disable-pip-version-check --no-warn-script-location --target "$TMP/site" "$TMP/src" >&2
    sed '1s|^#!.*|#!/usr/bin/python3|' "$TMP/site/bin/appliance" > "$STAGE/usr/local/bin/appliance"
    chmod 0755 "$STAGE/usr/local/bin/appliance"
    rm -rf "$TMP/site/bin"
    cp -a "$TMP/site/." "$site/"
    install -m 0644 "$REPO/systemd/appliance.service" "$STAGE/etc/systemd/system/appliance.service"
    install -d "$STAGE/etc/systemd/system/appliance.service.d" "$STAGE/etc/appliance"
    install -m 0644 "$REPO/systemd/appliance.service.d/pip-install.conf" \
        "$STAGE/etc/systemd/system/appliance.service.d/"
    install -m 0644 "$REPO/profiles/base.toml" "$STAGE/etc/appliance/profile.toml"
    enable_unit appliance.service multi-user.target
    echo checkout > "$TMP/appliance-version"
}

enable_unit() { # enable_unit UNIT TARGET: the symlink systemctl enable makes
    local unit=$1 target=$2 path
    path=/etc/systemd/system/$unit
    [ -e "$STAGE$path" ] || path=/usr/lib/systemd/system/$unit
    [ -e "$STAGE$path" ] || path=/lib/systemd/system/$unit
    mkdir -p "$STAGE/etc/systemd/system/$target.wants"
    ln -sf "$path" "$STAGE/etc/systemd/system/$target.wants/$unit"
}

configure_root() {
    log "configure the root: read-only, state partition, boot check"
    echo appliance > "$STAGE/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 appliance\n::1 localhost\n' > "$STAGE/etc/hosts"
    : > "$STAGE/etc/fstab"
    : > "$STAGE/etc/machine-id"
    mkdir -p "$STAGE/state" "$STAGE/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n' \
        > "$STAGE/etc/systemd/journald.conf.d/firmware.conf"
    ln -sf /lib/systemd/system/multi-user.target "$STAGE/etc/systemd/system/default.target"
    # No udev: device drivers are loaded by firmware-coldplug.service; nothing would
    # start a getty on a device unit, and there is no first-boot dialogue to answer.
    local unit
    for unit in serial-getty@.service getty@.service getty-static.service systemd-firstboot.service \
        systemd-update-utmp.service systemd-update-utmp-runlevel.service; do
        ln -sf /dev/null "$STAGE/etc/systemd/system/$unit"
    done
    install -d "$STAGE/usr/lib/appliance-firmware/trust"
    echo "$VERSION" > "$STAGE/usr/lib/appliance-firmware/version"
    local pub
    for pub in "${TRUST[@]}"; do
        install -m 0644 "$pub" "$STAGE/usr/lib/appliance-firmware/trust/$(basename "$pub")"
    done
    install -m 0644 "$HERE/units/appliance-boot-check.service" "$HERE/units/firmware-coldplug.service" \
        "$STAGE/etc/systemd/system/"
    enable_unit appliance-boot-check.service multi-user.target
    enable_unit firmware-coldplug.service sysinit.target
    if [ -n "$OVERLAY" ]; then
        log "overlay $OVERLAY"
        cp -a "$OVERLAY/." "$STAGE/"
    fi
    # Device trees: UEFI boards hand the kernel their own (or ACPI tables).
    rm -rf "$STAGE"/usr/lib/linux-image-*
    rm -rf "$STAGE/var/cache/apt"/*.bin "$STAGE/var/log"/*.log "$STAGE/tmp"/* "$STAGE/var/cache/debconf"/*-old
    dpkg-query --admindir="$STAGE/var/lib/dpkg" -W -f '${Package} ${Version} ${Architecture}\n' \
        | sort > "$OUT/manifest.txt"
}

build_initrd() {
    local kver
    kver=$(kernel_version "$STAGE")
    log "initramfs: busybox-static + ${INITRD_MODULES[*]}"
    "$REPO/qemu/make-initramfs.sh" "$STAGE" "$kver" "$HERE/initramfs-init" \
        "$STAGE/boot/initrd.img-$kver" "${INITRD_MODULES[@]}"
    ln -sf "vmlinuz-$kver" "$STAGE/boot/vmlinuz"
    ln -sf "initrd.img-$kver" "$STAGE/boot/initrd.img"
}

build_slot() {
    log "slot image (mke2fs -d, read-only root)"
    local used size
    find "$STAGE" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0 -r touch -h -d "@$SOURCE_DATE_EPOCH"
    used=$(du -sm --apparent-size "$STAGE" | cut -f1)
    size=$(( used + used / 10 + 32 ))
    [ "$size" -le "$SLOT_MB" ] || die "the root ($size MiB) does not fit a slot ($SLOT_MB MiB)"
    rm -f "$OUT/slot.img"
    E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mke2fs -q -F -t ext4 -L appliance-root -U "$ROOTFS_UUID" \
        -E "root_owner=0:0,hash_seed=$HASH_SEED" -O ^has_journal -m 0 -b 4096 \
        -d "$STAGE" "$OUT/slot.img" "${size}M"
    clamp_inode_times "$STAGE" "$OUT/slot.img"
}

# mke2fs -d copies each file's atime and ctime too, and no one can set a ctime: set both
# to SOURCE_DATE_EPOCH in the new file system (debugfs, by path).
clamp_inode_times() { # clamp_inode_times TREE IMAGE
    local tree=$1 image=$2
    (cd "$tree" && find . -mindepth 1 -printf '%P\0') | SDE=$SOURCE_DATE_EPOCH python3 -c '
import os, sys
fields = {"atime": "@" + os.environ["SDE"], "ctime": "@" + os.environ["SDE"],
          "atime_extra": "0", "ctime_extra": "0"}
names = ["/"]
for path in sys.stdin.buffer.read().split(b"\0"):
    if path:
        names.append("/" + path.decode("utf-8", "surrogateescape"))
for name in names:
    if any(c in name for c in "\"\n"):
        sys.exit("build.sh: cannot clamp the times of " + repr(name))
    for field, value in fields.items():
        sys.stdout.write("sif \"%s\" %s %s\n" % (name, field, value))
sys.stdout.write("ssv wtime @%s\n" % os.environ["SDE"])
' > "$TMP/clamp.debugfs"
    E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH debugfs -w -f "$TMP/clamp.debugfs" "$image" \
        > /dev/null 2> "$TMP/clamp.err" || true
    if grep -v '^debugfs ' "$TMP/clamp.err" | grep -q .; then
        head -n 5 "$TMP/clamp.err" >&2
        die "debugfs could not clamp the inode times of $image"
    fi
}

build_esp() {
    log "EFI system partition: GRUB (${GRUB_MODULES[*]})"
    grub-mkimage -O arm64-efi -d "$GRUBDIR" -p /EFI/BOOT -o "$TMP/BOOTAA64.EFI" "${GRUB_MODULES[@]}"
    rm -f "$TMP/esp.img"
    mkfs.vfat -C --invariant -i 0x41504c31 -n ESP "$TMP/esp.img" $((ESP_MB * 1024)) > /dev/null
    cp "$HERE/grub.cfg" "$TMP/grub.cfg"
    touch -d "@$SOURCE_DATE_EPOCH" "$TMP/BOOTAA64.EFI" "$TMP/grub.cfg"
    MTOOLS_SKIP_CHECK=1 mmd -i "$TMP/esp.img" ::/EFI ::/EFI/BOOT
    MTOOLS_SKIP_CHECK=1 mcopy -m -i "$TMP/esp.img" "$TMP/BOOTAA64.EFI" "$TMP/grub.cfg" ::/EFI/BOOT/
}

build_state() {
    log "state partition: /var/lib/appliance, grubenv (slot A)"
    mkdir -p "$TMP/state/boot" "$TMP/state/appliance"
    chmod 0700 "$TMP/state/appliance"
    python3 - "$TMP/state/boot/grubenv" <<'PY'
import sys
body = "# GRUB Environment Block\nslot=A\n"
open(sys.argv[1], "w").write(body + "#" * (1024 - len(body)))
PY
    find "$TMP/state" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mke2fs -q -F -t ext4 -L appliance-state -U "$STATEFS_UUID" \
        -E "root_owner=0:0,hash_seed=$HASH_SEED" -b 4096 -d "$TMP/state" "$TMP/state.img" "${STATE_MB}M"
    clamp_inode_times "$TMP/state" "$TMP/state.img"
}

build_disk() {
    log "GPT disk: ESP ${ESP_MB} MiB, root-a and root-b ${SLOT_MB} MiB each, state ${STATE_MB} MiB"
    local mib=2048 a b s end img="$OUT/firmware.img.new"
    a=$(( 1 + ESP_MB )); b=$(( a + SLOT_MB )); s=$(( b + SLOT_MB )); end=$(( s + STATE_MB + 1 ))
    rm -f "$img"
    truncate -s "${end}M" "$img"
    sfdisk -q --no-reread --no-tell-kernel "$img" > /dev/null <<SFDISK
label: gpt
label-id: $DISK_GUID
unit: sectors
first-lba: 2048
start=$(( 1 * mib )), size=$(( ESP_MB * mib )), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$ESP_UUID, name="esp"
start=$(( a * mib )), size=$(( SLOT_MB * mib )), type=B921B045-1DF0-41C3-AF44-4C6F280D3FAE, uuid=$ROOTA_UUID, name="root-a"
start=$(( b * mib )), size=$(( SLOT_MB * mib )), type=B921B045-1DF0-41C3-AF44-4C6F280D3FAE, uuid=$ROOTB_UUID, name="root-b"
start=$(( s * mib )), size=$(( STATE_MB * mib )), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$STATE_UUID, name="state"
SFDISK
    dd if="$TMP/esp.img" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
    dd if="$OUT/slot.img" of="$img" bs=1M seek="$a" conv=notrunc,sparse status=none
    dd if="$TMP/state.img" of="$img" bs=1M seek="$s" conv=notrunc,sparse status=none
    mv "$img" "$OUT/firmware.img"
}

stage_root
install_deb
configure_root
build_initrd
build_slot
build_esp
build_state
build_disk
log "done: $OUT/firmware.img ($(du -h --apparent-size "$OUT/firmware.img" | cut -f1) apparent, $(du -h "$OUT/firmware.img" | cut -f1) used), slot.img $(du -h --apparent-size "$OUT/slot.img" | cut -f1), version $VERSION, appliance $(cat "$TMP/appliance-version")"
echo "$OUT/firmware.img"
exit
}

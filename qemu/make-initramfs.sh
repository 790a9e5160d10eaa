#!/bin/bash
# A small reproducible initramfs, assembled on the host from a staged Debian root: the
# root's own busybox-static, an /init script, and the kernel modules the root needs (with
# their dependencies, resolved by modprobe against the root). Used by the QEMU guests and
# the firmware image.
#
#   qemu/make-initramfs.sh ROOT KVER INIT OUTPUT MODULE...
#
# OUTPUT is a gzip'd newc cpio; its bytes depend only on the inputs and SOURCE_DATE_EPOCH.
set -euo pipefail
[ $# -ge 5 ] || { echo "usage: make-initramfs.sh ROOT KVER INIT OUTPUT MODULE..." >&2; exit 2; }
root=$1 kver=$2 init=$3 output=$4
shift 4
: "${SOURCE_DATE_EPOCH:?SOURCE_DATE_EPOCH must be set}"

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/bin"
cp "$root/bin/busybox" "$dir/bin/busybox"
install -m 0755 "$init" "$dir/init"
: > "$dir/modules"
modprobe -a -d "$root" -S "$kver" --show-depends "$@" \
    | while read -r line; do
        case "$line" in
            insmod\ *)
                ko=${line#insmod }
                ko=${ko%% *}
                ko=${ko#"$root"}
                if ! grep -qxF "$ko" "$dir/modules"; then
                    mkdir -p "$dir$(dirname "$ko")"
                    cp "$root$ko" "$dir$ko"
                    echo "$ko" >> "$dir/modules"
                fi ;;
        esac
    done
find "$dir" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$dir" && find . -print0 | LC_ALL=C sort -z \
    | cpio --quiet --null --create --format=newc --reproducible --owner=0:0) \
    | gzip -n -9 > "$output"

#!/usr/bin/env bash
# Build the appliance container image from Debian packages only (no image registry):
#
#   1. a Debian bookworm base image made with mmdebstrap and `podman import` (once per
#      architecture and recipe; --rebuild-base makes it again, with the mirror's updates);
#   2. the appliance .deb from this checkout (packaging/build-deb.sh), unless --deb FILE;
#   3. containers/Containerfile on top: the .deb installed, `appliance run` as PID 1.
#
#   containers/build.sh [--arch amd64|arm64] [--deb FILE] [--tag IMAGE] [--rebuild-base]
#
# The image is labelled with a digest of its inputs (the Containerfile and the .deb's
# contents); when an image under the tag already carries that digest nothing is rebuilt.
# The last line on stdout is the image's name. arm64 on an amd64 host needs
# qemu-user-static (binfmt) for mmdebstrap and the Containerfile's RUN step.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"

arch="$(dpkg --print-architecture)"
deb=""
tag=""
rebuild_base=0
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch="$2"; shift 2 ;;
        --deb) deb="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --rebuild-base) rebuild_base=1; shift ;;
        *) echo "usage: containers/build.sh [--arch amd64|arm64] [--deb FILE] [--tag IMAGE] [--rebuild-base]" >&2; exit 2 ;;
    esac
done
case "$arch" in
    amd64|arm64) ;;
    *) echo "containers/build.sh: --arch: amd64 or arm64, not $arch" >&2; exit 2 ;;
esac
# The host's architecture is the image the manifests name; another is tagged by its name.
if [ "$arch" = "$(dpkg --print-architecture)" ]; then
    tag="${tag:-localhost/appliance:latest}"
else
    tag="${tag:-localhost/appliance:$arch}"
fi
base="localhost/appliance-base:bookworm-$arch"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

# Machines without a unified cgroup v2 (CI's among them): runc with cgroupfs works where
# crun does not; rlimits within what such a machine allows, below podman's defaults.
podman=(podman --runtime runc --cgroup-manager=cgroupfs)
ulimits=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

log() { printf '==> %s\n' "$*" >&2; }

# Another architecture runs its maintainer scripts and the RUN step under qemu-user: the
# handler of qemu-user-static, registered with the F flag so it works inside the chroot
# and the container too. It stays registered.
if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ] \
    && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    [ -e /proc/sys/fs/binfmt_misc/register ] \
        || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
fi

work="$(mktemp -d /tmp/appliance-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# The base: essential packages and apt, merged /usr without the usrmerge package (and the
# perl it pulls in), no recommends, no documentation, manuals or translations, in the base
# and in every package installed on it later (the dpkg options stay in /etc/dpkg/dpkg.cfg.d).
base_recipe=(
    --variant=apt --arch="$arch"
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --aptopt='APT::Install-Recommends "false"'
    --aptopt='APT::Install-Suggests "false"'
    --aptopt='Acquire::Languages "none"'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/lintian/*'
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*.log'
    bookworm
)
sources=(
    "deb $mirror bookworm main"
    "deb $mirror bookworm-updates main"
    "deb $security bookworm-security main"
)
base_digest="$(printf '%s\n' "${base_recipe[@]}" "${sources[@]}" | sha256sum | cut -c1-32)"
have_base="$("${podman[@]}" image inspect --format '{{index .Labels "org.appliance.base"}}' "$base" 2>/dev/null || true)"
if [ "$rebuild_base" = 1 ] || [ "$have_base" != "$base_digest" ]; then
    log "base image $base (mmdebstrap bookworm $arch)"
    nice -n 10 mmdebstrap --quiet "${base_recipe[@]}" "$work/base.tar" "${sources[@]}" >&2
    "${podman[@]}" import --arch "$arch" \
        --change 'CMD ["/bin/bash"]' \
        --change "LABEL org.appliance.base=$base_digest" \
        --message "Debian bookworm ($arch) from mmdebstrap" \
        "$work/base.tar" "$base" >/dev/null
    rm -f "$work/base.tar"
fi

if [ -z "$deb" ]; then
    log "building the .deb (packaging/build-deb.sh)"
    deb="$("$repo/packaging/build-deb.sh" "$work" | tail -n 1)"
fi
[ -f "$deb" ] || { echo "containers/build.sh: no .deb at $deb" >&2; exit 1; }

# The inputs' digest: the Containerfile, the base, and the .deb's control data, file list
# and contents (not its timestamps, so an unchanged package rebuilt does not count).
inputs="$(
    {
        cat "$here/Containerfile"
        "${podman[@]}" image inspect --format '{{.Id}}' "$base"
        dpkg-deb --info "$deb" control
        dpkg-deb --fsys-tarfile "$deb" | tar -t | LC_ALL=C sort
        dpkg-deb --fsys-tarfile "$deb" | tar -xO
    } | sha256sum | cut -c1-32
)"
have="$("${podman[@]}" image inspect --format '{{index .Labels "org.appliance.inputs"}}' "$tag" 2>/dev/null || true)"
if [ "$have" = "$inputs" ]; then
    log "$tag is up to date"
    echo "$tag"
    exit 0
fi

log "image $tag"
cp "$deb" "$work/appliance.deb"
cp "$here/Containerfile" "$work/Containerfile"
# `--network host`: the RUN step fetches the .deb's dependencies from the Debian mirror.
nice -n 10 "${podman[@]}" build --quiet --network host "${ulimits[@]}" \
    --arch "$arch" \
    --build-arg "BASE=$base" \
    --label "org.appliance.inputs=$inputs" \
    --tag "$tag" \
    --file "$work/Containerfile" "$work" >/dev/null
echo "$tag"

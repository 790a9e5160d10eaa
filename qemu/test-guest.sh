#!/bin/bash
# Run the tests that need the QEMU test guest, for ARCH (amd64 or arm64).
#
#   qemu/test-guest.sh ARCH [PYTEST_ARGS...]
#       Builds the guest if needed (qemu/build-image.sh), then runs pytest on the
#       host with --guest=ARCH -m "guest or qemu": tests marked guest run inside
#       one boot of the guest, tests marked qemu boot it from the host. Each is
#       reported like any other test. Extra arguments go to pytest (paths, -k, -x;
#       a -m of your own replaces the default).
#   qemu/test-guest.sh ARCH --inside [PYTEST_ARGS...]
#       Runs "python3 -m pytest PYTEST_ARGS" inside the guest as it is, for any
#       test module of the checkout (default: tests marked guest).
#
# Exit status: pytest's (or the build's).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
ARCH=${1:-}
case "$ARCH" in
    amd64 | arm64) shift ;;
    *) echo "usage: qemu/test-guest.sh amd64|arm64 [--inside] [PYTEST_ARGS...]" >&2; exit 2 ;;
esac

# GUEST_IMAGE_CURRENT=1: the caller has just built it (qemu/ci.sh).
if [ "${GUEST_IMAGE_CURRENT:-0}" != 1 ]; then
    "$HERE/build-image.sh" "$ARCH" > /dev/null || {
        echo "test-guest.sh: building the $ARCH guest failed (see $HERE/out/$ARCH/build.log)" >&2
        exit 1
    }
fi

cd "$REPO"
if [ "${1:-}" = --inside ]; then
    shift
    [ $# -gt 0 ] || set -- -m guest
    exec "$HERE/run.sh" "$ARCH" --timeout "${GUEST_TIMEOUT:-1800}" -- \
        python3 -m pytest -p no:cacheprovider "$@"
fi

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=/usr/bin/python3; fi
fi
exec "$PYTHON" -m pytest --guest="$ARCH" -m "guest or qemu" "$@"

#!/bin/bash
# Boot the QEMU test guest headless, run one command in it, return its status.
#
#   qemu/run.sh ARCH [options] [-- COMMAND [ARG...]]
#
# The command runs as root under bash in the guest, in the checkout (shared
# read-only over virtio-9p at the same path as on the host), with
# PYTHONPATH=<checkout> and APPLIANCE_GUEST=1. Its output (stdout and stderr)
# is copied to this script's stdout as it comes; its exit status is this
# script's. Without a command: an interactive shell on the serial console.
#
# Each guest NIC (eth0, eth1, ...) is a virtio-net device whose tap lives in a
# host network namespace: tap0 in the first, tap1 in the second, and so on. By
# default this script creates one namespace per NIC (named in its output) and
# removes it at the end; with --nic-netns the caller's namespaces are used.
#
# Options:
#   --timeout SEC     kill the guest after SEC seconds (default 900): status 124
#   --nics N          number of NICs (default 2)
#   --nic-netns NS    put the next NIC's tap in the existing namespace NS (repeat)
#   --io-dir DIR      exchange files with the guest in DIR (guest: $GUEST_IO,
#                     /run/guest-io); kept afterwards. Default: a temporary one
#   --mem MB          guest memory (default 1024)
#   --smp N           guest CPUs (default: the host's, at most 4)
#   --systemd         boot the guest's systemd and run the command from a unit
#                     (default: the command runner is the init process: faster)
#   --console         copy the serial console to stderr (default: only on failure)
#   --append ARGS     extra kernel command line
#
# Exit status: the command's; 124 timeout; 125 the guest did not run the
# command (boot failure: the console log is printed); 2 bad usage.
set -euo pipefail
# The body is one block, read whole before it runs: editing this file
# while it runs cannot change what a running build does.
{

die() { echo "run.sh: $*" >&2; exit 2; }

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")

ARCH=${1:-}
[ -n "$ARCH" ] || die "usage: run.sh amd64|arm64 [options] [-- COMMAND...]"
shift
TIMEOUT=900
NICS=2
NIC_NETNS=()
IO_DIR=""
MEM=1024
SMP=$(nproc)
[ "$SMP" -gt 4 ] && SMP=4
CONSOLE=0
SYSTEMD=0
APPEND=""
COMMAND=()
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) TIMEOUT=${2:?}; shift 2 ;;
        --nics) NICS=${2:?}; shift 2 ;;
        --nic-netns) NIC_NETNS+=("${2:?}"); shift 2 ;;
        --io-dir) IO_DIR=${2:?}; shift 2 ;;
        --mem) MEM=${2:?}; shift 2 ;;
        --smp) SMP=${2:?}; shift 2 ;;
        --console) CONSOLE=1; shift ;;
        --systemd) SYSTEMD=1; shift ;;
        --append) APPEND=${2:?}; shift 2 ;;
        --) shift; COMMAND=("$@"); break ;;
        *) die "unknown option '$1'" ;;
    esac
done
number() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }
number "$TIMEOUT" 1 86400 || die "--timeout needs a number of seconds"
number "$NICS" 0 8 || die "--nics needs a number from 0 to 8"
number "$MEM" 128 65536 || die "--mem needs a number of MiB"
number "$SMP" 1 64 || die "--smp needs a number of CPUs"
[ "${#NIC_NETNS[@]}" -le "$NICS" ] || die "more --nic-netns than NICs"
for ns in "${NIC_NETNS[@]}"; do
    [ -e "/run/netns/$ns" ] || die "no network namespace '$ns'"
done
[ "$(id -u)" = 0 ] || die "must run as root (tap devices, network namespaces)"
case "$REPO" in
    *[[:space:],]*) die "the checkout's path '$REPO' has a space or comma: the guest cannot mount it" ;;
esac

OUT="$HERE/out/$ARCH"
case "$ARCH" in
    amd64)
        QEMU=qemu-system-x86_64
        MACHINE=(-machine q35 -cpu max)
        TTY=ttyS0 ;;
    arm64)
        QEMU=qemu-system-aarch64
        MACHINE=(-machine virt -cpu "max,pauth-impdef=on")
        TTY=ttyAMA0 ;;
    *) die "unsupported architecture '$ARCH' (amd64 or arm64)" ;;
esac
command -v "$QEMU" > /dev/null || die "missing $QEMU (run qemu/ci.sh --deps)"
KERNEL="$OUT/vmlinuz"
[ "$ARCH" = amd64 ] && [ -f "$OUT/vmlinux" ] && KERNEL="$OUT/vmlinux"
for f in vmlinuz initrd.img rootfs.img; do
    [ -f "$OUT/$f" ] || die "no $OUT/$f: run qemu/build-image.sh $ARCH first"
done

# --- state to clean up, whatever happens --------------------------------------
TAG="aq$$"
QNS="$TAG-q"
CREATED_NS=()
QEMU_PID=""
TAIL_PID=""
KEEP_IO=1
if [ -z "$IO_DIR" ]; then
    IO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/guest-io.XXXXXX")
    KEEP_IO=0
else
    mkdir -p "$IO_DIR"
    rm -f "$IO_DIR/cmd" "$IO_DIR/output" "$IO_DIR/status" "$IO_DIR/uptime"
fi
CONSOLE_LOG="$IO_DIR/console.log"

# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2> /dev/null; then
        kill -TERM "$QEMU_PID" 2> /dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$QEMU_PID" 2> /dev/null || break
            sleep 0.2
        done
        kill -KILL "$QEMU_PID" 2> /dev/null || true
        wait "$QEMU_PID" 2> /dev/null || true
    fi
    if [ -n "$TAIL_PID" ]; then
        kill "$TAIL_PID" 2> /dev/null || true
        wait "$TAIL_PID" 2> /dev/null || true
    fi
    # The taps belong to the qemu process and went with it; the namespaces are ours.
    ip netns del "$QNS" 2> /dev/null || true
    local ns
    for ns in "${CREATED_NS[@]}"; do
        ip netns del "$ns" 2> /dev/null || true
    done
    if [ -f "$CONSOLE_LOG" ]; then
        cp "$CONSOLE_LOG" "$OUT/last-console.log" 2> /dev/null || true
    fi
    if [ "$KEEP_IO" = 0 ]; then
        rm -rf "$IO_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- the command --------------------------------------------------------------
if [ "${#COMMAND[@]}" -gt 0 ]; then
    printf '%q ' "${COMMAND[@]}" > "$IO_DIR/cmd"
    echo >> "$IO_DIR/cmd"
fi

# --- network: one namespace per NIC, qemu's taps moved there ------------------
ip netns add "$QNS"
NETDEVS=()
NIC_NS=()
for ((i = 0; i < NICS; i++)); do
    if [ "$i" -lt "${#NIC_NETNS[@]}" ]; then
        NIC_NS[i]=${NIC_NETNS[$i]}
    else
        NIC_NS[i]="$TAG-n$i"
        ip netns add "${NIC_NS[$i]}"
        CREATED_NS+=("${NIC_NS[$i]}")
        ip -n "${NIC_NS[$i]}" link set lo up
    fi
    NETDEVS+=(-netdev "tap,id=n$i,ifname=tap$i,script=no,downscript=no"
        -device "virtio-net-pci,netdev=n$i,mac=52:54:00:12:34:$(printf '%02x' $((i + 0x10)))")
done

if [ "${#COMMAND[@]}" -gt 0 ]; then
    SERIAL=(-monitor none -serial "file:$CONSOLE_LOG")
else
    # Interactive: the serial console on this terminal (Ctrl-a x quits).
    SERIAL=(-serial mon:stdio)
fi

KERNEL_ARGS="console=$TTY root=/dev/vda rootfstype=ext4 rw quiet loglevel=4 panic=-1"
KERNEL_ARGS+=" net.ifnames=0 appliance.guest=1 appliance.src=$REPO systemd.show_status=0"
if [ "$SYSTEMD" = 0 ]; then
    KERNEL_ARGS+=" init=/usr/local/sbin/guest-run"
fi
KERNEL_ARGS+=" ${APPEND}"

QEMU_ARGS=(
    "${MACHINE[@]}" -nodefaults -accel tcg -smp "$SMP" -m "$MEM"
    -display none -no-reboot "${SERIAL[@]}"
    -kernel "$KERNEL" -initrd "$OUT/initrd.img" -append "$KERNEL_ARGS"
    -drive "file=$OUT/rootfs.img,if=virtio,format=raw,snapshot=on"
    -device virtio-rng-pci
    -virtfs "local,path=$REPO,mount_tag=src,security_model=none,readonly=on"
    -virtfs "local,path=$IO_DIR,mount_tag=guestio,security_model=none"
    "${NETDEVS[@]}"
)

START=$(date +%s.%N)
ip netns exec "$QNS" "$QEMU" "${QEMU_ARGS[@]}" &
QEMU_PID=$!

# Move each tap into its NIC's namespace as soon as qemu has made it.
for ((i = 0; i < NICS; i++)); do
    for _ in $(seq 100); do
        ip -n "$QNS" link show "tap$i" > /dev/null 2>&1 && break
        kill -0 "$QEMU_PID" 2> /dev/null || break
        sleep 0.05
    done
    ip -n "$QNS" link set "tap$i" netns "${NIC_NS[$i]}" 2> /dev/null \
        || { echo "run.sh: qemu did not start (no tap$i)" >&2; cat "$CONSOLE_LOG" >&2 2> /dev/null; exit 125; }
    ip -n "${NIC_NS[$i]}" link set "tap$i" up
    echo "run.sh: guest eth$i <-> tap$i in netns ${NIC_NS[$i]}" >&2
done

if [ "${#COMMAND[@]}" -gt 0 ]; then
    touch "$IO_DIR/output"
    tail -n +1 -F --pid="$QEMU_PID" "$IO_DIR/output" 2> /dev/null &
    TAIL_PID=$!
    if [ "$CONSOLE" = 1 ]; then
        tail -n +1 -F --pid="$QEMU_PID" "$CONSOLE_LOG" >&2 2> /dev/null &
    fi
fi

# Wait for qemu, at most TIMEOUT seconds.
DEADLINE=$(( $(date +%s) + TIMEOUT ))
TIMED_OUT=0
while kill -0 "$QEMU_PID" 2> /dev/null; do
    if [ "$(date +%s)" -ge "$DEADLINE" ]; then
        TIMED_OUT=1
        break
    fi
    sleep 0.2
done
if [ "$TIMED_OUT" = 1 ]; then
    echo "run.sh: the guest did not finish within ${TIMEOUT}s: killed (console: $OUT/last-console.log)" >&2
    exit 124
fi
wait "$QEMU_PID" || true
QEMU_PID=""
END=$(date +%s.%N)
if [ -n "$TAIL_PID" ]; then
    wait "$TAIL_PID" 2> /dev/null || true
    TAIL_PID=""
fi

[ "${#COMMAND[@]}" -gt 0 ] || exit 0
if [ ! -f "$IO_DIR/status" ]; then
    echo "run.sh: the guest did not run the command; its console:" >&2
    cat "$CONSOLE_LOG" >&2 || true
    exit 125
fi
STATUS=$(cat "$IO_DIR/status")
[[ "$STATUS" =~ ^[0-9]+$ ]] || STATUS=125
printf 'run.sh: %s guest: command started %ss after boot, exit status %s, %.1fs in all\n' \
    "$ARCH" "$(cat "$IO_DIR/uptime" 2> /dev/null || echo '?')" "$STATUS" \
    "$(awk -v a="$START" -v b="$END" 'BEGIN { print b - a }')" >&2
exit "$STATUS"
# shellcheck disable=SC2317
exit
}

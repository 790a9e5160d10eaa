#!/bin/bash
# Guest side of the NIC lab (tests/guest/test_lab_nics.py): route between eth0
# and eth1, apply tests/guest/lab.toml with the appliance, tell the host it is
# ready, wait for the host's "stop" (at most WAIT seconds), then hand the
# appliance's counters back. Files are exchanged in $GUEST_IO.
set -euo pipefail
wait_s=${1:-600}
cd "$(dirname "$0")"

ip addr add 198.18.1.1/24 dev eth0
ip addr add 198.18.2.1/24 dev eth1
ip link set eth0 up
ip link set eth1 up
echo 1 > /proc/sys/net/ipv4/ip_forward
appliance apply lab.toml
nft list table inet appliance > "$GUEST_IO/ruleset.txt"
touch "$GUEST_IO/ready"

for _ in $(seq $((wait_s * 5))); do
    [ -e "$GUEST_IO/stop" ] && break
    sleep 0.2
done
nft -j list counters table inet appliance > "$GUEST_IO/counters.json"
[ -e "$GUEST_IO/stop" ] || { echo "lab_router.sh: no stop from the host within ${wait_s}s" >&2; exit 1; }

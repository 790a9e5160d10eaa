#!/bin/sh
# packaging/failsafe-nft.sh: print the built-in failsafe table as `nft -f` loads it (one
# transaction that replaces the appliance's table), from the checkout this script is in.
# The package ships it as /usr/share/appliance/failsafe.nft for appliance-restore.service.
set -eu
cd "$(dirname "$0")/.."
PYTHONPATH=. exec python3 -m appliance compile --failsafe

#!/bin/sh
# packaging/failsafe-nft.sh: print the built-in failsafe table as an nft script that
# replaces the table in one transaction (`nft -f`), from the checkout this script is in.
# The package ships it as /usr/share/appliance/failsafe.nft for appliance-restore.service.
set -eu
cd "$(dirname "$0")/.."
table=$(PYTHONPATH=. python3 -m appliance compile --failsafe 2>/dev/null) || table=$(
	PYTHONPATH=. python3 - <<'PY'
import sys

from appliance.compile.render import render_table
from appliance.compile.ruleset import element_json
from appliance.daemon.failsafe import failsafe_desired

desired = failsafe_desired()
elements = {
    name: [element_json(desired.types[name], text) for text in sorted(items)]
    for name, items in desired.elements.items()
}
sys.stdout.write(render_table(desired.objects, elements))
PY
)
case "$table" in
*"delete table inet appliance"*) printf '%s\n' "$table" ;;
*) printf '%s\n%s\n%s\n' "table inet appliance" "delete table inet appliance" "$table" ;;
esac

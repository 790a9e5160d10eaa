#!/usr/bin/env bash
# packaging/build-deb.sh [OUTDIR]: build the Debian package from this checkout.
#
# The checkout's files as they are (tracked and new, not ignored) are copied to a temporary
# directory and built there with dpkg-buildpackage (debhelper, pybuild), so the work tree
# stays clean and two builds at once do not meet. OUTDIR (default dist/) receives
# appliance_<version>_all.deb; the last line of stdout is its path, everything else goes to
# stderr. It installs nothing: the build dependencies are in packaging/build-deps.txt
# (setup.sh installs them).
#
# APPLIANCE_DEB_REV=REV (e.g. HEAD) builds a committed revision instead of the work tree
# as it is (`git archive REV`).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
outdir=${1:-$repo/dist}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

missing=()
while read -r pkg; do
	case "$pkg" in "" | "#"*) continue ;; esac
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
		|| missing+=("$pkg")
done < "$repo/packaging/build-deps.txt"
if [ "${#missing[@]}" -gt 0 ]; then
	echo "build-deb.sh: missing build dependencies: ${missing[*]} (apt-get install them, or ./setup.sh)" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/appliance-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/appliance
mkdir "$src"
if [ -n "${APPLIANCE_DEB_REV:-}" ]; then
	git -C "$repo" archive --format=tar "$APPLIANCE_DEB_REV" | tar -C "$src" -xf -
elif git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	# --ignore-failed-read: a tracked file deleted in the work tree is left out.
	git -C "$repo" ls-files -z --cached --others --exclude-standard \
		| tar -C "$repo" --null -T - --ignore-failed-read -cf - 2>/dev/null \
		| tar -C "$src" -xf -
else
	tar -C "$repo" --exclude=./.venv --exclude=./dist --exclude=./build --exclude=./qemu/out \
		--exclude=./.git -cf - . | tar -C "$src" -xf -
fi

version=$(cd "$src" && dpkg-parsechangelog -S Version)
upstream=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$src/appliance/__init__.py")
if [ "$version" != "$upstream" ]; then
	echo "build-deb.sh: debian/changelog is at $version, appliance/__init__.py at $upstream" >&2
	exit 1
fi

# Debian's own Python and tools, whatever else is first on PATH (pyenv, a venv).
(cd "$src" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -b -us -uc --no-sign) >&2

deb=appliance_${version}_all.deb
cp "$work/$deb" "$outdir/.$deb.$$"
mv -f "$outdir/.$deb.$$" "$outdir/$deb"
echo "$outdir/$deb"

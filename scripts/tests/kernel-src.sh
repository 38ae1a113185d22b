#!/usr/bin/env bash
# KERNEL_SRC=/path/to/v6.1.y (your own tree as the base) cannot rot: a tree made from the
# installed linux-source-6.1 must give kernel-tree.sh the same base tree as the package
# itself. No kernel is built; each import runs in a throwaway cache.
#   - as a git tree (kernel-tree.sh takes `git archive HEAD`): a clone of the cache's base
#     commit, sharing its objects, so only the export and the hashing cost anything;
#   - as a plain directory (kernel-tree.sh copies it): the package unpacked again. The full
#     lane only (ZC_LANE=full, the default outside CI): it writes the tree twice more.
# The result is cached per package version and per version of the scripts involved.
# Prints TAP ("ok - "/"not ok - ") and ends with "N passed, N failed"; with ZC_JUNIT set,
# writes the checks there as JUnit too.
# Usage: scripts/tests/kernel-src.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/../lib.sh"

[ -f "$ZC_TARBALL" ] || die "$ZC_TARBALL is missing (scripts/kernel-tree.sh installs $ZC_PINNED_PKG)"
installed=$(dpkg-query -W -f='${Version}' "$ZC_PINNED_PKG" 2>/dev/null || echo unknown)
lane=${ZC_LANE:-full}
key=$({
	echo "$installed $(stat -c '%s %Y' "$ZC_TARBALL") $lane"
	cat "$ZC_TOP/scripts/kernel-tree.sh" "$ZC_TOP/scripts/lib.sh" "$0"
} | sha256sum | cut -c1-16)
stamp=$ZC_CACHE/gates/kernel-src-$key
junit_begin
if [ -f "$stamp" ]; then
	sed 's/$/ (cached: same package and scripts)/' "$stamp"
	while read -r line; do junit_case "${line#ok - } (cached: same package and scripts)" pass; done <"$stamp"
	printf '%d passed, 0 failed\n' "$(wc -l <"$stamp")"
	exit 0
fi

work=$ZC_CACHE/tmp-kernel-src
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
results=$work/results
: >"$results"
passed=0
failed=0
ok() { printf 'ok - %s\n' "$*" | tee -a "$results"; passed=$((passed + 1)); junit_case "$*" pass; }
notok() { printf 'not ok - %s\n' "$*"; failed=$((failed + 1)); junit_case "$*" fail; }
# base_tree CACHE [KERNEL_SRC]: kernel-tree.sh base in a throwaway cache; prints the tree.
base_tree() {
	env -u ZC_LOCK_HELD UBLK_ZC_CACHE="$1" KERNEL_SRC="${2:-}" "$ZC_TOP/scripts/kernel-tree.sh" base >&2
	zgit -C "$1/src/base" rev-parse 'base^{tree}'
}

# The throwaway repositories borrow the objects of the cache's base (git alternates): files
# it already holds are only hashed, not compressed and written again.
[ ! -d "$ZC_SRC/.git/objects" ] || export GIT_ALTERNATE_OBJECT_DIRECTORIES=$ZC_SRC/.git/objects

# The reference: the package as kernel-tree.sh imports it; the cache's base when that is it.
pkg_commit=
if [ "$(zgit -C "$ZC_SRC" log -1 --format=%s base 2>/dev/null)" = "base: $ZC_PINNED_PKG $installed" ]; then
	pkg_commit=$(zgit -C "$ZC_SRC" rev-parse base)
	ref=$(zgit -C "$ZC_SRC" rev-parse 'base^{tree}')
	say "reference: the base of $ZC_CACHE ($ZC_PINNED_PKG $installed), tree $ref"
else
	ref=$(base_tree "$work/ref")
	pkg_commit=$(zgit -C "$work/ref/src/base" rev-parse base)
	export GIT_ALTERNATE_OBJECT_DIRECTORIES=$work/ref/src/base/.git/objects
	say "reference: $ZC_PINNED_PKG $installed imported in a throwaway cache, tree $ref"
fi

# A git tree: HEAD is the package's import; only the Makefile is checked out (kernel-tree.sh
# looks for it), the rest is exported by git archive HEAD.
gsrc=$work/linux-6.1.y-git
zgit init -q "$gsrc"
printf '%s\n' "$GIT_ALTERNATE_OBJECT_DIRECTORIES" >"$gsrc/.git/objects/info/alternates"
zgit -C "$gsrc" update-ref refs/heads/base "$pkg_commit"
zgit -C "$gsrc" checkout -q base -- Makefile
tree=$(base_tree "$work/git" "$gsrc")
desc=$(zgit -C "$work/git/src/base" log -1 --format=%s base)
rm -rf "$work/git" "$gsrc"
if [ "$tree" = "$ref" ]; then
	ok "KERNEL_SRC as a git tree (git archive HEAD) gives the base tree of $ZC_PINNED_PKG $installed ($tree; '$desc')"
else
	notok "KERNEL_SRC as a git tree gives tree $tree, the package gives $ref"
fi

if [ "$lane" = full ]; then
	src=$work/linux-6.1.y
	mkdir -p "$src"
	say "unpacking $ZC_TARBALL as a plain KERNEL_SRC directory in $src"
	tar -xf "$ZC_TARBALL" -C "$src" --strip-components=1
	tree=$(base_tree "$work/plain" "$src")
	rm -rf "$work/plain" "$src"
	if [ "$tree" = "$ref" ]; then
		ok "KERNEL_SRC as a plain directory gives the same base tree ($tree)"
	else
		notok "KERNEL_SRC as a plain directory gives tree $tree, the package gives $ref"
	fi
fi

if [ "$failed" -eq 0 ]; then
	mkdir -p "$(dirname "$stamp")"
	cp "$results" "$stamp"
fi
printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]

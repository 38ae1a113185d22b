#!/usr/bin/env bash
# docs/mutants.md's table of mutants is generated: it must be what
# `scripts/mutants.sh --list-markdown` prints from the headers in patches/mutants/, between
# the lines <!-- mutants-table:begin --> and <!-- mutants-table:end -->. A mutant added,
# renamed or re-described without the table fails here, with the diff. It reads files
# only: nothing is built or booted. Prints TAP ("ok - "/"not ok - ") and ends with
# "N passed, N failed"; with ZC_JUNIT set, writes the checks there as JUnit too.
# Usage: scripts/tests/mutants-table.sh            check the table
#        scripts/tests/mutants-table.sh --update   write the table into docs/mutants.md
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
doc=$top/docs/mutants.md
begin='<!-- mutants-table:begin -->'
end='<!-- mutants-table:end -->'
work=$(mktemp -d /tmp/zc-mutants-table.XXXXXX)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
# shellcheck source=scripts/lib.sh
. "$top/scripts/lib.sh"
junit_begin
ok() { printf 'ok - %s\n' "$*"; passed=$((passed + 1)); junit_case "$*" pass; }
notok() { printf 'not ok - %s\n' "$*"; failed=$((failed + 1)); junit_case "$*" fail; }

# The region between the markers holds a blank line, the table and a blank line, so that
# the markers stay HTML blocks of their own.
"$top/scripts/mutants.sh" --list-markdown >"$work/table"
{
	echo
	cat "$work/table"
	echo
} >"$work/want"

[ -f "$doc" ] || {
	notok "docs/mutants.md exists"
	printf '%d passed, %d failed\n' "$passed" "$failed"
	exit 1
}
nb=$(grep -cxF -- "$begin" "$doc") || true
ne=$(grep -cxF -- "$end" "$doc") || true
if [ "$nb" -ne 1 ] || [ "$ne" -ne 1 ]; then
	notok "docs/mutants.md has each marker once ($begin: $nb, $end: $ne)"
	printf '%d passed, %d failed\n' "$passed" "$failed"
	exit 1
fi
ok "docs/mutants.md has each marker once"

if [ "${1:-}" = --update ]; then
	awk -v b="$begin" -v e="$end" -v t="$work/want" '
		$0 == e { on = 0 }
		!on { print }
		$0 == b { while ((getline l < t) > 0) print l; on = 1 }' "$doc" >"$work/doc"
	cat "$work/doc" >"$doc"
	ok "docs/mutants.md: table written ($(($(wc -l <"$work/table") - 2)) mutants)"
fi

awk -v b="$begin" -v e="$end" '$0 == e { on = 0 } on { print } $0 == b { on = 1 }' "$doc" >"$work/have"
if diff -u --label 'docs/mutants.md' --label 'scripts/mutants.sh --list-markdown' \
	"$work/have" "$work/want" >"$work/diff"; then
	ok "docs/mutants.md's table is scripts/mutants.sh --list-markdown's ($(($(wc -l <"$work/table") - 2)) mutants)"
else
	notok "docs/mutants.md's table is stale: scripts/tests/mutants-table.sh --update rewrites it"
	sed 's/^/    /' "$work/diff"
fi

printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# The mutation gate: deliberately broken variants of the series must each be caught.
# Usage: scripts/mutants.sh [--all | --sample N] [--list | --list-markdown] [NAME...]
#   (default)   a rotating sample of 3 mutants (by the UTC day, or ZC_MUTANT_SEED), as CI
#               runs it; with ZC_LANE=fast, none that needs the debug kernel
#   --all       every mutant (the full run; its time is in docs/mutants.md)
#   --sample N  a rotating sample of N mutants
#   NAME...     these mutants (patches/mutants/NAME.patch); a known survivor named here is
#               run too, and must still survive
#   --list      print the mutants, their checks and the known survivors; run nothing
#   --list-markdown  the same as the markdown table of docs/mutants.md; run nothing
#   --junit FILE     the JUnit XML report, one test case per mutant (default: $ZC_JUNIT)
# The gate is `gate mutants` (harness/gate/src/mutants/, `target/release/gate mutants
# --help` lists the header fields it reads); this builds it and runs it. It applies and
# builds each mutant with scripts/mutant-tree.sh in the kernel cache's worktree
# src/mutant, runs the baselines and the checks, and caches images and verdicts in
# $ZC_CACHE/mutants. Output: one TAP line per mutant ("ok - NAME: caught by TEST",
# "not ok - NAME: SURVIVED: ..."), then "caught N of M"; the exit status is 1 if a mutant
# survived or did not build. docs/mutants.md has the rest.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

case "${1:-}" in
-h | --help) sed -n '3,12s/^# \{0,1\}//p' "$0"; exit 0 ;;
esac
(cd "$ZC_TOP" && cargo build --release -q -p gate) >&2 || die "building the gate (cargo build -p gate) failed"
export ZC_TOP
exec "$ZC_TOP/target/release/gate" mutants "$@"

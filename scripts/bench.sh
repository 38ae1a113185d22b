#!/usr/bin/env bash
# Benchmarks ublk copy vs splice zero-copy mode against the kernel loop driver and the
# backing file, in one boot of a test kernel (criterion measures, in the guest).
# Usage: scripts/bench.sh [--smoke] [--kernel patched|base|debug|PATH] [--results DIR]
#                         [--series PATH | --tree DIR --range A..B]
#   --smoke    a tiny subset (3 workloads, QD32) that only checks that everything runs
#   --results  the run directory (default: $ZC_TOP/results/bench[-smoke]); the report is
#              DIR/results/bench/bench.md and bench.svg
#   --series, --tree/--range   the revision of the series to build the kernel from, as for
#              scripts/test.sh (default: patches/); bench.md and revision.txt name it
# Prints the headline ratios as `RATIO <name> <value>`, one per line. No timing assertions.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

usage() { sed -n '2,11s/^# \{0,1\}//p' "$0"; }

smoke=
kernel=patched
results=
while [ $# -gt 0 ]; do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--smoke) smoke=--smoke; shift ;;
	--kernel) [ $# -ge 2 ] || die "--kernel needs a value"; kernel=$2; shift 2 ;;
	--results) [ $# -ge 2 ] || die "--results needs a value"; results=$2; shift 2 ;;
	--series | --tree | --range) series_opt "$1" "${2:-}"; shift 2 ;;
	*) die "unexpected argument '$1' (see --help)" ;;
	esac
done
results=${results:-$ZC_TOP/results/bench${smoke:+-smoke}}
series_resolve
timeout=1800
[ -z "$smoke" ] || timeout=300

say "building ublk-bench (release)"
(cd "$ZC_TOP" && cargo build --release -q -p ublk-bench) || die "building ublk-bench failed"
bench=$ZC_TOP/target/release/ublk-bench

rm -rf "$results"
mkdir -p "$results"
say "booting the $kernel kernel; results in $results"
rc=0
"$ZC_TOP/scripts/run-qemu.sh" --kernel "$kernel" --timeout "$timeout" --results "$results" \
	--disk-size 1G -- "$bench" run $smoke 2>&1 | tee "$results/vmrun.log" >&2 || rc=$?
[ "$rc" -eq 0 ] || die "the guest bench failed (vmrun exit status $rc; see $results/vmrun.log)"
"$bench" report "$results/results/bench" --vmrun-log "$results/vmrun.log"
# The report names the revision under test and the base it was built on.
{
	case "$kernel" in
	base) echo "kernel: base (the series is not applied)" ;;
	patched | debug) echo "kernel: $kernel" ;;
	*) echo "kernel: $kernel, given as is (the revision below is the one selected, not necessarily this image's)" ;;
	esac
	series_describe
} >"$results/revision.txt"
if [ -f "$results/results/bench/bench.md" ]; then
	{
		printf '\n## Revision under test\n\n'
		sed 's/^/    /' "$results/revision.txt"
	} >>"$results/results/bench/bench.md"
fi
say "$(grep '^revision:' "$results/revision.txt"); $(grep '^base:' "$results/revision.txt")"

#!/usr/bin/env bash
# Benchmarks ublk copy vs splice zero-copy mode against the kernel loop driver and the
# backing file, in one boot of a test kernel (criterion measures, in the guest), or with
# --ab in interleaved rounds of fio and its own engine, in each of --boots N boots.
# Usage: scripts/bench.sh [--smoke] [--kernel patched|base|debug|PATH] [--results DIR]
#                         [--series PATH | --tree DIR --range A..B]
#                         [--ab [--boots N] [--rounds N] [--ublk PATH] [--label NAME]
#                               [--workload NAME]... [--client NAME]...]
#   --smoke    a tiny subset (3 workloads) that only checks that everything runs
#   --results  the run directory (default: $ZC_TOP/results/bench[-ab][-smoke]); the report
#              is DIR/results/bench/bench.md and bench.svg, with --ab DIR/ab.md and DIR/ab.svg
#   --series, --tree/--range   the revision of the series to build the kernel from, as for
#              scripts/test.sh (default: patches/); the report and revision.txt name it
#   --ab       interleaved rounds (ublk-bench ab): per-round ratios, medians with intervals
#   --boots N  --ab: boot N times, one report with the spread between boots (default 1)
#   --rounds N --ab: rounds per boot (default 6, 2 with --smoke)
#   --ublk PATH  --ab: the ublk server to measure, e.g. one built for another revision
#   --label NAME --ab: the boots' label in the report (default: the kernel's name)
#   --workload NAME  --ab: only this workload (repeatable; ublk-bench ab --help lists them)
#   --client NAME    --ab: only this client, fio or engine (repeatable; default both)
# Prints the headline ratios as `RATIO ...` lines. No timing assertions.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

usage() { sed -n '2,22s/^# \{0,1\}//p' "$0"; }

smoke=
kernel=patched
results=
ab=
boots=1
rounds=
ublk=
label=
workloads=()
clients=()
while [ $# -gt 0 ]; do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--smoke) smoke=--smoke; shift ;;
	--kernel) [ $# -ge 2 ] || die "--kernel needs a value"; kernel=$2; shift 2 ;;
	--results) [ $# -ge 2 ] || die "--results needs a value"; results=$2; shift 2 ;;
	--series | --tree | --range) series_opt "$1" "${2:-}"; shift 2 ;;
	--ab) ab=1; shift ;;
	--boots) [ $# -ge 2 ] || die "--boots needs a value"; boots=$2; shift 2 ;;
	--rounds) [ $# -ge 2 ] || die "--rounds needs a value"; rounds=$2; shift 2 ;;
	--ublk) [ $# -ge 2 ] || die "--ublk needs a value"; ublk=$2; shift 2 ;;
	--label) [ $# -ge 2 ] || die "--label needs a value"; label=$2; shift 2 ;;
	--workload) [ $# -ge 2 ] || die "--workload needs a value"; workloads+=(--workload "$2"); shift 2 ;;
	--client) [ $# -ge 2 ] || die "--client needs a value"; clients+=(--client "$2"); shift 2 ;;
	*) die "unexpected argument '$1' (see --help)" ;;
	esac
done
case "$boots" in '' | *[!0-9]* | 0) die "--boots needs a whole number of at least 1, not '$boots'" ;; esac
if [ -z "$ab" ] && { [ "$boots" != 1 ] || [ -n "$rounds$ublk$label${workloads[*]}${clients[*]}" ]; }; then
	die "--boots, --rounds, --ublk, --label, --workload and --client go with --ab"
fi
results=${results:-$ZC_TOP/results/bench${ab:+-ab}${smoke:+-smoke}}
series_resolve
timeout=1800
[ -z "$smoke" ] || timeout=300

say "building ublk-bench and ublk (release)"
(cd "$ZC_TOP" && cargo build --release -q -p ublk-bench -p ublk) || die "building ublk-bench failed"
bench=$ZC_TOP/target/release/ublk-bench

if [ -n "$ab" ]; then
	ublk=${ublk:-$ZC_TOP/target/release/ublk}
	[ -x "$ublk" ] || die "--ublk $ublk is not an executable"
	# A kernel given by path is labelled by its release, read from the image.
	if [ -z "$label" ]; then
		case "$kernel" in
		base | patched | debug) label=$kernel ;;
		*) label=$(file -bL "$kernel" 2>/dev/null | sed -n 's/.*version \([^ ]*\).*/\1/p') ;;
		esac
		label=${label:-kernel}
	fi
	# Both clients, 12 workloads per round: about two and a half minutes a round under TCG.
	[ -n "$smoke" ] || timeout=$((900 + ${rounds:-6} * 300))
	rm -rf "$results"
	mkdir -p "$results"
	args=()
	for i in $(seq 1 "$boots"); do
		dir=$results/boot-$i
		mkdir -p "$dir"
		printf 'host load before\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >"$dir/host-load.txt"
		say "boot $i of $boots: the $kernel kernel, interleaved rounds; results in $dir"
		rc=0
		# The host's 1-minute load average every 30 s while the guest runs.
		(while sleep 30; do cut -d' ' -f1 /proc/loadavg; done) >"$dir/host-load-samples.txt" &
		sampler=$!
		"$ZC_TOP/scripts/run-qemu.sh" --kernel "$kernel" --timeout "$timeout" --results "$dir" \
			--disk-size 1G -- "$bench" ab $smoke --ublk "$ublk" ${rounds:+--rounds "$rounds"} \
			"${workloads[@]}" "${clients[@]}" 2>&1 | tee "$dir/vmrun.log" >&2 || rc=$?
		kill "$sampler" 2>/dev/null || true
		wait "$sampler" 2>/dev/null || true
		printf 'host load after\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$dir/host-load.txt"
		sort -n "$dir/host-load-samples.txt" | awk 'NR == 1 { lo = $1 } { hi = $1; n++ }
			END { if (n) printf "host load during\t1-min average %s to %s (%d samples, every 30 s)\n", lo, hi, n }' \
			>>"$dir/host-load.txt"
		printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" >>"$dir/host-load.txt"
		sed -n 's/^.*vmrun: accelerator:\{0,1\} */accelerator\t/p' "$dir/vmrun.log" | head -n1 >>"$dir/host-load.txt"
		[ "$rc" -eq 0 ] || die "the guest bench failed (vmrun exit status $rc; see $dir/vmrun.log)"
		args+=("$label boot $i=$dir/results/ab")
	done
	"$bench" ab-report --out "$results/ab.md" "${args[@]}"
	{
		echo "kernel: $kernel; server: $ublk"
		series_describe
	} >"$results/revision.txt"
	{
		printf '\n## Revision under test\n\n'
		sed 's/^/    /' "$results/revision.txt"
	} >>"$results/ab.md"
	say "report: $results/ab.md"
	exit 0
fi

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

#!/usr/bin/env bash
# The project's test command (.ci/run calls it). It installs what is missing, builds the
# harness and the kernels, runs every gate and test, and ends with "N passed, N failed".
# Usage: scripts/test.sh [--series PATH | --tree DIR --range A..B] [--fast | --full] [PREFIX...]
#   --series PATH   gate another revision of the series: a directory with a quilt `series`
#                   file, or one mbox (git format-patch --stdout, b4 am; the cover letter
#                   is skipped). Default: patches/.
#   --tree DIR --range A..B   gate the commits A..B of your kernel git tree (no merges).
#   --fast, --full  the lane; default: fast when CI=true, full otherwise (or ZC_LANE=).
#                   The fast lane builds the whole kernel only after the last patch of
#                   the bisect walk. Both lanes run the suite on the debug kernel
#                   (KASAN, lockdep) and scan for leaks (kmemleak) after it.
#   PREFIX          only the steps whose names start with a PREFIX (e.g. "rust:" "series:");
#                   steps a selected one needs are not added by themselves.
# Reports (fixed paths, for CI): results/gate/junit.xml (every step and every in-guest test),
# results/gate/summary.md (markdown: revision, base, accelerator, lane, steps, counts, times),
# both printed at the end; ZC_REPORT_DIR moves them. Step logs: $ZC_CACHE/test-logs/.
set -uo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

usage() { sed -n '4,18s/^# \{0,1\}//p' "$0"; }
filters=()
lane=${ZC_LANE:-}
while [ $# -gt 0 ]; do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--series | --tree | --range) series_opt "$1" "${2:-}"; shift 2 ;;
	--series=* | --tree=* | --range=*) series_opt "${1%%=*}" "${1#*=}"; shift ;;
	--fast) lane=fast; shift ;;
	--full) lane=full; shift ;;
	-*) die "unknown option $1 (see --help)" ;;
	*) filters+=("$1"); shift ;;
	esac
done
if [ -z "$lane" ]; then
	if [ "${CI:-}" = true ]; then lane=fast; else lane=full; fi
fi
case "$lane" in fast | full) ;; *) die "ZC_LANE must be fast or full, not '$lane'" ;; esac
export ZC_LANE=$lane

logs=$ZC_CACHE/test-logs
runs=$ZC_CACHE/test-runs
report=$ZC_REPORT
mkdir -p "$logs" "$runs" "$report"
rm -f "$report/steps.tsv" "$report/junit.xml" "$report/summary.md" "$report/revision.txt"
passed=0
failed=0
failures=()
tree_ok=1
tree_why="the revision does not apply (see the apply step)"
t0=$(date +%s)

selected() {
	local p
	[ ${#filters[@]} -gt 0 ] || return 0
	for p in "${filters[@]}"; do
		case "$1" in "$p"*) return 0 ;; esac
	done
	return 1
}

logname() { printf '%s/%s.log' "$logs" "$(printf '%s' "$1" | tr -c 'A-Za-z0-9_.-' '_')"; }
# record NAME STATUS PASSED FAILED SECONDS LOG [RUN-DIRS [REASON]]: one line of steps.tsv.
record() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "${7:-}" "${8:-}" >>"$report/steps.tsv"
}
skip() { # skip NAME REASON
	selected "$1" || return 0
	printf 'SKIP %s: %s\n' "$1" "$2"
	record "$1" skip 0 0 0 "" "" "$2"
}
# Steps after the apply step need the patched tree: when the revision does not apply they
# are skipped, not run into the same error again.
needs_tree() {
	[ "$tree_ok" -eq 1 ] && return 0
	skip "$1" "$tree_why"
	return 1
}
# Prints the failing checks named in a log (TAP, libtest) and in the runs' JUnit files.
excerpt() { # excerpt LOG LINES [RUN-DIRS]
	local names
	local -a dirs=()
	[ -z "${3:-}" ] || read -r -a dirs <<<"$3"
	names=$(python3 "$ZC_TOP/scripts/gate-report.py" failing "$1" "${dirs[@]}" 2>/dev/null | head -n 20)
	[ -z "$names" ] || printf '    failing: %s\n' "$names" | sed '2,$s/^/             /'
	tail -n "$2" "$1" | sed 's/^/    /'
}

# step NAME CMD...: one check; its whole output goes to a log, and is shown if it fails.
step() {
	local name=$1 log s rc
	shift
	selected "$name" || return 0
	log=$(logname "$name")
	say "[$(($(date +%s) - t0))s] $name"
	s=$(date +%s)
	"$@" >"$log" 2>&1
	rc=$?
	if [ "$rc" -eq 0 ]; then
		passed=$((passed + 1))
		printf 'PASS %s (%ss)\n' "$name" "$(($(date +%s) - s))"
		record "$name" pass 1 0 "$(($(date +%s) - s))" "$log"
	else
		failed=$((failed + 1))
		failures+=("$name")
		printf 'FAIL %s (log: %s)\n' "$name" "$log"
		excerpt "$log" 60
		record "$name" fail 0 1 "$(($(date +%s) - s))" "$log"
	fi
	return "$rc"
}

# counted NAME CMD...: a command whose output says how many checks passed and failed:
# TAP-style "ok - "/"not ok - " lines, libtest "test result:" lines, or "N passed, N failed".
# GUEST_RUNS (a variable, space-separated run dirs) names runs whose JUnit files hold the tests.
counted() {
	local name=$1 log rc p f s rundirs=${GUEST_RUNS:-}
	shift
	selected "$name" || return 0
	log=$(logname "$name")
	say "[$(($(date +%s) - t0))s] $name"
	s=$(date +%s)
	"$@" >"$log" 2>&1
	rc=$?
	# A closing "N passed, N failed" line (the suite runner's) sums up everything above it.
	read -r p f < <(awk '
		/^ok - /     { p++ }
		/^not ok - / { f++ }
		/^test result: / { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
		/^[0-9]+ passed, [0-9]+ failed/ { sp = $1; sf = $3; summary = 1 }
		END { if (summary) print sp + 0, sf + 0; else print p + 0, f + 0 }' "$log")
	grep -E '^(ok|not ok) - |^test .* \.\.\. (ok|FAILED)$|^[0-9]+ passed, [0-9]+ failed' "$log" | sed 's/^/    /'
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1 # the command failed without saying which check did
	fi
	passed=$((passed + p))
	failed=$((failed + f))
	if [ "$f" -gt 0 ]; then
		failures+=("$name")
		printf 'FAIL %s: %d passed, %d failed (log: %s)\n' "$name" "$p" "$f" "$log"
		excerpt "$log" 80 "$rundirs"
		record "$name" fail "$p" "$f" "$(($(date +%s) - s))" "$log" "$rundirs"
		return 1
	fi
	printf 'PASS %s: %d passed (%ss)\n' "$name" "$p" "$(($(date +%s) - s))"
	record "$name" pass "$p" 0 "$(($(date +%s) - s))" "$log" "$rundirs"
}

# The revision first, whatever the filters: an mbox without patches, a range with a merge
# commit fail here, and the steps that need the revision are skipped.
read_revision() { (series_resolve && printf '%s: %s patch(es)\n' "$ZC_SERIES_ORIGIN" "$(series_patches | wc -l)"); }
revision_ok=1
kept=("${filters[@]}")
filters=()
if step "series: read the revision" read_revision; then
	series_resolve
	say "gate: $ZC_SERIES_ORIGIN, lane $lane, reports in $report"
else
	revision_ok=0
	tree_ok=0
	tree_why="the revision cannot be read (see the step series: read the revision)"
fi
filters=("${kept[@]}")
describe() {
	if [ "$revision_ok" -eq 1 ]; then
		series_describe 2>/dev/null
	else
		printf 'revision: unreadable: %s\n' "${ZC_SERIES_SRC:-${ZC_SERIES_TREE:-} ${ZC_SERIES_RANGE:-}}"
	fi
}

step "deps: Debian packages" "$ZC_TOP/scripts/deps.sh"
step "rust: cargo fmt --check" cargo fmt --all --check
step "rust: cargo clippy -D warnings" cargo clippy --workspace --all-targets -- -D warnings
counted "rust: host unit tests" cargo test --workspace --lib --bins
shellcheck_all() { (cd "$ZC_TOP" && shellcheck -x -S warning scripts/*.sh scripts/tests/*.sh .ci/run); }
step "host: shellcheck -S warning (scripts/)" shellcheck_all
counted "host: revision inputs (mbox, cover letter, folded subjects, quilt, range, merge refused)" \
	"$ZC_TOP/scripts/tests/series-input.sh"
counted "host: docs/mutants.md's table is scripts/mutants.sh --list-markdown's" "$ZC_TOP/scripts/tests/mutants-table.sh"
# The revision under test, applied on the base: a revision that does not apply stops here,
# with git's message and the name of the patch, and the steps that need it are skipped.
needs_tree "series: apply the revision on the base" &&
	{ step "series: apply the revision on the base" "$ZC_TOP/scripts/kernel-tree.sh" || tree_ok=0; }
describe >"$report/revision.txt"
sed 's/^/    /' "$report/revision.txt"
# KERNEL_SRC (your own v6.1.y tree) cannot rot: a tree made from the package must give the
# same base tree. Cached per package version and script; no kernel is built.
counted "base: KERNEL_SRC tree made from the package gives the same base" "$ZC_TOP/scripts/tests/kernel-src.sh"
needs_tree "series: git am, quilt, checkpatch" &&
	counted "series: git am, quilt, checkpatch" "$ZC_TOP/scripts/check-series.sh" apply checkpatch
needs_tree "kernel: build base" && step "kernel: build base" "$ZC_TOP/scripts/build-kernel.sh" base
# The walk builds the patched kernel one patch at a time and ends on the whole series,
# which is the patched kernel: the next step then only finds it up to date.
needs_tree "series: bisect build after each patch" &&
	counted "series: bisect build after each patch" "$ZC_TOP/scripts/check-series.sh" build
needs_tree "kernel: build patched" && step "kernel: build patched" "$ZC_TOP/scripts/build-kernel.sh" patched
needs_tree "series: W=1 C=1 on touched objects" &&
	counted "series: W=1 C=1 on touched objects" "$ZC_TOP/scripts/check-series.sh" warnings
# The debug kernel (KASAN, lockdep, kmemleak) runs in both lanes: it is the gate for page
# lifetimes, and its suite run (about 5 min under TCG) costs little beside its build.
debug_steps=("kernel: build debug (KASAN, lockdep, kmemleak)" "vm: debug kernel (KASAN, lockdep) boots clean" "suite: debug kernel (KASAN, lockdep, kmemleak)")
needs_tree "${debug_steps[0]}" &&
	step "${debug_steps[0]}" "$ZC_TOP/scripts/build-kernel.sh" debug
uapi_test() {
	local inc
	inc=$("$ZC_TOP/scripts/uapi-headers.sh") || return 1
	UBLK_UAPI_INCLUDE=$inc cargo test -p ublk --test uapi_header
}
needs_tree "uapi: harness constants agree with the installed header" &&
	counted "uapi: harness constants agree with the installed header" uapi_test
needs_tree "vm: runner tests on the patched kernel" &&
	counted "vm: runner tests on the patched kernel" \
		env VMRUN_TEST_KERNEL="$(kernel_image patched)" VMRUN_TEST_EXPECT_RELEASE_SUFFIX=-ublkzc \
		cargo test -p vmrun --test vm
# shellcheck disable=SC2016 # sh -c expands its own arguments
needs_tree "vm: patched kernel boots, uname shows the series" &&
	step "vm: patched kernel boots, uname shows the series" \
		sh -c '"$0"/scripts/run-qemu.sh --kernel patched --timeout 120 -- uname -r | grep -- "^6\.1\.[0-9]*-ublkzc$"' "$ZC_TOP"
# shellcheck disable=SC2016
needs_tree "${debug_steps[1]}" &&
	step "${debug_steps[1]}" \
		sh -c '"$0"/scripts/run-qemu.sh --kernel debug --timeout 300 -- uname -r | grep -- "^6\.1\.[0-9]*-ublkzc-debug$"' "$ZC_TOP"

# In-guest runs: each gets a fresh run directory; the suite writes TAP and JUnit there.
guest() { # guest NAME KERNEL TIMEOUT CMD...: run CMD in a fresh run dir $runs/NAME
	local name=$1 kernel=$2 timeout=$3
	shift 3
	rm -rf "${runs:?}/$name"
	mkdir -p "$runs/$name"
	"$ZC_TOP/scripts/run-qemu.sh" --kernel "$kernel" --timeout "$timeout" --results "$runs/$name" -- "$@"
}
suite=$ZC_TOP/target/release/ublk-suite
step "suite: build the in-guest suite" "$ZC_TOP/scripts/build-suite.sh"
needs_tree "suite: patched kernel" &&
	GUEST_RUNS=$runs/patched counted "suite: patched kernel" guest patched patched 1800 "$suite" --label patched
needs_tree "${debug_steps[2]}" &&
	GUEST_RUNS=$runs/debug counted "${debug_steps[2]}" guest debug debug 2400 \
		"$ZC_TOP/scripts/guest/kmemleak-run.sh" "$suite" --label debug
needs_tree "${debug_steps[2]}" &&
	counted "debug: kmemleak finds no leak after the suite" "$ZC_TOP/scripts/kmemleak-check.sh" "$runs/debug/results"
# The control run: on the base kernel the suite must show exactly what a missing series
# looks like (tests that need it fail, naming the feature; the others pass).
control_run() {
	guest base base 1800 "$suite" --label base
	[ -s "$runs/base/results/suite-base.tap" ] || { echo "the control run left no TAP file"; return 1; }
}
needs_tree "suite: control run on the base kernel (failures expected)" &&
	step "suite: control run on the base kernel (failures expected)" control_run
needs_tree "suite: control run shows the expected outcome" &&
	counted "suite: control run shows the expected outcome" \
		"$ZC_TOP/target/release/suite-control" "$runs/base/results/suite-base.tap" "$ZC_TOP/harness/suite/needs-series.txt"
# Patch 2 is a refactor: splice, tee, sendfile and copy_file_range behave as on the base.
transcripts() {
	local t=$ZC_TOP/target/release/splice-transcript f=results/splice-transcript.txt
	guest transcript-base base 600 "$t" && guest transcript-patched patched 600 "$t" || return 1
	diff -u "$runs/transcript-base/$f" "$runs/transcript-patched/$f" || return 1
	echo "identical on base and patched: $(wc -l <"$runs/transcript-base/$f") lines"
}
needs_tree "series: patch 2 changes nothing (splice transcript, base vs patched)" &&
	step "series: patch 2 changes nothing (splice transcript, base vs patched)" transcripts
# The gate's own sensitivity: broken variants of the series (patches/mutants) must each be
# caught by the check named for it. The fast lane runs a rotating sample, the full lane
# every mutant (about 12 min).
mutants_args=()
[ "$lane" = fast ] || mutants_args=(--all)
needs_tree "mutants: broken variants of the series are caught" &&
	counted "mutants: broken variants of the series are caught" "$ZC_TOP/scripts/mutants.sh" "${mutants_args[@]}"
# A short bench run, so that the bench cannot rot; it asserts no timing.
needs_tree "bench: smoke run in the guest (no timing assertions)" &&
	step "bench: smoke run in the guest (no timing assertions)" "$ZC_TOP/scripts/bench.sh" --smoke
needs_tree "bench: interleaved smoke run in the guest (no timing assertions)" &&
	step "bench: interleaved smoke run in the guest (no timing assertions)" "$ZC_TOP/scripts/bench.sh" --ab --smoke

total=$(($(date +%s) - t0))
say "[${total}s] done"
{
	printf 'lane\t%s\n' "$lane"
	printf 'seconds\t%s\n' "$total"
	printf 'passed\t%s\nfailed\t%s\n' "$passed" "$failed"
	printf 'installed\t%s %s\n' "$ZC_PINNED_PKG" "$(dpkg-query -W -f='${Version}' "$ZC_PINNED_PKG" 2>/dev/null || echo 'not installed')"
	printf 'measured\t%s\n' "$ZC_MEASURED_VERSION"
	printf 'kernel_src\t%s\n' "${KERNEL_SRC:-}"
	printf 'cpus\t%s\n' "$(nproc)"
	printf 'filters\t%s\n' "${filters[*]:-}"
	printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
} >"$report/meta.tsv"
describe >"$report/revision.txt"
if ! python3 "$ZC_TOP/scripts/gate-report.py" write "$report"; then
	failed=$((failed + 1))
	failures+=("report: junit.xml and summary.md")
fi
if [ ${#failures[@]} -gt 0 ]; then
	printf 'failed: %s\n' "${failures[@]}"
fi
sed 's/^/    /' "$report/revision.txt"
printf 'JUnit:   %s\nsummary: %s\n' "$report/junit.xml" "$report/summary.md"
printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]

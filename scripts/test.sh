#!/usr/bin/env bash
# The project's test command (.ci/run calls it). It installs what is missing, builds the
# harness and the kernels, runs every gate and test, and ends with "N passed, N failed".
# Logs of each step: $ZC_CACHE/test-logs/.
# Usage: scripts/test.sh [PREFIX...]   only the steps whose names start with a PREFIX
#        (e.g. "rust:" "series:"); steps a selected one needs are not added by themselves.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

logs=$ZC_CACHE/test-logs
mkdir -p "$logs"
passed=0
failed=0
failures=()
t0=$(date +%s)

selected() {
	local p
	[ ${#filters[@]} -gt 0 ] || return 0
	for p in "${filters[@]}"; do
		case "$1" in "$p"*) return 0 ;; esac
	done
	return 1
}
filters=("$@")

# step NAME CMD...: one check; its whole output goes to a log, and is shown if it fails.
step() {
	local name=$1 log
	shift
	selected "$name" || return 0
	log=$logs/$(printf '%s' "$name" | tr -c 'A-Za-z0-9_.-' '_').log
	say "[$(($(date +%s) - t0))s] $name"
	if "$@" >"$log" 2>&1; then
		passed=$((passed + 1))
		printf 'PASS %s\n' "$name"
	else
		failed=$((failed + 1))
		failures+=("$name")
		printf 'FAIL %s (log: %s)\n' "$name" "$log"
		tail -n 60 "$log" | sed 's/^/    /'
	fi
}

# counted NAME CMD...: a command whose output says how many checks passed and failed:
# TAP-style "ok - "/"not ok - " lines, libtest "test result:" lines, or "N passed, N failed".
counted() {
	local name=$1 log rc p f
	shift
	selected "$name" || return 0
	log=$logs/$(printf '%s' "$name" | tr -c 'A-Za-z0-9_.-' '_').log
	say "[$(($(date +%s) - t0))s] $name"
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
		tail -n 80 "$log" | sed 's/^/    /'
	else
		printf 'PASS %s: %d passed\n' "$name" "$p"
	fi
}


step "deps: Debian packages" "$ZC_TOP/scripts/deps.sh"
step "rust: cargo fmt --check" cargo fmt --all --check
step "rust: cargo clippy -D warnings" cargo clippy --workspace --all-targets -- -D warnings
counted "rust: host unit tests" cargo test --workspace --lib --bins
counted "series: git am, quilt, checkpatch" "$ZC_TOP/scripts/check-series.sh" apply checkpatch
step "kernel: build base" "$ZC_TOP/scripts/build-kernel.sh" base
# The walk builds the patched kernel one patch at a time and ends on the whole series.
counted "series: bisect build after each patch" "$ZC_TOP/scripts/check-series.sh" build
step "kernel: build patched" "$ZC_TOP/scripts/build-kernel.sh" patched
counted "series: W=1 C=1 on touched objects" "$ZC_TOP/scripts/check-series.sh" warnings
step "kernel: build debug (KASAN, lockdep)" "$ZC_TOP/scripts/build-kernel.sh" debug
counted "uapi: harness constants agree with the installed header" \
	env UBLK_UAPI_INCLUDE="$("$ZC_TOP/scripts/uapi-headers.sh" 2>/dev/null)" UBLK_KERNEL_SRC="$ZC_PATCHED" \
	cargo test -p ublk --test uapi_header
counted "vm: runner tests on the patched kernel" \
	env VMRUN_TEST_KERNEL="$(kernel_image patched)" VMRUN_TEST_EXPECT_RELEASE_SUFFIX=-ublkzc \
	cargo test -p vmrun --test vm
step "vm: patched kernel boots, uname shows the series" \
	sh -c '"$0"/scripts/run-qemu.sh --kernel patched --timeout 120 -- uname -r | grep -- "^6\.1\.[0-9]*-ublkzc$"' "$ZC_TOP"
step "vm: debug kernel (KASAN, lockdep) boots clean" \
	sh -c '"$0"/scripts/run-qemu.sh --kernel debug --timeout 300 -- uname -r | grep -- "^6\.1\.[0-9]*-ublkzc-debug$"' "$ZC_TOP"

# In-guest runs: each gets a fresh run directory; the suite writes TAP and JUnit there.
runs=$ZC_CACHE/test-runs
guest() { # guest NAME KERNEL TIMEOUT CMD...: run CMD in a fresh run dir $runs/NAME
	local name=$1 kernel=$2 timeout=$3
	shift 3
	rm -rf "${runs:?}/$name"
	mkdir -p "$runs/$name"
	"$ZC_TOP/scripts/run-qemu.sh" --kernel "$kernel" --timeout "$timeout" --results "$runs/$name" -- "$@"
}
suite=$ZC_TOP/target/release/ublk-suite
step "suite: build the in-guest suite" "$ZC_TOP/scripts/build-suite.sh"
counted "suite: patched kernel" guest patched patched 1800 "$suite" --label patched
counted "suite: debug kernel (KASAN, lockdep)" guest debug debug 2400 "$suite" --label debug
# The control run: on the base kernel the suite must show exactly what a missing series
# looks like (tests that need it fail, naming the feature; the others pass).
control_run() {
	guest base base 1800 "$suite" --label base
	[ -s "$runs/base/results/suite-base.tap" ] || { echo "the control run left no TAP file"; return 1; }
}
step "suite: control run on the base kernel (failures expected)" control_run
counted "suite: control run shows the expected outcome" \
	"$ZC_TOP/target/release/suite-control" "$runs/base/results/suite-base.tap" "$ZC_TOP/harness/suite/needs-series.txt"
# Patch 2 is a refactor: splice, tee, sendfile and copy_file_range behave as on the base.
transcripts() {
	local t=$ZC_TOP/target/release/splice-transcript f=results/splice-transcript.txt
	guest transcript-base base 600 "$t" && guest transcript-patched patched 600 "$t" || return 1
	diff -u "$runs/transcript-base/$f" "$runs/transcript-patched/$f" || return 1
	echo "identical on base and patched: $(wc -l <"$runs/transcript-base/$f") lines"
}
step "series: patch 2 changes nothing (splice transcript, base vs patched)" transcripts
# A short bench run, so that the bench cannot rot; it asserts no timing.
step "bench: smoke run in the guest (no timing assertions)" "$ZC_TOP/scripts/bench.sh" --smoke

say "[$(($(date +%s) - t0))s] done"
if [ ${#failures[@]} -gt 0 ]; then
	printf 'failed: %s\n' "${failures[@]}"
fi
printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# The project's test command (.ci/run calls it). It installs what is missing, builds the
# harness and the kernels, runs every gate and test, and ends with "N passed, N failed".
# Logs of each step: $ZC_CACHE/test-logs/.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

logs=$ZC_CACHE/test-logs
mkdir -p "$logs"
passed=0
failed=0
failures=()
t0=$(date +%s)

# step NAME CMD...: one check; its whole output goes to a log, and is shown if it fails.
step() {
	local name=$1 log
	shift
	log=$logs/$(tr -c 'A-Za-z0-9_.-' '_' <<<"$name").log
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
	log=$logs/$(tr -c 'A-Za-z0-9_.-' '_' <<<"$name").log
	say "[$(($(date +%s) - t0))s] $name"
	"$@" >"$log" 2>&1
	rc=$?
	read -r p f < <(awk '
		/^ok - /     { p++ }
		/^not ok - / { f++ }
		/^test result: / { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
		/^[0-9]+ passed, [0-9]+ failed/ { p += $1; f += $3 }
		END { print p + 0, f + 0 }' "$log")
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

say "[$(($(date +%s) - t0))s] done"
if [ ${#failures[@]} -gt 0 ]; then
	printf 'failed: %s\n' "${failures[@]}"
fi
printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]

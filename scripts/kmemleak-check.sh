#!/usr/bin/env bash
# Judges what scripts/guest/kmemleak-run.sh left in a run's results directory: passes only
# when kmemleak ran and reported no unreferenced object. One check ("ok - "/"not ok - ",
# and JUnit to $ZC_JUNIT when set).
# Usage: scripts/kmemleak-check.sh RESULTS_DIR
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
junit_begin
dir=${1:?usage: $0 RESULTS_DIR}
notok() { echo "not ok - $*"; junit_case "$*" fail; }
if [ -f "$dir/kmemleak.unavailable" ]; then
	notok "kmemleak did not run: $(cat "$dir/kmemleak.unavailable")"
	exit 1
fi
if [ ! -f "$dir/kmemleak.txt" ]; then
	notok "no kmemleak report in $dir (did the guest run scripts/guest/kmemleak-run.sh?)"
	exit 1
fi
n=$(grep -c '^unreferenced object' "$dir/kmemleak.txt" || true)
if [ "$n" -ne 0 ] || [ -s "$dir/kmemleak.txt" ]; then
	notok "kmemleak: $n unreferenced object(s) after the run:"
	head -n 80 "$dir/kmemleak.txt"
	exit 1
fi
echo "ok - kmemleak: no unreferenced object after the run (two scans)"
junit_case "kmemleak: no unreferenced object after the run (two scans)" pass

#!/usr/bin/env bash
# Judges what scripts/guest/kmemleak-run.sh left in a run's results directory: passes only
# when kmemleak ran and reported no unreferenced object.
# Usage: scripts/kmemleak-check.sh RESULTS_DIR
set -euo pipefail
dir=${1:?usage: $0 RESULTS_DIR}
if [ -f "$dir/kmemleak.unavailable" ]; then
	echo "not ok - kmemleak did not run: $(cat "$dir/kmemleak.unavailable")"
	exit 1
fi
if [ ! -f "$dir/kmemleak.txt" ]; then
	echo "not ok - no kmemleak report in $dir (did the guest run scripts/guest/kmemleak-run.sh?)"
	exit 1
fi
n=$(grep -c '^unreferenced object' "$dir/kmemleak.txt" || true)
if [ "$n" -ne 0 ] || [ -s "$dir/kmemleak.txt" ]; then
	echo "not ok - kmemleak: $n unreferenced object(s) after the run:"
	head -n 80 "$dir/kmemleak.txt"
	exit 1
fi
echo "ok - kmemleak: no unreferenced object after the run (two scans)"

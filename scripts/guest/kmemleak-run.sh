#!/bin/sh
# Runs in the guest of a debug kernel (CONFIG_DEBUG_KMEMLEAK): forgets what kmemleak
# found before CMD (boot-time objects), runs CMD, then scans twice (an object must look
# unreferenced in two scans to be reported) and writes the report to
# $VMRUN_RESULTS/kmemleak.txt. A kernel without a working kmemleak leaves
# kmemleak.unavailable instead, so that the host-side check fails with the reason.
# Usage: kmemleak-run.sh CMD ARGS...      exits with CMD's status
set -u
k=/sys/kernel/debug/kmemleak
out=${VMRUN_RESULTS:?VMRUN_RESULTS is not set: run this in a vmrun guest}
if ! echo clear >"$k" 2>"$out/kmemleak.unavailable"; then
	echo "kmemleak-run: cannot use $k: $(cat "$out/kmemleak.unavailable")" >&2
	"$@"
	exit $?
fi
rm -f "$out/kmemleak.unavailable"
"$@"
rc=$?
echo "kmemleak-run: CMD exited with $rc; scanning for leaks" >&2
echo scan >"$k" && sleep 5 && echo scan >"$k" && cat "$k" >"$out/kmemleak.txt" ||
	echo "the scan failed" >"$out/kmemleak.unavailable"
exit "$rc"

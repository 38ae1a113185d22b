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
# Reports (fixed paths, for CI): results/gate/junit.xml (every step and every check),
# results/gate/summary.md (markdown: revision, base, accelerator, lane, steps, counts, times),
# both printed at the end; ZC_REPORT_DIR moves them. Step logs: $ZC_CACHE/test-logs/.
# The steps, their verdicts (exit statuses and JUnit files) and the reports are the gate
# binary's (harness/gate, `gate run`; docs/gate.md); this script builds it and execs it.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

case "${1:-}" in
-h | --help) sed -n '4,19s/^# \{0,1\}//p' "$0"; exit 0 ;;
esac
# The gate is built with the packages deps.sh installs (a C linker, among others): on a
# fresh machine with only a Rust toolchain they come first. The gate's own first step runs
# deps.sh again, which then finds everything present.
"$ZC_TOP/scripts/deps.sh"
say "building the gate (cargo build --release -p gate)"
(cd "$ZC_TOP" && cargo build --release -q -p gate) || die "building the gate (cargo build --release -p gate) failed"
export ZC_TOP
exec "$ZC_TOP/target/release/gate" run "$@"

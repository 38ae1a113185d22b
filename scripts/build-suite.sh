#!/usr/bin/env bash
# Builds the in-guest test suite (release): the test executables of harness/suite/tests,
# the `ublk-suite` runner and `splice-transcript`, and writes the list of test
# executables (absolute paths; the guest sees the host's root) to
# target/release/ublk-suite.tests, where `ublk-suite` looks for it.
# Usage: scripts/build-suite.sh      (quick when nothing changed)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

cd "$ZC_TOP"
list=$ZC_TOP/target/release/ublk-suite.tests
json=$(cargo test -p ublk-suite --release --no-run --message-format=json) ||
	die "building the suite's tests failed"
cargo build --workspace --release --bins -q || die "building the harness binaries (ublk-suite, ublk, vmrun) failed"

# Integration tests are the artifacts of kind "test"; each has an "executable".
exes=$(printf '%s\n' "$json" | grep '"reason":"compiler-artifact"' | grep '"kind":\["test"\]' |
	grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | sort)
[ -n "$exes" ] || die "cargo reported no test executables for ublk-suite"
tmp=$(mktemp "$list.XXXXXX")
printf '%s\n' "$exes" >"$tmp"
mv "$tmp" "$list"
say "suite: $(wc -l <"$list") test executable(s) listed in $list"

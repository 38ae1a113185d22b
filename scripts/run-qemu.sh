#!/usr/bin/env bash
# Boots a test kernel in QEMU and runs a command in it: by default the in-guest suite.
# Usage: scripts/run-qemu.sh [--kernel patched|base|debug|PATH] [--timeout SECONDS]
#                            [VMRUN-OPTIONS] [-- CMD ARGS...]
#   --kernel FLAVOR  build the flavor if needed (scripts/build-kernel.sh) and boot it
#   --kernel PATH    boot this bzImage as it is                      (default: patched)
#   VMRUN-OPTIONS    passed to `vmrun run`: --timeout, --mem, --cpus, --disk-size, --results,
#                    --accel, --append, --env (see `target/release/vmrun --help`)
#   CMD              default: target/release/ublk-suite
# The exit status is vmrun's: CMD's status on a clean kernel log, 125 for a kernel splat,
# 124 for a timeout, 123 when the VM itself failed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

usage() { sed -n '2,11s/^# \{0,1\}//p' "$0"; }

kernel=patched
opts=()
cmd=()
while [ $# -gt 0 ]; do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--kernel) [ $# -ge 2 ] || die "--kernel needs a value"; kernel=$2; shift 2 ;;
	--kernel=*) kernel=${1#*=}; shift ;;
	--) shift; cmd=("$@"); break ;;
	--*=*) opts+=("$1"); shift ;;
	--*) [ $# -ge 2 ] || die "$1 needs a value"; opts+=("$1" "$2"); shift 2 ;;
	*) die "unexpected argument '$1' (put the command after --; see --help)" ;;
	esac
done

case "$kernel" in
base | patched | debug) image=$("$ZC_TOP/scripts/build-kernel.sh" "$kernel") ;;
*)
	[ -f "$kernel" ] || die "--kernel $kernel: neither a flavor (base, patched, debug) nor a file"
	image=$kernel
	;;
esac

vmrun=$(harness_bin vmrun)
if [ ${#cmd[@]} -eq 0 ]; then
	suite=$ZC_TOP/target/release/ublk-suite
	[ -x "$suite" ] || die "no command given and the default in-guest suite $suite does not exist (the harness/ublk crate provides it; give a command after --)"
	cmd=("$suite")
fi
exec "$vmrun" run --kernel "$image" "${opts[@]}" -- "${cmd[@]}"

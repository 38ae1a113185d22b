#!/usr/bin/env bash
# Boots a test kernel in QEMU and runs a command in it: by default the in-guest suite.
# Works as the first command on a fresh Debian 12 with a Rust toolchain: it installs the
# Debian packages (scripts/deps.sh), builds the kernel flavor, the harness and, for the
# default command, the suite, and says what it is doing.
#
# Usage: scripts/run-qemu.sh [--kernel FLAVOR|BZIMAGE|BUILD-DIR] [OPTIONS] [-e CMD | -- CMD ARGS...]
#   --kernel FLAVOR     base, patched or debug: built if needed (scripts/build-kernel.sh)
#   --kernel BZIMAGE    boot this image as it is                         (default: patched)
#   --kernel BUILD-DIR  a kernel build directory (O=): its arch/x86/boot/bzImage
#   -p, --cpus N        guest CPUs (default 2)
#   -m, --mem SIZE      guest memory: MiB, or a size with a K/M/G/T suffix (default 2G)
#   -a, --append ARGS   extra kernel command-line arguments, last so that they win
#                       (repeatable: -a 'a=1 b' -a c)
#   -e, --exec CMD      run CMD with sh -c in the guest: -e 'uname -r; nproc' is
#                       -- sh -c 'uname -r; nproc'
#   --timeout SECS      kill the VM after SECS seconds (default 300; the suite: 1800,
#                       2400 on the debug kernel; --shell: none)
#   --shell             an interactive root shell on the console instead of CMD (same
#                       mounts, same run directory); `poweroff` or `exit` ends the VM
#   --dry-run           print the QEMU command line and the guest command, boot nothing
#                       (and build no kernel and no suite: the kernel must exist)
#   --disk-size SIZE, --results DIR, --accel auto|kvm|tcg, --env NAME=VALUE
#                       see `target/release/vmrun run --help`
#   --series PATH, --tree DIR --range A..B
#                       the revision of the series the patched/debug flavors are built
#                       with (as scripts/test.sh takes them; default: patches/)
#   --label NAME        the suite's label, which says what the kernel must answer:
#                       patched, debug or base (default: the flavor, or the image's
#                       release: -ublkzc, -ublkzc-debug, -base)
#   CMD                 default: the in-guest suite, target/release/ublk-suite --label
#                       NAME, which scripts/build-suite.sh builds first
# -p, -m, -a and -e are virtme-ng's short options (-p2 and -m2G work too).
# Exit status: vmrun's: CMD's status on a clean kernel log, 125 for a kernel splat, 124
# for a timeout, 123 when the VM itself failed, 2 for bad usage.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
usage_error() { printf 'ERROR: %s (see scripts/run-qemu.sh --help)\n' "$*" >&2; exit 2; }

kernel=patched
opts=()
cmd=()
dry_run=
shell=
results=
timeout=
label=
exec_cmd=
exec_set=
while [ $# -gt 0 ]; do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--kernel) [ $# -ge 2 ] || usage_error "--kernel needs a value"; kernel=$2; shift 2 ;;
	--kernel=*) kernel=${1#*=}; shift ;;
	--dry-run) dry_run=1; opts+=("$1"); shift ;;
	--shell) shell=1; opts+=("$1"); shift ;;
	--results) [ $# -ge 2 ] || usage_error "--results needs a value"; results=$2; opts+=("$1" "$2"); shift 2 ;;
	--results=*) results=${1#*=}; opts+=("$1"); shift ;;
	--timeout) [ $# -ge 2 ] || usage_error "--timeout needs a value"; timeout=$2; opts+=("$1" "$2"); shift 2 ;;
	--timeout=*) timeout=${1#*=}; opts+=("$1"); shift ;;
	--label) [ $# -ge 2 ] || usage_error "--label needs a value"; label=$2; shift 2 ;;
	--label=*) label=${1#*=}; shift ;;
	--series | --tree | --range)
		[ $# -ge 2 ] || usage_error "$1 needs a value"; series_opt "$1" "$2"; shift 2 ;;
	--series=* | --tree=* | --range=*) series_opt "${1%%=*}" "${1#*=}"; shift ;;
	-e | --exec)
		[ $# -ge 2 ] || usage_error "$1 needs a value"
		[ -z "$exec_set" ] || usage_error "-e/--exec given twice"
		exec_set=1; exec_cmd=$2; shift 2 ;;
	-e?* | --exec=*)
		[ -z "$exec_set" ] || usage_error "-e/--exec given twice"
		case "$1" in --exec=*) exec_cmd=${1#*=} ;; *) exec_cmd=${1#-e} ;; esac
		exec_set=1; shift ;;
	--) shift; cmd=("$@"); break ;;
	--cpus=* | --mem=* | --append=* | --disk-size=* | --accel=* | --env=*) opts+=("$1"); shift ;;
	--cpus | --mem | --append | --disk-size | --accel | --env)
		[ $# -ge 2 ] || usage_error "$1 needs a value"; opts+=("$1" "$2"); shift 2 ;;
	# virtme-ng's short options, as the long ones vmrun takes.
	-p | -m | -a)
		[ $# -ge 2 ] || usage_error "$1 needs a value"
		case "$1" in -p) opts+=(--cpus "$2") ;; -m) opts+=(--mem "$2") ;; -a) opts+=(--append "$2") ;; esac
		shift 2 ;;
	-p?*) opts+=(--cpus "${1#-p}"); shift ;;
	-m?*) opts+=(--mem "${1#-m}"); shift ;;
	-a?*) opts+=(--append "${1#-a}"); shift ;;
	-*) usage_error "unknown option '$1'" ;;
	*) usage_error "unexpected argument '$1' (put the command after --)" ;;
	esac
done
if [ -n "$exec_set" ]; then
	[ ${#cmd[@]} -eq 0 ] || usage_error "-e CMD and a command after -- exclude each other"
	cmd=(sh -c "$exec_cmd")
fi
[ -z "$shell" ] || [ ${#cmd[@]} -eq 0 ] || usage_error "--shell and a command exclude each other"
[ -z "$label" ] || [ ${#cmd[@]} -eq 0 ] || usage_error "--label is the suite's; a command of your own takes its own options"

# The release of a bzImage (6.1.192-ublkzc), from its setup header's kernel_version.
image_release() {
	local off
	off=$(od -An -tu2 -j $((0x20E)) -N2 "$1" 2>/dev/null | tr -d ' ') || return 0
	[ -n "$off" ] || return 0
	dd if="$1" bs=1 skip=$((off + 0x200)) count=128 status=none 2>/dev/null | tr '\0' '\n' | head -n 1 | cut -d' ' -f1
}

# What runs: CMD, a shell, or the suite (whose label says which kernel it runs on).
suite_mode=
if [ ${#cmd[@]} -eq 0 ] && [ -z "$shell" ]; then
	suite_mode=1
fi
case "$kernel" in
base | patched | debug) ;;
*)
	if [ -d "$kernel" ]; then
		[ -f "$kernel/arch/x86/boot/bzImage" ] ||
			usage_error "--kernel $kernel: a directory without arch/x86/boot/bzImage (not a built kernel build directory)"
	elif [ ! -f "$kernel" ]; then
		usage_error "--kernel $kernel: neither a flavor (base, patched, debug), a bzImage nor a kernel build directory"
	fi
	;;
esac
if [ -n "$suite_mode" ] && [ -z "$label" ]; then
	case "$kernel" in
	base | patched | debug) label=$kernel ;;
	*)
		kimage=$kernel
		[ ! -d "$kernel" ] || kimage=$kernel/arch/x86/boot/bzImage
		release=$(image_release "$kimage")
		case "$release" in
		*-ublkzc-debug) label=debug ;;
		*-ublkzc) label=patched ;;
		*-base) label=base ;;
		*) usage_error "cannot tell which kernel $kimage is (release '${release:-?}'): give --label patched, debug or base" ;;
		esac
		;;
	esac
fi

t0=$(date +%s)
progress() { say "run-qemu [$(($(date +%s) - t0))s]: $*"; }

# 1. Debian packages (quick when they are all there).
if [ -z "$dry_run" ]; then
	progress "checking the Debian packages (scripts/deps.sh)"
	"$ZC_TOP/scripts/deps.sh"
fi

# 2. The kernel.
case "$kernel" in
base | patched | debug)
	if [ -n "$dry_run" ]; then
		image=$(kernel_image "$kernel")
		[ -f "$image" ] || die "--dry-run builds nothing, and the $kernel kernel is not built yet ($image; scripts/build-kernel.sh $kernel builds it)"
	else
		progress "kernel $kernel (scripts/build-kernel.sh $kernel; the first build takes a while)"
		image=$("$ZC_TOP/scripts/build-kernel.sh" "$kernel")
	fi
	if [ "$kernel" != base ]; then
		# The revision under test, in every report.
		series_resolve
		series_describe | sed 's/^/    /' >&2
	fi
	;;
*) image=$kernel ;;
esac

# 3. The harness, and the suite when it is what runs.
progress "building the harness (cargo build --release)"
vmrun=$(harness_bin vmrun)
if [ -n "$suite_mode" ]; then
	if [ -z "$dry_run" ]; then
		progress "building the in-guest suite (scripts/build-suite.sh)"
		"$ZC_TOP/scripts/build-suite.sh"
	fi
	cmd=("$ZC_TOP/target/release/ublk-suite" --label "$label")
	if [ -z "$timeout" ]; then
		# As scripts/test.sh gives it: the whole suite takes minutes under TCG.
		case "$label" in debug*) timeout=2400 ;; *) timeout=1800 ;; esac
		opts+=(--timeout "$timeout")
	fi
fi

# 4. The run.
if [ -z "$suite_mode" ] || [ -n "$dry_run" ]; then
	[ -n "$dry_run" ] || progress "booting $image"
	exec "$vmrun" run --kernel "$image" "${opts[@]}" -- "${cmd[@]}"
fi
# The suite: keep the run directory, to end with the suite's own verdict.
if [ -z "$results" ]; then
	results=$ZC_CACHE/runs/$(date +%Y%m%d-%H%M%S)-$$
	opts+=(--results "$results")
fi
progress "booting $image and running the in-guest suite"
rc=0
"$vmrun" run --kernel "$image" "${opts[@]}" -- "${cmd[@]}" || rc=$?
verdict=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$results/console.log" 2>/dev/null | tail -n 1 || true)
progress "done: exit status $rc; run directory $results (console.log, results/: TAP and JUnit)"
if [ -n "$verdict" ]; then
	printf 'suite: %s\n' "$verdict"
else
	printf 'suite: no verdict (the suite did not finish; exit status %s)\n' "$rc"
fi
exit "$rc"

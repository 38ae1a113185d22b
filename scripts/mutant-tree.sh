#!/usr/bin/env bash
# The kernel side of the mutation gate (`gate mutants`, which scripts/mutants.sh runs):
# git and make in the mutants' worktree of the kernel cache, $ZC_CACHE/src/mutant, detached
# at refs/revs/SERIES-HASH (never the gate's own trees). The decisions (which mutants,
# baselines, cache keys, verdicts) are the gate's; this applies a patch and builds.
# Usage:
#   scripts/mutant-tree.sh env       KEY=value lines: cache (ZC_CACHE), hash (the series'),
#                                    default (1 for patches/), origin, frags-FLAVOR (the
#                                    config fragments of patched and debug); fails when the
#                                    series is not applied yet
#   scripts/mutant-tree.sh worktree  creates the worktree when it is missing
#   scripts/mutant-tree.sh build FLAVOR PATCH|- NAME DEST
#                                    the series plus PATCH (- for none; NAME names it in
#                                    messages) in FLAVOR: patched or debug, a bzImage copied
#                                    to DEST, out of tree in src/mutant/out-mutant or
#                                    out-mutant-debug, with ccache and the flavor's config
#                                    and LOCALVERSION (reconfigured when
#                                    $ZC_MUTANT_CONFIG_FP, the fragments' fingerprint,
#                                    changes); or uapi, make headers_install, whose include
#                                    directory becomes DEST. A kernel build takes the
#                                    kernel lock.
#                                    Exit status: 0 built, 2 PATCH does not apply, 1 the
#                                    build failed (the end of its log on stderr)
#   scripts/mutant-tree.sh reset     the worktree back at the series
# Progress and logs go to stderr.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

wt=$ZC_CACHE/src/mutant
cmd=${1:-}
[ -n "$cmd" ] || die "usage: scripts/mutant-tree.sh env|worktree|build|reset ..."
shift

series_resolve
hash=$(series_hash)
ref=refs/revs/$hash
zgit -C "$ZC_SRC" rev-parse -q --verify "$ref^{commit}" >/dev/null ||
	die "the series ($hash) is not applied yet: run scripts/kernel-tree.sh (test.sh's apply step does)"

case $cmd in
env)
	printf 'cache=%s\nhash=%s\n' "$ZC_CACHE" "$hash"
	if series_is_default; then echo default=1; else echo default=0; fi
	printf 'origin=%s\n' "$ZC_SERIES_ORIGIN"
	printf 'frags-patched=%s\n' "$(kernel_frags patched | xargs)"
	printf 'frags-debug=%s\n' "$(kernel_frags debug | xargs)"
	;;
worktree)
	if [ ! -e "$wt/.git" ]; then
		zc_lock
		say "mutants: worktree $wt at $ref"
		zgit -C "$ZC_SRC" worktree prune
		zgit -C "$ZC_SRC" worktree add -q --detach "$wt" "$ref"
	fi
	;;
reset)
	# so that nothing half-mutated is left behind
	[ ! -e "$wt/.git" ] || zgit -C "$wt" checkout -q -f --detach "$ref"
	;;
build)
	[ $# -eq 4 ] || die "usage: scripts/mutant-tree.sh build FLAVOR PATCH|- NAME DEST"
	flavor=$1 patch=$2 name=$3 dest=$4
	case $flavor in
	patched) out=$wt/out-mutant ;;
	debug) out=$wt/out-mutant-debug ;;
	uapi) out=$wt/out-mutant-headers ;;
	*) die "unknown flavor $flavor" ;;
	esac
	[ -e "$wt/.git" ] || die "no worktree $wt (scripts/mutant-tree.sh worktree makes it)"
	# A kernel build waits for the gate's (two at once would halve both); headers_install
	# is too small to wait for one.
	[ "$flavor" = uapi ] || zc_lock
	# The series as committed (only the files the last mutant changed are rewritten), then
	# the mutant.
	zgit -C "$wt" checkout -q -f --detach "$ref"
	if [ "$patch" != - ] && ! zgit -C "$wt" apply "$patch" >&2; then
		warn "mutant $name does not apply on the series $hash"
		exit 2
	fi
	mkdir -p "$(dirname "$dest")"
	if [ "$flavor" = uapi ]; then
		s=${dest%/include}
		[ "$s" != "$dest" ] || die "the headers' DEST must end in /include"
		rm -rf "$s.tmp"
		say "mutants: make headers_install for $name"
		if ! make -s -C "$wt" O="$out" INSTALL_HDR_PATH="$s.tmp" headers_install >"$wt/.zc-headers.log" 2>&1; then
			tail -n 30 "$wt/.zc-headers.log" >&2
			warn "mutant ${name}: make headers_install failed"
			exit 1
		fi
		rm -rf "$s"
		mv "$s.tmp" "$s"
		exit 0
	fi
	fp=${ZC_MUTANT_CONFIG_FP:?the config fragments fingerprint}
	if [ "$(cat "$out/.zc-mutant-config" 2>/dev/null)" != "$fp" ]; then
		say "mutants: configuring $out ($flavor)"
		kernel_configure "$flavor" "$wt" "$out"
		printf '%s\n' "$fp" >"$out/.zc-mutant-config"
	fi
	log=$out/.zc-build.log
	s=$(date +%s)
	say "mutants: building $name ($flavor) in $out"
	# shellcheck disable=SC2016 # the inner shell expands them
	if ! nice -n 10 bash -c '. "$0/scripts/lib.sh" && kmake "$1" "$2" bzImage' "$ZC_TOP" "$wt" "$out" >"$log" 2>&1; then
		grep -v '^  [A-Z0-9_]\{2,\} ' "$log" | tail -n 30 >&2 || true
		warn "mutant ${name}: the $flavor build failed (log: $log)"
		exit 1
	fi
	say "mutants: built in $(($(date +%s) - s)) s"
	cp "$out/arch/x86/boot/bzImage" "$dest.tmp"
	mv "$dest.tmp" "$dest"
	;;
*) die "unknown command $cmd (env, worktree, build, reset)" ;;
esac

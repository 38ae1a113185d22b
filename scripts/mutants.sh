#!/usr/bin/env bash
# The mutation gate: deliberately broken variants of the series must each be caught.
# Usage: scripts/mutants.sh [--all | --sample N] [--list | --list-markdown] [NAME...]
#   (default)   a rotating sample of 3 mutants (by the UTC day, or ZC_MUTANT_SEED), as CI
#               runs it; with ZC_LANE=fast, none that needs the debug kernel
#   --all       every mutant (the full run; its time is in docs/mutants.md)
#   --sample N  a rotating sample of N mutants
#   NAME...     these mutants (patches/mutants/NAME.patch); a known survivor named here is
#               run too, and must still survive
#   --list      print the mutants, their checks and the known survivors; run nothing
#   --list-markdown  the same as the markdown table of docs/mutants.md; run nothing
# A mutant is a small diff in patches/mutants/ on top of the applied series (git apply).
# Its header says what it breaks and which check must catch it:
#   # check: suite ARGS...   ublk-suite --label patched ARGS, on the mutant kernel
#   # check: debug ARGS...   ublk-suite --label debug ARGS, on the mutant debug kernel
#   # check: transcript      splice-transcript: must differ from the unmutated series' (which
#                            the gate's transcript step shows equal to the base kernel's)
#   # check: uapi            cargo test -p ublk --test uapi_header against the mutant tree's
#                            UAPI headers (make headers_install): for a mutant of a header
#                            that no kernel code uses; nothing is built but the headers
#   # timeout: SECS          per test executable (default 240); the VM gets 90 s more
#   # new in v3: WHAT        (any other "# ..." line) a comment: what the mutant puts back
#   # known-survivor: WHY    listed with its reason, not run by --all or the sample: no
#                            userspace test can catch it (run it by name to check that)
# The mutants are built in a worktree of the kernel cache ($ZC_CACHE/src/mutant, detached
# at refs/revs/SERIES-HASH, never the gate's own trees), out of tree in src/mutant/out-mutant
# and out-mutant-debug, with ccache and the flavor's config and LOCALVERSION: a mutant
# recompiles only the file it touches. Each check first runs on the unmutated series and
# must pass there, so that only a mutation can fail it. Images and verdicts are cached
# in $ZC_CACHE/mutants, keyed by the series, the mutant, the config and the suite binaries.
# Output: one line per mutant (TAP: "ok - NAME: caught by TEST", "not ok - NAME: SURVIVED"; and
# with ZC_JUNIT set, one JUnit case per mutant there, lib.sh's junit_case),
# then "caught N of M"; the exit status is 1 if a mutant survived or did not build.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
junit_begin

usage() { sed -n '3,11s/^# \{0,1\}//p' "$0"; }
mode=sample
sample=3
list=0
names=()
while [ $# -gt 0 ]; do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--all) mode=all; shift ;;
	--sample) [ -n "${2:-}" ] || die "--sample needs a number"; mode=sample; sample=$2; shift 2 ;;
	--list) list=1; shift ;;
	--list-markdown) list=md; shift ;;
	-*) die "unknown option $1 (see --help)" ;;
	*) names+=("${1%.patch}"); mode=named; shift ;;
	esac
done

mdir=$ZC_TOP/patches/mutants
cache=$ZC_CACHE/mutants
wt=$ZC_CACHE/src/mutant
t_start=$(date +%s)

field() { sed -n "s/^# $2: *//p" "$1" | head -n 1; } # field PATCH NAME
# The header's text of a field, continuation lines ("#        ...") joined.
field_long() {
	awk -v f="# $2:" 'index($0, f) == 1 { on = 1; s = substr($0, length(f) + 1); next }
		on && /^#  +/ { sub(/^# +/, ""); s = s " " $0; next }
		{ on = 0 }
		END { sub(/^ +/, "", s); print s }' "$1"
}

# --- The mutants ------------------------------------------------------------------------
mapfile -t all < <(find "$mdir" -maxdepth 1 -name '*.patch' -printf '%f\n' 2>/dev/null | sed 's/\.patch$//' | LC_ALL=C sort)
[ ${#all[@]} -gt 0 ] || die "no mutants in $mdir"
runnable=()
survivors=()
for m in "${all[@]}"; do
	p=$mdir/$m.patch
	[ -n "$(field "$p" check)" ] || die "$p has no '# check:' line"
	if [ -n "$(field "$p" known-survivor)" ]; then survivors+=("$m"); else runnable+=("$m"); fi
done
if [ "$list" = 1 ]; then
	for m in "${all[@]}"; do
		p=$mdir/$m.patch
		printf '%-24s %s\n' "$m" "$(field_long "$p" mutant)"
		printf '%-24s   check: %s\n' "" "$(field "$p" check)"
		why=$(field_long "$p" known-survivor)
		[ -z "$why" ] || printf '%-24s   known survivor: %s\n' "" "$why"
	done
	exit 0
fi
# The same from the headers alone, as docs/mutants.md's table (scripts/tests/mutants-table.sh
# checks that the file holds it). The patch is the name's: p3- breaks 3/N.
if [ "$list" = md ]; then
	cell() { local s=${1//|/\\|}; printf '%s' "${s:-no}"; } # a table cell: | escaped
	printf '| mutant | patch | breaks | check | known survivor |\n|---|---|---|---|---|\n'
	for m in "${all[@]}"; do
		p=$mdir/$m.patch
		new=$(field "$p" "new in v3")
		why=$(field_long "$p" known-survivor)
		n=${m%%-*}
		printf '| `%s`%s | %s | %s | `%s` | %s |\n' "$m" "${new:+ (new in v3: ${new%% *})}" "${n#p}" \
			"$(cell "$(field_long "$p" mutant)")" "$(cell "$(field "$p" check)")" "$(cell "${why:+yes: $why}")"
	done
	exit 0
fi

case $mode in
all) chosen=("${runnable[@]}") ;;
named)
	# A known survivor named here is run too: it must still survive.
	chosen=()
	for m in "${names[@]}"; do
		[ -f "$mdir/$m.patch" ] || die "no mutant $m (see --list)"
		chosen+=("$m")
	done
	;;
sample)
	# The fast lane builds no debug kernel: its sample leaves the debug checks out.
	if [ "${ZC_LANE:-}" = fast ]; then
		pool=()
		for m in "${runnable[@]}"; do
			read -r kind _ <<<"$(field "$mdir/$m.patch" check)"
			[ "$kind" = debug ] || pool+=("$m")
		done
		runnable=("${pool[@]}")
	fi
	n=${#runnable[@]}
	[ "$sample" -ge 1 ] 2>/dev/null || die "--sample wants a positive number"
	[ "$sample" -le "$n" ] || sample=$n
	seed=${ZC_MUTANT_SEED:-$(($(date -u +%s) / 86400))}
	chosen=()
	for ((k = 0; k < sample; k++)); do chosen+=("${runnable[$(((seed * sample + k) % n))]}"); done
	say "mutants: sample $seed: ${chosen[*]} (of ${#runnable[@]}; scripts/mutants.sh --all runs every one)"
	;;
esac

# --- The series, the worktree, the suite ------------------------------------------------
series_resolve
hash=$(series_hash)
ref=refs/revs/$hash
zgit -C "$ZC_SRC" rev-parse -q --verify "$ref^{commit}" >/dev/null ||
	die "the series ($hash) is not applied yet: run scripts/kernel-tree.sh (test.sh's apply step does)"
mkdir -p "$cache/images" "$cache/verdicts" "$cache/runs"
# One run at a time: they share the worktree and its build directories.
exec 8>"$cache/.lock"
if ! flock -n 8; then
	say "mutants: waiting for another scripts/mutants.sh ($cache/.lock)"
	flock 8
fi
if [ ! -e "$wt/.git" ]; then
	say "mutants: worktree $wt at $ref"
	zgit -C "$ZC_SRC" worktree prune
	zgit -C "$ZC_SRC" worktree add -q --detach "$wt" "$ref"
fi
"$ZC_TOP/scripts/build-suite.sh" >&2
suite=$ZC_TOP/target/release/ublk-suite
transcript=$ZC_TOP/target/release/splice-transcript
# The suite binaries decide a verdict as much as the kernel does.
suite_fp=$({
	sha256sum "$suite" "$transcript"
	xargs sha256sum <"$ZC_TOP/target/release/ublk-suite.tests"
} | sha256sum | cut -c1-16)

frags_fp() {
	[ "$1" != uapi ] || { echo headers; return; }
	for f in $(kernel_frags "$1"); do sha256sum <"$ZC_TOP/kernel-config/$f"; done | sha256sum | cut -c1-16
}
# The flavor a check's kind runs on: the kernel it boots, or uapi (installed headers only).
kind_flavor() {
	case $1 in
	debug) echo debug ;;
	uapi) echo uapi ;;
	*) echo patched ;;
	esac
}
# The uapi check's own inputs: the test and the harness's side of the ABI.
uapi_fp=$(cat "$ZC_TOP/harness/ublk/tests/uapi_header.rs" "$ZC_TOP/harness/ublk/src/uapi.rs" | sha256sum | cut -c1-16)

# image FLAVOR MUTANT|-: builds (or finds cached) the kernel of the series plus the mutant;
# prints the image's path (for the flavor uapi: the include directory that make
# headers_install fills). On a build failure prints nothing and returns 1.
image() {
	local flavor=$1 m=$2 key out img log s patch=
	[ "$m" = - ] || patch=$mdir/$m.patch
	key=$({
		echo "$flavor $hash"
		frags_fp "$flavor"
		[ -z "$patch" ] || sha256sum <"$patch"
	} | sha256sum | cut -c1-16)
	img=$cache/images/$flavor-$key.bzImage
	[ "$flavor" != uapi ] || img=$cache/images/uapi-$key/include
	if [ -f "$img" ] || [ -f "$img/linux/ublk_cmd.h" ]; then
		printf '%s\n' "$img"
		return 0
	fi
	case $flavor in
	patched) out=$wt/out-mutant ;;
	debug) out=$wt/out-mutant-debug ;;
	uapi) out=$wt/out-mutant-headers ;;
	esac
	# The series as committed (only the files the last mutant changed are rewritten), then
	# the mutant.
	zgit -C "$wt" checkout -q -f --detach "$ref"
	if [ -n "$patch" ] && ! zgit -C "$wt" apply "$patch" >&2; then
		warn "mutant $m does not apply on the series $hash"
		return 2
	fi
	if [ "$flavor" = uapi ]; then
		s=${img%/include}
		rm -rf "$s.tmp"
		say "mutants: make headers_install for ${m/#-/the unmutated series}"
		if ! make -s -C "$wt" O="$out" INSTALL_HDR_PATH="$s.tmp" headers_install >"$wt/.zc-headers.log" 2>&1; then
			tail -n 30 "$wt/.zc-headers.log" >&2
			warn "mutant ${m}: make headers_install failed"
			return 1
		fi
		rm -rf "$s"
		mv "$s.tmp" "$s"
		printf '%s\n' "$img"
		return 0
	fi
	if [ "$(cat "$out/.zc-mutant-config" 2>/dev/null)" != "$(frags_fp "$flavor")" ]; then
		say "mutants: configuring $out ($flavor)"
		kernel_configure "$flavor" "$wt" "$out"
		frags_fp "$flavor" >"$out/.zc-mutant-config"
	fi
	log=$out/.zc-build.log
	s=$(date +%s)
	say "mutants: building ${m/#-/the unmutated series} ($flavor) in $out"
	# shellcheck disable=SC2016 # the inner shell expands them
	if ! nice -n 10 bash -c '. "$0/scripts/lib.sh" && kmake "$1" "$2" bzImage' "$ZC_TOP" "$wt" "$out" >"$log" 2>&1; then
		grep -v '^  [A-Z0-9_]\{2,\} ' "$log" | tail -n 30 >&2 || true
		warn "mutant ${m}: the $flavor build failed (log: $log)"
		return 1
	fi
	say "mutants: built in $(($(date +%s) - s)) s"
	cp "$out/arch/x86/boot/bzImage" "$img.tmp"
	mv "$img.tmp" "$img"
	printf '%s\n' "$img"
}

# run_check NAME IMAGE KIND TIMEOUT ARGS...: runs a check in a fresh run directory
# $cache/runs/NAME; its log is $cache/runs/NAME.log. Returns the run's status.
run_check() {
	local name=$1 img=$2 kind=$3 t=$4 dir
	shift 4
	dir=$cache/runs/$name
	rm -rf "$dir"
	mkdir -p "$dir"
	local -a cmd
	case $kind in
	suite) cmd=("$suite" --label patched --timeout "$t" "$@") ;;
	debug) cmd=("$suite" --label debug --timeout "$t" "$@") ;;
	transcript) cmd=("$transcript") ;;
	uapi)
		# No VM: the test builds a C program against the installed headers. It is
		# compiled first, outside the time limit, so that only the test is timed.
		(cd "$ZC_TOP" && nice -n 10 cargo test -p ublk --test uapi_header --no-run &&
			UBLK_UAPI_INCLUDE=$img timeout "$t" nice -n 10 \
				cargo test -p ublk --test uapi_header) >"$dir.log" 2>&1
		return
		;;
	*) die "unknown check kind '$kind'" ;;
	esac
	nice -n 10 "$ZC_TOP/scripts/run-qemu.sh" --kernel "$img" --timeout "$((t + 90))" \
		--results "$dir" -- "${cmd[@]}" >"$dir.log" 2>&1
}

# What made a failed run fail: the failing tests, a kernel splat, a timeout, a transcript diff.
caught_by() { # caught_by LOG STATUS CHECK-ARGS...
	local log=$1 rc=$2 tests splat what
	shift 2
	# the suite's summary, or (the uapi check, cargo test) libtest's own lines
	tests=$(sed -n '/^ublk-suite: failed tests:/,/^$/{s/^  \([^ ]*\): .*/\1/p}' "$log")
	[ -n "$tests" ] || grep -q '^vmrun:' "$log" ||
		tests=$(sed -n 's/^test \([^ ]*\) \.\.\. FAILED$/uapi_header::\1/p' "$log")
	tests=$(printf '%s' "$tests" | sed '/^$/d' |
		awk 'NR == 1 { first = $0 } END { if (NR > 1) printf "%s and %d more\n", first, NR - 1; else if (NR) print first }')
	splat=$(sed -n 's/^!!!   line [0-9]*: //p' "$log" | head -n 1 | sed 's/^\([A-Z][A-Za-z ]*\): \1: /\1: /' | cut -c1-110)
	if [ -n "$splat" ]; then
		printf 'the kernel log (%s)%s' "$splat" "${tests:+, and $tests}"
	elif [ -n "$tests" ]; then
		printf '%s' "$tests"
	elif [ "$rc" -eq 124 ]; then
		what=$*
		printf 'the VM timeout: %s hung' "${what//--suite /}"
	else
		printf 'the run (exit status %s, log %s)' "$rc" "$log"
	fi
}

# --- The unmutated series passes every check --------------------------------------------
declare -A need=()
for m in "${chosen[@]}"; do
	read -r kind _ <<<"$(field "$mdir/$m.patch" check)"
	need[$kind]=1
done
transcript_ref=
for kind in "${!need[@]}"; do
	flavor=$(kind_flavor "$kind")
	# The baseline runs the union of the chosen mutants' test executables and filters.
	suites=()
	filters=()
	for m in "${chosen[@]}"; do
		read -r -a c <<<"$(field "$mdir/$m.patch" check)"
		[ "${c[0]}" = "$kind" ] || continue
		for ((i = 1; i < ${#c[@]}; i++)); do
			if [ "${c[i]}" = --suite ]; then
				i=$((i + 1))
				printf '%s\n' "${suites[@]}" | grep -qxF -- "${c[i]}" || suites+=("${c[i]}")
			else
				printf '%s\n' "${filters[@]}" | grep -qxF -- "${c[i]}" || filters+=("${c[i]}")
			fi
		done
	done
	args=()
	for a in "${suites[@]}"; do args+=(--suite "$a"); done
	args+=("${filters[@]}")
	key=$(printf '%s\n' "$hash" "$suite_fp" "$(frags_fp "$flavor")" "$kind" "${args[@]}" | sha256sum | cut -c1-16)
	[ "$kind" != uapi ] || key=$(printf '%s\n' "$key" "$uapi_fp" | sha256sum | cut -c1-16)
	img=$(image "$flavor" -) || die "the unmutated series does not build in $wt"
	if [ -f "$cache/verdicts/baseline-$key" ]; then
		say "mutants: baseline $kind passed before on this series and suite (cached)"
	else
		say "mutants: baseline: $kind ${args[*]} on the unmutated series"
		s=$(date +%s)
		rc=0
		run_check "baseline-$kind" "$img" "$kind" 300 "${args[@]}" || rc=$?
		[ "$rc" -eq 0 ] || {
			tail -n 40 "$cache/runs/baseline-$kind.log" >&2
			die "the unmutated series fails the check '$kind ${args[*]}' (log: $cache/runs/baseline-$kind.log): no mutant can be judged by it"
		}
		say "mutants: baseline $kind passed in $(($(date +%s) - s)) s"
		[ "$kind" != transcript ] || cp "$cache/runs/baseline-$kind/results/splice-transcript.txt" "$cache/verdicts/transcript-$key.txt"
		: >"$cache/verdicts/baseline-$key"
	fi
	[ "$kind" != transcript ] || transcript_ref=$cache/verdicts/transcript-$key.txt
done

# --- The mutants --------------------------------------------------------------------------
caught=0
total=0
bad=0
is_survivor() { [ -n "$(field "$mdir/$1.patch" known-survivor)" ]; }
for m in "${survivors[@]}"; do
	printf '%s\n' "${chosen[@]}" | grep -qxF -- "$m" ||
		printf '# known survivor (not run): %s: %s\n' "$m" "$(field_long "$mdir/$m.patch" known-survivor)"
done
for m in "${chosen[@]}"; do
	p=$mdir/$m.patch
	is_survivor "$m" || total=$((total + 1))
	read -r -a c <<<"$(field "$p" check)"
	kind=${c[0]}
	t=$(field "$p" timeout)
	t=${t:-240}
	flavor=$(kind_flavor "$kind")
	key=$(printf '%s\n' "$hash" "$suite_fp" "$(frags_fp "$flavor")" "$(sha256sum <"$p")" | sha256sum | cut -c1-16)
	[ "$kind" != uapi ] || key=$(printf '%s\n' "$key" "$uapi_fp" | sha256sum | cut -c1-16)
	if [ -f "$cache/verdicts/$m-$key" ]; then
		line=$(cat "$cache/verdicts/$m-$key")
		printf '%s (cached)\n' "$line"
	else
		s=$(date +%s)
		rc=0
		img=$(image "$flavor" "$m") || rc=$?
		if [ "$rc" -eq 2 ] && ! series_is_default; then
			# The mutants are written against patches/; another revision may have moved on.
			printf 'ok - %s: does not apply to this revision (%s) # SKIP\n' "$m" "$ZC_SERIES_ORIGIN"
			junit_case "$m: does not apply to this revision ($ZC_SERIES_ORIGIN) # SKIP" pass
			is_survivor "$m" || total=$((total - 1))
			continue
		elif [ "$rc" -ne 0 ]; then
			line="not ok - $m: BROKEN: does not $([ "$rc" -eq 2 ] && echo apply || echo build) on series $hash (fix the mutant)"
			printf '%s\n' "$line"
			junit_case "${line#not ok - }" fail
			bad=$((bad + 1))
			continue
		fi
		b=$(($(date +%s) - s))
		s=$(date +%s)
		rc=0
		run_check "$m" "$img" "$kind" "$t" "${c[@]:1}" || rc=$?
		r=$(($(date +%s) - s))
		log=$cache/runs/$m.log
		if [ "$kind" = transcript ]; then
			out=$cache/runs/$m/results/splice-transcript.txt
			[ -s "$transcript_ref" ] || die "no transcript of the unmutated series ($transcript_ref)"
			if [ "$rc" -ne 0 ]; then
				by=$(caught_by "$log" "$rc" "${c[@]:1}")
			elif [ -f "$out" ] && ! cmp -s "$out" "$transcript_ref"; then
				n=$(diff "$transcript_ref" "$out" | grep -c '^[<>]' || true)
				by="the splice transcript ($n lines differ from the unmutated series')"
				rc=1
			fi
		elif [ "$rc" -ne 0 ]; then
			by=$(caught_by "$log" "$rc" "${c[@]:1}")
		fi
		if is_survivor "$m" && [ "$rc" -ne 0 ]; then
			line="not ok - $m: a known survivor is caught now, by $by: drop its known-survivor line"
		elif is_survivor "$m"; then
			line="ok - $m: known survivor, still survives its check ($kind ${c[*]:1}; build ${b} s, run ${r} s)"
		elif [ "$rc" -ne 0 ]; then
			line="ok - $m: caught by $by (build ${b} s, $kind run ${r} s)"
		else
			line="not ok - $m: SURVIVED: its check passed ($kind ${c[*]:1}; log $log)"
		fi
		printf '%s\n' "$line"
		# Only verdicts are cached, never a broken build.
		printf '%s\n' "$line" >"$cache/verdicts/$m-$key"
	fi
	case $line in
	ok*)
		is_survivor "$m" || caught=$((caught + 1))
		junit_case "${line#ok - }" pass
		;;
	*)
		! is_survivor "$m" || bad=$((bad + 1))
		junit_case "${line#not ok - }" fail
		;;
	esac
done
# The worktree goes back to the series, so that nothing half-mutated is left behind.
zgit -C "$wt" checkout -q -f --detach "$ref"
say "mutants: ${#chosen[@]} run in $(($(date +%s) - t_start)) s; ${#survivors[@]} known survivor(s) listed; logs in $cache/runs"
printf 'caught %d of %d\n' "$caught" "$total"
[ "$caught" -eq "$total" ] && [ "$bad" -eq 0 ]

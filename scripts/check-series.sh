#!/usr/bin/env bash
# Quality gates of the revision under test (patches/series by default; --series PATH or
# --tree DIR --range A..B for another, see lib.sh), each printed as "ok - NAME" or
# "not ok - NAME" (and, with ZC_JUNIT set, as JUnit there: lib.sh's junit_case):
#   apply     git am and quilt push -a on the base, with the same result;
#   checkpatch  scripts/checkpatch.pl --strict: 0 errors, 0 warnings per patch;
#   build     after each patch the kernel builds with the project's config (bisectable).
#             The walk ends on the last patch with scripts/build-kernel.sh patched: that
#             build is the patched kernel itself. ZC_LANE=fast builds the whole kernel only
#             there and, after the other patches, the objects of the .c files touched so far;
#   W=1/sparse  make W=1 C=1 on the .c files a patch touches adds no warning over the base.
# Usage: scripts/check-series.sh [--series PATH | --tree DIR --range A..B]
#                                [apply|checkpatch|build|warnings]...     (default: all)
# Results are cached per patch tree: an unchanged series is not rebuilt, and says so.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
junit_begin

gates=()
while [ $# -gt 0 ]; do
	case "$1" in
	--series | --tree | --range) series_opt "$1" "${2:-}"; shift 2 ;;
	*) gates+=("$1"); shift ;;
	esac
done
zc_lock
series_resolve
"$ZC_TOP/scripts/kernel-tree.sh"
mapfile -t patches < <(series_patches)
[ ${#patches[@]} -gt 0 ] || { say "check-series: $ZC_SERIES_DIR/series is empty, nothing to check"; exit 0; }
branch=$(series_branch)
say "check-series: $ZC_SERIES_ORIGIN, ${#patches[@]} patches, branch $branch of $ZC_PATCHED"
[ ${#gates[@]} -gt 0 ] || gates=(apply checkpatch build warnings)
failed=0
ok() { printf 'ok - %s\n' "$*"; junit_case "$*" pass; }
notok() { printf 'not ok - %s\n' "$*"; failed=$((failed + 1)); junit_case "$*" fail; }
stampdir=$ZC_CACHE/gates
mkdir -p "$stampdir"

# git am and quilt run in a sparse worktree that holds only the files the series touches
# (git keeps the others in the index, so the trees compare whole): seconds, where checking
# out the whole kernel took minutes.
gate_apply() {
	local wt=$ZC_CACHE/src/gate-apply am_tree quilt_tree out
	local -a paths
	zgit -C "$ZC_SRC" worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
	zgit -C "$ZC_SRC" worktree prune
	zgit -C "$ZC_SRC" worktree add -q --no-checkout --detach "$wt" base
	mapfile -t paths < <(zgit -C "$ZC_SRC" log --no-renames --format= --name-only "base..$branch" | sed '/^$/d' | sort -u)
	zgit -C "$wt" sparse-checkout set --no-cone "${paths[@]/#//}"
	zgit -C "$wt" checkout -q --detach base
	if out=$(zgit -C "$wt" am -q "${patches[@]}" 2>&1); then
		am_tree=$(zgit -C "$wt" rev-parse 'HEAD^{tree}')
		ok "apply: git am of ${#patches[@]} patches on $(zgit -C "$ZC_SRC" log -1 --format=%s base)"
	else
		printf '%s\n' "$out" >&2
		zgit -C "$wt" am --abort >/dev/null 2>&1 || true
		notok "apply: git am fails: $(grep -m1 '^Patch failed at' <<<"$out" || echo 'see above')"
		am_tree=none
	fi
	zgit -C "$wt" checkout -q -f --detach base
	if out=$(cd "$wt" && QUILT_PATCHES="$ZC_SERIES_DIR" QUILT_PC="$wt/.pc" quilt push -a -q 2>&1); then
		rm -rf "$wt/.pc"
		zgit -C "$wt" add -A
		quilt_tree=$(zgit -C "$wt" write-tree)
		if [ "$quilt_tree" = "$am_tree" ]; then
			ok "apply: quilt push -a gives the same tree as git am ($quilt_tree)"
		else
			notok "apply: quilt push -a tree $quilt_tree differs from git am tree $am_tree"
		fi
	else
		printf '%s\n' "$out" >&2
		notok "apply: quilt push -a fails: $(grep -m1 '^Applying patch' <<<"$out" | tail -n 1 || echo 'see above')"
	fi
	zgit -C "$ZC_SRC" worktree remove --force "$wt"
}

gate_checkpatch() {
	local p out summary
	for p in "${patches[@]}"; do
		out=$(cd "$ZC_SRC" && { scripts/checkpatch.pl --strict "$p" 2>&1 || true; })
		summary=$(grep -E '^total: ' <<<"$out" || echo "total: no summary")
		if grep -qE '^total: 0 errors, 0 warnings' <<<"$out"; then
			ok "checkpatch --strict $(basename "$p"): $summary"
		else
			printf '%s\n' "$out" >&2
			notok "checkpatch --strict $(basename "$p"): $summary"
		fi
	done
}

# Commit i of the series (1-based) in the patched tree.
series_commit() { zgit -C "$ZC_PATCHED" rev-parse "$branch~$((${#patches[@]} - $1))"; }

kmake_in() { kmake "$@"; }

# Walks the patched tree through the series: checks out commit $1 (1-based) detached.
# walk_done puts the tree back on the revision's branch.
walk_to() { zgit -C "$ZC_PATCHED" checkout -q -f --detach "$(series_commit "$1")"; }
walk_done() { zgit -C "$ZC_PATCHED" checkout -q -f "$branch"; }
trap 'walk_done 2>/dev/null || true' EXIT

# Configures build dir $2 for source $1 with the project's base fragment.
configure() {
	local src=$1 out=$2
	mkdir -p "$out"
	[ -f "$out/.config" ] && return 0
	(cd "$src" && scripts/kconfig/merge_config.sh -n -O "$out" "$ZC_TOP/kernel-config/base.config") >"$out/.zc-config.log" 2>&1 ||
		{ cat "$out/.zc-config.log" >&2; die "merge_config.sh failed for $out"; }
}

# Builds the kernel after each patch, in the patched build dir, with the patched kernel's
# config. The last patch is the patched kernel itself (scripts/build-kernel.sh patched), so
# that build is not done twice. Full lane: patches 1..n in order, each build only redoing
# what that patch touched. Fast lane (ZC_LANE=fast): the last patch first (the whole
# kernel), then after each other patch only the objects this config builds from the .c
# files patches 1..i touch; a header change in an intermediate patch is then only compiled
# where the series uses it.
gate_build() {
	local out n=${#patches[@]} i c tree stamp cfg log start what f o
	local -a order objs files
	out=$(kernel_out patched)
	cfg=$(sha256sum <"$ZC_TOP/kernel-config/base.config" | cut -c1-16) # as before: caches stay valid
	if [ "${ZC_LANE:-full}" = fast ]; then
		order=("$n")
		for ((i = 1; i < n; i++)); do order+=("$i"); done
	else
		order=()
		for ((i = 1; i <= n; i++)); do order+=("$i"); done
	fi
	for i in "${order[@]}"; do
		c=$(series_commit "$i")
		tree=$(zgit -C "$ZC_PATCHED" rev-parse "$c^{tree}")
		if [ "$i" -eq "$n" ]; then
			walk_done
			log=$stampdir/build-kernel-patched.log
			start=$(date +%s)
			if "$ZC_TOP/scripts/build-kernel.sh" patched >/dev/null 2>"$log"; then
				ok "build after patch $n/$n (the patched kernel): $(grep -o 'kernel patched: .*' "$log" | tail -n 1), $(($(date +%s) - start))s"
			else
				tail -n 80 "$log" >&2
				notok "build after patch $n/$n (the patched kernel; log: $log)"
			fi
			continue
		fi
		what=build
		[ "${ZC_LANE:-full}" != fast ] || what=objects
		stamp=$stampdir/$what-$tree-$cfg
		if [ -f "$stamp" ]; then
			ok "$what after patch $i/$n: cached, tree $tree built before"
			continue
		fi
		walk_to "$i"
		[ -f "$out/.config" ] || kernel_configure patched "$ZC_PATCHED" "$out"
		log=$out/.zc-build-$i.log
		start=$(date +%s)
		if [ "$what" = objects ]; then
			mapfile -t files < <(zgit -C "$ZC_PATCHED" diff --name-only base "$c" -- '*.c')
			objs=()
			for f in "${files[@]}"; do
				o=${f%.c}.o
				[ ! -f "$out/$(dirname "$o")/.$(basename "$o").cmd" ] || objs+=("$o")
			done
			say "bisect (fast lane): compiling after patch $i/$n ($(zgit -C "$ZC_PATCHED" log -1 --format=%s "$c")): ${objs[*]:-nothing}"
			if [ ${#objs[@]} -eq 0 ]; then
				ok "objects after patch $i/$n: this config builds none of the .c files patches 1..$i touch"
				continue
			fi
			if kmake "$ZC_PATCHED" "$out" olddefconfig >"$log" 2>&1 &&
				kmake "$ZC_PATCHED" "$out" "${objs[@]}" >>"$log" 2>&1; then
				touch "$stamp"
				ok "objects after patch $i/$n: ${objs[*]} compile, $(($(date +%s) - start))s (fast lane; the full lane builds the whole kernel)"
			else
				grep -v '^  [A-Z0-9_]\{2,\} ' "$log" >&2 || true
				notok "objects after patch $i/$n (log: $log)"
			fi
			continue
		fi
		say "bisect: building after patch $i/$n ($(zgit -C "$ZC_PATCHED" log -1 --format=%s "$c"))"
		# This build replaces the patched kernel's bzImage: build-kernel.sh must not take the
		# image for up to date any more (the walk's last step rebuilds it, incrementally).
		rm -f "$out/.zc-stamp"
		if kmake "$ZC_PATCHED" "$out" olddefconfig >"$log" 2>&1 &&
			kmake "$ZC_PATCHED" "$out" bzImage >>"$log" 2>&1; then
			touch "$stamp"
			ok "build after patch $i/$n: bzImage in $(($(date +%s) - start))s"
		else
			grep -v '^  [A-Z0-9_]\{2,\} ' "$log" >&2 || true
			notok "build after patch $i/$n (log: $log)"
		fi
	done
	walk_done
}

# The warnings of W=1 C=1 for one object, without line numbers or tree paths.
object_warnings() {
	local src=$1 out=$2 obj=$3
	rm -f "$out/$obj"
	kmake_in "$src" "$out" W=1 C=1 "$obj" 2>&1 |
		grep -E '(warning|error):' |
		sed -E "s#^(/[^ ]*/src/[^/]+/|\.\./)##; s#:[0-9]+:[0-9]+:#:#; s#:[0-9]+:#:#" | sort || true
}

# W=1 and sparse on the .c files each patch touches, against the same files on the base.
# Own build dirs, so that the flags do not leak into the kernels that boot.
gate_warnings() {
	local wbase=$ZC_SRC/out-w1 wseries=$ZC_PATCHED/out-w1 i c f obj base_w new_w added n
	configure "$ZC_SRC" "$wbase"
	configure "$ZC_PATCHED" "$wseries"
	kmake_in "$ZC_SRC" "$wbase" olddefconfig prepare >"$wbase/.zc-prepare.log" 2>&1 ||
		{ cat "$wbase/.zc-prepare.log" >&2; die "make prepare failed in $wbase"; }
	for ((i = 1; i <= ${#patches[@]}; i++)); do
		c=$(series_commit "$i")
		walk_to "$i"
		kmake_in "$ZC_PATCHED" "$wseries" olddefconfig prepare >"$wseries/.zc-prepare.log" 2>&1 ||
			{ cat "$wseries/.zc-prepare.log" >&2; die "make prepare failed in $wseries"; }
		mapfile -t files < <(zgit -C "$ZC_PATCHED" diff-tree --no-commit-id --name-only -r "$c" -- '*.c')
		for f in "${files[@]}"; do
			obj=${f%.c}.o
			base_w=$(object_warnings "$ZC_SRC" "$wbase" "$obj")
			new_w=$(object_warnings "$ZC_PATCHED" "$wseries" "$obj")
			added=$(comm -13 <(printf '%s\n' "$base_w") <(printf '%s\n' "$new_w") | sed '/^$/d')
			n=$(printf '%s\n' "$new_w" | sed '/^$/d' | wc -l)
			if [ -z "$added" ]; then
				ok "W=1 C=1 $obj after patch $i: no new warning ($n, as on the base)"
			else
				printf '%s\n' "$added" >&2
				notok "W=1 C=1 $obj after patch $i: $(printf '%s\n' "$added" | wc -l) new warning(s)"
			fi
		done
	done
	walk_done
}

for g in "${gates[@]}"; do
	case "$g" in
	apply | checkpatch | build | warnings) "gate_$g" ;;
	*) die "unknown gate $g (apply, checkpatch, build, warnings)" ;;
	esac
done
[ "$failed" -eq 0 ]

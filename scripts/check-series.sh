#!/usr/bin/env bash
# Quality gates of patches/series, each printed as "ok - NAME" or "not ok - NAME":
#   apply     git am and quilt push -a on the pinned base, with the same result;
#   checkpatch  scripts/checkpatch.pl --strict: 0 errors, 0 warnings per patch;
#   build     after each patch the kernel builds with the project's config (bisectable);
#   W=1/sparse  make W=1 C=1 on the .c files a patch touches adds no warning over the base.
# Usage: scripts/check-series.sh [apply|checkpatch|build|warnings]...   (default: all)
# Results are cached per patch tree: an unchanged series is not rebuilt, and says so.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

zc_lock
"$ZC_TOP/scripts/kernel-tree.sh"
mapfile -t patches < <(series_patches)
[ ${#patches[@]} -gt 0 ] || { say "check-series: patches/series is empty, nothing to check"; exit 0; }
gates=("$@")
[ ${#gates[@]} -gt 0 ] || gates=(apply checkpatch build warnings)
failed=0
ok() { printf 'ok - %s\n' "$*"; }
notok() { printf 'not ok - %s\n' "$*"; failed=$((failed + 1)); }
stampdir=$ZC_CACHE/gates
mkdir -p "$stampdir"

gate_apply() {
	local wt=$ZC_CACHE/src/gate-apply am_tree quilt_tree
	zgit -C "$ZC_SRC" worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
	zgit -C "$ZC_SRC" worktree prune
	zgit -C "$ZC_SRC" worktree add -q --detach "$wt" base
	if zgit -C "$wt" am -q "${patches[@]}" >/dev/null 2>&1; then
		am_tree=$(zgit -C "$wt" rev-parse 'HEAD^{tree}')
		ok "apply: git am of ${#patches[@]} patches on $(zgit -C "$ZC_SRC" log -1 --format=%s base)"
	else
		zgit -C "$wt" am --abort >/dev/null 2>&1 || true
		notok "apply: git am fails"
		am_tree=none
	fi
	zgit -C "$wt" checkout -q -f --detach base
	if (cd "$wt" && QUILT_PATCHES="$ZC_TOP/patches" QUILT_PC="$wt/.pc" quilt push -a -q >/dev/null 2>&1); then
		rm -rf "$wt/.pc"
		zgit -C "$wt" add -A
		quilt_tree=$(zgit -C "$wt" write-tree)
		if [ "$quilt_tree" = "$am_tree" ]; then
			ok "apply: quilt push -a gives the same tree as git am ($quilt_tree)"
		else
			notok "apply: quilt push -a tree $quilt_tree differs from git am tree $am_tree"
		fi
	else
		notok "apply: quilt push -a fails"
	fi
	zgit -C "$ZC_SRC" worktree remove --force "$wt"
}

gate_checkpatch() {
	local p out summary
	for p in "${patches[@]}"; do
		out=$(cd "$ZC_SRC" && scripts/checkpatch.pl --strict "$p" 2>&1 || true)
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
series_commit() { zgit -C "$ZC_PATCHED" rev-parse "series~$((${#patches[@]} - $1))"; }

kmake_in() {
	local src=$1 out=$2
	shift 2
	CCACHE_DIR=${CCACHE_DIR:-$ZC_CACHE/ccache} KBUILD_BUILD_TIMESTAMP="2022-11-03 00:00:00 UTC" \
		KBUILD_BUILD_USER=ublk-splice-zc KBUILD_BUILD_HOST=qemu \
		make -C "$src" O="$out" -j"$(nproc)" CC="ccache gcc" HOSTCC="ccache gcc" LOCALVERSION= "$@"
}

# Walks the patched tree through the series: checks out commit $1 (1-based) detached.
# walk_done puts the tree back on branch series.
walk_to() { zgit -C "$ZC_PATCHED" checkout -q -f --detach "$(series_commit "$1")"; }
walk_done() { zgit -C "$ZC_PATCHED" checkout -q -f series; }
trap 'walk_done 2>/dev/null || true' EXIT

# Configures build dir $2 for source $1 with the project's base fragment.
configure() {
	local src=$1 out=$2
	mkdir -p "$out"
	[ -f "$out/.config" ] && return 0
	(cd "$src" && scripts/kconfig/merge_config.sh -n -O "$out" "$ZC_TOP/kernel-config/base.config") >"$out/.zc-config.log" 2>&1 ||
		{ cat "$out/.zc-config.log" >&2; die "merge_config.sh failed for $out"; }
}

# Builds the kernel after each patch, in the patched build dir: the walk ends in the
# patched kernel itself, and each step only rebuilds what that patch touched.
gate_build() {
	local out i c tree stamp cfg log start
	out=$(kernel_out patched)
	configure "$ZC_PATCHED" "$out"
	cfg=$(sha256sum <"$ZC_TOP/kernel-config/base.config" | cut -c1-16)
	for ((i = 1; i <= ${#patches[@]}; i++)); do
		c=$(series_commit "$i")
		tree=$(zgit -C "$ZC_PATCHED" rev-parse "$c^{tree}")
		stamp=$stampdir/build-$tree-$cfg
		if [ -f "$stamp" ]; then
			ok "build after patch $i/${#patches[@]}: cached, tree $tree built before"
			continue
		fi
		say "bisect: building after patch $i/${#patches[@]} ($(zgit -C "$ZC_PATCHED" log -1 --format=%s "$c"))"
		walk_to "$i"
		log=$out/.zc-build-$i.log
		start=$(date +%s)
		if kmake_in "$ZC_PATCHED" "$out" olddefconfig >"$log" 2>&1 &&
			kmake_in "$ZC_PATCHED" "$out" bzImage >>"$log" 2>&1; then
			touch "$stamp"
			ok "build after patch $i/${#patches[@]}: bzImage in $(($(date +%s) - start))s"
		else
			grep -v '^  [A-Z0-9_]\{2,\} ' "$log" >&2 || true
			notok "build after patch $i/${#patches[@]} (log: $log)"
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

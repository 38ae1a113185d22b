#!/usr/bin/env bash
# Prepares the kernel trees in the cache:
#   src/base     a git repo whose branch "base" is one commit of the pristine base: Debian's
#                linux-source-6.1 as installed here (its version is in the commit subject and
#                in every report), or KERNEL_SRC=/path/to/v6.1.y;
#   src/patched  a worktree: the base plus the revision under test, applied as git am does.
#                patches/ is branch "series"; another revision (--series, --tree/--range, see
#                lib.sh) is branch rev-HASH. Each applied revision is kept as refs/revs/HASH,
#                HASH being the series hash, so switching revisions and back applies nothing.
# When the installed package (or KERNEL_SRC) is not what the cached base was made from, the
# new base is imported as a new commit and checked out over the old one: only the files
# that differ change, so the build directories inside the trees stay valid.
# Usage: scripts/kernel-tree.sh [base]       (base: only the base tree)
# Idempotent: with nothing changed it does no work and says so.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

zc_lock
mkdir -p "$ZC_CACHE/src"
series_resolve

installed_version() { dpkg-query -W -f='${Version}' "$ZC_PINNED_PKG" 2>/dev/null || echo unknown; }

ensure_debian_source() {
	if [ ! -f "$ZC_TARBALL" ]; then
		say "installing $ZC_PINNED_PKG (apt-get)"
		SUDO=
		[ "$(id -u)" -eq 0 ] || SUDO=sudo
		$SUDO apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$ZC_PINNED_PKG" >&2
	fi
}

# The origin the base must come from now: the commit subject of the base is "base: ORIGIN".
wanted_origin() {
	if [ -n "${KERNEL_SRC:-}" ]; then
		[ -f "$KERNEL_SRC/Makefile" ] || die "KERNEL_SRC=$KERNEL_SRC is not a kernel tree"
		if [ -d "$KERNEL_SRC/.git" ]; then
			echo "KERNEL_SRC $(git -C "$KERNEL_SRC" describe --always HEAD)"
		else
			echo "KERNEL_SRC $(make -s -C "$KERNEL_SRC" kernelversion) (KERNEL_SRC)"
		fi
	else
		ensure_debian_source
		echo "$ZC_PINNED_PKG $(installed_version)"
	fi
}

# Fills the empty directory $1 with the base's files.
unpack_base() {
	local dest=$1
	mkdir -p "$dest"
	if [ -n "${KERNEL_SRC:-}" ]; then
		say "base tree from KERNEL_SRC=$KERNEL_SRC"
		if [ -d "$KERNEL_SRC/.git" ]; then
			git -C "$KERNEL_SRC" archive HEAD | tar -x -C "$dest"
		else
			cp -a "$KERNEL_SRC/." "$dest/"
		fi
	else
		say "unpacking $ZC_TARBALL ($ZC_PINNED_PKG $(installed_version))"
		tar -xf "$ZC_TARBALL" -C "$dest" --strip-components=1
	fi
	[ ! -f "$dest/.config" ] || die "the base tree was configured in place; make O= would refuse it"
}

make_base() {
	local origin have tmp idx tree commit
	origin=$(wanted_origin)
	if [ "$origin" != "$ZC_PINNED_PKG $ZC_MEASURED_VERSION" ] && [ -z "${KERNEL_SRC:-}" ]; then
		say "note: the base is $origin, as installed; the project was last checked on $ZC_MEASURED_VERSION"
	fi
	if [ -d "$ZC_SRC/.git" ]; then
		have=$(zgit -C "$ZC_SRC" log -1 --format=%s base) ||
			die "$ZC_SRC is a git repository without a usable branch base: remove $ZC_SRC (and $ZC_PATCHED) to start over"
		if [ "$have" = "base: $origin" ]; then
			say "base tree: $(zgit -C "$ZC_SRC" log -1 --format='%h %s' base) (cached)"
			return
		fi
		# The base moved on (a new Debian upload, another KERNEL_SRC): import it next to the old
		# one, then check it out, so that make only rebuilds what changed.
		say "base tree: the cache holds '${have#base: }', but the base here is '$origin': importing it"
		tmp=$ZC_SRC.import
		idx=$ZC_CACHE/src/.import-index
		rm -rf "$tmp" "$idx"
		unpack_base "$tmp"
		GIT_INDEX_FILE=$idx zgit -C "$tmp" --git-dir="$ZC_SRC/.git" --work-tree=. add -f -A .
		tree=$(GIT_INDEX_FILE=$idx zgit --git-dir="$ZC_SRC/.git" write-tree)
		commit=$(zgit --git-dir="$ZC_SRC/.git" commit-tree "$tree" -m "base: $origin" -m "Unpacked unchanged; the series applies on top.")
		zgit -C "$ZC_SRC" checkout -q -f -B base "$commit"
		rm -rf "$tmp" "$idx"
		say "base tree: $(zgit -C "$ZC_SRC" log -1 --format='%h %s' base) (was: ${have#base: })"
		return
	fi
	rm -rf "$ZC_SRC" "$ZC_SRC.tmp"
	unpack_base "$ZC_SRC.tmp"
	say "committing the base tree (git add -f: Debian's .gitignore ignores everything)"
	zgit -C "$ZC_SRC.tmp" init -q
	zgit -C "$ZC_SRC.tmp" add -f -A .
	zgit -C "$ZC_SRC.tmp" commit -q -m "base: $origin" -m "Unpacked unchanged; the series applies on top."
	mv "$ZC_SRC.tmp" "$ZC_SRC"
	say "base tree: $(zgit -C "$ZC_SRC" log -1 --format='%h %s' base)"
}

# Applies the series on the base as git am does (git mailinfo, git apply, one commit per
# patch), but on a scratch index: no worktree is touched. Records refs/revs/$1.
apply_to_ref() {
	local want=$1 tmp idx parent tree p i=0 n subject who
	local -a patches
	mapfile -t patches < <(series_patches)
	n=${#patches[@]}
	tmp=$(mktemp -d)
	idx=$tmp/index
	parent=$(zgit -C "$ZC_SRC" rev-parse base)
	GIT_INDEX_FILE=$idx zgit -C "$ZC_SRC" read-tree "$parent"
	for p in "${patches[@]}"; do
		i=$((i + 1))
		zgit mailinfo "$tmp/msg" "$tmp/patch" <"$p" >"$tmp/info" || die "git mailinfo cannot read $p"
		subject=$(sed -n 's/^Subject: //p' "$tmp/info")
		[ -n "$subject" ] || subject=$(basename "$p" .patch)
		say "  apply $i/$n $(basename "$p"): $subject"
		if ! GIT_INDEX_FILE=$idx zgit -C "$ZC_SRC" apply --cached "$tmp/patch" 2>"$tmp/err"; then
			sed 's/^/    /' "$tmp/err" >&2
			rm -rf "$tmp"
			die "patch $i/$n $(basename "$p") ('$subject') does not apply on $(zgit -C "$ZC_SRC" log -1 --format=%s base) (git apply, above)"
		fi
		[ ! -s "$tmp/err" ] || sed 's/^/    /' "$tmp/err" >&2
		tree=$(GIT_INDEX_FILE=$idx zgit -C "$ZC_SRC" write-tree)
		{
			printf '%s\n' "$subject"
			if [ -s "$tmp/msg" ]; then printf '\n' && cat "$tmp/msg"; fi
		} >"$tmp/message"
		who=()
		if grep -q '^Author: .' "$tmp/info" && grep -q '^Email: .' "$tmp/info"; then
			who=(GIT_AUTHOR_NAME="$(sed -n 's/^Author: //p' "$tmp/info")"
				GIT_AUTHOR_EMAIL="$(sed -n 's/^Email: //p' "$tmp/info")")
			! grep -q '^Date: .' "$tmp/info" || who+=(GIT_AUTHOR_DATE="$(sed -n 's/^Date: //p' "$tmp/info")")
		fi
		parent=$(env "${who[@]}" git -c user.name="ublk-splice-zc developers" -c user.email="devel@ublk-splice-zc.invalid" \
			-C "$ZC_SRC" commit-tree "$tree" -p "$parent" -F "$tmp/message")
	done
	rm -rf "$tmp"
	zgit -C "$ZC_SRC" update-ref "refs/revs/$want" "$parent"
}

apply_series() {
	local want have branch ref
	want=$(series_hash)
	branch=$(series_branch)
	ref=refs/revs/$want
	have=$(cat "$ZC_CACHE/src/patched.series" 2>/dev/null || true)
	if [ -d "$ZC_PATCHED" ] && [ "$want" = "$have" ]; then
		if [ "$(zgit -C "$ZC_PATCHED" symbolic-ref -q HEAD || true)" != "refs/heads/$branch" ]; then
			say "patched tree: back to branch $branch (a series walk was interrupted)"
			zgit -C "$ZC_PATCHED" checkout -q -f "$branch"
		fi
		zgit -C "$ZC_SRC" rev-parse -q --verify "$ref" >/dev/null || zgit -C "$ZC_SRC" update-ref "$ref" "refs/heads/$branch"
		say "patched tree: series $want already applied ($(zgit -C "$ZC_PATCHED" log -1 --format=%h)), nothing to do"
		return
	fi
	if zgit -C "$ZC_SRC" rev-parse -q --verify "$ref" >/dev/null; then
		say "patched tree: series $want was applied before ($ref), switching to it"
	else
		say "applying the series ($(series_patches | wc -l) patches, $ZC_SERIES_ORIGIN) on the base"
		apply_to_ref "$want"
	fi
	if [ ! -d "$ZC_PATCHED" ]; then
		zgit -C "$ZC_SRC" worktree prune
		zgit -C "$ZC_SRC" worktree add -q -B "$branch" "$ZC_PATCHED" "$ref"
	else
		zgit -C "$ZC_PATCHED" am --abort >/dev/null 2>&1 || true
		# Only the files that differ from what is checked out are written: make rebuilds those.
		zgit -C "$ZC_PATCHED" checkout -q -f -B "$branch" "$ref"
	fi
	printf '%s\n' "$want" >"$ZC_CACHE/src/patched.series"
	say "patched tree: $(zgit -C "$ZC_PATCHED" log -1 --format='%h %s') (branch $branch, series $want)"
}

case "${1:-}" in
'') make_base && apply_series ;;
base) make_base ;;
*) die "usage: $0 [base]" ;;
esac

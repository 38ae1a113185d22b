#!/usr/bin/env bash
# Prepares the kernel trees in the cache:
#   src/base     a git repo with one commit of the pristine base (branch "base");
#   src/patched  a worktree on branch "series": the base plus patches/series, applied with git am.
# KERNEL_SRC=/path/to/v6.1.y overrides Debian's linux-source-6.1 as the base.
# Idempotent: with nothing changed it does no work and says so.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

zc_lock
mkdir -p "$ZC_CACHE/src"

ensure_debian_source() {
	local tarball=/usr/src/linux-source-6.1.tar.xz installed
	if [ ! -f "$tarball" ]; then
		say "installing $ZC_PINNED_PKG (apt-get)"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$ZC_PINNED_PKG" >&2
	fi
	installed=$(dpkg-query -W -f='${Version}' "$ZC_PINNED_PKG" 2>/dev/null || echo unknown)
	if [ "$installed" != "$ZC_PINNED_VERSION" ]; then
		warn "$ZC_PINNED_PKG $installed is installed; this project was tested with $ZC_PINNED_VERSION"
	fi
	printf '%s\n' "$installed"
}

make_base() {
	local origin desc
	if [ -d "$ZC_SRC/.git" ] && zgit -C "$ZC_SRC" rev-parse -q --verify base >/dev/null; then
		say "base tree: $(zgit -C "$ZC_SRC" log -1 --format='%h %s' base) (cached)"
		return
	fi
	rm -rf "$ZC_SRC" "$ZC_SRC.tmp"
	if [ -n "${KERNEL_SRC:-}" ]; then
		[ -f "$KERNEL_SRC/Makefile" ] || die "KERNEL_SRC=$KERNEL_SRC is not a kernel tree"
		say "base tree from KERNEL_SRC=$KERNEL_SRC"
		mkdir -p "$ZC_SRC.tmp"
		if [ -d "$KERNEL_SRC/.git" ]; then
			git -C "$KERNEL_SRC" archive HEAD | tar -x -C "$ZC_SRC.tmp"
			desc="$(git -C "$KERNEL_SRC" describe --always HEAD)"
		else
			cp -a "$KERNEL_SRC/." "$ZC_SRC.tmp/"
			desc="$(make -s -C "$KERNEL_SRC" kernelversion) (KERNEL_SRC)"
		fi
		origin="KERNEL_SRC $desc"
	else
		local version
		version=$(ensure_debian_source | tail -n 1)
		say "unpacking /usr/src/linux-source-6.1.tar.xz ($ZC_PINNED_PKG $version)"
		mkdir -p "$ZC_SRC.tmp"
		tar -xf /usr/src/linux-source-6.1.tar.xz -C "$ZC_SRC.tmp" --strip-components=1
		origin="$ZC_PINNED_PKG $version"
	fi
	[ ! -f "$ZC_SRC.tmp/.config" ] || die "the base tree was configured in place; make O= would refuse it"
	say "committing the base tree (git add -f: Debian's .gitignore ignores everything)"
	zgit -C "$ZC_SRC.tmp" init -q
	zgit -C "$ZC_SRC.tmp" add -f -A .
	zgit -C "$ZC_SRC.tmp" commit -q -m "base: $origin" -m "Unpacked unchanged; the series applies on top."
	mv "$ZC_SRC.tmp" "$ZC_SRC"
	say "base tree: $(zgit -C "$ZC_SRC" log -1 --format='%h %s' base)"
}

apply_series() {
	local want have
	want=$(series_hash)
	have=$(cat "$ZC_CACHE/src/patched.series" 2>/dev/null || true)
	if [ -d "$ZC_PATCHED" ] && [ "$want" = "$have" ]; then
		if [ "$(zgit -C "$ZC_PATCHED" symbolic-ref -q HEAD || true)" != refs/heads/series ]; then
			say "patched tree: back to branch series (a series walk was interrupted)"
			zgit -C "$ZC_PATCHED" checkout -q -f series
		fi
		say "patched tree: series $want already applied ($(zgit -C "$ZC_PATCHED" log -1 --format=%h)), nothing to do"
		return
	fi
	say "applying patches/series ($(series_patches | wc -l) patches) with git am"
	if [ ! -d "$ZC_PATCHED" ]; then
		zgit -C "$ZC_SRC" worktree prune
		zgit -C "$ZC_SRC" worktree add -q -B series "$ZC_PATCHED" base
	fi
	zgit -C "$ZC_PATCHED" am --abort >/dev/null 2>&1 || true
	zgit -C "$ZC_PATCHED" checkout -q -B series base
	local p
	while read -r p; do
		[ -n "$p" ] || continue
		say "  git am $(basename "$p")"
		zgit -C "$ZC_PATCHED" am -q --keep-cr "$p" || {
			zgit -C "$ZC_PATCHED" am --abort || true
			die "$(basename "$p") does not apply on the base"
		}
	done < <(series_patches)
	printf '%s\n' "$want" >"$ZC_CACHE/src/patched.series"
	say "patched tree: $(zgit -C "$ZC_PATCHED" log -1 --format='%h %s')"
}

make_base
apply_series

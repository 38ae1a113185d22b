# shellcheck shell=bash
# Shared settings for the scripts. Source it; it defines paths and helpers only.

ZC_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ZC_CACHE=${UBLK_ZC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ublk-splice-zc}
# The Debian package version this project was tested with.
ZC_PINNED_PKG=linux-source-6.1
ZC_PINNED_VERSION=6.1.192-2
ZC_SRC=$ZC_CACHE/src/base
ZC_PATCHED=$ZC_CACHE/src/patched

# Build directories sit directly inside their source tree (srctree becomes ".."), so that
# base and patched compile with the same command lines and share ccache hits.
# Debian's .gitignore ignores them. W=1 gate dirs: out-w1 in each tree.
kernel_out() {
	case "$1" in
	base) printf '%s\n' "$ZC_SRC/out-base" ;;
	patched | debug) printf '%s\n' "$ZC_PATCHED/out-$1" ;;
	*) die "unknown kernel flavor $1" ;;
	esac
}
kernel_image() { printf '%s/arch/x86/boot/bzImage\n' "$(kernel_out "$1")"; }

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# Git with a fixed identity, so commits in the cache never depend on the user's config.
zgit() {
	git -c user.name="ublk-splice-zc developers" -c user.email="devel@ublk-splice-zc.invalid" \
		-c advice.detachedHead=false -c init.defaultBranch=base "$@"
}

# The patch files of the series, in order, as absolute paths.
series_patches() {
	local p
	[ -f "$ZC_TOP/patches/series" ] || return 0
	while read -r p; do
		case "$p" in ''|'#'*) continue ;; esac
		printf '%s\n' "$ZC_TOP/patches/$p"
	done <"$ZC_TOP/patches/series"
}

# A hash of everything that decides the patched tree: the base commit and the patches.
series_hash() {
	{
		zgit -C "$ZC_SRC" rev-parse base
		series_patches | while read -r p; do sha256sum <"$p"; done
	} | sha256sum | cut -c1-16
}

# Builds the harness (release) when needed and prints the path of one of its binaries.
harness_bin() {
	(cd "$ZC_TOP" && cargo build --release -q --bins) >&2 || die "building the harness failed"
	printf '%s\n' "$ZC_TOP/target/release/$1"
}

# Serializes everything that builds in or checks out the kernel trees (two builds in one
# directory corrupt each other; a series walk moves the patched tree under a build).
# Children inherit the lock; a second caller waits and says so.
zc_lock() {
	[ -z "${ZC_LOCK_HELD:-}" ] || return 0
	mkdir -p "$ZC_CACHE"
	exec 9>"$ZC_CACHE/.kernel.lock"
	if ! flock -n 9; then
		say "waiting for another kernel build or series walk to finish ($ZC_CACHE/.kernel.lock)"
		flock 9
	fi
	export ZC_LOCK_HELD=1
}

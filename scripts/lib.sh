# shellcheck shell=bash
# Shared settings for the scripts. Source it; it defines paths and helpers only.

ZC_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ZC_CACHE=${UBLK_ZC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ublk-splice-zc}
# The base is Debian's linux-source-6.1 as installed here, whatever its version: every
# report names it. ZC_MEASURED_VERSION is the version the project was last checked on;
# another version only gets a note.
export ZC_PINNED_PKG=linux-source-6.1
export ZC_MEASURED_VERSION=6.1.192-3
export ZC_TARBALL=/usr/src/linux-source-6.1.tar.xz
ZC_SRC=$ZC_CACHE/src/base
ZC_PATCHED=$ZC_CACHE/src/patched
# The gate's reports (JUnit, markdown summary) for CI: a fixed path in the checkout.
export ZC_REPORT=${ZC_REPORT_DIR:-$ZC_TOP/results/gate}

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

# The config fragments (kernel-config/) and the LOCALVERSION of a flavor.
kernel_frags() {
	case "$1" in
	base | patched) echo base.config ;;
	debug) echo base.config debug.config ;;
	*) die "unknown kernel flavor $1" ;;
	esac
}
kernel_localversion() {
	case "$1" in
	base) echo -base ;;
	patched) echo -ublkzc ;;
	debug) echo -ublkzc-debug ;;
	*) die "unknown kernel flavor $1" ;;
	esac
}
# kmake SRC OUT ARGS...: make out of tree, with ccache, on all cores, reproducibly. The
# LOCALVERSION of a flavor is given to make (from OUT/.zc-localversion), not put in .config:
# base and patched then have the same include/generated/autoconf.h, and ccache's direct
# mode hits across them instead of preprocessing every file again.
kmake() {
	local src=$1 out=$2 lv=
	shift 2
	[ ! -f "$out/.zc-localversion" ] || lv=$(cat "$out/.zc-localversion")
	CCACHE_DIR=${CCACHE_DIR:-$ZC_CACHE/ccache} CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-8G} \
		KBUILD_BUILD_TIMESTAMP="2022-11-03 00:00:00 UTC" KBUILD_BUILD_USER=ublk-splice-zc KBUILD_BUILD_HOST=qemu \
		make -C "$src" O="$out" -j"$(nproc)" CC="ccache gcc" HOSTCC="ccache gcc" LOCALVERSION="$lv" "$@"
}

# kernel_configure FLAVOR SRC OUT: allnoconfig + the flavor's fragments (merge_config.sh),
# then olddefconfig; the flavor's LOCALVERSION goes to OUT/.zc-localversion for kmake.
# Log: OUT/.zc-config.log.
kernel_configure() {
	local flavor=$1 src=$2 out=$3 f
	local -a paths=()
	mkdir -p "$out"
	kernel_localversion "$flavor" >"$out/.zc-localversion"
	printf 'CONFIG_LOCALVERSION=""\n# CONFIG_LOCALVERSION_AUTO is not set\n' >"$out/.zc-localversion.config"
	for f in $(kernel_frags "$flavor"); do paths+=("$ZC_TOP/kernel-config/$f"); done
	(cd "$src" && scripts/kconfig/merge_config.sh -n -O "$out" "${paths[@]}" "$out/.zc-localversion.config") \
		>"$out/.zc-config.log" 2>&1 || { cat "$out/.zc-config.log" >&2; die "merge_config.sh failed in $out"; }
	kmake "$src" "$out" -s olddefconfig >>"$out/.zc-config.log" 2>&1 || { cat "$out/.zc-config.log" >&2; die "olddefconfig failed in $out"; }
}

# --- Checks for the gate: JUnit to $ZC_JUNIT ------------------------------------------------
# A counted step's program gets ZC_JUNIT=PATH and writes its checks there as JUnit XML, one
# test case per check (the contract: harness/gate/src/junit.rs, docs/gate.md). A script
# calls junit_begin once, then junit_case per check, beside its own "ok - " lines. The file
# is rewritten after each check, so it holds the checks so far should the script die.
# junit_begin takes $ZC_JUNIT for this script and hides it from the scripts it runs.
junit_begin() {
	ZC_JUNIT_FILE=${ZC_JUNIT:-}
	ZC_JUNIT_CASES=
	unset ZC_JUNIT
	junit_write
}
junit_esc() { printf '%s' "$1" | tr -d '\000-\010\013\014\016-\037' | tr '\t\r\n' '   ' | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g'; }
junit_case() { # junit_case NAME pass|fail [MESSAGE]
	[ -n "${ZC_JUNIT_FILE:-}" ] || return 0
	local name
	name=$(junit_esc "$1")
	case $2 in
	pass) ZC_JUNIT_CASES+="    <testcase name=\"$name\"/>"$'\n' ;;
	fail) ZC_JUNIT_CASES+="    <testcase name=\"$name\"><failure message=\"$(junit_esc "${3:-$1}")\"/></testcase>"$'\n' ;;
	*) die "junit_case: '$2' is neither pass nor fail" ;;
	esac
	junit_write
}
junit_write() {
	[ -n "${ZC_JUNIT_FILE:-}" ] || return 0
	local n f
	n=$(printf '%s' "$ZC_JUNIT_CASES" | grep -c '<testcase ') || true
	f=$(printf '%s' "$ZC_JUNIT_CASES" | grep -c '<failure ') || true
	printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n  <testsuite name="%s" tests="%s" failures="%s">\n%s  </testsuite>\n</testsuites>\n' \
		"$(junit_esc "${0##*/}")" "$n" "$f" "$ZC_JUNIT_CASES" >"$ZC_JUNIT_FILE"
}

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# Git with a fixed identity, so commits in the cache never depend on the user's config.
zgit() {
	git -c user.name="ublk-splice-zc developers" -c user.email="devel@ublk-splice-zc.invalid" \
		-c advice.detachedHead=false -c init.defaultBranch=base "$@"
}

# --- The revision under test -------------------------------------------------------------
# Default: the quilt series in patches/. Another revision is chosen with the options
# --series PATH | --tree DIR --range A..B (series_opt), which set the environment, so that
# every script a gate runs (build-kernel.sh, run-qemu.sh, ...) sees the same revision:
#   ZC_SERIES_SRC=PATH                          a directory with a quilt `series`, or one
#                                               mbox (git format-patch --stdout, b4 am)
#   ZC_SERIES_TREE=DIR ZC_SERIES_RANGE=A..B     commits A..B of a kernel git tree
# series_resolve turns that into ZC_SERIES_DIR: a directory with `series` and the patch
# files. An mbox or a range is split once into $ZC_CACHE/revisions/<hash of its text>/.

# series_opt OPTION VALUE: takes --series, --tree or --range for a script's option parser.
series_opt() {
	[ -n "${2:-}" ] || die "$1 needs a value (see --help)"
	case "$1" in
	--series)
		[ -e "$2" ] || die "--series $2: no such file or directory"
		ZC_SERIES_SRC=$(realpath -- "$2")
		export ZC_SERIES_SRC
		;;
	--tree)
		[ -d "$2" ] || die "--tree $2: no such directory"
		ZC_SERIES_TREE=$(realpath -- "$2")
		export ZC_SERIES_TREE
		;;
	--range) export ZC_SERIES_RANGE=$2 ;;
	*) die "series_opt: unknown option $1" ;;
	esac
	unset ZC_SERIES_DIR ZC_SERIES_ORIGIN
}

# A file name for a patch from its subject, as git format-patch makes them.
patch_slug() { printf '%s' "$1" | tr -cs 'A-Za-z0-9._' '-' | sed 's/^-*//; s/-*$//' | cut -c1-52; }

# The subject of a mail or patch file, unfolded, with [PATCH ...] stripped; $2 = -k keeps it.
patch_subject() { git mailinfo ${2:+"$2"} /dev/null /dev/null <"$1" 2>/dev/null | sed -n 's/^Subject: //p'; }

# series_split MBOX ORIGIN: splits an mbox into a series directory (cached by its text) and
# prints the directory. The cover letter ("[PATCH 0/N]", no diff) is skipped.
series_split() {
	local mbox=$1 origin=$2 key dir tmp m n=0 raw subject name
	key=$(sha256sum <"$mbox" | cut -c1-16)
	dir=$ZC_CACHE/revisions/$key
	if [ -f "$dir/series" ]; then
		printf '%s\n' "$dir"
		return 0
	fi
	mkdir -p "$ZC_CACHE/revisions"
	tmp=$(mktemp -d "$ZC_CACHE/revisions/.split.XXXXXX")
	mkdir "$tmp/msgs"
	git mailsplit -b -o"$tmp/msgs" "$mbox" >/dev/null || { rm -rf "$tmp"; die "git mailsplit cannot read $mbox as an mbox"; }
	: >"$tmp/series"
	for m in "$tmp"/msgs/*; do
		[ -e "$m" ] || continue
		raw=$(patch_subject "$m" -k)
		subject=$(patch_subject "$m")
		if ! git mailinfo /dev/null "$tmp/diff" <"$m" >/dev/null 2>&1 || ! grep -q '^diff \|^--- ' "$tmp/diff"; then
			if printf '%s\n' "$raw" | grep -Eq '^\[[^]]*[^0-9]0+/[0-9]+\]'; then
				say "series: skipping the cover letter: $raw"
				continue
			fi
			rm -rf "$tmp"
			die "$mbox: message '${raw:-$(basename "$m")}' has no diff and is not a cover letter ([PATCH 0/N])"
		fi
		n=$((n + 1))
		name=$(printf '%04d-%s.patch' "$n" "$(patch_slug "${subject:-patch}")")
		mv "$m" "$tmp/$name"
		printf '%s\n' "$name" >>"$tmp/series"
	done
	rm -rf "$tmp/msgs" "$tmp/diff"
	[ "$n" -gt 0 ] || { rm -rf "$tmp"; die "$mbox holds no patch"; }
	printf '%s\n' "$origin" >"$tmp/origin"
	if ! mv -T "$tmp" "$dir" 2>/dev/null; then
		rm -rf "$tmp" # split at the same time by another run: same text, same result
	fi
	say "series: $n patch(es) from $origin in $dir"
	printf '%s\n' "$dir"
}

# Sets and exports ZC_SERIES_DIR and ZC_SERIES_ORIGIN (a one-line description of where the
# revision comes from), checking that every patch the series names exists. Call it in the
# main shell, not in $(...): it dies on a bad revision.
series_resolve() {
	local src=${ZC_SERIES_SRC:-} tree=${ZC_SERIES_TREE:-} range=${ZC_SERIES_RANGE:-} dir origin tmp merges n p
	if [ -n "${ZC_SERIES_DIR:-}" ] && [ -n "${ZC_SERIES_ORIGIN:-}" ]; then return 0; fi
	# Relative paths in the environment are taken from here, once.
	[ -z "$src" ] || [ ! -e "$src" ] || src=$(realpath -- "$src")
	[ -z "$tree" ] || [ ! -d "$tree" ] || tree=$(realpath -- "$tree")
	if [ -n "$tree$range" ]; then
		[ -z "$src" ] || die "--series and --tree/--range exclude each other"
		if [ -z "$tree" ] || [ -z "$range" ]; then die "--tree DIR and --range A..B go together"; fi
		git -C "$tree" rev-parse --git-dir >/dev/null 2>&1 || die "--tree $tree is not a git tree"
		case "$range" in
		?*..?*) ;;
		*) die "--range wants A..B (two commits), got '$range'" ;;
		esac
		case "$range" in *...*) die "--range wants A..B, not a symmetric difference A...B" ;; esac
		for p in "${range%%..*}" "${range##*..}"; do
			git -C "$tree" rev-parse -q --verify "$p^{commit}" >/dev/null || die "--range $range: '$p' is not a commit in $tree"
		done
		merges=$(git -C "$tree" log --merges --format='%h (%s)' "$range" | paste -sd, - | sed 's/,/, /g')
		[ -z "$merges" ] || die "--range $range in $tree contains merge commit(s): $merges. A series is a linear run of commits: choose a range without merges (git log --merges $range)"
		n=$(git -C "$tree" rev-list --count "$range")
		[ "$n" -gt 0 ] || die "--range $range in $tree holds no commit"
		origin="range $range of $tree ($(git -C "$tree" rev-parse --short "${range%%..*}")..$(git -C "$tree" rev-parse --short "${range##*..}"), $n commits)"
		mkdir -p "$ZC_CACHE/revisions"
		tmp=$(mktemp "$ZC_CACHE/revisions/.range.XXXXXX")
		git -C "$tree" -c diff.noprefix=false -c diff.mnemonicPrefix=false -c format.signOff=false \
			format-patch --stdout --no-cover-letter --no-signature "$range" >"$tmp" ||
			{ rm -f "$tmp"; die "git format-patch $range failed in $tree"; }
		dir=$(series_split "$tmp" "$origin") || { rm -f "$tmp"; exit 1; }
		rm -f "$tmp"
	elif [ -n "$src" ] && [ -d "$src" ]; then
		[ -f "$src/series" ] || die "--series $src: a directory needs a quilt 'series' file"
		dir=$src
		if [ "$dir" = "$ZC_TOP/patches" ]; then origin="patches/ (default)"; else origin="quilt series $src"; fi
	elif [ -n "$src" ]; then
		[ -f "$src" ] || die "--series $src: neither a directory nor a file"
		dir=$(series_split "$src" "mbox $src") || exit 1
		origin="mbox $src"
	else
		dir=$ZC_TOP/patches
		origin="patches/ (default)"
	fi
	while read -r p _; do
		case "$p" in '' | '#'*) continue ;; esac
		[ -f "$dir/$p" ] || die "$dir/series names $p, which does not exist"
	done <"$dir/series"
	export ZC_SERIES_DIR=$dir ZC_SERIES_ORIGIN=$origin
}

# Is the revision under test the default one (patches/)?
series_is_default() { [ "${ZC_SERIES_DIR:-$ZC_TOP/patches}" = "$ZC_TOP/patches" ]; }

# The patch files of the series, in order, as absolute paths (series_resolve first).
series_patches() {
	local p dir=${ZC_SERIES_DIR:-$ZC_TOP/patches}
	[ -f "$dir/series" ] || return 0
	while read -r p _; do
		case "$p" in '' | '#'*) continue ;; esac
		printf '%s\n' "$dir/$p"
	done <"$dir/series"
}

# A hash of everything that decides the patched tree: the base's content and the patches.
# It keys the patched tree in the cache (refs/revs/HASH in the base repository). The base
# enters as its tree, not its commit, so that the same series on the same Debian version
# has the same hash on every machine (the base commit carries the time it was made).
series_hash() {
	{
		zgit -C "$ZC_SRC" rev-parse 'base^{tree}'
		series_patches | while read -r p; do sha256sum <"$p"; done
	} | sha256sum | cut -c1-16
}

# The branch of src/patched for the revision: "series" for patches/, rev-HASH otherwise.
series_branch() {
	if series_is_default; then echo series; else echo "rev-$(series_hash)"; fi
}

# A few lines naming the revision under test (origin, hash, base, subjects), for reports.
series_describe() {
	local p i=0 n hash base
	n=$(series_patches | wc -l)
	hash=$(series_hash 2>/dev/null || echo "unknown (no base tree yet)")
	base=$(zgit -C "$ZC_SRC" log -1 --format='%s (commit %h, tree %t)' base 2>/dev/null || echo "not prepared yet")
	printf 'revision: %s\n' "${ZC_SERIES_ORIGIN:-patches/ (default)}"
	printf 'series hash: %s (%s patches on the base)\n' "$hash" "$n"
	printf 'base: %s\n' "${base#base: }"
	series_patches | while read -r p; do
		i=$((i + 1))
		printf 'patch %d/%d: %s\n' "$i" "$n" "$(patch_subject "$p" || basename "$p")"
	done
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

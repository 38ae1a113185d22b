#!/usr/bin/env bash
# Builds one kernel flavor out of tree, with ccache, on all cores:
#   base     the pristine base tree          -> src/base/out-base
#   patched  the base plus patches/series    -> src/patched/out-patched
#   debug    patched, with KASAN and lockdep -> src/patched/out-debug
# patched and debug are built from the revision under test: patches/ by default, or the one
# ZC_SERIES_SRC / ZC_SERIES_TREE + ZC_SERIES_RANGE name (see lib.sh; test.sh --series sets them).
# Usage: scripts/build-kernel.sh base|patched|debug
# Prints the path of the bzImage on stdout; progress and errors go to stderr.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

flavor=${1:-}
case "$flavor" in
base) src=$ZC_SRC ;;
patched | debug) src=$ZC_PATCHED ;;
*) die "usage: $0 base|patched|debug" ;;
esac
read -r -a frags <<<"$(kernel_frags "$flavor")"
localversion=$(kernel_localversion "$flavor")

zc_lock
series_resolve
"$ZC_TOP/scripts/kernel-tree.sh"
out=$(kernel_out "$flavor")
mkdir -p "$out"
image=$(kernel_image "$flavor")

# Everything that decides the build: the source commit and the config fragments.
stamp=$({
	echo "$flavor $localversion"
	zgit -C "$src" rev-parse 'HEAD^{tree}'
	for f in "${frags[@]}"; do sha256sum <"$ZC_TOP/kernel-config/$f"; done
} | sha256sum | cut -c1-16)
if [ -f "$image" ] && [ "$(cat "$out/.zc-stamp" 2>/dev/null)" = "$stamp" ]; then
	say "kernel $flavor: up to date ($stamp), nothing to do"
	echo "$image"
	exit 0
fi

command -v ccache >/dev/null || die "ccache is missing (scripts/deps.sh installs it)"
kmake=(kmake "$src" "$out")

say "kernel $flavor: configuring (allnoconfig + ${frags[*]})"
kernel_configure "$flavor" "$src" "$out"
paths=()
for f in "${frags[@]}"; do paths+=("$ZC_TOP/kernel-config/$f"); done
"$ZC_TOP/scripts/check-config.sh" "$out/.config" "${paths[@]}"

say "kernel $flavor: building in $out (log: $out/.zc-build.log)"
start=$(date +%s)
"${kmake[@]}" bzImage >"$out/.zc-build.log" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
	sleep 15
	kill -0 "$pid" 2>/dev/null || break
	n=$(grep -c '^  [A-Z]' "$out/.zc-build.log" || true)
	say "kernel $flavor: $n steps, $(($(date +%s) - start))s"
done
if ! wait "$pid"; then
	# Everything but the quiet-mode progress lines: the diagnostics, in full.
	grep -v '^  [A-Z0-9_]\{2,\} ' "$out/.zc-build.log" >&2 || true
	die "kernel $flavor: build failed after $(($(date +%s) - start))s (full log: $out/.zc-build.log)"
fi
echo "$stamp" >"$out/.zc-stamp"
say "kernel $flavor: built in $(($(date +%s) - start))s: $image ($(cat "$out/include/config/kernel.release"))"
echo "$image"

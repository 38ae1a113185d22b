#!/usr/bin/env bash
# Installs the UAPI headers of the patched tree (make headers_install) into the cache and
# prints the include directory. Cached per tree: a second run does no work and says so.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

zc_lock
"$ZC_TOP/scripts/kernel-tree.sh"
tree=$(zgit -C "$ZC_PATCHED" rev-parse 'HEAD^{tree}')
dest=$ZC_CACHE/uapi/$tree
if [ -f "$dest/include/linux/ublk_cmd.h" ]; then
	say "uapi headers: $dest/include (cached for tree $tree)"
else
	say "uapi headers: make headers_install for tree $tree"
	rm -rf "$dest" "$ZC_PATCHED/out-headers"
	make -s -C "$ZC_PATCHED" O="$ZC_PATCHED/out-headers" INSTALL_HDR_PATH="$dest" headers_install >&2
fi
printf '%s\n' "$dest/include"

#!/usr/bin/env bash
# Host tests of the revision inputs (lib.sh, kernel-tree.sh): a quilt directory, an mbox
# with a cover letter, an mbox with folded subjects, a --tree/--range, a range with a merge
# (refused), a revision that does not apply (fails naming the patch), switching revisions
# and back (cached), the cache key of patches/ (the same on every machine), and a base that moved on
# (imported over the old one). It uses throwaway git repos
# with a tiny fake "kernel" as KERNEL_SRC and its own cache; it builds nothing and runs in
# seconds. Prints TAP ("ok - "/"not ok - ") and ends with "N passed, N failed"; with ZC_JUNIT set,
# writes the checks there as JUnit too (lib.sh's junit_case).
# Usage: scripts/tests/series-input.sh
# The sh -c '...' checks expand their arguments themselves:
# shellcheck disable=SC2016
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/zc-series-test.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
passed=0
failed=0
# shellcheck source=scripts/lib.sh
. "$top/scripts/lib.sh"
junit_begin
ok() { printf 'ok - %s\n' "$*"; passed=$((passed + 1)); junit_case "$*" pass; }
notok() { printf 'not ok - %s\n' "$*"; failed=$((failed + 1)); junit_case "$*" fail; }
check() { # check NAME CMD...: ok when CMD succeeds
	local name=$1
	shift
	if "$@" >"$work/check.out" 2>&1; then ok "$name"; else
		notok "$name"
		sed 's/^/    /' "$work/check.out"
	fi
}
g() { git -c user.name=Dev -c user.email=dev@example.invalid -c init.defaultBranch=master -c advice.detachedHead=false "$@"; }

# The fake kernel: a Makefile that knows its version, a header, a .c file.
kernel=$work/linux
mkdir -p "$kernel/include/linux" "$kernel/fs"
printf 'kernelversion:\n\t@echo 6.1.0-fake\n' >"$kernel/Makefile"
printf '#ifndef _SPLICE_H\n#define _SPLICE_H\n#define SPLICE_F_MOVE (0x01)\n#endif\n' >"$kernel/include/linux/splice.h"
printf 'int splice(void)\n{\n\treturn 0;\n}\n' >"$kernel/fs/splice.c"
g -C "$kernel" init -q
g -C "$kernel" add -A
g -C "$kernel" commit -q -m "Linux 6.1.0-fake"
g -C "$kernel" tag v6.1-fake
g -C "$kernel" checkout -q -b topic
sed -i 's/^#endif/#define SPLICE_F_DIRECT (0x10)\n#endif/' "$kernel/include/linux/splice.h"
g -C "$kernel" commit -q -a -m "io_uring/splice: support do_splice_direct" -m "Adds SPLICE_F_DIRECT."
# A subject long enough that format-patch folds the Subject: header.
long="fs/splice: add a helper whose subject is long enough that git format-patch folds the header line"
sed -i 's/return 0;/return SPLICE_F_DIRECT;/' "$kernel/fs/splice.c"
g -C "$kernel" commit -q -a -m "$long"
want_tree=$(g -C "$kernel" rev-parse 'HEAD^{tree}')

# The cache and the environment the scripts see: the fake kernel is the base.
export UBLK_ZC_CACHE=$work/cache KERNEL_SRC=$work/base-src
unset ZC_SERIES_SRC ZC_SERIES_TREE ZC_SERIES_RANGE ZC_SERIES_DIR ZC_SERIES_ORIGIN ZC_LOCK_HELD
mkdir -p "$KERNEL_SRC"
g -C "$kernel" archive v6.1-fake | tar -x -C "$KERNEL_SRC" # a plain tree, not a git one
kt() { "$top/scripts/kernel-tree.sh" "$@"; }
patched_tree() { git -C "$UBLK_ZC_CACHE/src/patched" rev-parse 'HEAD^{tree}'; }

# 1. An mbox with a cover letter, as git format-patch --cover-letter --stdout writes it.
g -C "$kernel" format-patch -q --cover-letter --stdout v6.1-fake..topic >"$work/v1-cover.mbox"
grep -q '^Subject: \[PATCH 0/2\]' "$work/v1-cover.mbox"
check "mbox with a cover letter: kernel-tree.sh applies it" \
	sh -c 'ZC_SERIES_SRC="$1" "$0" >"$2" 2>&1' "$top/scripts/kernel-tree.sh" "$work/v1-cover.mbox" "$work/first.log"
check "mbox with a cover letter: the patched tree is the branch's tree" test "$(patched_tree)" = "$want_tree"
check "mbox with a cover letter: the cover letter is skipped, 2 patches remain" \
	sh -c 'test "$(wc -l <"$(ls -d "$0"/revisions/*/ | head -n 1)series")" -eq 2' "$UBLK_ZC_CACHE"
check "mbox with a cover letter: the skip is reported" grep -q 'skipping the cover letter: \[PATCH 0/2\]' "$work/first.log"
check "mbox: a second run applies nothing" \
	sh -c 'ZC_SERIES_SRC="$1" "$0" 2>&1 | grep -q "already applied (.*), nothing to do"' "$top/scripts/kernel-tree.sh" "$work/v1-cover.mbox"

# 2. Folded Subject: headers are unfolded in the report.
check "mbox with folded subjects: the Subject: header is folded in the mbox" \
	awk '/^Subject: \[PATCH 2\/2\]/ { s = 1; next } s && /^ / { found = 1 } { s = 0 } END { exit !found }' "$work/v1-cover.mbox"
describe() { (
	# shellcheck source=scripts/lib.sh
	. "$top/scripts/lib.sh"
	series_resolve
	series_describe
); }
check "mbox with folded subjects: the report names the whole subject" \
	sh -c 'ZC_SERIES_SRC="$1" bash -c "$2" | grep -qxF "patch 2/2: $3"' _ "$work/v1-cover.mbox" \
	". '$top/scripts/lib.sh'; series_resolve; series_describe" "$long"
check "mbox: the report names the series hash and the base" \
	sh -c 'ZC_SERIES_SRC="$1" bash -c "$2" | grep -q "^series hash: [0-9a-f]\{16\} .*base: KERNEL_SRC" || ZC_SERIES_SRC="$1" bash -c "$2" | grep -q "^base: KERNEL_SRC 6.1.0-fake"' \
	_ "$work/v1-cover.mbox" ". '$top/scripts/lib.sh'; series_resolve; series_describe"

# 3. The same commits as --tree/--range give the same tree; a quilt directory too.
check "--tree/--range: applies" env ZC_SERIES_TREE="$kernel" ZC_SERIES_RANGE=v6.1-fake..topic "$top/scripts/kernel-tree.sh"
check "--tree/--range: same tree as the mbox" test "$(patched_tree)" = "$want_tree"
mkdir -p "$work/quilt"
g -C "$kernel" format-patch -q -o "$work/quilt" v6.1-fake..topic
(cd "$work/quilt" && printf '%s\n' ./*.patch | sed 's#^\./##' >series)
check "quilt directory: applies" env ZC_SERIES_SRC="$work/quilt" "$top/scripts/kernel-tree.sh"
check "quilt directory: same tree" test "$(patched_tree)" = "$want_tree"

# 4. Switching back to a revision applied before applies nothing.
check "switching back to the mbox: cached, nothing applied" \
	sh -c 'ZC_SERIES_SRC="$1" "$0" 2>&1 | tee /dev/stderr | grep -q "was applied before" && ! ZC_SERIES_SRC="$1" "$0" 2>&1 | grep -q "  apply "' \
	"$top/scripts/kernel-tree.sh" "$work/v1-cover.mbox"

# 5. A range with a merge commit is refused, with a message.
g -C "$kernel" checkout -q -b side v6.1-fake
echo "/* side */" >>"$kernel/fs/splice.c"
g -C "$kernel" commit -q -a -m "side change"
g -C "$kernel" checkout -q topic
g -C "$kernel" merge -q --no-edit side >/dev/null 2>&1
if out=$(ZC_SERIES_TREE=$kernel ZC_SERIES_RANGE=v6.1-fake..topic "$top/scripts/kernel-tree.sh" 2>&1); then
	notok "range with a merge commit: refused"
else
	ok "range with a merge commit: refused"
	check "range with a merge commit: the message names the merge" grep -q "contains merge commit(s): [0-9a-f]* (Merge branch 'side'" <<<"$out"
	printf '%s\n' "$out" | grep -E 'ERROR|Merge' | sed 's/^/    # /'
fi

# 6. A revision that does not apply fails with git's message and the name of the patch.
g -C "$kernel" checkout -q -b bad v6.1-fake
printf 'int other(void);\n' >"$kernel/fs/splice.c"
g -C "$kernel" commit -q -a -m "fs/splice: rewrite"
echo "/* more */" >>"$kernel/fs/splice.c"
g -C "$kernel" commit -q -a -m "fs/splice: more"
g -C "$kernel" format-patch -q --stdout HEAD~1..HEAD >"$work/bad.mbox" # needs its parent
if out=$(ZC_SERIES_SRC=$work/bad.mbox "$top/scripts/kernel-tree.sh" 2>&1); then
	notok "a revision that does not apply: fails"
else
	ok "a revision that does not apply: fails"
	check "a revision that does not apply: git's message" grep -q 'error: patch failed: fs/splice.c' <<<"$out"
	check "a revision that does not apply: the patch is named" grep -q "patch 1/1 0001-fs-splice-more.patch ('fs/splice: more') does not apply" <<<"$out"
	printf '%s\n' "$out" | grep -E 'error|ERROR' | sed 's/^/    # /'
fi
check "after a failed apply the previous revision is still checked out" test "$(patched_tree)" = "$want_tree"

# 7. A message without a diff that is no cover letter is refused; an mbox without patches too.
printf 'From nobody Mon Sep 17 00:00:00 2001\nFrom: A <a@b.c>\nSubject: [PATCH 1/1] nothing\n\nno diff here\n' >"$work/nodiff.mbox"
check "an mbox message without a diff (not 0/N) is refused" \
	sh -c '! ZC_SERIES_SRC="$1" "$0" 2>&1 | grep -q x; ZC_SERIES_SRC="$1" "$0" 2>&1 | grep -q "has no diff and is not a cover letter"' \
	"$top/scripts/kernel-tree.sh" "$work/nodiff.mbox"

# 8. The cache key of patches/ is the base tree and the sha256 of each patch file. It does
#    not depend on the base commit, which carries the time it was made: the same series on
#    the same base has the same hash on every machine (here: a second cache whose base
#    commit has the same tree and another date).
key_of() { # the series hash of patches/ in $UBLK_ZC_CACHE
	bash -c ". '$top/scripts/lib.sh'; series_resolve; series_hash" 2>/dev/null
}
want_key=$({
	git -C "$UBLK_ZC_CACHE/src/base" rev-parse 'base^{tree}'
	while read -r p; do sha256sum <"$top/patches/$p"; done < <(grep -v '^#' "$top/patches/series" | sed '/^$/d')
} | sha256sum | cut -c1-16)
check "the key of patches/ is the base tree and the patch files ($want_key)" test "$want_key" = "$(key_of)"
other=$work/other-cache
mkdir -p "$other/src"
git clone -q --bare "$UBLK_ZC_CACHE/src/base" "$other/src/base"
other_base=$(GIT_COMMITTER_DATE='2001-01-01T00:00:00Z' GIT_AUTHOR_DATE='2001-01-01T00:00:00Z' \
	g -C "$other/src/base" commit-tree 'base^{tree}' -m "base: the same tree, made at another time")
git -C "$other/src/base" update-ref "$(git -C "$other/src/base" rev-parse --symbolic-full-name base)" "$other_base"
check "another base commit with the same tree gives the same key" \
	sh -c 'test "$(git -C "$1" rev-parse base)" != "$(git -C "$2" rev-parse base)" && test "$(UBLK_ZC_CACHE="$3" bash -c "$4")" = "$5"' \
	"$UBLK_ZC_CACHE/src/base" "$other/src/base" "$other" ". '$top/scripts/lib.sh'; series_resolve; series_hash" "$want_key"
check "patches/ is branch series" test "$(bash -c ". '$top/scripts/lib.sh'; series_resolve; series_branch")" = series

# 9. A base that moved on (another KERNEL_SRC here; a new Debian upload works the same way)
#    is imported as a new base commit and checked out over the old one; the revision is
#    applied again on it, and files that did not change keep their mtime.
cp -a "$KERNEL_SRC" "$work/base-src-2"
printf '6.1.0-fake, second upload\n' >"$work/base-src-2/README"
sed -i 's/6.1.0-fake/6.1.1-fake/' "$work/base-src-2/Makefile"
before=$(stat -c %Y.%y "$UBLK_ZC_CACHE/src/base/include/linux/splice.h")
sleep 1
if out=$(KERNEL_SRC=$work/base-src-2 ZC_SERIES_SRC=$work/v1-cover.mbox "$top/scripts/kernel-tree.sh" 2>&1); then
	ok "a new base: kernel-tree.sh imports it"
	check "a new base: it says what it replaces" grep -qF "the cache holds 'KERNEL_SRC 6.1.0-fake (KERNEL_SRC)', but the base here is 'KERNEL_SRC 6.1.1-fake (KERNEL_SRC)'" <<<"$out"
	check "a new base: the base commit names it" \
		test "$(git -C "$UBLK_ZC_CACHE/src/base" log -1 --format=%s base)" = "base: KERNEL_SRC 6.1.1-fake (KERNEL_SRC)"
	check "a new base: the new file is in the base tree" test -f "$UBLK_ZC_CACHE/src/base/README"
	check "a new base: an unchanged file was not rewritten" \
		test "$(stat -c %Y.%y "$UBLK_ZC_CACHE/src/base/include/linux/splice.h")" = "$before"
	check "a new base: the revision is applied again on it" grep -q "applying the series" <<<"$out"
	check "a new base: the patched tree has the new file and the series" \
		sh -c 'test -f "$0/README" && grep -q SPLICE_F_DIRECT "$0/fs/splice.c"' "$UBLK_ZC_CACHE/src/patched"
else
	notok "a new base: kernel-tree.sh imports it"
	printf '%s\n' "$out" | sed 's/^/    # /'
fi

printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Writes patches/ from a branch of the kernel cache: git format-patch -n --cover-letter of
# base..BRANCH, keeping the subject and text of the current cover letter (only the
# shortlog and diffstat are regenerated), and patches/series listing 0001 onwards.
# Usage: scripts/export-series.sh [BRANCH]     (default: series, in src/patched)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

branch=${1:-series}
cover=$ZC_TOP/patches/0000-cover-letter.patch
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
zgit -C "$ZC_SRC" format-patch -q -n --cover-letter --subject-prefix="PATCH ${ZC_REROLL:-v3}" -o "$tmp" "base..$branch"
if [ -f "$cover" ]; then
	# Subject and body of the old letter replace git's placeholders.
	python3 - "$cover" "$tmp/0000-cover-letter.patch" <<'PY'
import re, sys
old = open(sys.argv[1]).read()
new = open(sys.argv[2]).read()
subject = re.search(r'^Subject: (.*)$', old, re.M).group(1)
body = old.split('\n\n', 1)[1]
body = body[:body.index('\nublk-splice-zc developers (')].rstrip('\n') + '\n'
new = new.replace('*** SUBJECT HERE ***', subject.split('] ', 1)[1])
new = new.replace('*** BLURB HERE ***\n', body)
open(sys.argv[2], 'w').write(new)
PY
fi
rm -f "$ZC_TOP"/patches/*.patch
cp "$tmp"/*.patch "$ZC_TOP/patches/"
(cd "$ZC_TOP/patches" && ls 0[0-9][0-9][1-9]-*.patch >series)
say "exported $(wc -l <"$ZC_TOP/patches/series") patches from $branch to patches/"

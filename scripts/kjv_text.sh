#!/usr/bin/env bash
# Writes the King James Bible (Debian package bible-kjv-text, public domain) as plain text: one
# verse per line, a blank line between chapters (Lineage's text loader treats each chapter as one
# document), verse references removed. The embedded teacher was trained on this text and the
# README's first command distills on it. Usage: scripts/kjv_text.sh OUT.txt
set -euo pipefail
out=${1:?usage: scripts/kjv_text.sh OUT.txt}
if ! command -v bible >/dev/null; then
  echo "kjv_text.sh: the 'bible' program is missing; run scripts/setup.sh (installs bible-kjv)" >&2
  exit 1
fi
tmp="$out.tmp.$$"
bible -f "Gen1:1-Rev22:21" | awk '
  NF == 0 { next }
  { split($1, ref, ":"); if (ref[1] != chapter) { if (NR > 1) print ""; chapter = ref[1] }
    $1 = ""; sub(/^ /, ""); print }' > "$tmp"
mv "$tmp" "$out"

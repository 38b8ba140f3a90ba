#!/bin/sh
# Prints which runtime file uses which (through the lmp_ and lmp__ symbols
# each object file defines and the ones it needs), then whether that graph
# has a cycle. Usage: tools/layers.sh [build-dir]
BUILD=${1:-build}
cd "$(dirname "$0")/.." || exit 1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The files are those of the Makefile's RUNTIME list (its lines joined),
# so that an object left in the build directory by an older tree is not
# taken for one of them.
files=$(awk '/^RUNTIME :=/ {on = 1; sub(/^RUNTIME :=/, "")}
             on {more = /\\$/; sub(/\\$/, ""); printf "%s ", $0; if (!more) exit}' Makefile)
[ -n "$files" ] || { echo "no RUNTIME list in the Makefile" >&2; exit 2; }
for f in $files; do
  o="$BUILD/obj/$f.o"
  [ -f "$o" ] || { echo "$o is missing: run make all first" >&2; exit 2; }
  nm "$o" | awk '$1 != "U" && $3 ~ /^(lmp_|lmp__|luaopen_)/ {print $3}' | sed "s/\$/ $f/" >> "$tmp/defined"
  nm "$o" | awk '$1 == "U" && $2 ~ /^(lmp_|lmp__|luaopen_)/ {print $2}' | sed "s/\$/ $f/" >> "$tmp/needed"
done
sort "$tmp/defined" > "$tmp/d"; sort "$tmp/needed" > "$tmp/n"
# user -> provider edges
join "$tmp/n" "$tmp/d" | awk '$2 != $3 {print $2, $3}' | sort -u > "$tmp/edges"
cat "$tmp/edges"
if tsort "$tmp/edges" >/dev/null 2>"$tmp/err"; then
  echo "no cycle"
else
  echo "cycle:"; grep -v "^tsort: -: input contains a loop:" "$tmp/err" | sed 's/^tsort: /  /'
  exit 1
fi

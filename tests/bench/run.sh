#!/bin/sh
# Runs the benchmarks: every tests/bench/NAME.lua that has a NAME.py beside
# it. Each side prints lines "workload.measure seconds" (and "# notes");
# this prints them side by side with the ratio lmp/CPython. Benchmarks are
# not tests: they print figures and never fail for being slow.
# Usage: tests/bench/run.sh [build-dir] [repetitions]   (make bench)
BUILD=${1:-build}
REPEAT=${2:-5}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
BUILD=$(cd "$BUILD" && pwd)
# As tests/run.sh sets them.
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$ROOT/tests/?.lua;/usr/local/share/lua/5.4/?.lua;/usr/local/share/lua/5.4/?/init.lua;/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;;"
export LUA_CPATH="$BUILD/?.so;/usr/local/lib/lua/5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;;"
export LMP_BUILD="$BUILD" LMP_ROOT="$ROOT"
LUA_CMD=${LMP_BENCH_LUA:-lua5.4}
PYTHON=${PYTHON:-python3}
lmp_out=$(mktemp)
py_out=$(mktemp)
for lua in tests/bench/*.lua; do
  py=${lua%.lua}.py
  [ -f "$py" ] || continue
  name=$(basename "$lua" .lua)
  echo "== $name: median of $REPEAT runs, seconds"
  if ! $LUA_CMD "$lua" "$REPEAT" >"$lmp_out"; then echo "$name: the lmp side failed"; continue; fi
  if ! $PYTHON "$py" "$REPEAT" >"$py_out"; then echo "$name: the CPython side failed"; continue; fi
  awk 'NR == FNR { if ($1 !~ /^#/) python[$1] = $2; next }
       /^#/ { print; next }
       { p = ($1 in python) ? python[$1] : "";
         printf "%-20s lmp %10.4f   python %10s   lmp/python %s\n", $1, $2,
                p == "" ? "-" : sprintf("%.4f", p),
                (p == "" || p == 0) ? "-" : sprintf("%.2f", $2 / p) }' "$py_out" "$lmp_out"
done
rm -f "$lmp_out" "$py_out"

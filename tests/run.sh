#!/bin/bash
# Runs the whole suite: the busted specs under Lua 5.4 and the C tests.
# Ends with one line "N passed, N failed". Usage: tests/run.sh [build-dir]
# LMP_TEST_LUA picks the interpreter (the ASan runner, valgrind ...).
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
BUILD=$(cd "$BUILD" && pwd)
LUA_CMD=${LMP_TEST_LUA:-lua5.4}
# Debian's busted is installed for Lua 5.1; its pure-Lua modules run under
# 5.4 when their folder comes after the 5.4 ones.
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$ROOT/tests/?.lua;/usr/local/share/lua/5.4/?.lua;/usr/local/share/lua/5.4/?/init.lua;/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;;"
export LUA_CPATH="$BUILD/?.so;$BUILD/test/?.so;/usr/local/lib/lua/5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;;"
export LMP_BUILD="$BUILD" LMP_ROOT="$ROOT"
# What of lmp's is in /tmp and /dev/shm before the run: the run must add
# nothing that stays (manager directories, shared memory names).
lmp_entries() { ls -d /tmp/lmp[-_]* /dev/shm/lmp[-_]* 2>/dev/null | sort; }
before=$(mktemp)
lmp_entries >"$before"
out=$(mktemp)
specs=${LMP_SPECS:-$(ls tests/*_spec.lua tests/peer/*_spec.lua)}
# shellcheck disable=SC2086
set -o pipefail
$LUA_CMD /usr/bin/busted -o TAP $specs 2>&1 | tee "$out"
status=$?
passed=$(grep -c '^ok ' "$out")
failed=$(grep -c '^not ok ' "$out")
# busted exits with the number of failures; any other non-zero status (a
# crash, valgrind's error code) fails the run too.
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "# the test process exited with status $status"
  failed=1
fi
# A spec file that fails to load is an error busted reports outside TAP.
if grep -q '^# *Error\|^lua5.4: \|^lmp: ' "$out" && [ "$failed" -eq 0 ] && [ "$passed" -eq 0 ]; then
  failed=1
fi
# Under the sanitizers a report from any process (workers included, whose
# stderr is ours) fails the run even if the test around it passed.
if [ -n "$LMP_SANITIZED" ] && grep -q 'ERROR: AddressSanitizer\|runtime error:' "$out"; then
  grep -B2 -A20 'ERROR: AddressSanitizer\|runtime error:' "$out" | head -60
  failed=$((failed + 1))
fi
# A process's resource tracker removes what it left a moment after it
# ends; other suites running on the machine come and go meanwhile, so only
# what stays for several seconds counts.
left=""
for _ in $(seq 50); do
  left=$(lmp_entries | comm -13 "$before" -)
  [ -z "$left" ] && break
  sleep 0.2
done
if [ -n "$left" ]; then
  echo "not ok - the run left lmp's files behind:"
  echo "$left" | sed 's/^/#   /'
  failed=$((failed + 1))
fi
rm -f "$out" "$before"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]

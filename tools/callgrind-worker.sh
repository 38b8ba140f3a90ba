#!/bin/sh
# A worker under callgrind, to count what it spends per task: LMP_WORKER
# points here, and each worker writes its counts to
# $LMP_CALLGRIND_OUT.<pid> (tests/bench/overhead.lua says how to use them).
exec valgrind --tool=callgrind --callgrind-out-file="${LMP_CALLGRIND_OUT:?set LMP_CALLGRIND_OUT}.%p" \
  "${LMP_CALLGRIND_WORKER:-$(dirname "$0")/../build/bin/lmp-worker}" "$@" 2>/dev/null

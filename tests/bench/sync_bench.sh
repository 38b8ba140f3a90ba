#!/bin/sh
# The synchronisation benchmark: tests/bench/sync.lua through lmp and
# tests/bench/sync_cpython.py through CPython's multiprocessing in the same
# run, the sides alternating repetition by repetition so that a noisy
# machine hurts both alike, lmp a second time with LMP_SPIN_US=0 (every
# wait sleeps in the kernel at once, no spinning first); beside them the
# floor for a wake-up between two processes, a bare futex ping-pong
# (tests/bench/futex_pingpong.c). Prints the median of the repetitions of
# each figure and the ratios. Benchmarks are not tests: this prints and
# exits 0, targets met or not.
#
# Usage: tests/bench/sync_bench.sh [build-dir] [repetitions] [scale]
#   PYTHON=   the CPython to compare with (python3)
BUILD=${1:-build}
REPEAT=${2:-5}
SCALE=${3:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 0
PYTHON=${PYTHON:-python3}
LMP="$BUILD/bin/lmp"
CC=${CC:-cc}
if [ ! -x "$LMP" ]; then
  echo "sync_bench: $LMP not found; run make first"
  exit 0
fi
mkdir -p "$BUILD/bench"
FLOOR="$BUILD/bench/futex_pingpong"
if ! $CC -O2 -o "$FLOOR" tests/bench/futex_pingpong.c; then
  echo "sync_bench: cannot compile tests/bench/futex_pingpong.c"
  exit 0
fi
raw="$BUILD/bench/sync_raw.txt"
: >"$raw"
echo "== sync: lmp against CPython $($PYTHON -c 'import sys; print(sys.version.split()[0])')" \
  "multiprocessing, median of $REPEAT repetitions (scale $SCALE)"
echo "# machine: $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
i=0
while [ "$i" -lt "$REPEAT" ]; do
  "$LMP" tests/bench/sync.lua "$SCALE" | sed 's/^/lmp /' >>"$raw"
  "$PYTHON" tests/bench/sync_cpython.py "$SCALE" | sed 's/^/python /' >>"$raw"
  LMP_SPIN_US=0 "$LMP" tests/bench/sync.lua "$SCALE" | sed 's/^/nospin /' >>"$raw"
  "$FLOOR" | sed 's/^/floor /' >>"$raw"
  i=$((i + 1))
done
# The median of each (side, figure), then one line per figure.
sort -k1,1 -k2,2 -k3,3g "$raw" | awk '
  { key = $1 " " $2; n[key]++; v[key, n[key]] = $3 }
  END {
    for (key in n) med[key] = v[key, int((n[key] + 1) / 2)]
    floor = med["floor futex.wake_us"]
    printf "%-22s %12s %12s %12s   %s\n", "figure", "lmp", "lmp nospin", "python", "lmp/python"
    split("event.wake_us lock.uncontended_ns counter.contended_us barrier.round_us", names, " ")
    for (i = 1; i <= 4; i++) {
      f = names[i]
      l = med["lmp " f]; s = med["nospin " f]; p = med["python " f]
      printf "%-22s %12s %12s %12s   %.2f\n", f, l, s, p, (p > 0 ? l / p : 0)
    }
    printf "%-22s %12s\n", "futex.wake_us (floor)", floor
    if (floor > 0) {
      printf "event wake / bare futex wake: %.2f (default), %.2f (LMP_SPIN_US=0: no watching before a sleep); target <= 2\n",
        med["lmp event.wake_us"] / floor, med["nospin event.wake_us"] / floor
    }
  }'
echo "# every figure of every repetition: $raw"
exit 0

# shellcheck shell=sh disable=SC2034 # (its variables are for the script that sources it)
# The set-up pool_bench.sh and workloads_bench.sh share, sourced by each
# with its arguments: [build-dir] [repetitions], or --summary RAW-FILE (the
# tables again, from the figures a run kept). Sets SUMMARY_ONLY (the raw
# file's absolute path, or empty), BUILD, ROOT (and moves there), REPEAT
# (5, or 3 with QUICK=1), PYTHON (python3 unless set), exported with QUICK;
# results, when only the summary is asked for. Without an lmp build it
# says so and ends the benchmark (exit 0: benchmarks never fail).
BENCH_NAME=$(basename "$0" .sh)
SUMMARY_ONLY=""
if [ "$1" = --summary ]; then
  SUMMARY_ONLY=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
  set --
fi
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 0
if [ "$QUICK" = 1 ]; then REPEAT=${2:-3}; else REPEAT=${2:-5}; fi
PYTHON=${PYTHON:-python3}
export QUICK PYTHON
if [ -n "$SUMMARY_ONLY" ]; then
  results=$SUMMARY_ONLY
elif [ ! -x "$BUILD/bin/lmp" ]; then
  echo "$BENCH_NAME: $BUILD/bin/lmp not found; run make first"
  exit 0
fi

# The line that says what machine the figures come from, and how busy it
# was when the run began.
bench_machine() {
  model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
  echo "# machine: $(nproc) cores, $model; load average at start:" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# The start of the awk program that prints a run's tables: each line of
# the raw figures, "side name value", is kept under "side name", and
# median(key) is the median of a key's values (a run's repetitions).
# shellcheck disable=SC2016 # awk's $1, not the shell's
BENCH_MEDIAN='
  { key = $1 " " $2; n[key]++; v[key, n[key]] = $3 }
  function median(key,   i, j, k, t, a) {
    k = n[key]
    if (!k) return ""
    for (i = 1; i <= k; i++) a[i] = v[key, i]
    for (i = 2; i <= k; i++) {
      t = a[i]
      for (j = i - 1; j > 0 && a[j] > t; j--) a[j + 1] = a[j]
      a[j + 1] = t
    }
    return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
  }
'

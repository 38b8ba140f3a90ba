#!/bin/sh
# The pool benchmark: each workload of tests/bench/pool.lua run through lmp
# and, in the same run, through CPython's multiprocessing
# (tests/bench/pool_cpython.py: fork, and spawn for start-up and memory,
# forkserver for start-up),
# the sides alternating repetition by repetition so that a noisy machine
# hurts both alike; beside them the floor for one round trip, a C pipe
# ping-pong between two processes (tests/bench/pingpong.c), a futex
# ping-pong (the floor for lmp's shared-memory ring, on by default), and
# for the latency and throughput workloads lmp again without its ring
# (LMP_RING=0, side "socket"). Prints the
# median of the repetitions of each figure, the ratios and the targets.
# Benchmarks are not tests: this prints and exits 0, targets met or not.
#
# Usage: tests/bench/pool_bench.sh [build-dir] [repetitions]
#        tests/bench/pool_bench.sh --summary RAW-FILE  (the table again, from
#        the figures a run kept in build-dir/bench/pool_raw.txt)
#   QUICK=1   smaller sizes and 3 repetitions (about a minute)
#   PYTHON=   the CPython to compare with (python3)
# shellcheck source=tests/bench/setup.sh
. "$(dirname "$0")/setup.sh"
LMP="$BUILD/bin/lmp"
CC=${CC:-cc}
# Runs every repetition, appending each figure to $results.
measure() {
  mkdir -p "$BUILD/bench"
  PINGPONG="$BUILD/bench/pingpong"
  if ! $CC -O2 -o "$PINGPONG" tests/bench/pingpong.c; then
    echo "pool_bench: cannot compile tests/bench/pingpong.c"
    exit 0
  fi

  echo "== pool: lmp against CPython $($PYTHON -c 'import sys; print(sys.version.split()[0])')" \
    "multiprocessing, median of $REPEAT repetitions${QUICK:+ (QUICK=$QUICK)}"
  bench_machine

  # Every figure of every repetition, kept for a second look.
  results="$BUILD/bench/pool_raw.txt"
  : >"$results"

  # On this kind of machine (a VM whose idle CPUs halt) a wake-up on the
  # other CPU can cost tens of microseconds, and whether the two ends of a
  # round trip share a CPU is up to the scheduler: the latency workloads run
  # a second time with every process pinned to CPU 0 (taskset), which gives
  # the figure without that noise.
  PIN=""
  command -v taskset >/dev/null 2>&1 && PIN="taskset -c 0"

  # side workload: one repetition, its lines tagged "side name value";
  # a workload NAME_pinned is NAME run under $PIN, its names suffixed.
  # sh has no local variables: run's names differ from the loop's below
  # (the loop's $workload overwritten here ran only the first side pinned).
  run() {
    side=$1 what=${2%_pinned} pin="" suffix=""
    if [ "$what" != "$2" ]; then pin=$PIN suffix=_pinned; fi
    # $pin is empty or a command with its arguments: split on purpose.
    # shellcheck disable=SC2086
    case $side in
      lmp) timeout 600 $pin "$LMP" tests/bench/pool.lua "$what" ;;
      socket) LMP_RING=0 timeout 600 $pin "$LMP" tests/bench/pool.lua "$what" ;;
      fork|spawn|forkserver) timeout 600 $pin "$PYTHON" tests/bench/pool_cpython.py "$what" "$side" ;;
    esac | sed -n "s/^\([a-z_.A-Z0-9]*\) \([-0-9.e+]*\)\$/$side \1$suffix \2/p" >>"$results"
  }

  rep=1
  while [ "$rep" -le "$REPEAT" ]; do
    printf '# repetition %d of %d:' "$rep" "$REPEAT"
    "$PINGPONG" 2000 64 | sed 's/^/floor /' >>"$results"
    if [ -n "$PIN" ]; then $PIN "$PINGPONG" 2000 64 | sed 's/^/floor /; s/ /_pinned /2' >>"$results"; fi
    workloads="apply map imap async startup bigstring memory primes"
    [ -n "$PIN" ] && workloads="apply apply_pinned map imap async async_pinned startup bigstring memory primes"
    for workload in $workloads; do
      printf ' %s' "$workload"
      sides="lmp fork"
      case $workload in
        startup) sides="lmp fork spawn forkserver" ;;
        memory) sides="lmp fork spawn" ;;
        primes) sides="lmp" ;; # serial lmp against a pool: no CPython side
        # Without the shared-memory ring (ring=false) where a round trip counts.
        apply|apply_pinned|map|imap|async|async_pinned) sides="lmp socket fork" ;;
      esac
      # Alternate which side goes first.
      if [ $((rep % 2)) = 0 ]; then
        sides=$(echo "$sides" | awk '{ for (i = NF; i > 0; i--) printf "%s ", $i }')
      fi
      for side in $sides; do run "$side" "$workload"; done
    done
    echo
    rep=$((rep + 1))
  done
  echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

}
[ -z "$SUMMARY_ONLY" ] && measure
awk "$BENCH_MEDIAN"'
  function fmt(x) {
    if (x == "") return "-"
    if (x >= 100000) return sprintf("%.3gM", x / 1e6)
    if (x >= 100) return sprintf("%.0f", x)
    return sprintf("%.3g", x)
  }
  # row(label, lmp, other, other name, ratio, target, met)
  function row(label, a, b, bname, ratio, target, ok) {
    printf "%-34s %9s %9s %-7s %7s  %-14s %s\n", label, fmt(a), fmt(b), bname,
      ratio == "" ? "-" : sprintf("%.2f", ratio), target, ok == "" ? "-" : (ok ? "met" : "MISSED")
  }
  function ratio_of(a, b) { return (a == "" || b == "" || b == 0) ? "" : a / b }
  function check(r, op, t) {
    if (r == "") return ""
    return op == "<=" ? r <= t : r >= t
  }
  END {
    printf "%-34s %9s %9s %-7s %7s  %-14s %s\n", "workload (unit)", "lmp", "other", "(which)",
      "ratio", "target", "met"
    floor = median("floor pingpong.pipe_us")
    a = median("lmp apply.median_us")
    r = ratio_of(a, floor)
    row("1 apply latency (us)", a, floor, "pipe", r, "lmp/pipe<=1.5", check(r, "<=", 1.5))
    b = median("fork apply.median_us"); r = ratio_of(b, a)
    row("1 apply latency (us)", a, b, "fork", r, "py/lmp>=5", check(r, ">=", 5))
    row("  apply mean, for reference (us)", median("lmp apply.mean_us"),
      median("fork apply.mean_us"), "fork", ratio_of(median("fork apply.mean_us"),
      median("lmp apply.mean_us")), "", "")
    row("  socketpair ping-pong (us)", median("floor pingpong.socketpair_us"), "", "", "", "", "")
    floor = median("floor pingpong.futex_us"); r = ratio_of(a, floor)
    row("1 apply latency (us)", a, floor, "futex", r, "lmp/futex<=1.5", check(r, "<=", 1.5))
    # One CPU for everything (taskset): for reference, beside the targets.
    floor = median("floor pingpong.pipe_us_pinned")
    a = median("lmp apply.median_us_pinned")
    row("  apply, one CPU (us)", a, floor, "pipe", ratio_of(a, floor), "", "")
    b = median("fork apply.median_us_pinned")
    row("  apply, one CPU (us)", a, b, "fork", ratio_of(b, a), "(py/lmp)", "")
    row("  socketpair ping-pong, one CPU (us)", median("floor pingpong.socketpair_us_pinned"),
      "", "", "", "", "")
    floor = median("floor pingpong.futex_us_pinned")
    row("  apply, one CPU (us)", a, floor, "futex", ratio_of(a, floor), "", "")
    m = median("lmp map.items_per_s"); b = median("fork map.items_per_s"); r = ratio_of(m, b)
    row("2 map 1..N (items/s)", m, b, "fork", r, "lmp/py>=2", check(r, ">=", 2))
    a = median("lmp imap.items_per_s"); b = median("fork imap.items_per_s"); r = ratio_of(a, b)
    row("3 imap, no chunksize (items/s)", a, b, "fork", r, "lmp/py>=50", check(r, ">=", 50))
    # Against a map of the same items on the same pool (what the target
    # measures), and against the map of row 2 (ten times as many items).
    same = median("lmp imap.map_items_per_s"); r = ratio_of(a, same)
    row("3 imap against lmp map, same items", a, same, "lmp map", r, "imap/map>=0.7", check(r, ">=", 0.7))
    row("  imap against row 2 map (items/s)", a, m, "lmp map", ratio_of(a, m), "", "")
    a = median("lmp async.items_per_s"); b = median("fork async.items_per_s"); r = ratio_of(a, b)
    row("4 apply_async x N (items/s)", a, b, "fork", r, "lmp/py>=10", check(r, ">=", 10))
    a = median("lmp async.main_cpu_us"); b = median("fork async.main_cpu_us")
    row("  apply_async, main CPU a task (us)", a, b, "fork", ratio_of(b, a), "(py/lmp)", "")
    a = median("lmp async.items_per_s_pinned"); b = median("fork async.items_per_s_pinned")
    row("  apply_async, one CPU (items/s)", a, b, "fork", ratio_of(a, b), "", "")
    # lmp without its ring (LMP_RING=0: the socket alone), same run.
    a = median("lmp apply.median_us"); b = median("socket apply.median_us")
    row("R apply, ring on against off (us)", a, b, "socket", ratio_of(a, b), "", "")
    a = median("lmp apply.median_us_pinned"); b = median("socket apply.median_us_pinned")
    row("  apply, one CPU, on against off (us)", a, b, "socket", ratio_of(a, b), "", "")
    a = median("socket apply.median_us_pinned"); floor = median("floor pingpong.socketpair_us_pinned")
    row("  apply, socket, one CPU (us)", a, floor, "sockpair", ratio_of(a, floor), "", "")
    a = median("lmp async.items_per_s"); b = median("socket async.items_per_s")
    row("R apply_async, on against off (items/s)", a, b, "socket", ratio_of(a, b), "", "")
    r = ratio_of(b, median("fork async.items_per_s"))
    row("  apply_async, socket (items/s)", b, median("fork async.items_per_s"), "fork", r, "", "")
    a = median("lmp map.items_per_s"); b = median("socket map.items_per_s")
    row("R map, on against off (items/s)", a, b, "socket", ratio_of(a, b), "", "")
    a = median("socket imap.items_per_s"); m = median("socket map.items_per_s"); r = ratio_of(a, m)
    row("  imap against map, socket (items/s)", a, m, "sock map", r, "", "")
    a = median("lmp startup_fork.ms"); b = median("fork startup.ms"); r = ratio_of(a, b)
    row("5 Pool(2)+task+close, fork (ms)", a, b, "fork", r, "lmp/py<=0.2", check(r, "<=", 0.2))
    a = median("lmp startup.ms"); b = median("spawn startup.ms"); r = ratio_of(a, b)
    row("5 Pool(2)+task+close, spawn (ms)", a, b, "spawn", r, "lmp/py<=0.1", check(r, "<=", 0.1))
    b = median("fork startup.ms"); r = ratio_of(a, b)
    row("  lmp spawn against CPython fork", a, b, "fork", r, "", "")
    a = median("lmp startup_forkserver.ms"); b = median("forkserver startup.ms"); r = ratio_of(a, b)
    row("5 Pool(2)+task+close, forkserver (ms)", a, b, "forkserver", r, "lmp/py<=0.2",
      check(r, "<=", 0.2))
    a = median("lmp primes.efficiency")
    row("6 primes, serial/(2 x Pool(2))", a, "", "", "", ">=0.95", check(a, ">=", 0.95))
    row("  cores the workers got", median("lmp primes.pool_cores_used"), "", "", "", "", "")
    row("  serial, mean of before and after the pool (s)", median("lmp primes.serial_s"), "", "", "", "", "")
    row("  serial after / serial before", median("lmp primes.serial_drift"), "", "", "", "", "")
    row("  Pool(2), default chunksize (s)", median("lmp primes.parallel_s"), "", "", "", "", "")
    row("  Pool(2), chunksize 1 (s)", median("lmp primes.parallel_chunk1_s"), "", "",
      median("lmp primes.efficiency_chunk1"), "(efficiency)", "")
    a = median("lmp bigstring.send_MB_per_s"); b = median("fork bigstring.send_MB_per_s")
    r = ratio_of(a, b)
    row("7 big string to a worker (MB/s)", a, b, "fork", r, "lmp/py>=3", check(r, ">=", 3))
    a = median("lmp bigstring.return_MB_per_s"); b = median("fork bigstring.return_MB_per_s")
    r = ratio_of(a, b)
    row("7 big string returned (MB/s)", a, b, "fork", r, "lmp/py>=3", check(r, ">=", 3))
    a = median("lmp memory.idle_worker_kB")
    row("8 idle worker private memory (kB)", a, median("spawn memory.idle_worker_kB"), "spawn",
      ratio_of(a, median("spawn memory.idle_worker_kB")), "lmp<=1024 kB", check(a, "<=", 1024))
    row("  (CPython fork, for reference)", a, median("fork memory.idle_worker_kB"), "fork",
      ratio_of(a, median("fork memory.idle_worker_kB")), "", "")
  }' "$results"
exit 0

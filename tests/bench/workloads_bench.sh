#!/bin/sh
# The workloads benchmark: CPU-bound programs (tests/bench/workloads/) run
# serially, through lmp's Pool(2), as two serial copies at once (the
# ceiling: what two cores give two independent processes), through
# LuaLanes when it is built, and through CPython's multiprocessing.Pool(2)
# beside CPython's own serial run; every way's checksum is checked against
# the serial one. The ways alternate, reversed every other repetition, so
# that a noisy machine hurts them alike. Prints one table of efficiencies
# (serial time / (2 x parallel time), from the median times), then the
# overheads: the idle time between successive maps, in-process pool
# start-up and whole-program start-up, beside CPython's.
# Benchmarks are not tests: this prints and exits 0, however slow.
#
# Usage: tests/bench/workloads_bench.sh [build-dir] [repetitions]
#        tests/bench/workloads_bench.sh --summary RAW-FILE  (the tables again
#        from the figures a run kept in build-dir/bench/workloads_raw.txt)
#   QUICK=1          smaller sizes and 3 repetitions (a few minutes)
#   PYTHON=          the CPython to compare with (python3)
#   LMP_LANES_PATH=  LUA_PATH entries that find lanes.lua, and
#   LMP_LANES_CPATH= LUA_CPATH entries that find lanes/core.so; by default
#                    build-dir/lanes/?.lua and build-dir/lanes/?.so. Without
#                    a LuaLanes that loads, its column shows "-".
# shellcheck source=tests/bench/setup.sh
. "$(dirname "$0")/setup.sh"
# A command with its arguments, perhaps ("valgrind lua5.4"): used unquoted.
LUA=${LMP_BENCH_LUA:-lua5.4}
BUILD=$(cd "$BUILD" && pwd)
LANES_PATH=${LMP_LANES_PATH:-$BUILD/lanes/?.lua}
LANES_CPATH=${LMP_LANES_CPATH:-$BUILD/lanes/?.so}
# As tests/run.sh sets them, with LuaLanes' places after lmp's.
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$LANES_PATH;/usr/local/share/lua/5.4/?.lua;/usr/local/share/lua/5.4/?/init.lua;/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;;"
export LUA_CPATH="$BUILD/?.so;$LANES_CPATH;/usr/local/lib/lua/5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;;"
export LMP_BUILD="$BUILD"
WORKLOADS="mandelbrot spectral-norm fannkuch-redux binary-trees k-nucleotide medium-tasks uneven-tasks"

measure() {
  mkdir -p "$BUILD/bench"
  results="$BUILD/bench/workloads_raw.txt"
  : >"$results"
  rm -f "$BUILD"/bench/workloads_*.serial "$BUILD"/bench/workloads_*.serial.python
  out=$(mktemp)
  LMP_BENCH_LANES=0
  if $LUA -e 'require("lanes").configure()' 2>/dev/null; then LMP_BENCH_LANES=1; fi
  export LMP_BENCH_LANES
  echo "== workloads: serial, lmp Pool(2), two serial copies at once, LuaLanes, CPython" \
    "$($PYTHON -c 'import sys; print(sys.version.split()[0])') Pool(2);" \
    "median of $REPEAT repetitions${QUICK:+ (QUICK=$QUICK)}"
  bench_machine
  [ "$LMP_BENCH_LANES" = 1 ] || echo "# LuaLanes not found (LMP_LANES_PATH, LMP_LANES_CPATH): its column shows -"

  # run way workload: one run; its time goes to $results as
  # "way workload seconds", its checksum is compared with the serial one.
  run() {
    way=$1 workload=$2
    # shellcheck disable=SC2086
    case $way in
      python_serial) timeout 1800 "$PYTHON" tests/bench/workloads/run.py serial "$workload" ;;
      python_pool) timeout 1800 "$PYTHON" tests/bench/workloads/run.py pool "$workload" ;;
      *) timeout 1800 $LUA tests/bench/workloads/run.lua "$way" "$workload" ;;
    esac >"$out" 2>&1
    seconds=$(sed -n 's/^seconds \([0-9.]*\)$/\1/p' "$out")
    if [ -z "$seconds" ]; then
      echo
      echo "# $way $workload failed:"
      sed 's/^/#   /' "$out" | head -n 20
      echo "failed $way.$workload 1" >>"$results"
      return
    fi
    echo "$way $workload $seconds" >>"$results"
    reference=$BUILD/bench/workloads_$workload.serial
    case $way in python_*) reference=$reference.python ;; esac
    case $way in
      serial|python_serial) sed '1,/^checksum$/d' "$out" >"$reference" ;;
      *)
        if [ -f "$reference" ] && ! sed '1,/^checksum$/d' "$out" | cmp -s - "$reference"; then
          echo
          echo "# $way $workload: checksum differs from the serial run's (<serial, >$way):"
          sed '1,/^checksum$/d' "$out" | diff "$reference" - | sed -n 's/^[<>]/#   &/p' | head -n 10
          echo "checksum_wrong $way.$workload 1" >>"$results"
        fi ;;
    esac
  }

  rep=1
  while [ "$rep" -le "$REPEAT" ]; do
    printf '# repetition %d of %d:' "$rep" "$REPEAT"
    for workload in $WORKLOADS; do
      printf ' %s' "$workload"
      ways="serial lmp ceiling"
      [ "$LMP_BENCH_LANES" = 1 ] && ways="$ways lanes"
      ways="$ways python_serial python_pool"
      # The serial runs first on odd repetitions, last on even ones (the
      # checksums of a repetition's first run are compared with the
      # previous repetition's serial run, which is the same).
      if [ $((rep % 2)) = 0 ]; then
        ways=$(echo "$ways" | awk '{ for (i = NF; i > 0; i--) printf "%s ", $i }')
      fi
      for way in $ways; do run "$way" "$workload"; done
    done
    printf ' overheads'
    for side in lmp python; do
      for what in idle startup; do
        if [ $side = lmp ]; then $LUA tests/bench/workloads/run.lua "$what"
        else "$PYTHON" tests/bench/workloads/run.py "$what"; fi 2>&1 |
          sed -n "s/^\([a-z_.A-Z0-9]*\) \([-0-9.e+]*\)\$/$side \1 \2/p" >>"$results"
      done
    done
    if [ "$LMP_BENCH_LANES" = 1 ]; then
      $LUA tests/bench/workloads/run.lua lanes_startup 2>&1 |
        sed -n "s/^\([a-z_.A-Z0-9]*\) \([-0-9.e+]*\)\$/lanes \1 \2/p" >>"$results"
    fi
    $LUA tests/bench/workloads/run.lua program 2>&1 |
      sed -n "s/^\([a-z_.A-Z0-9]*\) \([-0-9.e+]*\)\$/all \1 \2/p" >>"$results"
    echo
    rep=$((rep + 1))
  done
  rm -f "$out" "$BUILD"/bench/workloads_*.serial "$BUILD"/bench/workloads_*.serial.python
  echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
}
[ -z "$SUMMARY_ONLY" ] && measure
awk -v workloads="$WORKLOADS" "$BENCH_MEDIAN"'
  function pct(x) { return x == "" ? "-" : sprintf("%.0f%%", 100 * x) }
  function efficiency(serial, parallel) {
    return (serial == "" || parallel == "" || parallel == 0) ? "" : serial / (2 * parallel)
  }
  function num(x, f) { return x == "" ? "-" : sprintf(f, x) }
  END {
    print "# efficiency: serial time / (2 x parallel time); ceiling: serial time / the time of two"
    print "# serial copies at once; lmp/ceil: lmp efficiency over the ceiling. Lanes and lmp"
    print "# against the Lua serial time, CPython against its own (Py ser s)."
    printf "%-15s %8s %6s %8s %8s %6s %8s %8s  %s\n", "workload", "serial s", "lmp",
      "ceiling", "lmp/ceil", "Lanes", "Py ser s", "CPython", "targets (lmp >= 95% ceiling, >= Lanes)"
    count = split(workloads, names, " ")
    for (i = 1; i <= count; i++) {
      w = names[i]
      serial = median("serial " w)
      lmp = efficiency(serial, median("lmp " w))
      c = median("ceiling " w)
      ceiling = (serial == "" || c == "" || c == 0) ? "" : serial / c
      of_ceiling = (lmp == "" || ceiling == "") ? "" : lmp / ceiling
      lanes = efficiency(serial, median("lanes " w))
      python = efficiency(median("python_serial " w), median("python_pool " w))
      verdict = of_ceiling == "" ? "-" : (of_ceiling >= 0.95 ? "ceiling met" : "ceiling MISSED")
      if (lanes != "" && lmp != "") verdict = verdict (lmp >= lanes ? ", Lanes met" : ", Lanes MISSED")
      printf "%-15s %8s %6s %8s %8s %6s %8s %8s  %s\n", w, num(serial, "%.3f"), pct(lmp),
        pct(ceiling), pct(of_ceiling), pct(lanes), num(median("python_serial " w), "%.3f"),
        pct(python), verdict
    }
    for (key in n) {
      split(key, parts, " ")
      if (parts[1] == "checksum_wrong")
        printf "# WRONG CHECKSUM: %s, in %d runs\n", parts[2], n[key]
      if (parts[1] == "failed")
        printf "# FAILED: %s, in %d runs (the median is of the others)\n", parts[2], n[key]
    }
    print ""
    printf "%-44s %10s %10s %10s\n", "overheads (medians)", "lmp", "CPython", "Lanes"
    printf "%-44s %10s %10s %10s\n", "gap between two maps, per worker (us)",
      num(median("lmp idle.gap_between_maps_us"), "%.0f"),
      num(median("python idle.gap_between_maps_us"), "%.0f"), "-"
    printf "%-44s %10s %10s %10s\n", "workers idle, share of a map call",
      pct(median("lmp idle.fraction_of_map")), pct(median("python idle.fraction_of_map")), "-"
    for (p = 1; p <= 3; p++) {
      k = p == 1 ? 1 : (p == 2 ? 2 : 8)
      printf "%-44s %10s %10s %10s\n", sprintf("Pool(%d) in-process, to a first answer (ms)", k),
        num(median("lmp startup.pool" k "_ms"), "%.2f"),
        num(median("python startup.pool" k "_ms"), "%.2f"),
        num(median("lanes startup.lanes" k "_ms"), "%.2f")
      printf "%-44s %10s %10s %10s\n", sprintf("  Pool(%d) returned (ms)", k),
        num(median("lmp startup.pool" k "_made_ms"), "%.2f"),
        num(median("python startup.pool" k "_made_ms"), "%.2f"), "-"
    }
    printf "%-44s %10s %10s %10s\n", "program: Pool(2), one task, exit (ms)",
      num(median("all program.lmp_ms"), "%.1f"), num(median("all program.python_ms"), "%.1f"),
      num(median("all program.lanes_ms"), "%.1f")
    printf "%-44s %10s %10s %10s\n", "  the interpreter doing nothing (ms)",
      num(median("all program.lua_nothing_ms"), "%.1f"),
      num(median("all program.python_nothing_ms"), "%.1f"),
      num(median("all program.lua_nothing_ms"), "%.1f")
  }' "$results"
exit 0

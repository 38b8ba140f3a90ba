-- The pool benchmark, lmp's side: one repetition of one workload per run,
-- so that tests/bench/pool_bench.sh can alternate it with the same workload
-- run through CPython's multiprocessing (tests/bench/pool_cpython.py, which
-- prints the same names). Prints "name value" lines; "# ..." lines are
-- notes. Wall-clock time throughout (lmp.core.hrtime, seconds).
--
-- Usage: build/bin/lmp tests/bench/pool.lua WORKLOAD
--   apply     median latency of pool:apply(f, {1}) over APPLY_CALLS calls, us
--   map       pool:map(f, 1..MAP_ITEMS), default chunksize, items/s
--   imap      pool:imap(f, IMAP_ITEMS items), no chunksize, items/s; then
--             pool:map over the same items, for the imap/map ratio
--   async     ASYNC_ITEMS apply_async, then wait for all, items/s, and the
--             main process's CPU time per task, us
--   startup   Pool(2) created, one task, closed and joined, ms (spawn, fork,
--             forkserver: its server started once, before the first)
--   primes    primes below PRIME_LIMIT in 64 ranges: serial (before and
--             after the pool's runs) vs Pool(2), s
--   bigstring 100 MB string to a worker and back, MB/s
--   memory    private memory of an idle worker (smaps_rollup), kB
-- QUICK=1 in the environment shrinks the sizes.
local lmp = require "lmp"
local clock = require("lmp.core").hrtime
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local cpu_seconds = require("procstat").cpu_seconds

local quick = os.getenv("QUICK") == "1"
local APPLY_CALLS = 2000
local MAP_ITEMS = quick and 200000 or 1000000
local IMAP_ITEMS = quick and 20000 or 100000
local ASYNC_ITEMS = quick and 20000 or 100000
local STARTUPS = quick and 3 or 5
local PRIME_LIMIT = quick and 1000000 or 3000000
local PRIME_RANGES = 64
local BIG = (quick and 20 or 100) * 1024 * 1024

local function out(name, value)
  print(("%s %.6g"):format(name, value))
  io.stdout:flush()
end

local function median(t)
  table.sort(t)
  local n = #t
  if n % 2 == 1 then return t[(n + 1) // 2] end
  return (t[n // 2] + t[n // 2 + 1]) / 2
end

local function identity(x) return x end

local workloads = {}

function workloads.apply()
  local pool <close> = lmp.Pool(2)
  for _ = 1, 200 do pool:apply(identity, {1}) end
  local times = {}
  local start = clock()
  for i = 1, APPLY_CALLS do
    local t0 = clock()
    pool:apply(identity, {1})
    times[i] = clock() - t0
  end
  local total = clock() - start
  out("apply.median_us", median(times) * 1e6)
  out("apply.mean_us", total / APPLY_CALLS * 1e6)
end

function workloads.map()
  local pool <close> = lmp.Pool(2)
  pool:map(identity, {1, 2, 3, 4})
  local items = {}
  for i = 1, MAP_ITEMS do items[i] = i end
  collectgarbage()
  local start = clock()
  local results = pool:map(identity, items)
  local took = clock() - start
  assert(results.n == MAP_ITEMS and results[MAP_ITEMS] == MAP_ITEMS)
  out("map.items_per_s", MAP_ITEMS / took)
end

function workloads.imap()
  local pool <close> = lmp.Pool(2)
  pool:map(identity, {1, 2, 3, 4})
  local items = {}
  for i = 1, IMAP_ITEMS do items[i] = i end
  collectgarbage()
  local start = clock()
  local count = 0
  for _ in pool:imap(identity, items) do count = count + 1 end
  local took = clock() - start
  assert(count == IMAP_ITEMS)
  out("imap.items_per_s", IMAP_ITEMS / took)
  -- map over the same items on the same pool, for the imap/map ratio: a
  -- map of MAP_ITEMS spreads its start over ten times as many items.
  collectgarbage()
  start = clock()
  local results = pool:map(identity, items)
  took = clock() - start
  assert(results.n == IMAP_ITEMS)
  out("imap.map_items_per_s", IMAP_ITEMS / took)
end

function workloads.async()
  local pool <close> = lmp.Pool(2)
  pool:map(identity, {1, 2, 3, 4})
  collectgarbage()
  local results = {}
  local start, cpu = clock(), os.clock()
  for i = 1, ASYNC_ITEMS do results[i] = pool:apply_async(identity, {1}) end
  for i = 1, ASYNC_ITEMS do results[i]:wait() end
  local took = clock() - start
  out("async.items_per_s", ASYNC_ITEMS / took)
  -- The main process's CPU time per task (os.clock: this process only, the
  -- workers are others): what bounds the rate when the main process is
  -- the busiest, and a figure other work on the machine disturbs less.
  out("async.main_cpu_us", (os.clock() - cpu) / ASYNC_ITEMS * 1e6)
end

-- Each start method of lmp, against CPython's of the same name.
function workloads.startup()
  for _, method in ipairs{"spawn", "fork", "forkserver"} do
    local times = {}
    for i = 0, STARTUPS do
      local start = clock()
      local pool = lmp.Pool{processes = 2, start_method = method}
      pool:apply(identity, {1})
      pool:close()
      pool:join()
      -- The first start-up pays for reading the executable from disk.
      if i > 0 then times[i] = clock() - start end
    end
    out(method == "spawn" and "startup.ms" or "startup_" .. method .. ".ms", median(times) * 1e3)
  end
end

-- Trial division, as the README's first example does it.
local function count_primes(from, to)
  local count = 0
  for n = from, to - 1 do
    if n >= 2 then
      local prime = true
      for d = 2, math.floor(math.sqrt(n)) do
        if n % d == 0 then prime = false; break end
      end
      if prime then count = count + 1 end
    end
  end
  return count
end

function workloads.primes()
  local ranges = {}
  local step = PRIME_LIMIT // PRIME_RANGES
  for i = 1, PRIME_RANGES do
    ranges[i] = {(i - 1) * step, i == PRIME_RANGES and PRIME_LIMIT or i * step}
  end
  local function count_range(r) return count_primes(r[1], r[2]) end
  local serial_count
  local function run_serial()
    local start = clock()
    serial_count = 0
    for i = 1, PRIME_RANGES do serial_count = serial_count + count_range(ranges[i]) end
    return clock() - start
  end
  -- The serial time is taken before the pool runs and again after, and
  -- their mean divides: a VM's CPU speed drifts by a tenth within a
  -- minute, and one serial run before the pool's made the efficiency swing
  -- with it (0.90 to 1.03 in runs minutes apart).
  local serial_before = run_serial()
  local pool <close> = lmp.Pool(2)
  pool:map(identity, {1, 2})
  -- CPU time the workers got: on a busy machine a pool of 2 may not get
  -- two cores, and this says so.
  local function workers_cpu()
    local total = 0
    for _, w in ipairs(pool.workers) do total = total + cpu_seconds(w.pid) end
    return total
  end
  local cores_used = 0
  local function parallel(chunksize)
    local cpu0, t0 = workers_cpu(), clock()
    local counts = pool:map(count_range, ranges, chunksize)
    local took = clock() - t0
    cores_used = (workers_cpu() - cpu0) / took
    local total = 0
    for i = 1, counts.n do total = total + counts[i] end
    assert(total == serial_count, "the pool counted differently")
    return took
  end
  local default_chunks = parallel(nil)
  local default_cores = cores_used
  local one_chunks = parallel(1)
  local serial_after = run_serial()
  local serial = (serial_before + serial_after) / 2
  out("primes.serial_s", serial)
  out("primes.serial_drift", serial_after / serial_before)
  out("primes.parallel_s", default_chunks)
  out("primes.parallel_chunk1_s", one_chunks)
  out("primes.efficiency", serial / (2 * default_chunks))
  out("primes.efficiency_chunk1", serial / (2 * one_chunks))
  out("primes.pool_cores_used", default_cores)
end

function workloads.bigstring()
  -- The worker makes its big string once, in the initializer, so that the
  -- return leg measures the transfer, not string.rep.
  local pool <close> = lmp.Pool{processes = 1, initializer = function(n)
    BENCH_BIG = string.rep("\1\2\3\4\5\6\7\8", n // 8)
  end, initargs = {BIG}}
  local s = string.rep("\8\7\6\5\4\3\2\1", BIG // 8)
  local function length(x) return #x end
  local function big() return BENCH_BIG end
  assert(pool:apply(length, {s}) == BIG)
  assert(#pool:apply(big) == BIG)
  local send, receive = {}, {}
  for i = 1, 3 do
    collectgarbage()
    local t0 = clock()
    pool:apply(length, {s})
    send[i] = clock() - t0
    collectgarbage()
    t0 = clock()
    local r = pool:apply(big)
    receive[i] = clock() - t0
    r = nil -- luacheck: ignore
  end
  local mb = BIG / (1024 * 1024)
  out("bigstring.send_MB_per_s", mb / median(send))
  out("bigstring.return_MB_per_s", mb / median(receive))
end

local function private_kb(pid)
  local f = io.open(("/proc/%d/smaps_rollup"):format(pid))
  if not f then return nil end
  local kb = 0
  for line in f:lines() do
    local n = line:match("^Private_Clean:%s+(%d+)") or line:match("^Private_Dirty:%s+(%d+)")
    if n then kb = kb + tonumber(n) end
  end
  f:close()
  return kb
end

function workloads.memory()
  local pool <close> = lmp.Pool(2)
  pool:apply(identity, {1})
  lmp.sleep(0.2)
  local kbs = {}
  for i, w in ipairs(pool.workers) do kbs[i] = private_kb(w.pid) end
  out("memory.idle_worker_kB", median(kbs))
end

local name = arg[1]
if not workloads[name] then
  local names = {}
  for k in pairs(workloads) do names[#names + 1] = k end
  table.sort(names)
  io.stderr:write("usage: lmp tests/bench/pool.lua WORKLOAD (", table.concat(names, ", "), ")\n")
  os.exit(2)
end
workloads[name]()

-- The workloads benchmark, Lua's side: one workload, one way, one run.
-- Prints "seconds <wall-clock time of the run>" and the checksum lines
-- after "checksum". tests/bench/workloads_bench.sh alternates the ways.
--
-- Usage: lua5.4 tests/bench/workloads/run.lua WAY WORKLOAD
--   serial    the workload on this process alone
--   lmp       through lmp.Pool(2) (started before the clock starts)
--   lanes     through two LuaLanes lanes fed from a linda (started first)
--   ceiling   two processes each running the serial way, started at once:
--             the longer of their two timed runs
--   profile lmp|lanes WORKLOAD: where the workers' time goes (ways.profile)
-- and the overheads, beside the workloads (tests/bench/workloads/run.py
-- measures the same for CPython):
--   idle      successive maps on the same Pool(2): how long the workers wait
--   startup   Pool(1), Pool(2), Pool(8) made in this process, until it
--             returns and until it answers a first task, in ms
--   lanes_startup  the same for 1, 2, 8 lanes fed from a linda
--   program   whole programs that make a pool of 2, run one task and end
--             (one_task.lua through the runner, one_task.py through
--             python3, one_task_lanes.lua), and lua5.4 and python3 doing
--             nothing, in ms: the median of 5 runs of each
-- QUICK=1 in the environment shrinks the sizes.
local here = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local workloads = require "workloads"

local way, name = arg[1], arg[2]
local quick = os.getenv("QUICK") == "1"

-- Wall-clock seconds from lmp's clock, CLOCK_MONOTONIC, which reads the
-- same in every process (the idle measure compares workers' readings with
-- the main process's); the serial way loads lmp.core for it and nothing
-- else of lmp.
local clock = require("lmp.core").hrtime

local serial = {}
function serial.map(_, f, items)
  local results = {}
  for i = 1, #items do results[i] = f(items[i]) end
  return results
end
serial.imap_unordered = serial.map

local function run_workload(executor)
  local workload = assert(workloads[name], "no workload " .. tostring(name))
  local state = workload.setup(quick)
  collectgarbage()
  local start = clock()
  local checksum = workload.run(executor, state)
  local took = clock() - start
  print(("seconds %.6f"):format(took))
  print("checksum")
  print(checksum)
end

local ways = {}

function ways.serial() run_workload(serial) end

local function lmp_executor(pool)
  local executor = {}
  function executor.map(_, f, items) return pool:map(f, items) end
  function executor.imap_unordered(_, f, items)
    local results = {}
    for r in pool:imap_unordered(f, items) do results[#results + 1] = r end
    return results
  end
  return executor
end

function ways.lmp()
  local lmp = require "lmp"
  local pool <close> = lmp.Pool(2)
  run_workload(lmp_executor(pool))
end

-- LuaLanes has no pool: two lanes take chunks from a linda and put the
-- results back, the main thread cuts the input in chunks the way CPython's
-- map does by default (four per worker), and one item per message for
-- imap_unordered (CPython's default there too). A chunk carries its
-- function: Lanes copies it, with its upvalues, into the lane.
local function lanes_executor()
  local lanes = require("lanes").configure()
  local linda = lanes.linda()
  local worker = lanes.gen("*", function(queue)
    while true do
      local _, job = queue:receive("jobs")
      if job == "stop" then return end
      local results = {}
      for i = 1, #job.items do results[i] = job.f(job.items[i]) end
      queue:send("results", {index = job.index, results = results})
    end
  end)
  local lanes_running = {worker(linda), worker(linda)}
  -- Both lanes answer once before the clock starts, as a pool would.
  for i = 1, 2 do linda:send("jobs", {index = i, f = tostring, items = {i}}) end
  for _ = 1, 2 do linda:receive("results") end
  local function run_chunks(f, items, chunk)
    local count = 0
    for first = 1, #items, chunk do
      count = count + 1
      linda:send("jobs", {index = count, f = f, items = table.move(items, first,
        math.min(first + chunk - 1, #items), 1, {})})
    end
    local by_index = {}
    for _ = 1, count do
      local _, answer = linda:receive("results")
      by_index[answer.index] = answer.results
    end
    local results = {}
    for i = 1, count do table.move(by_index[i], 1, #by_index[i], #results + 1, results) end
    return results
  end
  local executor = {}
  function executor.map(_, f, items) return run_chunks(f, items, math.max(1, -(-#items // 8))) end
  function executor.imap_unordered(_, f, items) return run_chunks(f, items, 1) end
  local function stop()
    for _ = 1, 2 do linda:send("jobs", "stop") end
    for _, lane in ipairs(lanes_running) do lane:join() end
  end
  return executor, stop
end

function ways.lanes()
  local executor, stop = lanes_executor()
  run_workload(executor)
  stop()
end

-- Where the two workers' time goes, through lmp (`run.lua profile lmp
-- WORKLOAD`) or LuaLanes (`profile lanes`): every item records when it
-- started and ended in its worker and which worker ran it (CLOCK_MONOTONIC,
-- shared by all processes), and per call of map or imap_unordered the
-- wall time is split into the workers' time in items (busy, as a share of
-- two workers' wall time) and their idle time: before their first item,
-- between items, and after their last. Unlike the efficiencies, these
-- shares hardly move with the machine's load: they say what the schedule
-- loses, not how fast the items ran. The items run the same chunks as in
-- the timed ways, each wrapped in a call that reads the clock (whose cost
-- is the gap within a chunk, gap_within_chunk_us). The idle between items
-- is also split: that at chunk boundaries (idle_between_chunks_share,
-- chunk_boundaries, gap_per_boundary_us), where a worker answers, takes
-- its next task and may wait for the main process, and the rest.
function ways.profile()
  local side = name
  name = arg[3]
  local maps = {}
  local function timed(f)
    return function(item)
      local core = require "lmp.core"
      local started = core.hrtime()
      local result = f(item)
      local lmp = package.loaded.lmp
      -- A lane's own string library is a table of its own Lua state.
      return {result, started, core.hrtime(), lmp and lmp.current_process().pid or tostring(string)}
    end
  end
  local function instrumented(executor)
    local wrapped = {}
    for _, method in ipairs({"map", "imap_unordered"}) do
      wrapped[method] = function(_, f, items)
        local start = clock()
        local answers = executor[method](executor, timed(f), items)
        local records = {start = start, finish = clock()}
        local results = {}
        for i, r in ipairs(answers) do
          results[i] = r[1]
          records[i] = r
        end
        maps[#maps + 1] = records
        return results
      end
    end
    return wrapped
  end
  if side == "lmp" then
    local lmp = require "lmp"
    local pool <close> = lmp.Pool(2)
    run_workload(instrumented(lmp_executor(pool)))
  else
    local executor, stop = lanes_executor()
    run_workload(instrumented(executor))
    stop()
  end
  local wall, busy, before, between, after = 0, 0, 0, 0, 0
  local gaps, boundaries, between_chunks = 0, 0, 0
  for _, m in ipairs(maps) do
    local workers = {}
    for i, r in ipairs(m) do
      r.index = i
      local w = workers[r[4]] or {}
      workers[r[4]] = w
      w[#w + 1] = r
    end
    wall = wall + (m.finish - m.start)
    -- A worker that ran no item of the call was idle after its last.
    local count = 0
    for _ in pairs(workers) do count = count + 1 end
    after = after + math.max(0, 2 - count) * (m.finish - m.start)
    for _, items in pairs(workers) do
      table.sort(items, function(a, b) return a[2] < b[2] end)
      before = before + (items[1][2] - m.start)
      after = after + (m.finish - items[#items][3])
      for i, r in ipairs(items) do
        busy = busy + (r[3] - r[2])
        if i > 1 then
          local gap = r[2] - items[i - 1][3]
          between = between + gap
          gaps = gaps + 1
          -- A worker's next item that does not follow its last in the
          -- input starts another chunk: the gap is a chunk boundary's.
          -- (Two adjacent chunks in a row on one worker look like one:
          -- the count and share are floors.)
          if r.index ~= items[i - 1].index + 1 then
            boundaries = boundaries + 1
            between_chunks = between_chunks + gap
          end
        end
      end
    end
  end
  print(("profile.calls %d"):format(#maps))
  print(("profile.wall_ms %.6g"):format(wall * 1e3))
  print(("profile.busy_share %.6g"):format(busy / (2 * wall)))
  print(("profile.idle_before_first_share %.6g"):format(before / (2 * wall)))
  print(("profile.idle_between_items_share %.6g"):format(between / (2 * wall)))
  print(("profile.idle_after_last_share %.6g"):format(after / (2 * wall)))
  -- The between-items idle at chunk boundaries, and per boundary.
  print(("profile.idle_between_chunks_share %.6g"):format(between_chunks / (2 * wall)))
  print(("profile.chunk_boundaries %d"):format(boundaries))
  print(("profile.gap_per_boundary_us %.6g"):format(boundaries > 0 and between_chunks / boundaries * 1e6 or 0))
  print(("profile.gap_within_chunk_us %.6g"):format(
    (between - between_chunks) / math.max(1, gaps - boundaries) * 1e6))
end

-- The time is the longer of the two copies' own timed runs (each as the
-- serial way measures it), not the wall time of the two processes: that
-- would count each interpreter's start and its workload's untimed set-up
-- (a fifth of the whole for k-nucleotide, whose DNA string is made
-- there), which no other way's time includes. The copies start together
-- and their set-ups take the same time, so their timed runs overlap.
function ways.ceiling()
  local command = ("%q %q serial %q"):format(arg[-1], arg[0], name)
  local first, second = io.popen(command), io.popen(command)
  local outputs = {first:read("a"), second:read("a")}
  assert(first:close() and second:close(), "a serial copy failed")
  local took = 0
  for _, output in ipairs(outputs) do
    local seconds = assert(tonumber(output:match("seconds ([%d.]+)")), "a copy printed no time")
    took = math.max(took, seconds)
  end
  print(("seconds %.6f"):format(took))
  print("checksum")
  print((outputs[1]:match("checksum\n(.*)\n$")))
end

-- Successive maps on one Pool(2), as spectral-norm makes them: each map's
-- function closes over a 1,000-float vector, each map is 1,000 items of
-- about 40 us. Each task reports which worker ran it and when it started
-- and ended (CLOCK_MONOTONIC, shared by all processes); per map, per
-- worker: the gap between its last task of the previous map and its first
-- of this one, and the fraction of the map's wall time the two workers
-- spent outside a task.
function ways.idle()
  local lmp = require "lmp"
  local pool <close> = lmp.Pool(2)
  local size, maps = 1000, quick and 10 or 30
  local vector, rows = {}, {}
  for i = 1, size do vector[i] = 1.0 / i; rows[i] = i end
  local gaps, idle_fractions, last_end = {}, {}, {}
  for m = 1, maps do
    local v = vector
    local map_start = clock()
    local results = pool:map(function(i)
      local core = require "lmp.core"
      local started = core.hrtime()
      local sum = 0.0
      for j = 1, #v do sum = sum + v[j] / (i + j) end
      return {sum, started, core.hrtime(), lmp.current_process().pid}
    end, rows)
    local map_end = clock()
    local first_start, final_end, busy = {}, {}, 0.0
    for _, r in ipairs(results) do
      local pid = r[4]
      if not first_start[pid] or r[2] < first_start[pid] then first_start[pid] = r[2] end
      if not final_end[pid] or r[3] > final_end[pid] then final_end[pid] = r[3] end
      busy = busy + (r[3] - r[2])
    end
    if m > 1 then
      for pid, t in pairs(first_start) do
        if last_end[pid] then gaps[#gaps + 1] = t - last_end[pid] end
      end
    end
    if m > 1 then idle_fractions[#idle_fractions + 1] = 1 - busy / (2 * (map_end - map_start)) end
    last_end = final_end
    vector = {}
    for i = 1, size do vector[i] = results[i][1] end
  end
  table.sort(gaps)
  table.sort(idle_fractions)
  print(("idle.gap_between_maps_us %.6g"):format(gaps[(#gaps + 1) // 2] * 1e6))
  print(("idle.fraction_of_map %.6g"):format(idle_fractions[(#idle_fractions + 1) // 2]))
end

-- Pool(n) made in this process: until it returns (lmp returns once every
-- worker is ready) and until it answers a first task.
function ways.startup()
  local lmp = require "lmp"
  for _, n in ipairs({1, 2, 8}) do
    local start = clock()
    local pool = lmp.Pool(n)
    local made = clock()
    pool:map(tostring, {1})
    local answered = clock()
    pool:close()
    pool:join()
    print(("startup.pool%d_ms %.6g"):format(n, (answered - start) * 1e3))
    print(("startup.pool%d_made_ms %.6g"):format(n, (made - start) * 1e3))
  end
end

function ways.lanes_startup()
  local lanes = require("lanes").configure()
  local worker = lanes.gen("*", function(queue)
    while true do
      local _, job = queue:receive("jobs")
      if job == "stop" then return end
      queue:send("results", job)
    end
  end)
  for _, n in ipairs({1, 2, 8}) do
    local start = clock()
    local linda = lanes.linda()
    local running = {}
    for i = 1, n do running[i] = worker(linda) end
    linda:send("jobs", 1)
    linda:receive("results")
    local answered = clock()
    for _ = 1, n do linda:send("jobs", "stop") end
    for _, lane in ipairs(running) do lane:join() end
    print(("startup.lanes%d_ms %.6g"):format(n, (answered - start) * 1e3))
  end
end

function ways.program()
  local build = os.getenv("LMP_BUILD") or "build"
  local python = os.getenv("PYTHON") or "python3"
  local programs = {
    {"lmp", ("%q %q"):format(build .. "/bin/lmp", here .. "/one_task.lua")},
    {"python", ("%q %q"):format(python, here .. "/one_task.py")},
    {"lua_nothing", ("%q -e ''"):format(arg[-1])},
    {"python_nothing", ("%q -c pass"):format(python)},
  }
  if os.getenv("LMP_BENCH_LANES") == "1" then
    table.insert(programs, 3, {"lanes", ("%q %q"):format(arg[-1], here .. "/one_task_lanes.lua")})
  end
  -- Through the shell that os.execute starts: "exec" so that the shell
  -- becomes the program; the shell's own start is in every figure alike.
  for _, program in ipairs(programs) do
    local times = {}
    for i = 1, 5 do
      local start = clock()
      assert(os.execute("exec " .. program[2]), program[2] .. " failed")
      times[i] = clock() - start
    end
    table.sort(times)
    print(("program.%s_ms %.6g"):format(program[1], times[3] * 1e3))
  end
end

assert(ways[way], "usage: run.lua serial|lmp|lanes|ceiling|idle|startup|lanes_startup|program"
  .. " [WORKLOAD], or run.lua profile lmp|lanes WORKLOAD")()

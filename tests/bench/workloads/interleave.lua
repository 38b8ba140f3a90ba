-- One workload's items, one at a time, interleaved among the ways an item
-- can run: serially in this process, in a spawned lmp worker, in a forked
-- one, in a LuaLanes lane (when lanes loads). Each item is timed by the CPU
-- clock of the process that runs it, and each round runs the same item
-- every way, in an order that turns from round to round: the machine's
-- load reaches all ways alike, so the ratios of a round's times to its
-- serial time say what the way itself costs, a few points finer than the
-- efficiencies of workloads_bench.sh on a busy machine. The items are
-- those of the workload's first map (for fannkuch-redux, its 60 blocks).
--
-- Usage (LUA_PATH, LUA_CPATH as workloads_bench.sh sets them):
--   lua5.4 tests/bench/workloads/interleave.lua [WORKLOAD] [ROUNDS]
-- (fannkuch-redux, 30 rounds by default). LMP_WORKER=path runs the spawned
-- worker from another build. Prints per way the median of the per-round
-- ratios to serial, and the median CPU ms of an item.
local here = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local workloads = require "workloads"
local name = arg[1] or "fannkuch-redux"
local rounds = tonumber(arg[2] or 30)
local workload = assert(workloads[name], "no workload " .. name)

-- The first map's function and items, taken from a run that stops there.
local f, items
local stop = {}
pcall(workload.run, {
  map = function(_, fn, list) f, items = fn, list; error(stop) end,
  imap_unordered = function(_, fn, list) f, items = fn, list; error(stop) end,
}, workload.setup(os.getenv("QUICK") == "1"))
assert(f, name .. " makes no map")

-- Runs where it is sent: os.clock is the CPU time of the process it runs in
-- (a lane's process is this one, whose main thread waits meanwhile).
local function timed(item)
  local started = os.clock()
  f(item)
  return os.clock() - started
end

local lmp = require "lmp"
local spawned <close> = lmp.Pool{processes = 1}
local forked <close> = lmp.Pool{processes = 1, start_method = "fork"}
local ways = {
  serial = timed,
  spawn = function(item) return spawned:apply(timed, {item}) end,
  fork = function(item) return forked:apply(timed, {item}) end,
}
local names = {"serial", "spawn", "fork"}
local has_lanes, lanes = pcall(function() return require("lanes").configure() end)
local linda, lane
if has_lanes then
  linda = lanes.linda()
  lane = lanes.gen("*", function(queue)
    while true do
      local _, job = queue:receive("jobs")
      if job == "stop" then return end
      queue:send("results", job.f(job.item))
    end
  end)(linda)
  ways.lane = function(item)
    linda:send("jobs", {f = timed, item = item})
    local _, seconds = linda:receive("results")
    return seconds
  end
  names[#names + 1] = "lane"
end

for _, way in ipairs(names) do ways[way](items[1]) end
local times = {}
for _, way in ipairs(names) do times[way] = {} end
for round = 1, rounds do
  local item = items[(round - 1) % #items + 1]
  for k = 0, #names - 1 do
    local way = names[(round + k) % #names + 1]
    times[way][round] = ways[way](item)
  end
end
if lane then
  linda:send("jobs", "stop")
  lane:join()
end

local function median(t)
  local sorted = table.move(t, 1, #t, 1, {})
  table.sort(sorted)
  return sorted[(#sorted + 1) // 2]
end
print(("# %s, %d rounds, load average %s"):format(name, rounds,
  io.open("/proc/loadavg"):read("l"):match("^(%S+ %S+ %S+)")))
for _, way in ipairs(names) do
  local ratios = {}
  for round = 1, rounds do ratios[round] = times[way][round] / times.serial[round] end
  print(("%-6s ratio to serial %.3f  item %.2f ms"):format(way, median(ratios),
    median(times[way]) * 1e3))
end

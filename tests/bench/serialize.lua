-- The serialize benchmark: lmp.dumps and lmp.loads on the workloads that
-- serialize.py runs through pickle (protocol 5). Prints "workload.op
-- seconds" lines, each the median of several runs, wall-clock time;
-- tests/bench/run.sh puts them beside pickle's.
-- Targets: each of dumps and loads at most half of pickle's
-- time; the 100 MB string within 1.5x of one memcpy, measured here as one
-- copy into fresh memory (`big .. "x"`, below; Python's bytearray(b) on
-- its side does the same).
local lmp = require "lmp"

local REPEAT = tonumber(arg[1]) or 5
-- Wall-clock time, as Python's perf_counter measures.
local clock = require("lmp.core").hrtime

local function median_time(fn)
  local times = {}
  for i = 1, REPEAT do
    collectgarbage()
    local start = clock()
    fn()
    times[i] = clock() - start
  end
  table.sort(times)
  return times[(REPEAT + 1) // 2]
end

local function measure(name, value)
  local data = lmp.dumps(value)
  local dumps = median_time(function() lmp.dumps(value) end)
  local loads = median_time(function() lmp.loads(data) end)
  print(("%s.dumps %.6f"):format(name, dumps))
  print(("%s.loads %.6f"):format(name, loads))
  io.stdout:flush()
  return dumps, loads
end

print("# target: lmp/python <= 0.5 for each dumps and loads")
local N = 1000000
local floats = {}
for i = 1, N do floats[i] = (i - 1) + 0.5 end
measure("floats", floats)
floats = nil

local integers = {}
for i = 1, N do integers[i] = (i - 1) % 100 end
measure("integers", integers)
integers = nil

local bytes = {}
for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
local big = table.concat(bytes):rep(100 * 1024 * 1024 // 256)
local dumps, loads = measure("string", big)
-- One copy of the 100 MB into fresh memory. `big .. "x"` makes a new
-- string of 100 MB + 1 byte with a single copy (Lua returns `big` itself
-- for `big .. ""`, so that would measure nothing).
local memcpy = median_time(function() local _ = big .. "x" end)
print(("string.memcpy %.6f"):format(memcpy))
print(("# string: dumps %.2fx one memcpy, loads %.2fx (target <= 1.5x)")
  :format(dumps / memcpy, loads / memcpy))
big = nil

local records = {}
for i = 0, 100000 - 1 do
  records[#records + 1] = {id = i, name = "user" .. i, score = i * 0.25,
                           active = i % 3 == 0, group = i % 7}
end
measure("records", records)

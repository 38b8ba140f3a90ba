-- Sequential against parallel: the same CPU-bound work run in a loop, then
-- with pool:map over every core. Prints both wall-clock times and the
-- speedup; on N cores expect a speedup a little under N.
-- Run: lmp examples/speedup.lua
local lmp = require "lmp"

-- Sums the integer square roots of 1..n: plain CPU work.
local function burn(n)
  local total = 0
  for i = 1, n do total = total + math.floor(math.sqrt(i)) end
  return total
end

local jobs = {}
for i = 1, 8 do jobs[i] = 2000000 end

-- Lua has no wall clock finer than a second (os.clock counts this
-- process's CPU time only, which misses the workers), so ask date(1).
local function now()
  local date = io.popen("date +%s.%N")
  local t = tonumber(date:read("l"))
  date:close()
  return t
end

local function seconds(f)
  local start = now()
  f()
  return now() - start
end

local sequential = seconds(function()
  for _, n in ipairs(jobs) do burn(n) end
end)

local pool <close> = lmp.Pool(lmp.cpu_count())
local parallel = seconds(function() pool:map(burn, jobs, 1) end)

print(("sequential: %.3f s"):format(sequential))
print(("parallel:   %.3f s on %d processes"):format(parallel, lmp.cpu_count()))
print(("speedup:    %.2fx"):format(sequential / parallel))

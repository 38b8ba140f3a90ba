-- What a task pays for carrying objects that hold descriptors: the same
-- tiny tasks with plain arguments, with a Queue (three descriptors) and
-- with a Lock and a Value (three more), each task its own message. Not a
-- test: prints figures, as ratios of one run.
--   lua5.4 tests/bench/share.lua [tasks]   (LUA_PATH/LUA_CPATH as for the tests)
local lmp = require "lmp"
local core = require "lmp.core"

local tasks = tonumber(arg and arg[1]) or 5000
local pool <close> = lmp.Pool(2)
local q, lock, v = lmp.Queue(), lmp.Lock(), lmp.Value("i", 0)

local function items(make)
  local t = {n = tasks}
  for i = 1, tasks do t[i] = make(i) end
  return t
end

local cases = {
  {"plain arguments", items(function(i) return {i} end)},
  {"a Queue", items(function(i) return {q, i} end)},
  {"a Queue, a Lock, a Value", items(function(i) return {q, lock, v, i} end)},
}

local function run(list)
  local best = math.huge
  for _ = 1, 3 do
    local t0 = core.hrtime()
    pool:starmap(function(...) return select("#", ...) end, list, 1)
    best = math.min(best, core.hrtime() - t0)
  end
  return best
end

run(cases[1][2]) -- warm up: workers started, functions sent
local base
for _, case in ipairs(cases) do
  local t = run(case[2])
  base = base or t
  print(("%-28s %7.2f us a task  x%.2f"):format(case[1], t / tasks * 1e6, t / base))
end
q:close()

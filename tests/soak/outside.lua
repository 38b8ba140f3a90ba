-- The outside soak: another process (tests/soak/killer.lua) sends SIGKILL
-- and SIGSEGV to random workers at random moments, idle and busy alike,
-- while this one alternates computing in its main Lua thread (its loop
-- does not turn), idle waits, and pool calls of every kind. The pool must
-- keep its size throughout, and every call or task must be answered
-- exactly once, with its correct result or a worker_lost error.
-- Run: LUA_PATH="tests/?.lua;;" build/bin/lmp tests/soak/outside.lua [seconds=60]
--        [processes=4] [start_method=spawn] [kill_interval=0.05]
local lmp = require "lmp"
local core = require "lmp.core"

local seconds = tonumber(arg[1]) or 60
local processes = tonumber(arg[2]) or 4
local start_method = arg[3] or "spawn"
local interval = tonumber(arg[4]) or 0.05
local here = (arg[0] or ""):match("^(.*)/[^/]*$") or "."
local interpreter = os.getenv("LMP_KILLER_LUA") or "lua5.4"

local function busy(s)
  local t = os.clock()
  while os.clock() - t < s do end
end

-- The descriptors are counted in this process, not by a listing process
-- (io.popen("ls")): popen closes its end of the child's pipe only after
-- the child has started, so a loaded machine sometimes lets the listing
-- see that end too, and the count is one too many.
local open_fds = require("helpers").open_fds

local function file_text(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- A first pool makes libuv's own descriptors (epoll, signal pipe), which
-- live as long as the loop: count from after it.
do
  local warm <close> = lmp.Pool{processes = 1, start_method = start_method}
end
local fds_before = open_fds()
local started = core.hrtime()
local pool = lmp.Pool{processes = processes, start_method = start_method}

-- The killer runs on its own, in the background: its parent is the shell,
-- which exits at once, so that the only children of this process are the
-- pool's workers.
local report = os.tmpname()
os.remove(report)
assert(os.execute(("%s %s/killer.lua %d %g %g %s &"):format(interpreter, here, core.getpid(),
  seconds, interval, report)))

-- Units: one per synchronous call (apply, map, imap_unordered) and one per
-- asynchronous task; each must be answered once.
local seen, units = {}, 0
local counts = {results = 0, lost = 0, wrong = 0, calls = 0, async = 0}
local examples = {}
local shrunk = 0

local function answered(id, ok, kind, detail)
  seen[id] = (seen[id] or 0) + 1
  if ok then
    counts.results = counts.results + 1
  elseif kind == "worker_lost" then
    counts.lost = counts.lost + 1
  else
    counts.wrong = counts.wrong + 1
    if #examples < 5 then examples[#examples + 1] = tostring(detail) end
  end
end

local function new_unit()
  units = units + 1
  return units
end

-- Tasks take from nothing to a few ms, so that kills find workers both idle
-- and running.
local function task(x, cost)
  local t = os.clock()
  while os.clock() - t < cost do end
  return x * 2
end

local function check_size()
  if pool:_active_workers() ~= processes then shrunk = shrunk + 1 end
end

local phases = {
  function() busy(math.random() * 0.03) end,
  function() lmp.sleep(math.random() * 0.03) end,
  function()
    local id, x = new_unit(), math.random(1000)
    counts.calls = counts.calls + 1
    local ok, v = pcall(pool.apply, pool, task, {x, math.random() * 0.003})
    if ok and v ~= 2 * x then ok, v = false, ("apply: %s for %d"):format(tostring(v), x) end
    answered(id, ok, (not ok) and type(v) == "table" and v.kind, v)
  end,
  function()
    local id, n = new_unit(), math.random(2, 40)
    counts.calls = counts.calls + 1
    local items = {}
    for i = 1, n do items[i] = {i, math.random() * 0.001} end
    local ok, r = pcall(pool.starmap, pool, task, items, math.random(1, 4))
    if ok then
      for i = 1, n do
        if r[i] ~= 2 * i then ok, r = false, ("starmap: item %d is %s"):format(i, tostring(r[i])) end
      end
    end
    answered(id, ok, (not ok) and type(r) == "table" and r.kind, r)
  end,
  function()
    local id, n = new_unit(), math.random(2, 40)
    counts.calls = counts.calls + 1
    local got, total = {}, 0
    local ok, err = pcall(function()
      for v, i in pool:imap_unordered(function(x) return x * 2 end, n == 2 and {1, 2} or
        (function() local k = 0; return function() k = k + 1; if k <= n then return k end end end)())
      do
        if v ~= 2 * i or got[i] then error(("imap_unordered: item %d is %s"):format(i, tostring(v))) end
        got[i] = true
        total = total + 1
      end
    end)
    if ok and total ~= n then ok, err = false, ("imap_unordered: %d of %d items"):format(total, n) end
    answered(id, ok, (not ok) and type(err) == "table" and err.kind, err)
  end,
  function()
    for _ = 1, math.random(1, 50) do
      local id, x = new_unit(), math.random(1000)
      counts.async = counts.async + 1
      pool:apply_async(task, {x, math.random() * 0.002}, {
        callback = function(v)
          answered(id, v == 2 * x, "wrong", ("apply_async: %s for %d"):format(tostring(v), x))
        end,
        error_callback = function(e) answered(id, false, e.kind, e) end,
      })
    end
  end,
}

-- A hang is a failure too: say what the pool looked like, and stop.
local watchdog = core.timer(seconds + 30, function()
  local inflight = 0
  for _, w in ipairs(pool.workers) do inflight = inflight + #w.inflight end
  print(("outside soak: HUNG: %d workers, %d queued, %d in flight, broken: %s")
    :format(#pool.workers, pool:_queued(), inflight, tostring(pool.broken)))
  os.remove(report)
  os.exit(1)
end)

local rounds = 0
-- An error in the soak itself stops the rounds, but the killer's report is
-- still waited for and removed, so that nothing is left in /tmp.
local survived, failure = pcall(function()
  while not file_text(report) do
    phases[math.random(#phases)]()
    check_size()
    rounds = rounds + 1
  end
end)
if not survived then print("outside soak: error: " .. tostring(failure)) end
while not file_text(report) do os.execute("sleep 0.1") end
local kills = tonumber(file_text(report):match("kills (%d+)"))
os.remove(report)
if survived then survived, failure = pcall(lmp.run) end -- the last callbacks
watchdog:close()

-- Every worker started after the last kill gets ready, and the pool is
-- whole again.
local deadline = core.hrtime() + 30
while not (pool:_all_ready() and #pool.workers == processes) and core.hrtime() < deadline do
  lmp.sleep(0.01)
end
local whole = #pool.workers == processes and pool:_all_ready() and not pool.broken
pool:close()
local joined = pool:join(30)

local missing, repeated = 0, 0
for i = 1, units do
  if seen[i] == nil then missing = missing + 1 elseif seen[i] > 1 then repeated = repeated + 1 end
end
local fds_after = open_fds()
print(("%s, %d processes: %.1f s, %d rounds, %d workers killed; %d calls and %d async tasks:"
  .. " %d results, %d worker_lost, %d wrong, %d missing, %d repeated; pool below its size"
  .. " %d times; fds %d -> %d")
  :format(start_method, processes, core.hrtime() - started, rounds, kills or -1, counts.calls,
          counts.async, counts.results, counts.lost, counts.wrong, missing, repeated, shrunk,
          fds_before, fds_after))
for _, e in ipairs(examples) do print("  wrong: " .. e) end
local ok = survived and kills and kills > 0 and counts.wrong == 0 and missing == 0 and repeated == 0
  and shrunk == 0 and whole and joined and fds_after == fds_before
print(ok and "outside soak: PASS" or "outside soak: FAIL")
os.exit(ok and 0 or 1)

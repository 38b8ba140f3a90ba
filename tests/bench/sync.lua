-- The synchronisation benchmark, lmp's side (tests/bench/sync_bench.sh runs
-- it beside tests/bench/sync_cpython.py). Prints "name value" lines:
--   event.wake_us     an Event set in one process waking a waiter in
--                     another: half the median round trip of two Events
--                     played back and forth between the main process and
--                     a child (microseconds)
--   lock.uncontended_ns  Lock acquire + release in one process (ns)
--   counter.contended_us a counter under Value.get_lock() raised by 2
--                     processes at once: time per increment (microseconds)
--   barrier.round_us  a Barrier of 2 processes: time per round (microseconds)
-- Usage: lmp tests/bench/sync.lua [scale]
local lmp = require "lmp"
local core = require "lmp.core"
local scale = tonumber(arg and arg[1]) or 1

local function median(t)
  table.sort(t)
  return t[#t // 2 + 1]
end

-- Event ping-pong.
do
  local rounds = math.floor(2000 * scale)
  local ping, pong = lmp.Event(), lmp.Event()
  local p = lmp.Process{target = function(a, b, n)
    for _ = 1, n do a:wait(); a:clear(); b:set() end
  end, args = {ping, pong, rounds}}
  p:start()
  local times = {}
  for i = 1, rounds do
    local t = core.hrtime()
    ping:set()
    pong:wait()
    pong:clear()
    times[i] = core.hrtime() - t
  end
  p:join()
  print(("event.wake_us %.2f"):format(median(times) / 2 * 1e6))
end

-- Uncontended Lock.
do
  local n = math.floor(1000000 * scale)
  local lock = lmp.Lock()
  local t = core.hrtime()
  for _ = 1, n do lock:acquire(); lock:release() end
  print(("lock.uncontended_ns %.1f"):format((core.hrtime() - t) / n * 1e9))
end

-- Contended counter: two children, started together by an Event.
do
  local n = math.floor(50000 * scale)
  local counter, go, ends = lmp.Value("i", 0), lmp.Event(), lmp.Array("d", 2)
  local procs = {}
  for i = 1, 2 do
    procs[i] = lmp.Process{target = function(c, g, e, k, count)
      local lock, hrtime = c:get_lock(), require("lmp.core").hrtime
      g:wait()
      for _ = 1, count do lock:acquire(); c.value = c.value + 1; lock:release() end
      e[k] = hrtime()
    end, args = {counter, go, ends, i, n}}
    procs[i]:start()
  end
  lmp.sleep(0.2) -- both started and waiting
  local t = core.hrtime()
  go:set()
  for _, p in ipairs(procs) do p:join() end
  assert(counter.value == 2 * n, "lost increments: " .. counter.value)
  print(("counter.contended_us %.3f"):format((math.max(ends[1], ends[2]) - t) / (2 * n) * 1e6))
end

-- Barrier of 2: the main process and a child.
do
  local rounds = math.floor(2000 * scale)
  local barrier = lmp.Barrier(2)
  local p = lmp.Process{target = function(b, n) for _ = 1, n do b:wait() end end,
    args = {barrier, rounds}}
  p:start()
  barrier:wait() -- both there
  local t = core.hrtime()
  for _ = 2, rounds do barrier:wait() end
  print(("barrier.round_us %.2f"):format((core.hrtime() - t) / (rounds - 1) * 1e6))
  p:join()
end

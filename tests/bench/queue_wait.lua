-- How soon a queue's waiter wakes when another process changes the queue
-- (a benchmark, not a test). Prints "name value" lines:
--   join.wake_us  JoinableQueue.join in the main process returning after a
--                 child's task_done: median time from just before the
--                 child's task_done to join's return (microseconds)
--   put.wake_us   put on a full bounded queue (maxsize 1) in the main
--                 process returning after a child's get: median time from
--                 just before the child's get to put's return (microseconds)
--   get.wake_us   get in the main process of a value that is there, while
--                 a child holds the queue's read lock (as a get in that
--                 child does while it reads): median time from just before
--                 the child's release to get's return (microseconds)
--   get.cpu_percent  the main process's CPU time over those rounds, as a
--                 share of their wall time (a get that spun while the lock
--                 was held: near 100)
-- Both sides read the same monotonic clock. On a loaded machine the
-- figures are noisy: compare builds in the same run.
-- Usage: lmp tests/bench/queue_wait.lua [rounds [work-seconds]]
local lmp = require "lmp"
local core = require "lmp.core"
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local procstat = require "procstat"
local rounds = math.tointeger(tonumber(arg and arg[1])) or 200
-- How long the child works before it changes the queue (seconds).
local work = tonumber(arg and arg[2]) or 0.01

-- The CPU time this process (all its threads) used so far, in seconds.
local function cpu_seconds() return procstat.cpu_seconds("self") end

local function median(t)
  table.sort(t)
  return t[#t // 2 + 1]
end

do
  local q, stamp = lmp.JoinableQueue(), lmp.Array("d", 1)
  local p = lmp.Process{target = function(q, stamp, n, work)
    local hrtime = require("lmp.core").hrtime
    for _ = 1, n do
      q:get()
      lmp.sleep(work) -- join is asleep by now
      stamp[1] = hrtime()
      q:task_done()
    end
  end, args = {q, stamp, rounds, work}}
  p:start()
  local times = {}
  for i = 1, rounds do
    q:put(i)
    q:join()
    times[i] = core.hrtime() - stamp[1]
  end
  p:join()
  q:close()
  print(("join.wake_us %.1f"):format(median(times) * 1e6))
end

do
  local q, stamp, go = lmp.Queue(1), lmp.Array("d", 1), lmp.Queue()
  local p = lmp.Process{target = function(q, stamp, go, n, work)
    local hrtime = require("lmp.core").hrtime
    for _ = 1, n do
      go:get()
      lmp.sleep(work) -- the main process is blocked in put by now
      stamp[1] = hrtime()
      q:get()
      q:get() -- the value whose put waited
    end
  end, args = {q, stamp, go, rounds, work}}
  p:start()
  local times = {}
  for i = 1, rounds do
    q:put("first")
    go:put(true)
    q:put("second") -- waits until the child got "first"
    times[i] = core.hrtime() - stamp[1]
    while q:qsize() > 0 do lmp.sleep(0.0005) end
  end
  p:join()
  q:close()
  go:close()
  print(("put.wake_us %.1f"):format(median(times) * 1e6))
end

do
  local q, stamp, go, held = lmp.Queue(), lmp.Array("d", 1), lmp.Event(), lmp.Event()
  local p = lmp.Process{target = function(q, stamp, go, held, n, work)
    local hrtime = require("lmp.core").hrtime
    for _ = 1, n do
      go:wait()
      go:clear()
      q.read_lock:acquire()
      held:set()
      lmp.sleep(work) -- the main process waits in get by now
      stamp[1] = hrtime()
      q.read_lock:release()
    end
  end, args = {q, stamp, go, held, rounds, work}}
  p:start()
  local times = {}
  local cpu, t0 = cpu_seconds(), core.hrtime()
  for i = 1, rounds do
    q:put(i)
    while q:empty() do lmp.sleep(0.0005) end
    go:set()
    held:wait()
    held:clear()
    assert(q:get() == i)
    times[i] = core.hrtime() - stamp[1]
  end
  local used, wall = cpu_seconds() - cpu, core.hrtime() - t0
  p:join()
  q:close()
  print(("get.wake_us %.1f"):format(median(times) * 1e6))
  print(("get.cpu_percent %.1f"):format(used / wall * 100))
end

-- The main process's event loop as Lua sees it. libuv callbacks only do
-- bookkeeping; user callbacks are queued here and run one at a time after
-- the loop turns, so a blocking call made inside a callback turns the loop
-- again instead of nesting inside libuv. Coroutines started by spawn yield
-- where the main thread would block.
local core = require "lmp.core"
local errors = require "lmp.errors"

local loop = {}

local queue, head, tail = {}, 1, 0   -- user callbacks waiting to run
local waiting = {}                   -- coroutine -> {ready = fn, deadline = t}
local spawned = setmetatable({}, {__mode = "k"})
local pending = 0                    -- async jobs whose callbacks are due

local function default_reporter(err, traceback)
  local message = type(err) == "string" and err or tostring(err)
  io.stderr:write("lmp: error in callback: ", message, "\n")
  if traceback then io.stderr:write(traceback, "\n") end
  io.stderr:flush()
end
local reporter = default_reporter

function loop.on_error(fn)
  if fn ~= nil and type(fn) ~= "function" then
    error(("bad argument #1 to 'on_error' (function expected, got %s)"):format(type(fn)), 2)
  end
  reporter = fn or default_reporter
end

function loop.report(err, traceback)
  local ok, failure = pcall(reporter, err, traceback)
  if not ok then default_reporter(failure) end
end

core.set_reporter(function(report) loop.report(report.value, report.traceback) end)

local function traceback_handler(err)
  return {value = err, traceback = debug.traceback(type(err) == "string" and err or nil, 2)}
end

-- When lmp's loop is embedded in luv's (the script loaded luv after lmp
-- made its loop), uv.run() must keep turning while callbacks are due.
local function tell_embedding()
  core.embed_busy(pending > 0 or head <= tail or next(waiting) ~= nil)
end

-- Queues fn(...) to run on the main thread once the loop returns.
function loop.defer(fn, ...)
  tail = tail + 1
  queue[tail] = table.pack(fn, ...)
  if tail == head then tell_embedding() end
end

-- Only a count that reaches or leaves zero can change what the embedding
-- is told (a burst of apply_async moves it once per job each way).
function loop.add_pending(n)
  local before = pending
  pending = before + n
  if before == 0 or pending == 0 then tell_embedding() end
end

local function resume(co, ...)
  local ok, err = coroutine.resume(co, ...)
  if not ok then loop.report(err, debug.traceback(co)) end
end

-- Calls fn(...) now; an error it raises is reported (lmp.on_error), not
-- raised: what user callbacks get wherever they run.
function loop.call(fn, ...)
  local ok, failure = xpcall(fn, traceback_handler, ...)
  if not ok then
    -- Lua calls no handler when memory runs out: the failure is as raised.
    if type(failure) == "table" and failure.traceback then
      loop.report(failure.value, failure.traceback)
    else
      loop.report(failure)
    end
  end
end

-- Runs queued callbacks, then resumes coroutines whose wait is over.
function loop.drain()
  while head <= tail do
    local entry = queue[head]
    queue[head] = nil
    head = head + 1
    loop.call(table.unpack(entry, 1, entry.n))
  end
  if next(waiting) then
    local now, ready = core.hrtime(), {}
    for co, w in pairs(waiting) do
      if w.ready(w.subject) then
        ready[#ready + 1] = {co, true}
      elseif w.deadline and now >= w.deadline then
        ready[#ready + 1] = {co, false}
      end
    end
    for _, r in ipairs(ready) do
      waiting[r[1]] = nil
      resume(r[1], r[2])
    end
  end
  tell_embedding()
end

local function idle_wakeup() end

-- Waits until ready(subject) is true or timeout seconds passed; returns
-- whether it became true. Blocks the main thread, turning the loop; yields
-- instead inside a coroutine started by lmp.spawn. (A shared `ready` with
-- a `subject` spares a closure per wait.)
function loop.wait(ready, timeout, subject)
  if ready(subject) then return true end
  if timeout and timeout <= 0 then return false end
  local deadline = timeout and core.hrtime() + timeout
  -- Repeats after its first turn, so that the loop stays awake until the
  -- deadline even if the first wake-up comes a hair early.
  local timer <close> = timeout and core.timer(timeout, idle_wakeup, 0.001) or nil
  local co = coroutine.running()
  if spawned[co] then
    waiting[co] = {ready = ready, subject = subject, deadline = deadline}
    tell_embedding()
    return coroutine.yield()
  end
  local luv = package.loaded.luv
  if type(luv) == "table" and luv.run then
    -- Inside a luv callback the loop is already turning: a nested turn
    -- would corrupt libuv, so refuse as run_once does for lmp's own.
    local level = 2
    while true do
      local info = debug.getinfo(level, "f")
      if not info then break end
      if info.func == luv.run then
        error(core.error("in_callback", "a blocking call was made while the event loop is "
          .. "running (inside a luv callback), where waiting would stop the loop it waits "
          .. "on; use the _async form with a callback (apply_async, map_async, submit "
          .. "and add_done_callback), or run the code in lmp.spawn(fn)"), 0)
      end
      level = level + 1
    end
  end
  while true do
    local alive = core.run_once(true)
    loop.drain()
    if ready(subject) then return true end
    if deadline and core.hrtime() >= deadline then return false end
    if not alive and head > tail then
      error(core.error("closed", "waiting for a result that nothing can deliver "
        .. "(no worker or timer is active)"), 0)
    end
  end
end

-- When another turns the loop (luv's uv.run(), a C host), callbacks are
-- delivered right after the events that queued them.
core.set_drain(function() loop.drain() end)

function loop.busy()
  return pending > 0 or head <= tail or next(waiting) ~= nil
end

function loop.run()
  loop.drain()
  while loop.busy() do
    local alive = core.run_once(true)
    loop.drain()
    if not alive and head > tail then
      -- Nothing is left that could deliver an event: the coroutines and
      -- results still waiting never will be. Turning on would only spin.
      if pending > 0 then
        io.stderr:write(("lmp: %d asynchronous result%s can never arrive (no worker or timer"
          .. " is left to deliver them)\n"):format(pending, pending == 1 and "" or "s"))
      end
      break
    end
  end
end

function loop.spawn(fn, ...)
  if type(fn) ~= "function" then
    error(("bad argument #1 to 'spawn' (function expected, got %s)"):format(type(fn)), 2)
  end
  local co = coroutine.create(fn)
  spawned[co] = true
  resume(co, ...)
  return co
end

-- Whether this is the main process (the one with the event loop), not a
-- worker or an lmp.Process child, which block instead of turning a loop.
function loop.in_main_process()
  return core.worker_identity == nil
end

function loop.sleep(seconds)
  if seconds == nil then
    error("bad argument #1 to 'sleep' (number of seconds expected, got no value)", 2)
  end
  errors.check_timeout(seconds, 1, "sleep", false, "duration")
  loop.wait(function() return false end, seconds)
end

return loop

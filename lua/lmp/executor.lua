-- lmp.ProcessPoolExecutor and its futures, as in concurrent.futures. An
-- executor is a Pool underneath: the same workers, scheduling and failure
-- handling; a Future is a view of one apply job.
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"
local progress = require "lmp.progress"
local pool = require "lmp.pool"

local internal = pool.internal

local executor = {}

local Executor = {}
Executor.__index = Executor
Executor.__lmp_nosend = "an executor belongs to the process that made it: send the data and functions, not the executor"
Executor.__name = "lmp.ProcessPoolExecutor"

local Future = {}
Future.__index = Future
Future.__lmp_nosend = "a future belongs to the main process: send its result once it is done"
Future.__name = "lmp.Future"

local check_timeout = errors.check_timeout

-- Done callbacks run on the main thread, in the order they were added,
-- each protected: an error one raises is reported (lmp.on_error), never
-- raised into whoever made the future finish. A future that finishes in
-- a worker has them queued for the next turn of the loop; cancel() runs
-- them before it returns, as Python's does.
local function new_future(job)
  local future = setmetatable({job = job, callbacks = {}, cancelling = false}, Future)
  job.listeners = {function()
    if future.cancelling then return end
    for _, fn in ipairs(future.callbacks) do loop.defer(fn, future) end
  end}
  return future
end

function Future:done()
  return self.job.done
end

function Future:cancelled()
  return self.job.done and self.job.error ~= nil and self.job.error.kind == "cancelled"
end

-- Running: handed to a worker and not finished.
function Future:running()
  return not self.job.done and internal.started(self.job)
end

-- A queued future is cancelled; a running or finished one is not (a
-- cancelled one stays cancelled), as in Python.
function Future:cancel()
  if self:cancelled() then return true end
  if self.job.done or internal.started(self.job) then return false end
  self.cancelling = true
  internal.finish(self.job, errors.new("cancelled", "the future was cancelled"))
  self.cancelling = false
  for _, fn in ipairs(self.callbacks) do loop.call(fn, self) end
  return true
end

local function wait_for(future, timeout, fname)
  check_timeout(timeout, 1, fname)
  loop.wait(function() return future.job.done end, timeout)
  if not future.job.done then
    errors.raise(errors.new("timeout", ("%s: not done after %g s"):format(fname, timeout)))
  end
end

function Future:result(timeout)
  wait_for(self, timeout, "result")
  if self.job.error then errors.raise(self.job.error) end
  local r = self.job.results
  return table.unpack(r, 1, r.n)
end

-- The error object the call raised, or nil if it succeeded.
function Future:exception(timeout)
  wait_for(self, timeout, "exception")
  if self:cancelled() then errors.raise(self.job.error) end
  return self.job.error
end

-- fn(future) runs on the main thread once the future is done; at once if
-- it is done already (an error it raises is reported, not raised here).
function Future:add_done_callback(fn)
  if type(fn) ~= "function" then
    errors.argument(1, "add_done_callback", "function expected, got " .. type(fn))
  end
  if self.job.done then
    loop.call(fn, self)
  else
    self.callbacks[#self.callbacks + 1] = fn
  end
end

-- ---- futures users make and settle (concurrent.futures.Future()) -------
-- The same Future over a job no pool runs: the user settles it. Running
-- means started, for it as for a job handed to a worker.

local job_module = require "lmp.job"

function executor.new_future()
  return new_future(job_module.new_job("apply", false))
end

local function check_user(self, fname)
  if getmetatable(self) ~= Future then
    errors.argument(0, fname, "a future expected")
  end
  if self.job.done then
    error(errors.new("value", ("%s: the future is already %s"):format(fname,
      self:cancelled() and "cancelled" or "finished")), 3)
  end
end

-- Settles the future with these values: result() returns them all.
function Future:set_result(...)
  check_user(self, "set_result")
  self.job.results = table.pack(...)
  internal.finish(self.job, nil)
end

-- Settles the future with an error: result() raises it, exception()
-- returns it.
function Future:set_exception(err)
  if err == nil then errors.argument(1, "set_exception", "error value expected, got nil") end
  check_user(self, "set_exception")
  self.job.results = {n = 0}
  internal.finish(self.job, err)
end

-- false if the future was cancelled (its callbacks have run); otherwise
-- marks it running (cancel() then fails) and returns true. Raises if it
-- is running or finished already, as Python's does.
function Future:set_running_or_notify_cancel()
  if self:cancelled() then return false end
  if self.job.done or self.job.sent_at ~= nil then
    error(errors.new("value", "set_running_or_notify_cancel: the future is already "
      .. (self.job.done and "finished" or "running")), 2)
  end
  self.job.sent_at = core.hrtime()
  return true
end

function Future:__tostring()
  local state = self:cancelled() and "cancelled" or self.job.done and "finished"
    or self:running() and "running" or "pending"
  return "lmp.Future(" .. state .. ")"
end

-- ---- the executor --------------------------------------------------------

local EXECUTOR_OPTIONS = {"max_workers", "initializer", "initargs", "max_tasks_per_child",
  "start_method", "start_options", "mp_context", "ring"}
local MAP_OPTIONS = {"chunksize", "timeout", "progress"}
local SHUTDOWN_OPTIONS = {"wait", "cancel_futures"}
local WAIT_OPTIONS = {"timeout", "return_when"}

-- At the end of a script run by plain lua5.4 nothing turns the loop, and
-- closing the Lua state would kill the workers of every executor, leaving
-- its futures unfinished and their done callbacks never run. So, as
-- Python's interpreter joins its executors at exit, every executor not yet
-- shut down and waited for is then, and the callbacks run. The hook is a
-- table whose finalizer does it when the state closes; Lua finalizes the
-- newest first, so a new one after every executor and submit is finalized
-- before the workers and the loop the executor needs.
local live = setmetatable({}, {__mode = "k"})
local exit_hook
local ExitHook = {}

function ExitHook.__gc(hook)
  -- Older hooks are collected along the way: only the newest acts.
  if hook ~= exit_hook then return end
  exit_hook = nil
  for ex in pairs(live) do
    live[ex] = nil
    loop.call(ex.shutdown, ex, {wait = true})
  end
  loop.drain()
end

local function renew_exit_hook()
  exit_hook = setmetatable({}, ExitHook)
end

function executor.new(opts)
  if opts == nil then opts = {} end
  if math.type(opts) == "integer" then opts = {max_workers = opts} end
  if type(opts) ~= "table" then
    errors.argument(1, "ProcessPoolExecutor", "options table expected, got " .. type(opts))
  end
  errors.check_options(opts, EXECUTOR_OPTIONS, 1, "ProcessPoolExecutor")
  local workers = opts.max_workers
  if workers ~= nil and (math.type(workers) ~= "integer" or workers < 1) then
    errors.argument(1, "ProcessPoolExecutor", "max_workers must be a positive integer")
  end
  local p = pool.new({processes = workers, initializer = opts.initializer,
                      initargs = opts.initargs, maxtasksperchild = opts.max_tasks_per_child,
                      start_method = opts.start_method,
                      start_options = opts.start_options, context = opts.mp_context,
                      ring = opts.ring},
                     "ProcessPoolExecutor")
  local ex = setmetatable({pool = p, futures = setmetatable({}, {__mode = "k"})}, Executor)
  live[ex] = true
  renew_exit_hook()
  return ex
end

function Executor:_check_open(fname)
  if self.shut then
    errors.raise(errors.new("closed", fname .. ": cannot schedule new futures after shutdown"))
  end
end

function Executor:submit(fn, ...)
  internal.check_function(fn, "submit")
  self:_check_open("submit")
  local future = new_future(internal.submit_apply(self.pool, "submit", fn, table.pack(...), nil, true))
  self.futures[future] = true
  renew_exit_hook()
  return future
end

-- Whether t is an options table rather than an array: a table with keys
-- but no items at 1..n.
local function is_options(t)
  return type(t) == "table" and t.n == nil and #t == 0 and next(t) ~= nil
end

-- ex:map(fn, it1 [, it2 ...] [, {timeout=, chunksize=, progress=}]) -> an
-- iterator of results in order; inputs are read lazily, zipped to the
-- shortest. The last input may be a generic for's (iterator, state,
-- control), as pairs(t) gives: an iterator function followed by two
-- values of which the second is no table or function.
function Executor:map(fn, ...)
  internal.check_function(fn, "map")
  local args = table.pack(...)
  local opts = {}
  if args.n > 1 and is_options(args[args.n]) then
    opts = internal.options_of(args[args.n], args.n + 1, "map", MAP_OPTIONS)
    args.n = args.n - 1
  end
  if args.n == 0 then errors.argument(2, "map", "iterable expected, got no value") end
  local readers, i = {}, 1
  while i <= args.n do
    local control = args[i + 2]
    if type(args[i]) == "function" and i + 2 <= args.n and type(control) ~= "table"
       and type(control) ~= "function" then
      readers[#readers + 1] = internal.reader_of(args[i], i + 1, "map", true, args[i + 1], control)
      break
    end
    readers[#readers + 1] = internal.reader_of(args[i], i + 1, "map")
    i = i + 1
  end
  self:_check_open("map")
  local function read()
    local args = {n = #readers}
    for i, r in ipairs(readers) do
      local more, item = r()
      if not more then return nil end
      args[i] = item
    end
    return true, args
  end
  local imap_opts = {chunksize = opts.chunksize, progress = opts.progress}
  if opts.timeout then
    imap_opts.deadline = core.hrtime() + opts.timeout
    imap_opts.timeout = opts.timeout
  end
  local iterate, _, _, closer = internal.imap(self.pool, "map", fn, read, nil, imap_opts, true, "star")
  return function() return (iterate()) end, nil, nil, closer
end

function Executor:shutdown(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    errors.argument(1, "shutdown", "options table expected, got " .. type(opts))
  end
  errors.check_options(opts, SHUTDOWN_OPTIONS, 1, "shutdown")
  self.shut = true
  if opts.cancel_futures then
    for future in pairs(self.futures) do future:cancel() end
  end
  self.pool:close()
  if opts.wait ~= false then
    self.pool:join()
    live[self] = nil
  end
end

function Executor:__close()
  self:shutdown{wait = true}
end

function Executor:__tostring()
  return ("lmp.ProcessPoolExecutor(%d workers%s)"):format(self.pool.processes,
    self.shut and ", shut down" or "")
end

-- ---- waiting on many futures ------------------------------------------------

local function check_futures(futures, fname)
  if type(futures) ~= "table" then
    errors.argument(1, fname, "array of futures expected, got " .. type(futures))
  end
  for i = 1, #futures do
    if getmetatable(futures[i]) ~= Future then
      errors.argument(1, fname, ("futures[%d] is not a future"):format(i))
    end
  end
end

-- lmp.as_completed(futures [, timeout]): an iterator giving each future as
-- it completes (those done already first); raises kind "timeout" if they
-- are not all done within timeout seconds of the call.
-- The second argument is the timeout, or {timeout=, progress=}: with
-- progress = true a bar counts the futures as they come.
local AS_COMPLETED_OPTIONS = {"timeout", "progress"}

function executor.as_completed(futures, timeout)
  check_futures(futures, "as_completed")
  local show_progress = false
  if type(timeout) == "table" then
    local opts = timeout
    errors.check_options(opts, AS_COMPLETED_OPTIONS, 2, "as_completed")
    if opts.progress ~= nil and type(opts.progress) ~= "boolean" then
      errors.argument(2, "as_completed", "progress must be a boolean")
    end
    show_progress, timeout = opts.progress == true, opts.timeout
  end
  check_timeout(timeout, 2, "as_completed")
  local deadline = timeout and core.hrtime() + timeout
  local pending = {}
  for i = 1, #futures do pending[futures[i]] = true end
  local bar = show_progress and progress.new("as_completed", #futures)
  return function()
    if next(pending) == nil then
      if bar then bar:finish() end
      return nil
    end
    local function earliest()
      local best
      for f in pairs(pending) do
        if f.job.done and (not best or f.job.finish_serial < best.job.finish_serial) then
          best = f
        end
      end
      return best
    end
    local found = earliest()
    if not found then
      local remaining = deadline and math.max(0, deadline - core.hrtime())
      loop.wait(function() found = earliest(); return found ~= nil end, remaining)
      if not found then
        local left = 0
        for _ in pairs(pending) do left = left + 1 end
        if bar then bar:finish() end
        errors.raise(errors.new("timeout", ("as_completed: %d of %d futures unfinished after %g s")
          :format(left, #futures, timeout)))
      end
    end
    pending[found] = nil
    if bar then
      bar:advance(1)
      if next(pending) == nil then bar:finish() end
    end
    return found
  end
end

-- lmp.wait(futures, {timeout=, return_when=}) -> done, not_done (arrays).
function executor.wait(futures, opts)
  check_futures(futures, "wait")
  opts = opts or {}
  if type(opts) ~= "table" then
    errors.argument(2, "wait", "options table expected, got " .. type(opts))
  end
  errors.check_options(opts, WAIT_OPTIONS, 2, "wait")
  check_timeout(opts.timeout, 2, "wait")
  local when = opts.return_when or "ALL_COMPLETED"
  if when ~= "ALL_COMPLETED" and when ~= "FIRST_COMPLETED" and when ~= "FIRST_EXCEPTION" then
    errors.argument(2, "wait", "return_when must be ALL_COMPLETED, FIRST_COMPLETED or "
      .. "FIRST_EXCEPTION, got " .. tostring(when))
  end
  local function finished()
    local done = 0
    for _, f in ipairs(futures) do
      if f.job.done then
        done = done + 1
        if when == "FIRST_COMPLETED" then return true end
        if when == "FIRST_EXCEPTION" and f.job.error and not f:cancelled() then return true end
      end
    end
    return done == #futures
  end
  loop.wait(finished, opts.timeout)
  local done, not_done = {}, {}
  for _, f in ipairs(futures) do
    if f.job.done then done[#done + 1] = f else not_done[#not_done + 1] = f end
  end
  return done, not_done
end

executor.Future = Future
executor.Executor = Executor
return executor

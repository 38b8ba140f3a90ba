-- lmp.Pool: worker processes, the task queue, and the Pool API.
--
-- The path of a task: pool:map splits its input into chunks (tasks), each
-- encoded once at submission so that an unsendable argument raises there;
-- _pump hands queued tasks to workers with room (two in flight each, so a
-- worker never waits for the round trip); a worker answers one "done"
-- message per task; _on_done gives the values to the task's job, which
-- fills a result, feeds an imap iterator, or calls a callback.
--
-- Nothing that the C side holds on to (worker handlers) refers to the pool
-- itself, only to a weak reference, so an unclosed pool can be collected;
-- its finalizer stops its workers.
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"
local progress = require "lmp.progress"
local globals = require "lmp.globals"

local Pool = {}
Pool.__index = Pool
Pool.__lmp_nosend = "a pool belongs to the process that made it: send the data and functions, not the pool"
Pool.__name = "lmp.Pool"


local PIPELINE = 2          -- tasks in flight per worker, when tasks are short
local SHORT_TASK = 0.002    -- seconds: below this a second task in flight pays
local DEEP_PIPELINE = 8     -- in flight per worker when tasks are tiny:
local TINY_TASK = 0.0001    -- seconds: below this; answers then come in batches
local START_FAILURES = 3    -- workers dying at start before the pool gives up
local FUNCTION_CACHE = 256  -- functions a worker keeps before it is told to forget

-- What lmp.set_start_method sets: how pools start workers when not told.
local settings = {start_method = "spawn"}

local worker_serial = 0
local function_ids = setmetatable({}, {__mode = "k"})
local next_function_id = 0
local task_serial = 0

local argument_error = errors.argument

local function function_id(fn)
  local id = function_ids[fn]
  if not id then
    -- Refuse an unsendable function now, from the call that submitted it.
    local ok, err = pcall(core.dumps, fn, "function")
    if not ok then error(err, 0) end
    next_function_id = next_function_id + 1
    id = next_function_id
    function_ids[fn] = id
  end
  return id
end

-- An iterable is an array (with an optional n), an iterator function
-- called until it returns nil, or the three values a generic for takes
-- (iterator, state, control: pairs(t), ipairs(t), string.gmatch, ...).
-- Returns a reader giving (true, item) until the end, and the count if
-- known. A step of a triplet that gives several values (k, v) has the
-- second as its item, as the body of `for _, v in pairs(t)` sees it;
-- with `star`, the item is all the values of the step, as arguments.
local function reader_of(iterable, argn, fname, triplet, state, control, star)
  local kind = type(iterable)
  if kind == "table" then
    local n = iterable.n or #iterable
    if n == 0 and iterable.n == nil and next(iterable) ~= nil then
      -- A table with only keys outside 1..n would map over nothing.
      argument_error(argn, fname, "array expected, got a table with no items at 1..n;"
        .. " for its values use pairs(t)")
    end
    local i = 0
    return function()
      if i < n then i = i + 1; return true, iterable[i] end
    end, n
  elseif kind == "function" and triplet then
    local stopped = false
    local function step(first, ...)
      if first == nil then stopped = true; return nil end
      control = first
      if star then return true, table.pack(first, ...) end
      if select("#", ...) == 0 then return true, first end
      return true, (...)
    end
    return function()
      if stopped then return nil end
      return step(iterable(state, control))
    end, nil
  elseif kind == "function" then
    return function()
      local v = iterable()
      if v ~= nil then return true, v end
    end, nil
  end
  argument_error(argn, fname, "iterable expected, got " .. kind)
end

-- The arguments after the function of map, imap, starmap and the _async
-- forms: (iterable [, opts]) or a generic for's (iterator, state, control
-- [, closing]), which Lua passes whole only as the last arguments, so
-- that no options can follow it. Two or more values after an iterator
-- function make a triplet. Returns reader, count, array, opts.
local function iterable_of(fname, star, ...)
  local iterable, opts = ...
  if type(iterable) == "function" and select("#", ...) >= 3 then
    local _, state, control = ...
    return reader_of(iterable, 2, fname, true, state, control, star), nil, nil, nil
  end
  local read, total = reader_of(iterable, 2, fname)
  return read, total, type(iterable) == "table" and iterable or nil, opts
end

local NO_OPTIONS = setmetatable({}, {__newindex = function() error("lmp: NO_OPTIONS is shared") end})

-- The options each call takes.
local MAP_OPTIONS = {"chunksize", "timeout", "progress"}
local MAP_ASYNC_OPTIONS = {"chunksize", "timeout", "progress", "callback", "error_callback"}
local APPLY_ASYNC_OPTIONS = {"timeout", "callback", "error_callback"}
local POOL_OPTIONS = {"processes", "initializer", "initargs", "maxtasksperchild",
  "max_tasks_per_child", "task_timeout", "progress", "start_method", "kill_orphans"}

local function options_of(opts, argn, fname, known)
  if opts == nil then return NO_OPTIONS end
  if math.type(opts) == "integer" then
    if opts < 1 then argument_error(argn, fname, "chunksize must be at least 1") end
    return {chunksize = opts}
  end
  if type(opts) ~= "table" then
    argument_error(argn, fname, "chunksize or options table expected, got " .. type(opts))
  end
  errors.check_options(opts, known or MAP_OPTIONS, argn, fname)
  if opts.chunksize ~= nil and (math.type(opts.chunksize) ~= "integer" or opts.chunksize < 1) then
    argument_error(argn, fname, "chunksize must be a positive integer")
  end
  errors.check_timeout(opts.timeout, argn, fname, true)
  if opts.progress ~= nil and type(opts.progress) ~= "boolean" then
    argument_error(argn, fname, "progress must be a boolean")
  end
  for _, name in ipairs{"callback", "error_callback"} do
    if opts[name] ~= nil and type(opts[name]) ~= "function" then
      argument_error(argn, fname, name .. " must be a function")
    end
  end
  return opts
end

local function check_function(f, fname)
  if type(f) ~= "function" then
    argument_error(1, fname, "function expected, got " .. type(f))
  end
end

local SIGNALS = {[1] = "SIGHUP", [2] = "SIGINT", [3] = "SIGQUIT", [4] = "SIGILL",
  [6] = "SIGABRT", [7] = "SIGBUS", [8] = "SIGFPE", [9] = "SIGKILL",
  [11] = "SIGSEGV", [13] = "SIGPIPE", [14] = "SIGALRM", [15] = "SIGTERM"}

local function death_message(pid, status, signal)
  if signal ~= 0 then
    return ("worker process %d died: killed by signal %d (%s)"):format(
      pid, signal, SIGNALS[signal] or "?")
  end
  return ("worker process %d died: exited with status %d"):format(pid, status)
end

-- ---- jobs -------------------------------------------------------------
-- A job is one call (map, imap, apply_async...). It knows how many items it
-- has, receives each task's values and errors, and finishes once. The job
-- of an async call is the AsyncResult its caller holds, and an apply job
-- is its own single task: a burst of apply_async keeps thousands alive,
-- and each table fewer is less for the collector to walk.

local Job = {}
Job.__index = Job
Job.__lmp_nosend = "a result handle belongs to the main process: send the value once it is ready"
Job.__name = "lmp.AsyncResult"
local AsyncResult = Job

-- The fields a job gets are named here, so that its table is made at its
-- final size.
local function new_job(kind, async, callback, error_callback)
  return setmetatable({kind = kind, async = async, callback = callback,
    error_callback = error_callback, received = 0, total = 0, done = false, pending = false,
    results = nil, error = nil, finish_serial = nil}, Job)
end

-- What every apply job has as a task, kept here rather than in each of
-- them (see Pool:_apply_job).
Job.mode, Job.first, Job.count = "apply", 1, 1

-- Once its tasks are queued, an async job keeps lmp.run() turning until it
-- finishes; a call that raised before queueing leaves nothing pending.
function Job:_queued()
  if self.async and not self.done and not self.pending then
    self.pending = true
    loop.add_pending(1)
  end
end

local finish_serial = 0

function Job:_finish(err)
  if self.done then return end
  self.done = true
  if self.bar then self.bar:finish() end
  self.error = err
  finish_serial = finish_serial + 1
  self.finish_serial = finish_serial -- completion order, for as_completed
  if self.listeners then
    for _, listener in ipairs(self.listeners) do listener(self) end
  end
  if self.pending then loop.add_pending(-1) end
  if err then
    if self.error_callback then loop.defer(self.error_callback, err) end
  elseif self.callback then
    if self.kind == "apply" then
      local r = self.results
      loop.defer(function() self.callback(table.unpack(r, 1, r.n)) end)
    else
      loop.defer(self.callback, self.results)
    end
  end
end

-- Gives a task's outcome to its job: values (an array with n) and errors
-- (nil, or item index within the task -> error object).
-- `values` is a table, or a view of the encoded values valid only during
-- this call (see core.payload_value).
--
-- Loading the values can fail here, in the main process (a registered
-- constructor that raises): that fails the task's items with kind
-- serialize, as a value that cannot be sent does, and the job goes on.
local function load_failure(task, err)
  return errors.new("serialize", "a result cannot be loaded in the main process: "
    .. tostring(err), {index = task.first})
end

function Job:_deliver(task, values, errs)
  if self.kind == "apply" then
    local ok, results = pcall(core.payload_value, values)
    if not ok then
      self.results = {n = 0}
      return self:_finish(load_failure(task, results))
    end
    self.results = results
    return self:_finish(errs and errs[1] or nil)
  end
  if self.stream then
    local ok, loaded = pcall(core.payload_value, values)
    if not ok then
      local failure = load_failure(task, loaded)
      loaded, errs = {n = task.count}, errs or {}
      for i = 1, task.count do errs[i] = errs[i] or failure end
    end
    return self.stream(task, loaded, errs)
  end
  if self.done then return end
  if errs then
    for i = 1, task.count do
      if errs[i] then return self:_finish(errs[i]) end
    end
  end
  local results = self.results
  if not results then
    results = core.new_table(self.total, 1)
    results.n = self.total
    self.results = results
  end
  local ok, err = pcall(core.payload_into, values, results, task.first, task.count)
  if not ok then return self:_finish(load_failure(task, err)) end
  if self.bar then self.bar:advance(task.count) end
  self.received = self.received + task.count
  if self.received >= self.total then self:_finish(nil) end
end

-- ---- the pool ----------------------------------------------------------

local function weak_ref(pool)
  return setmetatable({pool = pool}, {__mode = "v"})
end

local function new_pool(opts, fname)
  local processes = opts.processes
  if processes == nil then processes = core.cpu_count() end
  if math.type(processes) ~= "integer" or processes < 1 then
    argument_error(1, fname, "processes must be a positive integer")
  end
  if opts.initializer ~= nil and type(opts.initializer) ~= "function" then
    argument_error(1, fname, "initializer must be a function")
  end
  if opts.initargs ~= nil and type(opts.initargs) ~= "table" then
    argument_error(1, fname, "initargs must be a table")
  end
  local maxtasks = opts.maxtasksperchild or opts.max_tasks_per_child
  if maxtasks ~= nil and (math.type(maxtasks) ~= "integer" or maxtasks < 1) then
    argument_error(1, fname, "maxtasksperchild must be a positive integer")
  end
  local task_timeout = errors.check_timeout(opts.task_timeout, 1, fname, true, "task_timeout")
  if opts.progress ~= nil and type(opts.progress) ~= "boolean" then
    argument_error(1, fname, "progress must be a boolean")
  end
  if opts.kill_orphans ~= nil and type(opts.kill_orphans) ~= "boolean" then
    argument_error(1, fname, "kill_orphans must be a boolean")
  end
  local start_method = opts.start_method or settings.start_method
  if start_method ~= "spawn" and start_method ~= "fork" then
    argument_error(1, fname, ("start method '%s' is not supported; use 'spawn' or 'fork'")
      :format(tostring(start_method)))
  end

  local self = setmetatable({
    processes = processes,
    maxtasks = maxtasks,
    task_timeout = task_timeout,
    progress = opts.progress,
    workers = {},          -- live worker records
    queue = {}, queue_head = 1, queue_tail = 0,
    -- Lazy jobs (imap) that feed the queue as it drains, held weakly: an
    -- iterator the caller dropped stops feeding once it is collected.
    streams = setmetatable({}, {__mode = "k"}),
    state = "running",     -- running, closed, terminated
    start_method = start_method,
    start_failures = 0,
    kill_orphans = opts.kill_orphans == true,
  }, Pool)
  self.ref = weak_ref(self)
  local initargs = opts.initargs and table.pack(table.unpack(opts.initargs, 1,
    opts.initargs.n or #opts.initargs)) or nil
  self.config = {path = package.path, cpath = package.cpath,
                 initializer = opts.initializer, initargs = initargs,
                 own_process_group = self.kill_orphans or nil}
  if opts.initializer then
    local ok, err = pcall(core.dumps, self.config, "initializer")
    if not ok then error(err, 0) end
  end
  core.handle_interrupts()
  for _ = 1, processes do self:_start_worker() end
  -- Creation returns once every worker is ready, so a failing initializer
  -- or a missing worker executable fails here, once.
  loop.wait(function() return self.broken or self:_all_ready() end)
  if self.broken then
    local err = self.broken
    self:terminate()
    self:join()
    error(err, 0)
  end
  return self
end

function Pool:_all_ready()
  for _, w in ipairs(self.workers) do
    if not w.ready then return false end
  end
  return true
end

-- The program a new worker runs: $LMP_WORKER overrides (a debugger or a
-- valgrind wrapper); then what the host or the runner set; then the
-- lmp-worker installed beside the module.
local function worker_executable()
  local exe = os.getenv("LMP_WORKER")
  if exe == nil or exe == "" then exe = core.worker_executable() or core.find_worker() end
  return exe
end

function Pool:_active_workers()
  local n = 0
  for _, w in ipairs(self.workers) do
    if not w.retiring then n = n + 1 end
  end
  return n
end

-- Whether a worker that died is replaced: always while the pool runs; once
-- it is closed, while work is left that needs a worker (a closed pool keeps
-- its size until its queue is empty); never once it is terminated.
function Pool:_replaces_workers()
  if self.broken or self.state == "terminated" then return false end
  if self.state == "running" then return true end
  return self:_queued() > 0 or next(self.streams) ~= nil
end

function Pool:_start_worker()
  worker_serial = worker_serial + 1
  local ref = self.ref
  local w = {inflight = {}, functions = {}, function_count = 0, sent = 0,
             ready = false, identity = worker_serial}
  local function on_message(message, payload)
    local pool = ref.pool
    if pool then pool:_on_message(w, message, payload) end
  end
  local function on_exit(status, signal)
    local pool = ref.pool
    if pool then pool:_on_exit(w, status, signal) end
  end
  local ok, handle
  if self.start_method == "fork" then
    -- A copy of this process: no executable to load, no Lua to start.
    ok, handle = pcall(core.fork_worker, on_message, on_exit)
  else
    local exe = worker_executable()
    ok, handle = pcall(core.spawn, exe, {exe, core.worker_flag, tostring(core.getpid())},
                       on_message, on_exit)
  end
  if not ok then
    self:_break(handle)
    return
  end
  w.handle = handle
  w.pid = handle:pid()
  self.workers[#self.workers + 1] = w
  local config = self.config
  config.name = "PoolWorker-" .. w.identity
  config.identity = {w.identity}
  handle:send({"init", config}, nil, "initializer")
end

-- The pool cannot go on (workers keep dying at start, or the initializer
-- raises): every job waiting on it fails with this error.
function Pool:_break(err)
  if self.broken then return end
  self.broken = err
  self:_fail_queued(err)
  for _, w in ipairs(self.workers) do
    for _, task in ipairs(w.inflight) do task.job:_finish(err) end
    w.inflight = {}
  end
  for job in pairs(self.streams) do job:_finish(err) end
end

function Pool:_fail_queued(err)
  for i = self.queue_head, self.queue_tail do
    self.queue[i].job:_finish(err)
    self.queue[i] = nil
  end
  self.queue_head, self.queue_tail = 1, 0
end

function Pool:_enqueue(task, front)
  if front then
    self.queue_head = self.queue_head - 1
    self.queue[self.queue_head] = task
  else
    self.queue_tail = self.queue_tail + 1
    self.queue[self.queue_tail] = task
  end
end

function Pool:_dequeue()
  while self.queue_head <= self.queue_tail do
    local task = self.queue[self.queue_head]
    self.queue[self.queue_head] = nil
    self.queue_head = self.queue_head + 1
    if not task.job.done then return task end
  end
end

function Pool:_queued()
  return self.queue_tail - self.queue_head + 1
end

-- A task of `count` items, source[from] onwards, which are items `first`
-- onwards of the whole input (a refusal names the item by that index).
-- The items are encoded now, straight from the source, so that an
-- unsendable one raises from the call that submitted it.
local function new_task(job, fn, mode, source, from, count, first, timeout)
  task_serial = task_serial + 1
  return {id = task_serial, job = job, fn = fn, function_id = function_id(fn),
          mode = mode, payload = core.encode_list(source, from, count, first), first = first,
          count = count, timeout = timeout, sent_at = nil, timer = nil, took = nil}
end

-- An idle worker does not keep the event loop alive (luv's uv.run() may
-- return); one that is starting, working or leaving does.
function Pool:_keep_alive(w)
  local keep = #w.inflight > 0 or not w.ready or w.retiring == true or w.lost == true
  if keep ~= w.keeps_loop_alive then
    w.keeps_loop_alive = keep
    w.handle:keep_loop_alive(keep)
  end
end

function Pool:_free_worker()
  -- A second task in flight hides the round trip (the worker need not wait
  -- for the main process between tasks). Long tasks get one only while
  -- plenty are queued: near the end of the queue it would wait behind the
  -- first while another worker is free.
  local depth = 1
  if self.task_time and self.task_time < TINY_TASK then
    depth = DEEP_PIPELINE
  elseif (self.task_time and self.task_time < SHORT_TASK)
     or self:_queued() >= PIPELINE * #self.workers then
    depth = PIPELINE
  end
  local best, best_load = nil, depth
  for _, w in ipairs(self.workers) do
    local load = #w.inflight
    -- A worker still starting takes tasks too: they wait in its channel
    -- and run as soon as it is up, rather than behind a long one elsewhere.
    if not w.retiring and not w.lost and load < best_load then
      best, best_load = w, load
      if load == 0 then break end
    end
  end
  return best
end

-- Hands queued tasks to workers with room; pulls more from lazy jobs.
function Pool:_pump()
  if self.broken then return end
  while true do
    if self:_queued() < #self.workers * PIPELINE then
      if next(self.streams) == nil then
        if self.queue_head > self.queue_tail then break end
      else
        for job in pairs(self.streams) do job.refill() end
      end
    end
    local w = self:_free_worker()
    if not w then break end
    local task = self:_dequeue()
    if not task then break end
    self:_send(w, task)
  end
  if self.state == "closed" and self:_queued() == 0 and next(self.streams) == nil then
    for _, w in ipairs(self.workers) do
      if #w.inflight == 0 and not w.retiring then
        w.retiring = true
        self:_keep_alive(w)
        w.handle:close_input()
      end
    end
  end
end

function Pool:_send(w, task)
  local fn, reset, script_globals = false, false, false
  if not w.functions[task.function_id] then
    if w.function_count >= FUNCTION_CACHE then
      w.functions, w.function_count, reset = {}, 0, true
    end
    w.functions[task.function_id] = true
    w.function_count = w.function_count + 1
    fn = task.fn
    -- A new function may call the script's other globals: send them too,
    -- when they changed since this worker last had them.
    local snapshot = globals.snapshot(w.globals)
    if snapshot then
      w.globals = snapshot
      script_globals = snapshot
    end
  end
  local sent
  if fn or reset or script_globals then
    sent = w.handle:send({"task", task.id, task.function_id, fn, task.mode, reset,
                          script_globals}, task.payload)
  else -- the usual case: the same message, made in C
    sent = w.handle:send_task(task.id, task.function_id, task.mode, task.payload)
  end
  if not sent then
    -- The channel is broken: the worker died (perhaps while this process
    -- was busy and did not turn its loop). It is not retiring: its exit,
    -- reported soon, fails what it held and starts its replacement.
    w.functions[task.function_id] = nil
    self:_enqueue(task, true)
    w.lost = true
    self:_keep_alive(w)
    return
  end
  w.sent = w.sent + 1
  task.sent_at = core.hrtime()
  w.inflight[#w.inflight + 1] = task
  if self.maxtasks and w.sent >= self.maxtasks then
    -- Replaced after its last task: nothing it was given is lost or repeated.
    w.retiring = true
    self:_keep_alive(w)
    w.handle:close_input()
    self:_start_worker()
  end
  if #w.inflight == 1 then self:_task_started(w, task) end
  self:_keep_alive(w)
end

-- A worker runs its tasks in order: the first in flight is the running one.
function Pool:_task_started(w, task)
  local timeout = task.timeout or self.task_timeout
  if not timeout then return end
  local ref = self.ref
  task.timer = core.timer(timeout, function()
    local pool = ref.pool
    if pool and w.inflight[1] == task and not w.timed_out then
      w.timed_out = task
      w.handle:kill(9)
    end
  end)
end

-- What a worker sends is looked at with rawget and next, so that a forged
-- message with metamethods runs nothing here.

-- Whether `errs` is what a worker sends for a task of `count` items:
-- item index -> {message = string, kind = string or nil, ...}.
local function valid_errors(errs, count)
  if type(errs) ~= "table" or getmetatable(errs) ~= nil then return false end
  for i, info in next, errs do
    if math.type(i) ~= "integer" or i < 1 or i > count or type(info) ~= "table"
       or getmetatable(info) ~= nil or type(rawget(info, "message")) ~= "string"
       or (rawget(info, "kind") ~= nil and type(rawget(info, "kind")) ~= "string") then
      return false
    end
  end
  return true
end

local function describe_value(v)
  if math.type(v) then return tostring(v) end
  return "(a " .. type(v) .. ")"
end

local function describe_message(message)
  if type(message) == "table" then
    local op = rawget(message, 1)
    return ("a table message %s"):format(type(op) == "string"
      and ("%q"):format(op:sub(1, 40)) or "of no known kind")
  end
  return ("a %s message"):format(math.type(message) or type(message))
end

-- The pool gives up on a worker whose channel says something it cannot
-- trust (a malformed frame, an answer out of order, a message it does not
-- expect): nothing more it sends is read, it is killed, and its exit fails
-- the task it was running as worker_lost with `reason` in the message.
function Pool:_lose(w, reason)
  if w.protocol_error then return end
  w.lost = true
  w.protocol_error = reason
  self:_keep_alive(w)
  w.handle:kill(9)
end

-- A worker's answers: a task's id (or {"done", id, errors}) with its
-- values; "ready" once started; "init_error" when the initializer failed.
-- Each answer must be for the task the worker is running (the first in
-- flight): anything else ends the worker (see Pool:_lose).
function Pool:_on_message(w, message, values)
  if w.protocol_error then return end -- nothing it says is trusted now
  if message == nil then return self:_lose(w, values) end -- a malformed frame (process.c)
  local id, errs = message, nil
  if math.type(message) ~= "integer" then
    if type(message) ~= "table" then
      return self:_lose(w, describe_message(message))
    elseif rawget(message, 1) == "done" then
      id, errs = rawget(message, 2), rawget(message, 3)
    else
      return self:_on_control(w, message)
    end
  end
  local task = w.inflight[1]
  if not task then
    -- An answer still in the pipe when the pool was terminated: its job
    -- has already failed.
    if self.state == "terminated" then return end
    return self:_lose(w, ("an answer for task %s while it had no task"):format(describe_value(id)))
  end
  if id ~= task.id then
    return self:_lose(w, ("an answer for task %s while it was running task %d")
      :format(describe_value(id), task.id))
  end
  if values == nil or (errs ~= nil and not valid_errors(errs, task.count)) then
    return self:_lose(w, ("a malformed answer for task %d"):format(task.id))
  end
  table.remove(w.inflight, 1)
  local now = core.hrtime()
  local took = now - math.max(task.sent_at, w.last_done or 0)
  if task.job.stream then task.took = took end
  self.task_time = self.task_time and (self.task_time * 3 + took) / 4 or took
  w.last_done = now
  if task.timer then task.timer:close() end
  if w.inflight[1] then self:_task_started(w, w.inflight[1]) end
  if errs then
    for i, info in pairs(errs) do
      errs[i] = errors.new(info.kind or "task", info.message, {
        traceback = info.traceback, value = info.value, pid = w.pid,
        index = task.first + i - 1})
    end
  end
  task.job:_deliver(task, values, errs)
  self:_keep_alive(w)
  self:_pump()
end

function Pool:_on_control(w, message)
  local op = rawget(message, 1)
  if op == "ready" and not w.ready then
    w.ready = true
    self.start_failures = 0
    self:_keep_alive(w)
    self:_pump()
  elseif op == "init_error" and not w.ready and valid_errors({rawget(message, 2)}, 1) then
    local info = message[2]
    self:_break(errors.new("initializer", "the pool's initializer failed: " .. info.message,
      {traceback = info.traceback, value = info.value, pid = w.pid}))
  elseif self.state ~= "terminated" then
    self:_lose(w, ("%s it did not expect"):format(describe_message(message)))
  end
end

function Pool:_on_exit(w, status, signal)
  -- With kill_orphans, each worker leads its own process group: whatever
  -- its tasks started and left there ends with it.
  if self.kill_orphans then core.kill(-w.pid, 9) end
  for i, other in ipairs(self.workers) do
    if other == w then table.remove(self.workers, i); break end
  end
  local clean = w.retiring and #w.inflight == 0
  if not clean and self.state ~= "terminated" then
    -- A worker that died before it was ready ran nothing it was given.
    local running = w.ready and table.remove(w.inflight, 1)
    if running then
      if running.timer then running.timer:close() end
      local err
      if w.timed_out == running then
        err = errors.new("timeout", ("task timed out after %g s; its worker %d was killed"
          .. " and replaced"):format(running.timeout or self.task_timeout, w.pid),
          {pid = w.pid, index = running.first})
      else
        local message = w.protocol_error
          and ("worker process %d was killed by the pool: it sent %s"):format(w.pid, w.protocol_error)
          or death_message(w.pid, status, signal)
        err = errors.new("worker_lost", message,
          {pid = w.pid, index = running.first, exitcode = status, signal = signal})
      end
      self:_fail_task(running, err)
    end
    -- Tasks behind the running one never started: run them elsewhere.
    for i = #w.inflight, 1, -1 do self:_enqueue(w.inflight[i], true) end
    w.inflight = {}
    if not w.ready then
      self.start_failures = self.start_failures + 1
      if self.start_failures >= START_FAILURES and not self.broken then
        self:_break(errors.new("worker_lost", ("workers keep dying at start (%d in a row);"
          .. " last: %s"):format(self.start_failures, death_message(w.pid, status, signal)),
          {pid = w.pid}))
      end
    end
    if self:_replaces_workers() and self:_active_workers() < self.processes then
      self:_start_worker()
    end
  end
  self:_pump()
end

-- A task that failed as a whole fails each of its items.
function Pool:_fail_task(task, err)
  local errs = {}
  for i = 1, task.count do errs[i] = err end
  task.job:_deliver(task, {n = task.count}, errs)
end

function Pool:_wants_progress(opts)
  if opts.progress ~= nil then return opts.progress end
  return self.progress
end

function Pool:_check_open(fname)
  if self.state ~= "running" then
    error(errors.new("closed", ("%s on a pool that is %s"):format(fname, self.state)), 3)
  end
  if self.broken then error(self.broken, 3) end
end

-- ---- chunking -----------------------------------------------------------

local function default_chunksize(total, processes)
  if not total or total == 0 then return 1 end
  local size = total // (processes * 4)
  if total % (processes * 4) ~= 0 then size = size + 1 end
  return size
end

-- The chunk sizes for a map of `total` items when the caller gave none:
-- each chunk takes an eighth of a worker's share of what is left ("guided"
-- scheduling), so chunks shrink towards the end and the workers finish
-- together even when later items cost more; a floor keeps tiny items from
-- being swamped by per-task overhead (at most about 32 chunks per worker).
-- Measured on 1M trivial items and on 64 prime-counting ranges of rising
-- cost: both beat Python's fixed total/(4 x processes).
local function chunk_plan(total, processes)
  local floor = math.max(1, -(-total // (processes * 32)))
  local sizes, left = {}, total
  while left > 0 do
    local size = math.min(left, math.max(floor, -(-left // (processes * 8))))
    sizes[#sizes + 1] = size
    left = left - size
  end
  return sizes
end

-- Splits the items into tasks, all encoded before any is queued (map reads
-- its whole input, as Python's does).
function Pool:_submit_all(job, fn, mode, read, total, chunksize, timeout, array)
  if not array then
    array, total = {}, 0
    -- An input that raises fails the call before anything is queued; the
    -- pool is untouched.
    local ok, err = pcall(function()
      while true do
        local more, item = read()
        if not more then break end
        total = total + 1
        array[total] = item
      end
    end)
    if not ok then
      if job.bar then job.bar:finish() end
      error(err, 0)
    end
  end
  local sizes
  if chunksize then
    sizes = {}
    for first = 1, total, chunksize do sizes[#sizes + 1] = math.min(chunksize, total - first + 1) end
  else
    sizes = chunk_plan(total, self.processes)
  end
  local tasks, first = {}, 1
  for i, size in ipairs(sizes) do
    tasks[i] = new_task(job, fn, mode, array, first, size, first, timeout)
    first = first + size
  end
  job.total = total
  -- The result table (made at its final size when the first chunk comes
  -- back, while the workers run the next ones).
  if total == 0 then job.results = {n = 0} end
  if job.bar then job.bar.total = total end
  for _, task in ipairs(tasks) do self:_enqueue(task) end
  job:_queued()
  if total == 0 then job:_finish(nil) end
  self:_pump()
  return job
end

-- ---- the API --------------------------------------------------------------

local function map_job(self, fname, fn, mode, async, ...)
  check_function(fn, fname)
  local read, total, array, opts = iterable_of(fname, mode == "star", ...)
  opts = options_of(opts, 3, fname, async and MAP_ASYNC_OPTIONS or MAP_OPTIONS)
  self:_check_open(fname)
  local job = new_job("map", async, opts.callback, opts.error_callback)
  if self:_wants_progress(opts) then job.bar = progress.new(fname, total) end
  return self:_submit_all(job, fn, mode, read, total, opts.chunksize, opts.timeout, array)
end

local function job_done(job) return job.done end

local function result_of(job, fname, timeout)
  errors.check_timeout(timeout, 1, fname)
  if not job.done then loop.wait(job_done, timeout, job) end
  if not job.done then
    error(errors.new("timeout", ("%s: no result after %g s"):format(fname, timeout)), 3)
  end
  if job.error then error(job.error, 3) end
  return job.results
end

-- pool:map(f, iterable [, chunksize or opts]) or pool:map(f, iterator,
-- state, control): see iterable_of. The same for the others.
function Pool:map(fn, ...)
  return result_of((map_job(self, "map", fn, "map", false, ...)), "map")
end

function Pool:starmap(fn, ...)
  return result_of((map_job(self, "starmap", fn, "star", false, ...)), "starmap")
end

function Pool:map_async(fn, ...)
  return (map_job(self, "map_async", fn, "map", true, ...))
end

function Pool:starmap_async(fn, ...)
  return (map_job(self, "starmap_async", fn, "star", true, ...))
end

-- An apply job is also its task: one table per call. The constructor
-- names 15 fields, so the table is made with room for 16 (its timer, when
-- it has a timeout, fills the last): thousands wait in a burst of
-- apply_async, and the collector walks every slot of each.
function Pool:_apply_job(fname, fn, args, opts, async)
  check_function(fn, fname)
  if args ~= nil and type(args) ~= "table" then
    argument_error(2, fname, "table of arguments expected, got " .. type(args))
  end
  opts = options_of(opts, 3, fname, async and APPLY_ASYNC_OPTIONS or {})
  self:_check_open(fname)
  args = args or {}
  local payload = core.encode_list(args, 1, args.n or #args)
  task_serial = task_serial + 1
  local job = setmetatable({kind = "apply", async = async, done = false, pending = false,
    callback = opts.callback, error_callback = opts.error_callback, results = nil,
    finish_serial = nil, id = task_serial, job = false, fn = fn,
    function_id = function_id(fn), payload = payload, timeout = opts.timeout,
    sent_at = nil}, Job)
  job.job = job
  -- Workers free up only in loop callbacks, which pump themselves: with
  -- tasks already waiting, no worker has room now.
  local waiting = self.queue_tail >= self.queue_head
  self:_enqueue(job)
  job:_queued()
  if not waiting then self:_pump() end
  return job
end

function Pool:apply(fn, args)
  local r = result_of(self:_apply_job("apply", fn, args, nil, false), "apply")
  return table.unpack(r, 1, r.n)
end

function Pool:apply_async(fn, args, opts)
  return self:_apply_job("apply_async", fn, args, opts, true)
end

-- imap and imap_unordered read their input as workers free up, keeping a
-- bounded number of items in flight, and pick a chunk size from how long
-- items take when none is given. The iterator gives (value, index): a nil
-- result would end a generic for, so it arrives as lmp.null. The fourth
-- value is a to-be-closed handle, so that leaving the loop early (break,
-- return, error) stops reading the input at once; the iterator is also let
-- go when it is collected, and join runs the rest of the input of one
-- still held (see Pool:join).
--
-- An input that raises ends the input: the items read before it are run
-- and given to the caller, then the error is raised from the loop, as
-- Python's imap does; the pool is not affected.

local StreamCloser = {__name = "lmp.StreamCloser"}
function StreamCloser.__close(closer) closer.stop() end
-- Only flags change here: a finalizer may run in the middle of any of the
-- pool's own work.
function StreamCloser.__gc(closer) closer.abandon() end

-- Pool:_stream(fname, fn, read, total, opts, ordered [, mode]) -> iterator,
-- nil, nil, closer; `read` gives (true, item) until the end; mode "star"
-- unpacks each item as the arguments.
function Pool:_stream(fname, fn, read, total, opts, ordered, mode, array)
  self:_check_open(fname)
  local job = new_job("imap", false)
  local bar = self:_wants_progress(opts) and progress.new(fname, total)
  local fixed = opts.chunksize
  local limit = total and default_chunksize(total, self.processes) or 4096
  local chunksize = fixed or 1
  local read_count, taken, exhausted = 0, 0, false
  local input_error, input_failed = nil, false  -- what reading the input raised
  -- Arrived results, a chunk (one task's values and errors) at a time:
  -- by first input index for imap, in arrival order for imap_unordered.
  local chunks, fifo, head, tail = {}, {}, 1, 0
  local current, position = nil, 0   -- the chunk being read, items taken from it
  local next_index = 1
  local per_item            -- seconds an item takes, measured
  local function window() return math.max(64, chunksize * self.processes * PIPELINE * 2) end
  -- Items read and not yet given to the caller: queued, in flight, or
  -- arrived and waiting, the chunk being read included. The window bounds
  -- these; were any left out, the caller could wait for results that are
  -- not on their way while the window holds the input back.
  local function outstanding() return read_count - taken - position end

  job.refill = function()
    if exhausted or job.done then return end
    if not job.draining and outstanding() >= window() then return end
    if not fixed and per_item then
      chunksize = math.max(1, math.min(limit, chunksize * 2, math.floor(0.02 / per_item)))
    end
    local source, from, count = array, read_count + 1, 0
    if array then
      count = math.min(chunksize, total - read_count)
      if read_count + count >= total then exhausted = true end
    else
      source, from = {}, 1
      while count < chunksize do
        local ok, more, item = pcall(read)
        if not ok then
          input_error, input_failed, exhausted = more, true, true
          break
        end
        if not more then exhausted = true; break end
        count = count + 1
        source[count] = item
      end
    end
    if count > 0 then
      self:_enqueue(new_task(job, fn, mode or "map", source, from, count, read_count + 1,
                             opts.timeout))
      read_count = read_count + count
    end
    if exhausted then self.streams[job] = nil end
  end

  job.stream = function(task, results, errs)
    -- How long the worker ran the task (see _on_message), not counting
    -- the time it waited behind another: that time says nothing of these
    -- items, and counting it would shrink the chunks for no reason.
    local took = task.took or (core.hrtime() - task.sent_at)
    local item_time = took / math.max(1, task.count)
    per_item = per_item and (per_item + item_time) / 2 or item_time
    local chunk = {first = task.first, count = task.count, values = results, errs = errs}
    if ordered then
      chunks[task.first] = chunk
    else
      tail = tail + 1
      fifo[tail] = chunk
    end
  end

  self.streams[job] = true
  self:_pump()

  local pool, owner = self, core.getpid()
  -- Makes `current` a chunk with an item left to take, if one has arrived;
  -- `taken` counts the items of the chunks finished before it.
  local function advance()
    if current and position < current.count then return true end
    local chunk
    if ordered then
      chunk = chunks[next_index]
      if chunk then chunks[next_index] = nil; next_index = next_index + chunk.count end
    else
      chunk = fifo[head]
      if chunk then fifo[head] = nil; head = head + 1 end
    end
    if not chunk then return false end
    if current then taken = taken + current.count end
    current, position = chunk, 0
    return true
  end
  local function have()
    return advance() or job.error ~= nil or (exhausted and outstanding() <= 0)
  end
  -- The next chunk, waiting for it if need be; nil at the end.
  local function next_chunk()
    if not advance() then
      pool:_pump()
      local timeout = opts.deadline and opts.deadline - core.hrtime()
      if not loop.wait(have, timeout and math.max(timeout, 0)) then
        errors.raise(errors.new("timeout", ("%s: no result within %g s of the call")
          :format(fname, opts.timeout)))
      end
      if not advance() then
        if bar then bar:finish() end
        if job.error then errors.raise(job.error) end
        if input_failed then
          -- Raised once, as it was raised to us; the loop ends with it.
          input_failed = false
          error(input_error, 0)
        end
        return nil
      end
    end
    -- A new chunk frees room in the window: read more input if the
    -- workers could use it.
    if not exhausted and outstanding() < window()
      and pool:_queued() < #pool.workers * PIPELINE then pool:_pump() end
    return current
  end
  local closer = setmetatable({stop = function()
    if bar then bar:finish() end
    exhausted = true
    pool.streams[job] = nil
    pool:_pump()
  end, abandon = function()
    -- A worker started by fork has a copy of this iterator: its collector
    -- must not touch the parent's pool.
    if core.getpid() ~= owner then return end
    -- Nothing will read the results: stop reading the input, and skip the
    -- tasks still queued (see Pool:_dequeue).
    exhausted = true
    job.done = true
    pool.streams[job] = nil
    loop.defer(function()
      if bar then bar:finish() end
      pool:_pump()
    end)
  end}, StreamCloser)
  -- Per item only what must be (the current chunk's fields held in locals
  -- of this closure); the work per chunk is in next_chunk.
  local values, count, base, errs = nil, 0, 0, nil
  local function iterate()
    if position >= count then
      -- The closer lives as long as this iterator does: its finalizer
      -- lets the stream go once neither is referenced.
      local chunk = closer and next_chunk()
      if not chunk then return nil end
      values, count, base, errs = chunk.values, chunk.count, chunk.first - 1, chunk.errs
    end
    position = position + 1
    if bar then bar:advance(1) end
    if errs and errs[position] then errors.raise(errs[position]) end
    -- Handed out, a result is the caller's alone: the chunk keeps no
    -- reference to it (as Python's iterator does not).
    local value = values[position]
    values[position] = nil
    if value == nil then value = errors.null end
    return value, base + position
  end
  return iterate, nil, nil, closer
end

local function stream(self, fname, fn, ordered, ...)
  check_function(fn, fname)
  local read, total, array, opts = iterable_of(fname, false, ...)
  return self:_stream(fname, fn, read, total, options_of(opts, 3, fname), ordered, nil, array)
end

function Pool:imap(fn, ...)
  return stream(self, "imap", fn, true, ...)
end

function Pool:imap_unordered(fn, ...)
  return stream(self, "imap_unordered", fn, false, ...)
end

function Pool:close()
  if self.state == "running" then
    self.state = "closed"
    self:_pump()
  end
end

function Pool:terminate()
  if self.state == "terminated" then return end
  self.state = "terminated"
  local err = errors.new("closed", "the pool was terminated")
  self:_fail_queued(err)
  for job in pairs(self.streams) do job:_finish(err) end
  self.streams = {}
  for _, w in ipairs(self.workers) do
    for _, task in ipairs(w.inflight) do task.job:_finish(err) end
    w.inflight = {}
    w.retiring = true
    self:_keep_alive(w)
    w.handle:kill(9)
  end
end

function Pool:join(timeout)
  if self.state == "running" then
    error(errors.new("closed", "join: call close() or terminate() first"), 2)
  end
  errors.check_timeout(timeout, 1, "join")
  if next(self.streams) then
    -- Let go of imap iterators the caller abandoned, so they stop feeding;
    -- those still held may yet be read: run the rest of their input (the
    -- results wait in the iterator), as Python's join does.
    collectgarbage()
    loop.drain()
    for job in pairs(self.streams) do job.draining = true end
    self:_pump()
  end
  return loop.wait(function() return #self.workers == 0 end, timeout)
end

-- local pool <close> = lmp.Pool(...): close and join at the end of the
-- scope; when the scope ends by an error, stop the workers instead of
-- waiting for their work.
function Pool:__close(err)
  if err ~= nil then self:terminate() else self:close() end
  self:join()
end

-- An unclosed pool that is collected stops its workers; the handles' own
-- finalizers reap them. What it still held fails with kind "closed".
function Pool:__gc()
  if self.state ~= "terminated" and not self.broken then
    self.state = "terminated"
    local err = errors.new("closed", "the pool was collected before its work was done;"
      .. " close() and join() it, or keep a reference while results are pending")
    self:_fail_queued(err)
    for job in pairs(self.streams) do job:_finish(err) end
    for _, w in ipairs(self.workers) do
      for _, task in ipairs(w.inflight) do task.job:_finish(err) end
      w.inflight = {}
    end
  end
  for _, w in ipairs(self.workers) do
    w.handle:close()
    if self.kill_orphans then core.kill(-w.pid, 9) end
  end
  self.workers = {}
end

function Pool:__tostring()
  return ("lmp.Pool(%d processes, %s)"):format(self.processes, self.state)
end

-- ---- AsyncResult -------------------------------------------------------------
-- What map_async, starmap_async and apply_async return: the job itself.

function AsyncResult:get(timeout)
  local r = result_of(self, "get", timeout)
  if self.kind == "apply" then return table.unpack(r, 1, r.n) end
  return r
end

function AsyncResult:wait(timeout)
  errors.check_timeout(timeout, 1, "wait")
  if not self.done then loop.wait(job_done, timeout, self) end
  return self.done
end

function AsyncResult:ready()
  return self.done
end

function AsyncResult:successful()
  if not self.done then
    error(errors.new("closed", "successful: the result is not ready"), 2)
  end
  return self.error == nil
end

local pool = {Pool = Pool, AsyncResult = AsyncResult, reader_of = reader_of,
              POOL_OPTIONS = POOL_OPTIONS,
              settings = settings,
              worker_executable = worker_executable,
              options_of = options_of, check_function = check_function}

function pool.new(opts, fname)
  fname = fname or "Pool"
  if math.type(opts) == "integer" or opts == nil then
    opts = {processes = opts}
  elseif type(opts) ~= "table" then
    argument_error(1, fname, "number of processes or options table expected, got " .. type(opts))
  else
    errors.check_options(opts, POOL_OPTIONS, 1, fname)
  end
  return new_pool(opts, fname)
end

return pool

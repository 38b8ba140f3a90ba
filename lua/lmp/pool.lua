-- lmp.Pool: making a pool and its public calls. The rest lives beside it:
-- lmp.scheduler (workers, the task queue, answers), lmp.job (jobs, tasks,
-- AsyncResult), lmp.imap (the lazy iterator), lmp.chunking (chunk sizes),
-- lmp.workers (starting a worker), lmp.protocol (the messages),
-- lmp.arguments (checking what the calls are given).
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"
local progress = require "lmp.progress"
local arguments = require "lmp.arguments"
local chunking = require "lmp.chunking"
local job_module = require "lmp.job"
local imap = require "lmp.imap"
local scheduler = require "lmp.scheduler"
local workers = require "lmp.workers"
local mpi = require "lmp.mpi"

local Pool = scheduler.Pool
Pool.__lmp_nosend = "a pool belongs to the process that made it: send the data and functions, not the pool"
Pool.__name = "lmp.Pool"

local AsyncResult = job_module.AsyncResult
local new_job, new_task, result_of = job_module.new_job, job_module.new_task, job_module.result_of
local new_apply_job, function_ids = job_module.new_apply_job, job_module.function_ids
local reader_of, iterable_of = arguments.reader_of, arguments.iterable_of
local options_of, check_function = arguments.options_of, arguments.check_function
local MAP_OPTIONS, MAP_ASYNC_OPTIONS = arguments.MAP_OPTIONS, arguments.MAP_ASYNC_OPTIONS
local APPLY_ASYNC_OPTIONS, POOL_OPTIONS = arguments.APPLY_ASYNC_OPTIONS, arguments.POOL_OPTIONS
local argument_error = errors.argument

-- What lmp.set_start_method sets: how pools start workers when not told.
local settings = {start_method = "spawn"}

local function weak_ref(pool)
  return setmetatable({pool = pool}, {__mode = "v"})
end

local function new_pool(opts, fname)
  local start_method = opts.start_method
  if opts.context ~= nil then
    if type(opts.context) ~= "table" or type(opts.context.get_start_method) ~= "function" then
      argument_error(1, fname, "context must be a context from lmp.get_context")
    end
    start_method = start_method or opts.context.get_start_method()
  end
  start_method = start_method or settings.start_method
  if not workers.has_transport(start_method) then
    argument_error(1, fname, ("start method '%s' is not supported; use %s")
      :format(tostring(start_method), workers.transport_list()))
  end
  local processes = opts.processes
  if math.type(processes) ~= "integer" and processes ~= nil or (processes or 1) < 1 then
    argument_error(1, fname, "processes must be a positive integer")
  end
  if start_method == "mpi" then
    -- A pool worker holds a rank: a pool gets the free ranks, at most as
    -- many as it asked for, so that a script written for a laptop runs
    -- unchanged; with none free (another pool holds them all) its workers
    -- are local.
    local free = mpi.free_ranks()
    if free == 0 and opts.start_method == nil and opts.context == nil then
      start_method = "spawn"
    elseif free == 0 then
      argument_error(1, fname, "no MPI worker rank is free (each pool worker holds one)")
    else
      processes = math.min(processes or free, free)
    end
  end
  if processes == nil then processes = core.cpu_count() end
  if start_method == "mpi" and opts.kill_orphans then
    argument_error(1, fname, "kill_orphans is for local workers, not MPI ranks")
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
  if opts.ring ~= nil and type(opts.ring) ~= "boolean" then
    argument_error(1, fname, "ring must be a boolean")
  end
  -- The shared-memory ring beside each worker's socket: on unless refused
  -- (ring = false, or LMP_RING=0 in the environment); for the workers of
  -- this machine only.
  local ring = opts.ring
  if ring == nil then ring = os.getenv("LMP_RING") ~= "0" end
  ring = ring and (start_method == "spawn" or start_method == "fork"
                   or start_method == "forkserver")

  -- Fields read per task are false rather than nil when unset: a nil
  -- field is looked up again in the metatable at every read.
  local self = setmetatable({
    processes = processes,
    maxtasks = maxtasks or false,
    task_timeout = task_timeout or false,
    broken = false,        -- the error that broke the pool
    progress = opts.progress,
    workers = {},          -- live worker records
    queue = {}, queue_head = 1, queue_tail = 0,
    -- Lazy jobs (imap) that feed the queue as it drains, held weakly: an
    -- iterator the caller dropped stops feeding once it is collected.
    imaps = setmetatable({}, {__mode = "k"}),
    state = "running",     -- running, closed, terminated
    start_method = start_method,
    start_options = opts.start_options,
    start_failures = 0,
    kill_orphans = opts.kill_orphans == true,
    ring = ring,
  }, Pool)
  self.ref = weak_ref(self)
  local initargs = opts.initargs and table.pack(table.unpack(opts.initargs, 1,
    opts.initargs.n or #opts.initargs)) or nil
  self.config = {path = package.path, cpath = package.cpath,
                 initializer = opts.initializer, initargs = initargs,
                 own_process_group = self.kill_orphans or nil}
  if opts.initializer then
    local ok, err = pcall(require("lmp.connection").dumps_checking, self.config, "initializer", 2)
    if not ok then error(err, 0) end
  end
  core.handle_interrupts()
  self:_start_workers(processes)
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

-- Splits the items into tasks and queues them. When every item is plain
-- data (core.plain_items: nothing in it can be refused), the first task of
-- each worker is encoded and sent before the others are encoded, so that
-- on a pool that has just finished a map the workers start on the next one
-- while this process encodes the rest. Otherwise every task is encoded
-- before any is sent: an item that cannot be sent fails the call, naming
-- where it was, and nothing of the call runs. (Should encoding fail after
-- the first tasks went out, only for want of memory, the job is let go of
-- without a word: no callback, nothing pending, their answers dropped.)
-- map reads its whole input first, as Python's does.
local function submit_all(self, job, fn, mode, read, total, chunksize, timeout, array)
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
    sizes = chunking.fixed_plan(total, chunksize)
  else
    sizes = chunking.chunk_plan(total, self.processes)
  end
  job.total = total
  -- The result table (made at its final size when the first chunk comes
  -- back, while the workers run the next ones).
  if total == 0 then job.results = {n = 0} end
  if job.bar then job.bar.total = total end
  local first, early = 1, #sizes
  local plain = core.plain_items(array, 1, total)
  if early > self.processes and plain then early = self.processes end
  -- With plain items and the default chunking, the scheduler may cut the
  -- last tasks finer once it knows how long items take (Pool:_split): it
  -- encodes their parts again, which cannot fail, from a copy of the tail
  -- made now (the caller may change its table while the map runs).
  if plain and not chunksize then
    local from = total - chunking.tail_items(total, self.processes) + 1
    job.source, job.source_from = table.move(array, from, total, 1, {}), from
  end
  local ok, err = pcall(function()
    for i, size in ipairs(sizes) do
      self:_enqueue(new_task(job, fn, mode, array, first, size, first, timeout))
      first = first + size
      -- Plain items: each of the first tasks goes as soon as it is
      -- encoded, so that the first worker starts before the second's task
      -- is encoded.
      if i == early or (plain and i < early) then self:_pump() end
    end
  end)
  if not ok then
    job.done = true
    error(err, 0)
  end
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
  return submit_all(self, job, fn, mode, read, total, opts.chunksize, opts.timeout, array)
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

-- An apply job (see lmp.job), queued and sent if a worker has room.
-- (A burst of apply_async runs this once per call: the usual case, no
-- options and an open pool, makes no call it can spare.)
local NO_ARGUMENTS = setmetatable({}, {__newindex = function() error("lmp: shared, read-only") end})
local function submit_apply(self, fname, fn, args, opts, async)
  -- (A function sent before is a function: no type() call for it.)
  local id = function_ids[fn]
  if not id and type(fn) ~= "function" then check_function(fn, fname) end
  if args == nil then
    args = NO_ARGUMENTS
  elseif type(args) ~= "table" then
    argument_error(2, fname, "table of arguments expected, got " .. type(args))
  end
  if opts ~= nil then opts = options_of(opts, 3, fname, async and APPLY_ASYNC_OPTIONS or {}) end
  if self.state ~= "running" or self.broken then self:_check_open(fname) end
  local job = new_apply_job(fn, id, args, opts, async)
  -- Workers free up only in loop callbacks, which pump themselves: with
  -- tasks already waiting, no worker has room now.
  local tail = self.queue_tail
  local waiting = tail >= self.queue_head
  tail = tail + 1
  self.queue_tail = tail
  self.queue[tail] = job
  if not waiting then self:_pump() end
  return job
end

function Pool:apply(fn, args)
  local r = result_of(submit_apply(self, "apply", fn, args, nil, false), "apply")
  return table.unpack(r, 1, r.n)
end

function Pool:apply_async(fn, args, opts)
  return submit_apply(self, "apply_async", fn, args, opts, true)
end

-- imap and imap_unordered read their input as workers free up, keeping a
-- bounded number of items in flight, and pick a chunk size from how long
-- items take when none is given. The iterator gives (value, index): a nil
-- result would end a generic for, so it arrives as lmp.null. The fourth
-- value is a to-be-closed handle, so that leaving the loop early (break,
-- return, error) stops reading the input at once (see lmp.imap).
local function imap_of(self, fname, fn, ordered, ...)
  check_function(fn, fname)
  local read, total, array, opts = iterable_of(fname, false, ...)
  return imap.iterate(self, fname, fn, read, total, options_of(opts, 3, fname), ordered, nil, array)
end

function Pool:imap(fn, ...)
  return imap_of(self, "imap", fn, true, ...)
end

function Pool:imap_unordered(fn, ...)
  return imap_of(self, "imap_unordered", fn, false, ...)
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
  for job in pairs(self.imaps) do job:_finish(err) end
  self.imaps = {}
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
  if next(self.imaps) then
    -- Let go of imap iterators the caller abandoned, so they stop feeding;
    -- those still held may yet be read: run the rest of their input (the
    -- results wait in the iterator), as Python's join does.
    collectgarbage()
    loop.drain()
    for job in pairs(self.imaps) do job.draining = true end
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
    for job in pairs(self.imaps) do job:_finish(err) end
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

-- ---- the internal interface ---------------------------------------------
-- What lmp.executor builds on, rather than the pool's underscored fields:
--   submit_apply(pool, fname, fn, args, opts, async) -> job: one call of
--     fn(table.unpack(args)), queued; the job is an AsyncResult (fields
--     done, error, results; listeners, an array of functions called with
--     the job when it finishes; finish_serial, set once it finishes when
--     it has listeners, which orders completions).
--   imap(pool, fname, fn, read, total, opts, ordered, mode) -> iterator,
--     nil, nil, closer: see lmp.imap.
--   started(job) -> whether the job's task was handed to a worker.
--   finish(job, err): finishes a job that has not finished, with err.
--   reader_of, options_of, check_function: see lmp.arguments.
local internal = {
  submit_apply = submit_apply,
  imap = imap.iterate,
  -- (A job handed to a worker has its frame; a future the user marked
  -- running, the time it was.)
  started = function(job) return job.frame ~= nil or job.sent_at ~= nil end,
  finish = function(job, err) job:_finish(err) end,
  reader_of = reader_of,
  options_of = options_of,
  check_function = check_function,
}

local pool = {Pool = Pool, AsyncResult = AsyncResult, POOL_OPTIONS = POOL_OPTIONS,
              settings = settings, internal = internal}

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

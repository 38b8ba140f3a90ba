-- Jobs and tasks. A job is one call (map, imap, apply_async...): it knows
-- how many items it has, receives each task's values and errors, and
-- finishes once. The job of an async call is the AsyncResult its caller
-- holds, and an apply job is its own single task: a burst of apply_async
-- keeps thousands alive, and each table fewer is less for the collector
-- to walk. A task is a chunk of a job's items, encoded once when it is
-- made.
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"

local Job = {}
Job.__index = Job
Job.__lmp_nosend = "a result handle belongs to the main process: send the value once it is ready"
Job.__name = "lmp.AsyncResult"
local AsyncResult = Job

local function_ids = setmetatable({}, {__mode = "k"})
local encode_list = core.encode_list
local add_pending = loop.add_pending
local next_function_id = 0
local task_serial = 0
local finish_serial = 0

-- The number under which workers keep a function: one per function for
-- the life of this process, so that a worker that has it is sent only
-- the number.
local function function_id(fn)
  local id = function_ids[fn]
  if not id then
    -- Refuse an unsendable function now, from the call that submitted it.
    local ok, err = pcall(require("lmp.connection").dumps_checking, fn, "function")
    if not ok then error(err, 0) end
    next_function_id = next_function_id + 1
    id = next_function_id
    function_ids[fn] = id
  end
  return id
end

-- The function of a map (or imap) job, taken once per call: its id, and
-- when it is new, the payload that carries it to the workers, encoded now
-- (which refuses an unsendable function from the call that submitted it)
-- and written as it is to each worker that lacks it (Pool:_send). A
-- function the workers may already have is encoded only if one lacks it
-- (Job:_function_payload).
local function map_function(job, fn)
  local id = job.function_id
  if id then return id end
  id = function_ids[fn]
  if not id then
    local ok, payload = pcall(core.encode, fn, "function")
    if not ok then error(payload, 0) end
    next_function_id = next_function_id + 1
    id = next_function_id
    function_ids[fn] = id
    job.function_payload = payload
  end
  job.function_id = id
  return id
end

-- The payload of a map job's function (see map_function), encoded at the
-- first need when the function was known before the call.
function Job:_function_payload(fn)
  local payload = self.function_payload
  if not payload then
    payload = core.encode(fn, "function")
    self.function_payload = payload
  end
  return payload
end

-- The fields a job gets are named here, so that its table is made at its
-- final size.
local function new_job(kind, async, callback, error_callback)
  return setmetatable({kind = kind, async = async, callback = callback,
    error_callback = error_callback, received = 0, total = 0, done = false, pending = false,
    results = nil, error = nil, finish_serial = nil, function_id = nil,
    function_payload = nil, source = nil, source_from = nil, sent_items = 0, ran = 0,
    ran_items = 0}, Job)
end

-- What every apply job has, as a job and as a task, kept here rather than
-- in each of them (see new_apply_job); other jobs and tasks have their own.
-- The last four are what an apply job has unless its options or its
-- call say otherwise: an apply_async's job is pending until it finishes
-- (it keeps lmp.run() turning), a blocking apply's is not.
Job.kind, Job.mode, Job.first, Job.count = "apply", "apply", 1, 1
Job.callback, Job.timeout, Job.timer, Job.pending = false, false, false, true

-- An apply job is also its task: one table per call, which the caller
-- queues at once (an async one is pending from here, as Job:_queued makes
-- other jobs). A burst of apply_async keeps thousands, each kept as long
-- as its caller holds it: the table's size is most of the memory a task
-- takes in the main process (which malloc and its page faults made the
-- main cost of such a burst). So the constructor names 6 fields and the
-- table is made with room for 8, which the frame it was sent in and its
-- results fill; what only some jobs have (options, a blocking apply's
-- pending, an executor's listeners, an error) is set after, and makes
-- room for 16 in those.
-- `opts` may be nil: no options; `id` is function_ids[fn] (nil when fn
-- is new), which the caller looked up to check fn.
local function new_apply_job(fn, id, args, opts, async)
  local payload = encode_list(args, 1, args.n or #args)
  task_serial = task_serial + 1
  local job = setmetatable({done = false, id = task_serial, job = false, fn = fn,
    function_id = id or function_id(fn), payload = payload}, Job)
  job.job = job
  if not async then job.pending = false end
  if opts then
    if opts.callback then job.callback = opts.callback end
    if opts.error_callback then job.error_callback = opts.error_callback end
    if opts.timeout then job.timeout = opts.timeout end
  end
  -- Queued by the caller at once, nothing between that can raise: an
  -- async job keeps lmp.run() turning from here (Job:_queued, inline).
  if async then add_pending(1) end
  return job
end

-- A task's record: `count` items, items `first` onwards of the whole
-- input, encoded in `payload`.
local function task_of(job, fn, function_id, mode, payload, first, count, timeout)
  task_serial = task_serial + 1
  return {id = task_serial, job = job, fn = fn, function_id = function_id, mode = mode,
          payload = payload, first = first, count = count, timeout = timeout,
          frame = nil, sent_at = nil, timer = nil, took = nil}
end

-- A task of `count` items, source[from] onwards, which are items `first`
-- onwards of the whole input (a refusal names the item by that index).
-- The items are encoded now, straight from the source, so that an
-- unsendable one raises from the call that submitted it.
local function new_task(job, fn, mode, source, from, count, first, timeout)
  -- A starmap item is an argument list: its level is lmp's wrapping
  -- (ex:map makes those lists), not the caller's nesting.
  local payload = core.encode_list(source, from, count, first, "args", mode == "star" and 1 or 0)
  return task_of(job, fn, map_function(job, fn), mode, payload, first, count, timeout)
end

-- Items `from` .. `from + count - 1` (from 1) of a queued map task, as a
-- task of their own (Pool:_split cuts one in two): a chunk of numbers is
-- cut out of its encoding as it is (core.slice_numbers); any other is
-- encoded again from `source`, the copy of the map's items `offset + 1`
-- onwards.
local slice_numbers = core.slice_numbers
local function task_part(task, from, count, source, offset)
  local first = task.first + from - 1
  local payload = slice_numbers(task.payload, from, count)
  if not payload then
    return new_task(task.job, task.fn, task.mode, source, first - offset, count, first, task.timeout)
  end
  return task_of(task.job, task.fn, task.function_id, task.mode, payload, first, count,
                 task.timeout)
end

-- Once its tasks are queued, an async job keeps lmp.run() turning until it
-- finishes; a call that raised before queueing leaves nothing pending.
function Job:_queued()
  if self.async and not self.done and not self.pending then
    self.pending = true
    loop.add_pending(1)
  end
end

function Job:_finish(err)
  if self.done then return end
  self.done = true
  if self.bar then self.bar:finish() end
  if err ~= nil then self.error = err end
  if self.listeners then
    -- Completion order, for as_completed: a future's job has listeners
    -- (lmp.executor), and no other job needs it.
    finish_serial = finish_serial + 1
    self.finish_serial = finish_serial
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
-- this call (see core.payload_value). An imap job hands each chunk to its
-- iterator (job.on_chunk, see lmp.imap).
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
  if self.on_chunk then
    -- A chunk its iterator reads with nothing but the step (no error in
    -- it, no progress bar) may stay the bytes of a list of numbers
    -- (core.payload_chunk, read by core.cursor_load).
    local load = (errs == nil and self.numbers_as_bytes) and core.payload_chunk
      or core.payload_value
    local ok, loaded = pcall(load, values)
    if not ok then
      local failure = load_failure(task, loaded)
      loaded, errs = {n = task.count}, errs or {}
      for i = 1, task.count do errs[i] = errs[i] or failure end
    end
    return self.on_chunk(task, loaded, errs)
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

-- The usual answer of an apply job, its values and no error: what
-- Job:_deliver and Job:_finish do for it, in one call, when nothing waits
-- on it but its caller (no callback, no listener).
local payload_value = core.payload_value
local function settle_apply(job, values)
  local ok, results = pcall(payload_value, values)
  if not ok then
    job.results = {n = 0}
    return job:_finish(load_failure(job, results))
  end
  job.results = results
  if job.done or job.callback or job.listeners then return job:_finish(nil) end
  job.done = true
  if job.pending then add_pending(-1) end
end

-- A task that failed as a whole fails each of its items.
local function fail_task(task, err)
  local errs = {}
  for i = 1, task.count do errs[i] = err end
  task.job:_deliver(task, {n = task.count}, errs)
end

local function job_done(job) return job.done end

-- The results of a job, waiting for them (timeout seconds at most);
-- raises its error, or kind "timeout". Raises at level 3: the caller of
-- the public function that called this.
local function result_of(job, fname, timeout)
  errors.check_timeout(timeout, 1, fname)
  if not job.done then loop.wait(job_done, timeout, job) end
  if not job.done then
    error(errors.new("timeout", ("%s: no result after %g s"):format(fname, timeout)), 3)
  end
  if job.error then error(job.error, 3) end
  return job.results
end

-- ---- AsyncResult -------------------------------------------------------------
-- What map_async, starmap_async and apply_async return: the job itself.

function AsyncResult:get(timeout)
  local r = result_of(self, "get", timeout)
  if self.kind == "apply" then return table.unpack(r, 1, r.n) end
  return r
end

function AsyncResult:wait(timeout)
  if timeout ~= nil then errors.check_timeout(timeout, 1, "wait") end
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

return {Job = Job, AsyncResult = AsyncResult, new_job = new_job,
        new_apply_job = new_apply_job, new_task = new_task, task_part = task_part,
        fail_task = fail_task,
        settle_apply = settle_apply, function_ids = function_ids,
        result_of = result_of}

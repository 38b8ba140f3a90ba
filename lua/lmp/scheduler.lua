-- The pool's scheduling: its workers' lives, the task queue, which worker
-- gets which task, and what their answers and deaths do. lmp.pool makes
-- the pool and gives it its public calls; the methods here are the pool's
-- own (underscored: no caller outside lmp uses them).
--
-- The path of a task: a call makes its tasks (lmp.job), each encoded once
-- at submission so that an unsendable argument raises there, and queues
-- them; _pump hands queued tasks to workers with room (one, two or eight
-- in flight each, by how long tasks take, so that a worker never waits
-- for the round trip); a worker answers each task (lmp.protocol);
-- _on_message gives the values to the task's job, which fills a result,
-- feeds an imap iterator, or calls a callback.
--
-- Nothing that the C side holds on to (worker handlers, timers) refers to
-- the pool itself, only to a weak reference (pool.ref), so an unclosed
-- pool can be collected; its finalizer stops its workers.
local core = require "lmp.core"
local errors = require "lmp.errors"
local globals = require "lmp.globals"
local chunking = require "lmp.chunking"
local job_module = require "lmp.job"
local protocol = require "lmp.protocol"
local workers = require "lmp.workers"

local fail_task, task_part = job_module.fail_task, job_module.task_part
local settle_apply = job_module.settle_apply
local hrtime = core.hrtime

local PIPELINE = chunking.PIPELINE -- tasks in flight per worker, when tasks are short
local SHORT_TASK = 0.002    -- seconds: below this a second task in flight pays
local DEEP_PIPELINE = 8     -- in flight per worker when tasks are tiny:
local TINY_TASK = 0.0001    -- seconds: below this; answers then come in batches
local QUICK = protocol.QUICK
local START_FAILURES = 3    -- workers dying at start before the pool gives up
local FUNCTION_CACHE = 256  -- functions a worker keeps before it is told to forget

local Pool = {}
Pool.__index = Pool

local worker_serial = 0

function Pool:_all_ready()
  for _, w in ipairs(self.workers) do
    if not w.ready then return false end
  end
  return true
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
  return self:_queued() > 0 or next(self.imaps) ~= nil
end

-- Starts one worker: its process, then its init message.
function Pool:_start_worker()
  self:_start_workers(1)
end

-- Starts `count` workers: every process first, then each one's init
-- message. A forked worker shares this process's pages until one of them
-- writes; each page this process writes after a fork costs it a
-- copy-on-write fault, so the work between two starts (rings, encoding
-- the init) would be paid again after every fork, and the workers already
-- started would wait for it. Started back to back (in one call where the
-- transport can: workers.start_many), the workers set themselves up at
-- once while this process writes their init messages.
function Pool:_start_workers(count)
  local records, callbacks = {}, {}
  for i = 1, count do
    local w, on_message, on_exit = self:_new_worker()
    records[i] = w
    callbacks[2 * i - 1], callbacks[2 * i] = on_message, on_exit
  end
  local handles, err = workers.start_many(self.start_method, callbacks, self.start_options)
  for i, handle in ipairs(handles) do
    local w = records[i]
    w.handle = handle
    w.pid = handle:pid()
    self.workers[#self.workers + 1] = w
  end
  if #handles < count then self:_break(err) end
  for i = 1, #handles do self:_send_init(records[i]) end
end

-- A new worker's record, not started yet, and the callbacks its handle
-- calls.
function Pool:_new_worker()
  worker_serial = worker_serial + 1
  local ref = self.ref
  local w = {inflight = {}, functions = {}, function_count = 0, sent = 0,
             ready = false, identity = worker_serial}
  -- (Pool._on_message, not pool:_on_message: the class's own field, not
  -- a lookup through the pool's metatable, once per answer.)
  local function on_message(message, payload)
    local pool = ref.pool
    if pool then Pool._on_message(pool, w, message, payload) end
  end
  local function on_exit(status, signal, taken)
    local pool = ref.pool
    if pool then pool:_on_exit(w, status, signal, taken) end
  end
  return w, on_message, on_exit
end

-- Sends a started worker its configuration (and its ring).
function Pool:_send_init(w)
  local handle = w.handle
  local config = self.config
  config.name = "PoolWorker-" .. w.identity
  config.identity = {w.identity}
  if not self.ring then
    handle:send(protocol.init(config), nil, "initializer")
    return
  end
  -- The ring's descriptors travel with the init message; the worker has
  -- its own copies once it is sent.
  local ring_fd, wake_fd = handle:open_ring()
  local ring_end, wake_end = core.connection(ring_fd, "duplex"), core.connection(wake_fd, "duplex")
  config.ring = {ring_end, wake_end}
  local ok, err = pcall(handle.send, handle, protocol.init(config), nil, "initializer")
  config.ring = nil
  ring_end:close()
  wake_end:close()
  if not ok then error(err, 0) end
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
  for job in pairs(self.imaps) do job:_finish(err) end
end

function Pool:_fail_queued(err)
  for i = self.queue_head, self.queue_tail do
    self.queue[i].job:_finish(err)
    self.queue[i] = nil
  end
  self.queue_head, self.queue_tail = 1, 0
end

function Pool:_enqueue(task, front)
  -- A broken pool runs nothing more: what is queued after the break (the
  -- rest of a map being submitted) fails at once rather than staying
  -- queued, where it would keep close/join waiting for ever.
  if self.broken then task.job:_finish(self.broken) return end
  if front then
    self.queue_head = self.queue_head - 1
    self.queue[self.queue_head] = task
  else
    self.queue_tail = self.queue_tail + 1
    self.queue[self.queue_tail] = task
  end
end

function Pool:_queued()
  return self.queue_tail - self.queue_head + 1
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

-- Hands queued tasks to workers with room; pulls more from lazy jobs.
function Pool:_pump()
  local queue, imaps = self.queue, self.imaps
  -- A broken pool sends nothing, but still lets its idle workers go once
  -- it is closed (below), so that join returns.
  while not self.broken do
    -- (A worker started by _send, after its last task, counts at once.)
    local workers = self.workers
    local room = #workers * PIPELINE
    if self.queue_tail - self.queue_head + 1 < room then
      if next(imaps) == nil then
        if self.queue_head > self.queue_tail then break end
      else
        for job in pairs(imaps) do job.refill() end
      end
    end
    -- The least loaded worker with room. A second task in flight hides
    -- the round trip (the worker need not wait for the main process
    -- between tasks). Long tasks get one only while plenty are queued:
    -- near the end of the queue it would wait behind the first while
    -- another worker is free. (This runs on every answer: inline, numeric
    -- loops, no call per worker.)
    local depth, task_time = 1, self.task_time
    if task_time and task_time < TINY_TASK then
      depth = DEEP_PIPELINE
    elseif (task_time and task_time < SHORT_TASK)
       or self.queue_tail - self.queue_head + 1 >= room then
      depth = PIPELINE
    end
    local w, best_load = nil, depth
    for i = 1, #workers do
      local candidate = workers[i]
      local load = #candidate.inflight
      -- A worker still starting takes tasks too: they wait in its channel
      -- and run as soon as it is up, rather than behind a long one
      -- elsewhere.
      if load < best_load and not candidate.retiring and not candidate.lost then
        w, best_load = candidate, load
        if load == 0 then break end
      end
    end
    if not w then break end
    -- The next task whose job has not finished: tasks of a job that ended
    -- (a dropped imap, a failed map) are skipped, not sent.
    local task
    local head, tail = self.queue_head, self.queue_tail
    while head <= tail do
      task = queue[head]
      queue[head] = nil
      head = head + 1
      if not task.job.done then break end
      task = nil
    end
    self.queue_head = head
    if not task then break end
    -- (An apply job is its own task, and never split.)
    local job = task.job
    if job ~= task and job.source then task = self:_split(task) end
    self:_send(w, task)
  end
  if self.state == "closed" and self:_queued() == 0 and next(self.imaps) == nil then
    for _, w in ipairs(self.workers) do
      if #w.inflight == 0 and not w.retiring then
        w.retiring = true
        self:_keep_alive(w)
        w.handle:close_input()
      end
    end
  end
end

-- A map task with plain items in the tail of its input (job.source holds
-- a copy of items job.source_from onwards), cut to the size
-- chunking.tail_size says once the time of the map's items is known: the
-- first part is returned to be sent, the rest goes back to the front of
-- the queue (job_module.task_part makes both).
function Pool:_split(task)
  local job, first = task.job, task.first
  local offset = job.source_from - 1
  if first <= offset then return task end
  local per_item = job.ran_items > 0 and job.ran / job.ran_items or nil
  local size = chunking.tail_size(task.count, job.total - job.sent_items, #self.workers, per_item)
  if size >= task.count then return task end
  local source = job.source
  self:_enqueue(task_part(task, size + 1, task.count - size, source, offset), true)
  return task_part(task, 1, size, source, offset)
end

function Pool:_send(w, task)
  local fn, reset, script_globals = false, false, false
  local sent = true
  local mode = task.mode
  if w.functions[task.function_id] then
    -- The usual task: its function is in the worker already (the C fast
    -- path of protocol.send_task).
    sent = w.handle:send_task(task.id, task.function_id, mode, task.payload)
  else
    -- A map's function, encoded once per call (raises, should a function
    -- the pool sent before hold something unsendable now, before this
    -- worker is marked as having it).
    local function_payload = task.mode ~= "apply" and task.job:_function_payload(task.fn)
    if w.function_count >= FUNCTION_CACHE then
      w.functions, w.function_count, reset = {}, 0, true
    end
    w.functions[task.function_id] = true
    w.function_count = w.function_count + 1
    -- A new function may call the script's other globals: send them too,
    -- when they changed since this worker last had them.
    local snapshot = globals.snapshot(w.globals)
    if snapshot then
      w.globals = snapshot
      script_globals = snapshot
    end
    if function_payload then
      -- A map's function goes in a frame of its own (with the globals,
      -- when they go), the same bytes for all the workers; its task
      -- follows by the fast path.
      sent = w.handle:send(protocol.function_message(task.function_id, reset, script_globals),
                           function_payload)
      reset, script_globals = false, false
    else
      fn = task.fn
    end
    sent = sent and protocol.send_task(w.handle, task.id, task.function_id, fn, task.mode, reset,
                                       script_globals, task.payload)
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
  local count = w.sent + 1
  w.sent = count
  -- The number of the frame it went in (a transport that does not count
  -- its frames gives true): should the worker die, whether it ever read
  -- it (Pool:_on_exit).
  task.frame = sent
  -- When it was sent, for the time it took (chunking.run_time). An apply
  -- task has none, and counts as QUICK at most, as its quick answer does:
  -- no estimate needs more from it (a longer one brings its run time),
  -- and a burst of apply_async is spared reading the clock per task (and
  -- its table a field: frame fills the last of its 8).
  if mode ~= "apply" then
    task.sent_at = hrtime()
    if task.job.source then task.job.sent_items = task.job.sent_items + task.count end
  end
  local inflight = w.inflight
  local n = #inflight + 1
  inflight[n] = task
  if self.maxtasks and count >= self.maxtasks then
    -- Replaced after its last task: nothing it was given is lost or repeated.
    w.retiring = true
    self:_keep_alive(w)
    w.handle:close_input()
    self:_start_worker()
  end
  if n == 1 then
    self:_task_started(w, task)
    self:_keep_alive(w)
  end
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

local function describe_value(v)
  if math.type(v) then return tostring(v) end
  return "(a " .. type(v) .. ")"
end

-- A worker's messages (see lmp.protocol): a task's answer with its
-- values; "ready" once started; "init_error" when the initializer failed.
-- Each answer must be for the task the worker is running (the first in
-- flight): anything else ends the worker (see Pool:_lose).
function Pool:_on_message(w, message, values)
  if w.protocol_error then return end -- nothing it says is trusted now
  local inflight = w.inflight
  local task = inflight[1]
  if task and message == task.id and values ~= nil and task.job == task
     and not task.timer then
    -- The usual answer of a short apply task (a burst of apply_async has
    -- thousands): its id alone (no errors, run under protocol.QUICK), read
    -- here without the calls of the general path below, which does the
    -- same for it.
    -- (A loop, not table.move: at most DEEP_PIPELINE tasks, and the VM
    -- moves a few slots for less than one call into C costs.)
    local n = #inflight
    for i = 2, n do inflight[i - 1] = inflight[i] end
    inflight[n] = nil
    -- An answer with its id alone says the task ran under QUICK, and so
    -- it counts, without reading the clock: the time seen since it was
    -- sent is no closer (in a burst it is mostly the wait behind the tasks
    -- before it, and the general path counts at most QUICK of it too).
    local job = task.job
    local task_time = self.task_time
    self.task_time = task_time and (task_time * 3 + QUICK) / 4 or QUICK
    local following = inflight[1]
    if following and (following.timeout or self.task_timeout) then
      self:_task_started(w, following)
    end
    settle_apply(job, values)
    if n == 1 then self:_keep_alive(w) end
    return Pool._pump(self)
  end
  if message == nil then return self:_lose(w, values) end -- a malformed frame (process.c)
  local kind, id, errs, ran = protocol.read(message)
  if kind ~= "answer" then return self:_on_control(w, kind, message, id) end
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
  if values == nil or (errs ~= nil and not protocol.valid_errors(errs, task.count)) then
    return self:_lose(w, ("a malformed answer for task %d"):format(task.id))
  end
  table.remove(w.inflight, 1)
  -- How long the task ran, as its worker measured it: the time it waited
  -- in the channel behind another, or its answer waited to be read while
  -- this process was busy, says nothing of the work.
  local took = chunking.run_time(ran, core.hrtime() - (task.sent_at or 0), protocol.QUICK)
  local job = task.job
  -- An imap sizes its chunks from how long they ran (see lmp.imap). A
  -- chunk answered with its id alone ran under protocol.QUICK: counted as
  -- no time, so that the next one doubles; counted as the time seen (up to
  -- QUICK, mostly the round trip), a chunk of one tiny item would make the
  -- next ones a few hundred items at most (CHUNK_TIME / QUICK).
  if job.on_chunk then task.took = ran end
  if job.source then job.ran, job.ran_items = job.ran + took, job.ran_items + task.count end
  self.task_time = self.task_time and (self.task_time * 3 + took) / 4 or took
  if task.timer then task.timer:close() end
  if w.inflight[1] then
    self:_task_started(w, w.inflight[1])
  elseif task.mode ~= "apply" and not errs and next(self.imaps) == nil then
    -- The worker has nothing left to run: its next task goes before the
    -- values of this one are loaded, not after, and is written at once
    -- (a transport that writes at once has no flush). (Not with an imap,
    -- whose refill runs the caller's iterator while `values` is a view.)
    self:_pump()
    local flush = w.inflight[1] and w.handle.flush
    if flush then flush(w.handle) end
  end
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

-- A message other than an answer: "ready" and "init_error" are expected
-- once, before the worker is ready; anything else ends the worker.
function Pool:_on_control(w, kind, message, info)
  if kind == "ready" and not w.ready then
    w.ready = true
    self.start_failures = 0
    self:_keep_alive(w)
    self:_pump()
  elseif kind == "init_error" and not w.ready then
    self:_break(errors.new("initializer", "the pool's initializer failed: " .. info.message,
      {traceback = info.traceback, value = info.value, pid = w.pid}))
  elseif type(message) ~= "table" then
    self:_lose(w, protocol.describe(message))
  elseif self.state ~= "terminated" then
    self:_lose(w, ("%s it did not expect"):format(protocol.describe(message)))
  end
end

-- taken: how many frames the worker took from its channel before it
-- died, when its transport can tell (nil otherwise).
function Pool:_on_exit(w, status, signal, taken)
  -- With kill_orphans, each worker leads its own process group: whatever
  -- its tasks started and left there ends with it.
  if self.kill_orphans then core.kill(-w.pid, 9) end
  for i, other in ipairs(self.workers) do
    if other == w then table.remove(self.workers, i); break end
  end
  local clean = w.retiring and #w.inflight == 0
  if not clean and self.state ~= "terminated" then
    -- A worker that died before it was ready ran nothing it was given;
    -- nor did one that never took its task out of its channel (it died
    -- before, or before this process saw it die and sent it the task): it
    -- runs elsewhere, as the tasks behind it do. A task whose time ran out
    -- was held, whatever the count says: its worker was killed for it.
    local running = w.ready and w.inflight[1]
    if running and taken and w.timed_out ~= running and math.type(running.frame) == "integer"
      and running.frame > taken then
      if running.timer then running.timer:close(); running.timer = nil end
      running = nil
    end
    if running then
      table.remove(w.inflight, 1)
      if running.timer then running.timer:close() end
      local err
      if w.timed_out == running then
        err = errors.new("timeout", ("task timed out after %g s; its worker %d was killed"
          .. " and replaced"):format(running.timeout or self.task_timeout, w.pid),
          {pid = w.pid, index = running.first})
      else
        local message = w.protocol_error
          and ("worker process %d was killed by the pool: it sent %s"):format(w.pid, w.protocol_error)
          or workers.death_message(w.pid, status, signal)
        err = errors.new("worker_lost", message,
          {pid = w.pid, index = running.first, exitcode = status, signal = signal})
      end
      fail_task(running, err)
    end
    -- Tasks behind the running one never started: run them elsewhere,
    -- and no longer count them as sent (Pool:_send counts them again).
    for i = #w.inflight, 1, -1 do
      local task = w.inflight[i]
      local job = task.job
      if job.source then job.sent_items = job.sent_items - task.count end
      self:_enqueue(task, true)
    end
    w.inflight = {}
    if not w.ready then
      self.start_failures = self.start_failures + 1
      if self.start_failures >= START_FAILURES and not self.broken then
        self:_break(errors.new("worker_lost", ("workers keep dying at start (%d in a row);"
          .. " last: %s"):format(self.start_failures, workers.death_message(w.pid, status, signal)),
          {pid = w.pid}))
      end
    end
    if self:_replaces_workers() and self:_active_workers() < self.processes then
      self:_start_worker()
    end
  end
  self:_pump()
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

return {Pool = Pool}

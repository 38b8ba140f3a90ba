-- lmp.Queue: a first-in first-out queue between the main process and the
-- lmp.Process children and pool workers it is given to (its descriptors
-- travel with the message: see connection.lua), as Python's
-- multiprocessing.Queue.
-- Values travel framed over a socket pair; a shared lock file keeps one
-- writer and one reader at a time on it (fcntl locks, which hold across
-- processes) and counts the values in it (qsize, maxsize). Each process
-- puts through a feeder of its own (runtime/feeder.c), so that put never
-- waits for a reader: only maxsize makes it wait.
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"

local queue = {}

local Queue = {}
Queue.__index = Queue
Queue.__name = "lmp.Queue"
queue.Queue = Queue -- reachable from package.loaded: travels by name

local READ, COUNT = 1, 2 -- byte 0 is the feeders' write lock

-- This process's feeder of each queue, by the queue's write end (copies of
-- one queue that arrived in several tasks share that end, and so one
-- feeder); it never travels with the queue.
local feeders = setmetatable({}, {__mode = "k"})
-- The queues this process closed (closing is this process's business: the
-- mark does not travel).
local closed = setmetatable({}, {__mode = "k"})

local function check_open(q, fname)
  if closed[q] then errors.raise(errors.new("closed", fname .. ": the queue is closed")) end
end

local function feeder_of(q)
  local f = feeders[q.writer]
  if not f then
    f = core.feeder(q.writer, q.lock)
    feeders[q.writer] = f
  end
  return f
end


local function now() return core.hrtime() end


local function with_lock(lock, byte, fn, ...)
  core.fd_lock(lock:fileno(), byte, true)
  local results = table.pack(pcall(fn, ...))
  core.fd_unlock(lock:fileno(), byte)
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

function queue.new(maxsize, fname)
  if maxsize ~= nil and (math.type(maxsize) ~= "integer" or maxsize < 0) then
    errors.argument(1, fname or "Queue", "maxsize must be a non-negative integer")
  end
  local reader, writer = core.pipe()
  return setmetatable({reader = reader, writer = writer, lock = core.lockfile(),
                       maxsize = maxsize or 0}, Queue)
end

function Queue:qsize()
  check_open(self, "qsize")
  return with_lock(self.lock, COUNT, core.fd_count, self.lock:fileno(), 0)
end

function Queue:empty() return self:qsize() == 0 end

function Queue:full() return self.maxsize > 0 and self:qsize() >= self.maxsize end

local function check_wait(block, timeout, fname)
  errors.check_timeout(timeout, 2, fname)
  return block ~= false, timeout
end

-- q:put(value [, block = true [, timeout]]): returns at once on a queue
-- without maxsize (the value is written when the socket takes it, in
-- order, while this process goes on); with maxsize it waits for room, and
-- raises kind "timeout" when the queue stays full (block = false: at
-- once) as Python raises queue.Full. What cannot be sent raises kind
-- "serialize" before anything is kept.
function Queue:put(value, block, timeout)
  block, timeout = check_wait(block, timeout, "put")
  check_open(self, "put")
  local feeder = feeder_of(self)
  if self.maxsize > 0 then
    -- Refuse what cannot be sent before waiting for room.
    local ok, err = pcall(core.dumps, value)
    if not ok then errors.raise(err) end
    local deadline = timeout and now() + timeout
    while self:qsize() >= self.maxsize do
      if not block or (deadline and now() >= deadline) then
        errors.raise(errors.new("full", "put: the queue is full"))
      end
      loop.pause(0.001)
    end
  end
  local ok, err = pcall(feeder.put, feeder, value)
  if not ok then errors.raise(err) end
  with_lock(self.lock, COUNT, core.fd_count, self.lock:fileno(), 1)
end

-- q:join_thread(): waits until everything this process put is written
-- (Python's name; the "thread" is the feeder). At exit a process waits
-- for that by itself, unless cancel_join_thread was called.
function Queue:join_thread()
  local f = feeders[self.writer]
  if f then
    f:flush()
    -- Closed: the feeder has nothing more to write; let it go.
    if closed[self] then f:close(); feeders[self.writer] = nil end
  end
end

-- q:cancel_join_thread(): this process will not wait at exit for what it
-- put to be written (it may be lost), as in Python.
function Queue:cancel_join_thread()
  local f = feeders[self.writer]
  if f == nil and closed[self] then return end
  feeder_of(self):cancel()
end

-- q:get([block = true [, timeout]]) -> the oldest value; raises kind
-- "empty" when none comes (block = false: at once), as Python raises
-- queue.Empty.
function Queue:get(block, timeout)
  block, timeout = check_wait(block, timeout, "get")
  check_open(self, "get")
  return self:_take(block, timeout, true)
end

-- Takes the next value off the socket under the read lock; `counted`:
-- the queue keeps a count of its values (not a SimpleQueue).
function Queue:_take(block, timeout, counted)
  local deadline = timeout and now() + timeout
  while true do
    -- Wait for data without holding the lock (the main loop keeps turning).
    local remaining = deadline and math.max(0, deadline - now())
    if block then
      self.reader:poll(remaining or 3600)
    end
    if core.fd_lock(self.lock:fileno(), READ, not loop.in_main_process()) then
      local got, value
      if self.reader:readable(0) then
        got, value = pcall(self.reader.recv, self.reader)
        if got and counted then with_lock(self.lock, COUNT, core.fd_count, self.lock:fileno(), -1) end
      end
      core.fd_unlock(self.lock:fileno(), READ)
      if got then return value end
      if got == false then errors.raise(value) end
    end
    if not block or (deadline and now() >= deadline) then
      errors.raise(errors.new("empty", "get: the queue is empty"))
    end
    if not self.reader:readable(0) then loop.pause(0.001) end
  end
end

function Queue:put_nowait(value) return self:put(value, false) end
function Queue:get_nowait() return self:get(false) end

-- Closes this process's ends; other processes keep theirs. What this
-- process put is still written (the feeder keeps the write end open till
-- then); put, get, qsize raise kind "closed" afterwards. A second close
-- does nothing.
function Queue:close()
  if closed[self] then return end
  closed[self] = true
  -- The feeder stays until join_thread (or until the queue is collected),
  -- so that join_thread can wait for it; it owns the write end and the
  -- lock file from here (they close when it is done).
  self.reader:close()
  self.writer:close()
  self.lock:close()
end

function Queue:__tostring()
  return ("lmp.Queue(maxsize=%d)"):format(self.maxsize)
end

-- lmp.JoinableQueue([maxsize]): a Queue that counts the values put and
-- not yet marked done (task_done) by whoever got them, in any process; join
-- waits until that count is 0, as Python's JoinableQueue. The count lives
-- in a lock file of its own, beside the queue's.
local JoinableQueue = setmetatable({}, {__index = Queue})
JoinableQueue.__index = JoinableQueue
JoinableQueue.__name = "lmp.JoinableQueue"
queue.JoinableQueue = JoinableQueue

local UNFINISHED = 1 -- the lock byte of the unfinished count

function queue.new_joinable(maxsize)
  local q = queue.new(maxsize, "JoinableQueue")
  q.unfinished = core.lockfile()
  return setmetatable(q, JoinableQueue)
end

local function add_unfinished(q, delta)
  return with_lock(q.unfinished, UNFINISHED, core.fd_count, q.unfinished:fileno(), delta)
end

-- Counted before the value goes, so that a consumer that gets it at once
-- and calls task_done never finds the count below zero; taken back when
-- put raises (full, or a value that cannot be sent).
function JoinableQueue:put(value, block, timeout)
  check_open(self, "put")
  add_unfinished(self, 1)
  local ok, err = pcall(Queue.put, self, value, block, timeout)
  if not ok then
    add_unfinished(self, -1)
    error(err, 0)
  end
end

-- q:task_done(): one value got from the queue is dealt with. Raises kind
-- "value" when called more times than values were put (Python's
-- ValueError), leaving the count at 0.
function JoinableQueue:task_done()
  check_open(self, "task_done")
  core.fd_lock(self.unfinished:fileno(), UNFINISHED, true)
  local ok, left = pcall(core.fd_count, self.unfinished:fileno(), -1)
  if ok and left < 0 then core.fd_count(self.unfinished:fileno(), 1) end
  core.fd_unlock(self.unfinished:fileno(), UNFINISHED)
  if not ok then error(left, 0) end
  if left < 0 then
    errors.raise(errors.new("value", "task_done: called more times than there were values put"))
  end
end

-- q:join([timeout]) -> true once every value put (by any process) was
-- marked done; false when timeout seconds pass first (Python's join has no
-- timeout). Waits a millisecond at a time, turning the loop in the main
-- process (yielding in lmp.spawn).
function JoinableQueue:join(timeout)
  errors.check_timeout(timeout, 1, "join")
  check_open(self, "join")
  local deadline = timeout and now() + timeout
  local pause = 0.0005
  while add_unfinished(self, 0) > 0 do
    if deadline and now() >= deadline then return false end
    loop.pause(pause)
    pause = math.min(pause * 2, 0.005)
  end
  return true
end

function JoinableQueue:close()
  if closed[self] then return end
  Queue.close(self)
  self.unfinished:close()
end

function JoinableQueue:__tostring()
  return ("lmp.JoinableQueue(maxsize=%d)"):format(self.maxsize)
end

-- lmp.SimpleQueue(): put writes the value itself (no feeder, no count, no
-- maxsize), under the queue's write lock, as Python's SimpleQueue; get
-- takes the next under the read lock.
local SimpleQueue = {}
SimpleQueue.__index = SimpleQueue
SimpleQueue.__name = "lmp.SimpleQueue"
queue.SimpleQueue = SimpleQueue

local WRITE = 0 -- the feeders' write lock byte: frames never mix

function queue.new_simple()
  local reader, writer = core.pipe()
  return setmetatable({reader = reader, writer = writer, lock = core.lockfile()}, SimpleQueue)
end

-- q:put(value): returns once the value is written (waiting while the
-- socket is full: someone must read); raises kind "serialize" for what
-- cannot be sent, having written nothing.
function SimpleQueue:put(value)
  check_open(self, "put")
  local ok, err = pcall(core.dumps, value)
  if not ok then errors.raise(err) end
  with_lock(self.lock, WRITE, self.writer.send, self.writer, value)
end

-- q:get() -> the next value, waiting for one (turning the loop in the main
-- process).
function SimpleQueue:get()
  check_open(self, "get")
  return Queue._take(self, true, nil, false)
end

-- q:empty() -> whether nothing waits to be read now.
function SimpleQueue:empty()
  check_open(self, "empty")
  return not self.reader:readable(0)
end

function SimpleQueue:close()
  if closed[self] then return end
  closed[self] = true
  self.reader:close()
  self.writer:close()
  self.lock:close()
end

function SimpleQueue:__tostring() return "lmp.SimpleQueue()" end

return queue

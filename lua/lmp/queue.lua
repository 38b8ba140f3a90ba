-- lmp.Queue: a first-in first-out queue between the main process and the
-- lmp.Process children and pool workers it is given to (its descriptors
-- travel with the message: see connection.lua), as Python's
-- multiprocessing.Queue.
-- Values travel framed over a socket pair, one writer and one reader at a
-- time. The readers take turns under a read lock, an lmp.Lock (sync.lua):
-- a get that finds it held sleeps on its futex until the release wakes
-- it, the loop turning meanwhile in the main process (yielding in
-- lmp.spawn), and a holder that died leaves it to the next get. Each
-- process puts through a feeder of its own (runtime/feeder.c), so that
-- put never waits for a reader: only maxsize makes it wait. The feeders
-- take turns under the write lock, an fcntl lock on a shared lock file,
-- which their threads wait for asleep in the kernel and which the kernel
-- lets go when its holder dies. The values in the queue are counted in a futex cell of
-- their own (runtime/futex.c's counter), whose ceiling is maxsize: a put
-- that finds the queue full sleeps on the cell, as the locks of sync.lua
-- wait, and the get that makes room wakes it. A JoinableQueue counts its
-- unfinished tasks in a second cell, which join sleeps on.
local core = require "lmp.core"
local errors = require "lmp.errors"
local sync = require "lmp.sync"

local queue = {}

local Queue = {}
Queue.__index = Queue
Queue.__name = "lmp.Queue"
queue.Queue = Queue -- reachable from package.loaded: travels by name

-- Bytes of a counter's memory file (the cell itself is smaller).
local CELL_BYTES = 64

-- This process's mapping of each counter's cell, by the counter's file
-- (a Connection, which travels with the queue): made on first use, never
-- sent.
local cells = setmetatable({}, {__mode = "k"})

local function cell_of(file)
  local cell = cells[file]
  if not cell then
    cell = core.sync_cell(file:fileno())
    cells[file] = cell
  end
  return cell
end

-- A new counter at 0 that never goes above maximum (-1: no ceiling).
local function new_counter(maximum)
  local file = core.connection(core.memfile(CELL_BYTES))
  local cell = core.sync_cell(file:fileno(), true)
  cell:set_semaphore(0, maximum)
  cells[file] = cell
  return file
end

local function close_counter(file)
  local cell = cells[file]
  if cell then cell:close(); cells[file] = nil end
  file:close()
end

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

-- Runs fn(...) holding lock (an lmp.Lock), which is released however fn
-- ends.
local function with_lock(lock, fn, ...)
  lock:acquire()
  local results = table.pack(pcall(fn, ...))
  lock:release()
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

-- For sync.wait_until: a place for one more value taken.
local function try_reserve(cell) return cell:count_add(1) ~= nil end

function queue.new(maxsize, fname)
  if maxsize ~= nil and (math.type(maxsize) ~= "integer" or maxsize < 0) then
    errors.argument(1, fname or "Queue", "maxsize must be a non-negative integer")
  end
  maxsize = maxsize or 0
  local reader, writer = core.pipe()
  -- The cell's count is 32 bits: a larger maxsize is as good as none.
  return setmetatable({reader = reader, writer = writer, lock = core.lockfile(),
                       read_lock = sync.new_lock(sync.Lock),
                       counts = new_counter(maxsize > 0 and math.min(maxsize, 0x7fffffff) or -1),
                       maxsize = maxsize}, Queue)
end

-- The values put and not yet got (by any process): a value counts from
-- the moment its put takes its place, a little before the socket holds it.
function Queue:qsize()
  check_open(self, "qsize")
  return cell_of(self.counts):value()
end

function Queue:empty() return self:qsize() == 0 end

function Queue:full() return self.maxsize > 0 and self:qsize() >= self.maxsize end

local function check_wait(block, timeout, fname)
  errors.check_timeout(timeout, 2, fname)
  return block ~= false, timeout
end

-- q:put(value [, block = true [, timeout]]): returns at once on a queue
-- without maxsize (the value is written when the socket takes it, in
-- order, while this process goes on); with maxsize it waits for room
-- (asleep until a get in any process makes some), and raises kind "full"
-- when the queue stays full (block = false: at once) as Python raises
-- queue.Full. What cannot be sent raises kind "serialize" before
-- anything is kept.
function Queue:put(value, block, timeout)
  block, timeout = check_wait(block, timeout, "put")
  check_open(self, "put")
  local feeder = feeder_of(self)
  local count = cell_of(self.counts)
  -- The value's place is taken first, so that the count never falls
  -- below the values in the socket, and given back if put fails.
  if not count:count_add(1) then
    -- Refuse what cannot be sent before waiting for room.
    local ok, err = pcall(core.dumps, value)
    if not ok then errors.raise(err) end
    if not block or not sync.wait_until(count, try_reserve, timeout) then
      errors.raise(errors.new("full", "put: the queue is full"))
    end
  end
  local ok, err = pcall(feeder.put, feeder, value)
  if not ok then
    count:count_add(-1)
    errors.raise(err)
  end
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
-- the queue keeps a count of its values (not a SimpleQueue). Each wait is
-- a sleep in the kernel: for data on the socket without the lock (poll, or
-- the loop's watch in the main process), then for the lock on its futex.
-- The lock is held only while a value that is there is read, never across
-- a wait, so a get that wakes to find the value taken by another waits
-- for data again.
function Queue:_take(block, timeout, counted)
  local deadline = timeout and now() + timeout
  local lock = self.read_lock
  local function remaining() return deadline and math.max(0, deadline - now()) end
  while true do
    if block then self.reader:poll(remaining() or math.huge) end
    -- A lock whose holder died passes to this get ("owner_died"); the
    -- holder was reading, so the stream may be cut mid-value, which recv
    -- then reports (Python's queues have the same limit).
    local taken
    if self.reader:readable(0) then
      if block then taken = lock:acquire(true, remaining()) else taken = sync.try_lock(lock) end
    end
    if taken then
      local got, value
      if self.reader:readable(0) then
        got, value = pcall(self.reader.recv, self.reader)
        if got and counted then cell_of(self.counts):count_add(-1) end
      end
      lock:release()
      if got then return value end
      if got == false then errors.raise(value) end
    end
    if not block or (deadline and now() >= deadline) then
      errors.raise(errors.new("empty", "get: the queue is empty"))
    end
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
  self.read_lock.file:close()
  close_counter(self.counts)
end

function Queue:__tostring()
  return ("lmp.Queue(maxsize=%d)"):format(self.maxsize)
end

-- lmp.JoinableQueue([maxsize]): a Queue that counts the values put and
-- not yet marked done (task_done) by whoever got them, in any process; join
-- waits until that count is 0, as Python's JoinableQueue. The count is a
-- futex cell of its own: join sleeps until a task_done in any process
-- takes it to 0.
local JoinableQueue = setmetatable({}, {__index = Queue})
JoinableQueue.__index = JoinableQueue
JoinableQueue.__name = "lmp.JoinableQueue"
queue.JoinableQueue = JoinableQueue

function queue.new_joinable(maxsize)
  local q = queue.new(maxsize, "JoinableQueue")
  q.unfinished = new_counter(-1)
  return setmetatable(q, JoinableQueue)
end

-- Counted before the value goes, so that a consumer that gets it at once
-- and calls task_done never finds the count below zero; taken back when
-- put raises (full, or a value that cannot be sent).
function JoinableQueue:put(value, block, timeout)
  check_open(self, "put")
  local unfinished = cell_of(self.unfinished)
  if not unfinished:count_add(1) then
    errors.raise(errors.new("full", "put: too many unfinished tasks"))
  end
  local ok, err = pcall(Queue.put, self, value, block, timeout)
  if not ok then
    unfinished:count_add(-1)
    error(err, 0)
  end
end

-- q:task_done(): one value got from the queue is dealt with. Raises kind
-- "value" when called more times than values were put (Python's
-- ValueError), leaving the count at 0.
function JoinableQueue:task_done()
  check_open(self, "task_done")
  if not cell_of(self.unfinished):count_add(-1) then
    errors.raise(errors.new("value", "task_done: called more times than there were values put"))
  end
end

local function try_finished(cell) return cell:value() == 0 end

-- q:join([timeout]) -> true once every value put (by any process) was
-- marked done; false when timeout seconds pass first (Python's join has no
-- timeout). Sleeps until the last task_done (in any process) wakes it,
-- the loop turning meanwhile in the main process (yielding in lmp.spawn),
-- as the locks of lmp.sync wait.
function JoinableQueue:join(timeout)
  errors.check_timeout(timeout, 1, "join")
  check_open(self, "join")
  return sync.wait_until(cell_of(self.unfinished), try_finished, timeout) and true or false
end

function JoinableQueue:close()
  if closed[self] then return end
  Queue.close(self)
  close_counter(self.unfinished)
end

function JoinableQueue:__tostring()
  return ("lmp.JoinableQueue(maxsize=%d)"):format(self.maxsize)
end

-- lmp.SimpleQueue(): put writes the value itself (no feeder, no count, no
-- maxsize), under the queue's write lock, as Python's SimpleQueue; get
-- takes the next under the read lock. Both locks are lmp.Locks, waited
-- for asleep as Queue.get waits for its read lock.
local SimpleQueue = {}
SimpleQueue.__index = SimpleQueue
SimpleQueue.__name = "lmp.SimpleQueue"
queue.SimpleQueue = SimpleQueue

function queue.new_simple()
  local reader, writer = core.pipe()
  return setmetatable({reader = reader, writer = writer, read_lock = sync.new_lock(sync.Lock),
                       write_lock = sync.new_lock(sync.Lock)}, SimpleQueue)
end

-- q:put(value): returns once the value is written (waiting while the
-- socket is full: someone must read); raises kind "serialize" for what
-- cannot be sent, having written nothing.
function SimpleQueue:put(value)
  check_open(self, "put")
  local ok, err = pcall(core.dumps, value)
  if not ok then errors.raise(err) end
  with_lock(self.write_lock, self.writer.send, self.writer, value)
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
  self.read_lock.file:close()
  self.write_lock.file:close()
end

function SimpleQueue:__tostring() return "lmp.SimpleQueue()" end

return queue

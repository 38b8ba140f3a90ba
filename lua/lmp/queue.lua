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

function queue.new(maxsize)
  if maxsize ~= nil and (math.type(maxsize) ~= "integer" or maxsize < 0) then
    errors.argument(1, "Queue", "maxsize must be a non-negative integer")
  end
  local reader, writer = core.pipe()
  return setmetatable({reader = reader, writer = writer, lock = core.lockfile(),
                       maxsize = maxsize or 0}, Queue)
end

function Queue:qsize()
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
-- once). What cannot be sent raises kind "serialize" before anything is
-- kept.
function Queue:put(value, block, timeout)
  block, timeout = check_wait(block, timeout, "put")
  local feeder = feeder_of(self)
  if self.maxsize > 0 then
    -- Refuse what cannot be sent before waiting for room.
    local ok, err = pcall(core.dumps, value)
    if not ok then errors.raise(err) end
    local deadline = timeout and now() + timeout
    while self:qsize() >= self.maxsize do
      if not block or (deadline and now() >= deadline) then
        errors.raise(errors.new("timeout", "put: the queue is full"))
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
  if f then f:flush() end
end

-- q:cancel_join_thread(): this process will not wait at exit for what it
-- put to be written (it may be lost), as in Python.
function Queue:cancel_join_thread()
  feeder_of(self):cancel()
end

-- q:get([block = true [, timeout]]) -> the oldest value; raises kind
-- "timeout" when none comes (block = false: at once).
function Queue:get(block, timeout)
  block, timeout = check_wait(block, timeout, "get")
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
        if got then with_lock(self.lock, COUNT, core.fd_count, self.lock:fileno(), -1) end
      end
      core.fd_unlock(self.lock:fileno(), READ)
      if got then return value end
      if got == false then errors.raise(value) end
    end
    if not block or (deadline and now() >= deadline) then
      errors.raise(errors.new("timeout", "get: the queue is empty"))
    end
    if not self.reader:readable(0) then loop.pause(0.001) end
  end
end

function Queue:put_nowait(value) return self:put(value, false) end
function Queue:get_nowait() return self:get(false) end

-- Closes this process's ends; other processes keep theirs. What this
-- process put is still written (the feeder keeps the write end open till
-- then); put raises afterwards.
function Queue:close()
  local f = feeders[self.writer]
  if f then f:close() end
  self.reader:close()
  self.writer:close()
  self.lock:close()
end

function Queue:__tostring()
  return ("lmp.Queue(maxsize=%d)"):format(self.maxsize)
end

return queue

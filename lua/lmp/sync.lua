-- Locks, semaphores and events shared with lmp.Process children, as in
-- Python's multiprocessing. Each sits on a small unlinked file whose
-- descriptor the children inherit when given the object: fcntl record
-- locks exclude each other across processes, and the file holds a count.
-- Waiting polls every millisecond (turning the event loop in the main
-- process), which is plenty for coordinating processes, not for
-- microsecond hand-offs.
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"

local sync = {}

local LOCK, COUNT = 0, 2

-- Per-process state, kept out of the objects so that it never travels.
local holds = setmetatable({}, {__mode = "k"}) -- lock -> times held here


local function check_wait(block, timeout, fname, n)
  errors.check_timeout(timeout, n or 2, fname)
  return block ~= false, timeout and core.hrtime() + timeout
end

-- Retries try() until it succeeds, the deadline passes, or (block false)
-- at once; returns whether it succeeded.
local function wait_for(try, block, deadline)
  while true do
    if try() then return true end
    if not block or (deadline and core.hrtime() >= deadline) then return false end
    loop.pause(0.001)
  end
end

local function count(file, delta)
  core.fd_lock(file:fileno(), COUNT, true)
  local ok, value = pcall(core.fd_count, file:fileno(), delta)
  core.fd_unlock(file:fileno(), COUNT)
  if not ok then error(value, 0) end
  return value
end

-- ---- Lock and RLock ---------------------------------------------------------

local Lock = {}
Lock.__index = Lock
Lock.__name = "lmp.Lock"
sync.Lock = Lock

local RLock = setmetatable({}, {__index = Lock})
RLock.__index = RLock
RLock.__name = "lmp.RLock"
sync.RLock = RLock

function sync.new_lock(class)
  return setmetatable({file = core.lockfile()}, class)
end

-- lock:acquire([block = true [, timeout]]) -> whether it is held now.
-- An RLock counts. A Lock this process holds already is not taken again:
-- acquire(false) returns false, a timeout waits for a release (by another
-- coroutine) or returns false, as in Python; waiting for ever raises, as
-- it could only hang.
function Lock:acquire(block, timeout)
  local deadline
  block, deadline = check_wait(block, timeout, "acquire")
  local held = holds[self] or 0
  if held > 0 then
    if getmetatable(self) == RLock then holds[self] = held + 1; return true end
    if block and not deadline then
      error(errors.new("closed", "acquire: this process holds the lock already "
        .. "(acquire(false) tries without waiting)"), 2)
    end
  end
  local fd = self.file:fileno()
  local ok = wait_for(function()
    return (holds[self] or 0) == 0 and core.fd_lock(fd, LOCK, false)
  end, block, deadline)
  if ok then holds[self] = 1 end
  return ok
end

function Lock:release()
  local held = holds[self] or 0
  if held == 0 then
    error(errors.new("closed", "release: the lock is not held by this process"), 2)
  end
  holds[self] = held - 1
  if held == 1 then core.fd_unlock(self.file:fileno(), LOCK) end
end

-- lock:locked() -> whether some process holds it.
function Lock:locked()
  if (holds[self] or 0) > 0 then return true end
  local fd = self.file:fileno()
  if core.fd_lock(fd, LOCK, false) then core.fd_unlock(fd, LOCK); return false end
  return true
end

-- ---- Semaphore -------------------------------------------------------------

local Semaphore = {}
Semaphore.__index = Semaphore
Semaphore.__name = "lmp.Semaphore"
sync.Semaphore = Semaphore

function sync.new_semaphore(value)
  if value == nil then value = 1 end
  if math.type(value) ~= "integer" or value < 0 then
    errors.argument(1, "Semaphore", "value must be a non-negative integer")
  end
  local s = setmetatable({file = core.lockfile()}, Semaphore)
  count(s.file, value)
  return s
end

function Semaphore:acquire(block, timeout)
  local deadline
  block, deadline = check_wait(block, timeout, "acquire")
  local file = self.file
  return wait_for(function()
    core.fd_lock(file:fileno(), COUNT, true)
    local ok, value = pcall(core.fd_count, file:fileno(), 0)
    if ok and value > 0 then core.fd_count(file:fileno(), -1) end
    core.fd_unlock(file:fileno(), COUNT)
    if not ok then error(value, 0) end
    return value > 0
  end, block, deadline)
end

function Semaphore:release() count(self.file, 1) end

function Semaphore:get_value() return count(self.file, 0) end

-- ---- Event -------------------------------------------------------------------

local Event = {}
Event.__index = Event
Event.__name = "lmp.Event"
sync.Event = Event

function sync.new_event()
  return setmetatable({file = core.lockfile()}, Event)
end

function Event:is_set() return count(self.file, 0) > 0 end

function Event:set()
  local file = self.file
  core.fd_lock(file:fileno(), COUNT, true)
  if core.fd_count(file:fileno(), 0) == 0 then core.fd_count(file:fileno(), 1) end
  core.fd_unlock(file:fileno(), COUNT)
end

function Event:clear()
  local file = self.file
  core.fd_lock(file:fileno(), COUNT, true)
  local value = core.fd_count(file:fileno(), 0)
  core.fd_count(file:fileno(), -value)
  core.fd_unlock(file:fileno(), COUNT)
end

-- event:wait([timeout]) -> whether it is set.
function Event:wait(timeout)
  local _, deadline = check_wait(true, timeout, "wait", 1)
  return wait_for(function() return self:is_set() end, true, deadline)
end

return sync

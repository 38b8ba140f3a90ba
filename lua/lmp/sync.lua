-- Locks, semaphores, events, conditions and barriers shared between
-- processes, as in Python's multiprocessing. Each object owns a small
-- memory file (held in a Connection, which is how it travels to another
-- process) whose cell the C side works on with futexes (runtime/futex.c):
-- a waiter sleeps in the kernel and wakes when the state changes. A child
-- sleeps itself; the main process hands the sleep to a helper thread that
-- wakes the event loop (runtime/sync.c), so that the loop turns while it
-- waits, and a coroutine of lmp.spawn yields.
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"

local sync = {}

-- Bytes of a cell's memory file (the cell itself is smaller).
local CELL_BYTES = 64

-- This process's mapping of each object's cell: made on first use, never
-- sent (each process maps the file itself).
local cells = setmetatable({}, {__mode = "k"})

local function new_file()
  return core.connection(core.memfile(CELL_BYTES))
end

local function cell_of(object)
  local cell = cells[object]
  if not cell then
    cell = core.sync_cell(rawget(object, "file"):fileno())
    cells[object] = cell
  end
  return cell
end

-- A new object of class over a fresh memory file, its cell set up here.
local function new_object(class, fields)
  fields = fields or {}
  fields.file = new_file()
  local object = setmetatable(fields, class)
  cells[object] = core.sync_cell(fields.file:fileno(), true)
  return object
end

local function check_wait(block, timeout, fname, n)
  errors.check_timeout(timeout, n or 2, fname)
  if block == false then return 0 end
  return timeout
end

-- Calls try(cell, check_owner, arg) until it returns true, or until
-- timeout seconds passed (nil: no limit); returns what the successful
-- try returned, or false. check_owner is true once the cell has stayed
-- unchanged a while, when a lock's holder may have died.
local function wait_until(cell, try, timeout, arg)
  local ok, extra = try(cell, false, arg)
  if ok then return ok, extra end
  if timeout and timeout <= 0 then return false end
  local deadline = timeout and core.hrtime() + timeout
  if not loop.in_main_process() then
    local quiet = false
    while true do
      local seen = cell:seq()
      ok, extra = try(cell, quiet, arg)
      if ok then return ok, extra end
      local left
      if deadline then
        left = deadline - core.hrtime()
        if left <= 0 then return false end
      end
      quiet = cell:sleep(seen, left)
    end
  end
  if not coroutine.isyieldable() and type(package.loaded.luv) ~= "table" then
    -- The main thread sleeps on the cell itself, woken directly by the
    -- process that changes it, or by the watcher when the loop has an
    -- event; it turns the loop before each sleep.
    local quiet = false
    while true do
      core.run_once(false)
      loop.drain()
      local seen = cell:seq()
      ok, extra = try(cell, quiet, arg)
      if ok then return ok, extra end
      local left
      if deadline then
        left = deadline - core.hrtime()
        if left <= 0 then return false end
      end
      quiet = cell:sleep_beside_loop(seen, left)
    end
  end
  -- In a coroutine of lmp.spawn (which yields) or beside luv (whose loop
  -- lmp's is embedded in), a helper thread sleeps and wakes the loop.
  local waiter <close> = cell:waiter()
  -- Read seq before trying: a change made after the try is then one the
  -- helper sees, and none is missed.
  local done = loop.wait(function()
    local seen = cell:seq()
    ok, extra = try(cell, waiter:quiet(), arg)
    if ok then return true end
    waiter:arm(seen)
    return false
  end, timeout)
  if done then return ok, extra end
  return false
end

-- lmp.Queue's counters (queue.lua) wait on their cells the same way.
sync.wait_until = wait_until

-- ---- Lock and RLock ---------------------------------------------------------

local Lock = {}
Lock.__index = Lock
Lock.__name = "lmp.Lock"
sync.Lock = Lock

local RLock = setmetatable({}, {__index = Lock})
RLock.__index = RLock
RLock.__name = "lmp.RLock"
sync.RLock = RLock
Lock.recursive, RLock.recursive = false, true


local function try_lock(cell, check_owner, recursive)
  return cell:lock_try(recursive, check_owner)
end

-- A release wakes only the waiters counted in the cell (runtime/futex.c):
-- a waiter counts itself before its first try and uncounts itself
-- however the wait ends (taken, timed out, raised, or its coroutine
-- closed). One whose process dies stays counted: releases then always
-- wake, which costs time, not correctness.
local Counted = {__close = function(counted) counted[1]:lock_waiting(-1) end}

local function wait_for_lock(cell, timeout, recursive)
  cell:lock_waiting(1)
  local _ <close> = setmetatable({cell}, Counted)
  return wait_until(cell, try_lock, timeout, recursive)
end

-- lock:acquire([block = true [, timeout]]) -> whether it is held now, and
-- "owner_died" when the process that held it died holding it (the lock
-- passed to this one; what it protects may be half changed). An RLock its
-- holder takes again counts. A Lock this process holds already is not
-- taken again: acquire(false) returns false, a timeout waits for a
-- release (by another coroutine or process); waiting for ever raises.
local lock_try, lock_release = core.sync_cell_methods.lock_try, core.sync_cell_methods.lock_release

local function acquire(self, block, timeout, recursive)
  local cell = cells[self] or cell_of(self)
  if timeout ~= nil then errors.check_timeout(timeout, 2, "acquire") end
  if block == false then timeout = 0 end
  local ok, died = lock_try(cell, recursive, false)
  if ok then
    if died then return true, "owner_died" end
    return true
  end
  if not recursive and timeout == nil then
    local _, _, mine = cell:owner()
    if mine then
      error(errors.new("closed", "acquire: this process holds the lock already "
        .. "(acquire(false) tries without waiting)"), 3)
    end
  end
  if timeout ~= nil and timeout <= 0 then return false end
  ok, died = wait_for_lock(cell, timeout, recursive)
  if ok and died then return true, "owner_died" end
  return ok
end

-- A release refused: of a Lock not locked, or of an RLock by a process
-- that does not hold it.
local function not_released(recursive)
  error(errors.new("closed", recursive and "release: the lock is not held by this process"
    or "release: the lock is not locked"), 3)
end

-- The Lua methods, for everything the C ones leave (runtime/sync.c): a
-- cell not mapped yet, arguments, contention, errors. A Lock may be
-- released by any process (once per acquire); an RLock only by the
-- process that holds it. Indexed by whether the lock is recursive.
local slow_acquire, slow_release = {}, {}
for _, recursive in ipairs{false, true} do
  slow_acquire[recursive] = function(self, block, timeout)
    return acquire(self, block, timeout, recursive)
  end
  slow_release[recursive] = function(self)
    if not lock_release(cells[self] or cell_of(self), recursive) then not_released(recursive) end
  end
end

-- Lock.acquire(lock) and the like: C that looks the cell up, then tries.
Lock.acquire = core.lock_method(cells, slow_acquire[false], false, false)
RLock.acquire = core.lock_method(cells, slow_acquire[true], true, false)
Lock.release = core.lock_method(cells, slow_release[false], false, true)
RLock.release = core.lock_method(cells, slow_release[true], true, true)

-- lock:acquire() and lock:release() find the object's own methods, C
-- bound to its cell: without contention, one short call into C each.
-- They are this process's: the lock travels as its memory file
-- (__lmp_serialize) and gets new ones on arrival.
local function bind(object, class)
  object.acquire, object.release = core.bind_lock(object, cells[object] or cell_of(object),
    slow_acquire[class.recursive], slow_release[class.recursive], class.recursive)
  return object
end

function sync.new_lock(class)
  return bind(new_object(class), class)
end

local function lock_name(lock) return getmetatable(lock) == RLock and "lmp.RLock" or "lmp.Lock" end

function Lock.__lmp_serialize(lock) return lock_name(lock), rawget(lock, "file") end
RLock.__lmp_serialize = Lock.__lmp_serialize

-- sync.arrived(name, file): the lock named "lmp.Lock" or "lmp.RLock" over
-- the memory file that came in a message.
function sync.arrived(name, file)
  local class = name == "lmp.RLock" and RLock or Lock
  return bind(setmetatable({file = file}, class), class)
end
core.register("lmp.Lock", function(file) return sync.arrived("lmp.Lock", file) end)
core.register("lmp.RLock", function(file) return sync.arrived("lmp.RLock", file) end)

-- sync.try_lock(lock) -> whether this process took lock now: as
-- acquire(false), without waiting, except that a lock whose holder died is
-- taken over (a second result says "owner_died"). For a queue's
-- get_nowait, which must not take a dead reader for a live one.
function sync.try_lock(lock)
  local ok, died = cell_of(lock):lock_try(false, true)
  if ok and died then return true, "owner_died" end
  return ok
end

-- lock:locked() -> whether some process holds it. A holder that died
-- holds nothing: the next acquire takes the lock (with "owner_died").
function Lock:locked()
  local _, _, _, alive = cell_of(self):owner(true)
  return alive
end

function Lock:__tostring()
  local owner, depth = cell_of(self):owner()
  if owner == 0 then return ("%s(unlocked)"):format(getmetatable(self).__name) end
  return ("%s(held by %d, %d time%s)"):format(getmetatable(self).__name, owner, depth,
    depth == 1 and "" or "s")
end
-- Metamethods are looked up in the metatable itself, not through its
-- __index: an RLock needs its own.
RLock.__tostring = Lock.__tostring

-- ---- Semaphore and BoundedSemaphore ------------------------------------------

local Semaphore = {}
Semaphore.__index = Semaphore
Semaphore.__name = "lmp.Semaphore"
sync.Semaphore = Semaphore

local BoundedSemaphore = setmetatable({}, {__index = Semaphore})
BoundedSemaphore.__index = BoundedSemaphore
BoundedSemaphore.__name = "lmp.BoundedSemaphore"
sync.BoundedSemaphore = BoundedSemaphore

function sync.new_semaphore(value, bounded)
  local fname = bounded and "BoundedSemaphore" or "Semaphore"
  if value == nil then value = 1 end
  if math.type(value) ~= "integer" or value < 0 or value > 0x7fffffff then
    errors.argument(1, fname, "value must be a non-negative integer")
  end
  local s = new_object(bounded and BoundedSemaphore or Semaphore)
  cells[s]:set_semaphore(value, bounded and value or -1)
  return s
end

local function try_semaphore(cell) return cell:semaphore_try() end

function Semaphore:acquire(block, timeout)
  return wait_until(cell_of(self), try_semaphore, check_wait(block, timeout, "acquire"))
end

-- A BoundedSemaphore raises (kind "closed") when a release would take
-- its value above the one it started with.
function Semaphore:release()
  if not cell_of(self):semaphore_release() then
    error(errors.new("closed", "release: semaphore released too many times"), 2)
  end
end

function Semaphore:get_value() return cell_of(self):value() end

-- ---- Event ---------------------------------------------------------------------

local Event = {}
Event.__index = Event
Event.__name = "lmp.Event"
sync.Event = Event

function sync.new_event() return new_object(Event) end

function Event:is_set() return cell_of(self):event_try() end
function Event:set() cell_of(self):event_set() end
function Event:clear() cell_of(self):event_clear() end

local function try_event(cell) return cell:event_try() end

-- event:wait([timeout]) -> whether it is set.
function Event:wait(timeout)
  errors.check_timeout(timeout, 1, "wait")
  return wait_until(cell_of(self), try_event, timeout) and true or false
end

-- ---- Condition -------------------------------------------------------------------

local Condition = {}
Condition.__index = Condition
Condition.__name = "lmp.Condition"
sync.Condition = Condition

-- lmp.Condition([lock]): over lock (an lmp.Lock or lmp.RLock; a new RLock
-- by default).
function sync.new_condition(lock)
  if lock == nil then
    lock = sync.new_lock(RLock)
  elseif getmetatable(lock) ~= Lock and getmetatable(lock) ~= RLock then
    errors.argument(1, "Condition", "lmp.Lock or lmp.RLock expected, got " .. type(lock))
  end
  return new_object(Condition, {lock = lock})
end

function Condition:acquire(block, timeout) return self.lock:acquire(block, timeout) end
function Condition:release() return self.lock:release() end
function Condition:locked() return self.lock:locked() end

local function check_holds(condition, fname)
  local _, depth, mine = cell_of(condition.lock):owner()
  if not mine then
    error(errors.new("closed", fname .. ": the condition's lock is not held by this process"), 3)
  end
  return depth
end

local function try_ticket(cell) return cell:condition_take() end

-- cond:wait([timeout]) -> false if the timeout passed, else true. Releases
-- the lock (an RLock however many times it is held), sleeps until
-- notified, then takes the lock again as it was.
function Condition:wait(timeout)
  errors.check_timeout(timeout, 1, "wait")
  local depth = check_holds(self, "wait")
  local lock, cell = self.lock, cell_of(self)
  local recursive = getmetatable(lock) == RLock
  cell:condition_register()
  for _ = 1, recursive and depth or 1 do lock:release() end
  local ok, notified = pcall(wait_until, cell, try_ticket, timeout)
  -- One that leaves without a ticket gives back its place; one notified
  -- meanwhile keeps the notification.
  if not (ok and notified) then notified = cell:condition_leave() end
  for _ = 1, recursive and depth or 1 do
    local got = wait_for_lock(cell_of(lock), nil, recursive)
    assert(got)
  end
  if not ok then error(notified, 0) end
  return notified and true or false
end

-- cond:wait_for(predicate [, timeout]) -> the predicate's last result:
-- waits until it is true, as Python's.
function Condition:wait_for(predicate, timeout)
  if type(predicate) ~= "function" then
    errors.argument(1, "wait_for", "function expected, got " .. type(predicate))
  end
  errors.check_timeout(timeout, 2, "wait_for")
  local result = predicate()
  local deadline = timeout and core.hrtime() + timeout
  while not result do
    local left
    if deadline then
      left = deadline - core.hrtime()
      if left <= 0 then break end
    end
    self:wait(left)
    result = predicate()
  end
  return result
end

-- Every ticket taken, or (quiet: a long while with no change) a waiter
-- that died with its ticket: it is not waited for longer.
local function try_drained(cell, quiet)
  return quiet or cell:condition_tickets() == 0
end

-- Gives up to n waiters a ticket, then (holding the lock, as Python's
-- notify does) waits until they took them: a waiter that registers after
-- this notify cannot take one meant for those before it.
local function notify(condition, n)
  local cell = cell_of(condition)
  if cell:condition_notify(n) > 0 then wait_until(cell, try_drained) end
end

-- cond:notify([n = 1]) wakes up to n processes waiting on it;
-- cond:notify_all() every one. The lock must be held.
function Condition:notify(n)
  if n == nil then n = 1 end
  if math.type(n) ~= "integer" or n < 0 then
    errors.argument(1, "notify", "non-negative integer expected")
  end
  check_holds(self, "notify")
  notify(self, n)
end

function Condition:notify_all()
  check_holds(self, "notify_all")
  notify(self, 0xffffffff)
end

-- ---- Barrier ------------------------------------------------------------------------
-- Python's algorithm, lock-free in the cell (runtime/futex.c). Beyond
-- Python, a party that dies inside does not wedge the barrier: each party
-- writes its pid in the slot of its index (an lmp.Array beside the cell)
-- while it is inside, and a party that has waited a while with nothing
-- changing looks for dead ones. A dead party breaks a round that is
-- filling (the others get "broken_barrier", as when one times out) and
-- leaves in its stead, so that a round that drains or a reset ends.

local Barrier = {}
Barrier.__index = Barrier
Barrier.__name = "lmp.Barrier"
sync.Barrier = Barrier

local FILLING, BROKEN = 0, -2

-- Barriers of more parties than this keep no slots (their memory would
-- grow with parties): a party that dies inside one wedges it, as in
-- Python.
local TRACKED_PARTIES = 65536

function sync.new_barrier(parties, action, timeout)
  if math.type(parties) ~= "integer" or parties < 1 or parties > 0x7fffffff then
    errors.argument(1, "Barrier", "parties must be a positive integer")
  end
  if action ~= nil and type(action) ~= "function" then
    errors.argument(2, "Barrier", "function expected, got " .. type(action))
  end
  errors.check_timeout(timeout, 3, "Barrier")
  local tracked = parties <= TRACKED_PARTIES
  return new_object(Barrier, {parties = parties, action = action or false,
    timeout = timeout or false,
    pids = tracked and require("lmp.shared").new_array("i", parties, {lock = false}) or false,
    reaper = tracked and sync.new_lock(Lock) or false})
end

local function broken_error(fname)
  return errors.new("broken_barrier", fname .. ": the barrier is broken (aborted, reset, "
    .. "or a party timed out, failed or died)")
end

-- Leaves in the stead of every party whose process died inside the
-- barrier; breaks a filling round that had one. One process at a time
-- does it (the reaper lock, taken over from a reaper that died), so that
-- no dead party leaves twice.
local function reap_dead_parties(barrier, cell)
  local pids = rawget(barrier, "pids")
  if not pids then return end
  local reaper = cell_of(rawget(barrier, "reaper"))
  if not reaper:lock_try(false, true) then return end
  for i = 1, barrier.parties do
    local pid = pids[i]
    if pid ~= 0 and not core.process_alive(pid) then
      pids[i] = 0
      if (cell:barrier_state()) == FILLING then cell:barrier("break") end
      cell:barrier("leave")
    end
  end
  reaper:lock_release(false)
end

local function try_enter(cell, quiet, barrier)
  if quiet then reap_dead_parties(barrier, cell) end
  local r, index = cell:barrier_enter(barrier.parties)
  if r == 1 then return true, index end
  if r == -1 then return "broken" end
  return false
end

local function try_released(cell, quiet, barrier)
  if quiet then reap_dead_parties(barrier, cell) end
  return (cell:barrier_state()) ~= FILLING
end

-- barrier:wait([timeout]) -> this party's index, 0 to parties - 1 (the
-- last to arrive gets parties - 1 and runs the action first). Raises an
-- error of kind "broken_barrier" when the barrier is or becomes broken;
-- a timeout breaks it, as in Python.
function Barrier:wait(timeout)
  errors.check_timeout(timeout, 1, "wait")
  if timeout == nil then timeout = self.timeout or nil end
  local cell = cell_of(self)
  local deadline = timeout and core.hrtime() + timeout
  local function left() return deadline and math.max(0, deadline - core.hrtime()) end
  -- A round that drains or a reset under way is waited for, as Python's.
  local entered, index = wait_until(cell, try_enter, left(), self)
  if entered == "broken" then error(broken_error("wait"), 2) end
  if not entered then
    cell:barrier("break")
    error(broken_error("wait"), 2)
  end
  local pids = rawget(self, "pids")
  if pids then pids[index + 1] = core.getpid() end
  local ok, err = pcall(function()
    if index + 1 == self.parties then
      if self.action then
        local acted, failure = pcall(self.action)
        if not acted then cell:barrier("break"); error(failure, 0) end
      end
      cell:barrier("drain")
    else
      if not wait_until(cell, try_released, left(), self) then
        cell:barrier("break")
        error(broken_error("wait"), 0)
      end
      if (cell:barrier_state()) < 0 then error(broken_error("wait"), 0) end
    end
  end)
  if pids then pids[index + 1] = 0 end
  cell:barrier("leave")
  if not ok then error(err, 2) end
  return index
end

-- barrier:reset(): back to empty; parties waiting now get "broken_barrier".
function Barrier:reset() cell_of(self):barrier("reset") end

-- barrier:abort(): broken until reset; waiting parties get "broken_barrier".
function Barrier:abort() cell_of(self):barrier("break") end

function Barrier:n_waiting()
  local state, count = cell_of(self):barrier_state()
  if state == FILLING then return count end
  return 0
end

function Barrier:broken() return (cell_of(self):barrier_state()) == BROKEN end

return sync

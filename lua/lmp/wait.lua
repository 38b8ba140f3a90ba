-- lmp.connection.wait: waits until some of a list of objects are ready, as
-- Python's multiprocessing.connection.wait. An object is ready when a
-- read would not wait: a Connection with a message (or at end of file), a
-- queue with a value, a process's sentinel once the process has ended, a
-- Listener with a peer to accept. In the main process the loop turns
-- while waiting (a coroutine of lmp.spawn yields); elsewhere poll(2)
-- blocks.
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"

local wait = {}

local function is_queue(obj)
  local mt = getmetatable(obj)
  return type(obj) == "table" and type(mt) == "table" and mt.__name ~= nil
    and tostring(mt.__name):match("^lmp%.%a*Queue$") ~= nil
end

-- The descriptor to watch for obj, or nil.
local function descriptor_of(obj)
  if is_queue(obj) then return obj.reader:fileno() end
  if math.type(obj) == "integer" then return obj >= 0 and obj or nil end
  local t = type(obj)
  if t ~= "table" and t ~= "userdata" then return nil end
  local ok, fd = pcall(function() return obj:fileno() end)
  if ok and math.type(fd) == "integer" and fd >= 0 then return fd end
  return nil
end

-- Whether obj is a Connection (watched through its own watch, so that a
-- recv waiting on it elsewhere and this wait do not fight over the fd).
local function connection_of(obj)
  if getmetatable(obj) == core.Connection then return obj end
  if is_queue(obj) then return obj.reader end
  return nil
end

local function ready_now(objects, fds, seconds)
  local found = core.poll_fds(fds, seconds)
  local ready = {}
  for i, at in ipairs(found) do ready[i] = objects[at] end
  return ready
end

-- Watches every object on the loop; returns a function that says whether
-- one of them woke, and one that lets the watches go.
local function watch_all(objects, fds)
  local woke, watches = false, {}
  local function wake() woke = true end
  local polling = false
  for i, obj in ipairs(objects) do
    local conn = connection_of(obj)
    if conn then
      conn:watch(wake)
    else
      local w = core.fd_watch(fds[i])
      -- Another handle of the loop watches this descriptor: look at it
      -- every few milliseconds instead.
      if w then watches[#watches + 1] = w else polling = true end
    end
  end
  local function any()
    if woke then return true end
    for _, w in ipairs(watches) do if w:ready() then return true end end
    return false
  end
  local function close()
    for _, w in ipairs(watches) do w:close() end
  end
  return any, close, polling
end

-- wait(objects [, timeout]) -> the list of those ready (in the order
-- given), empty when timeout seconds passed first (nil: without end;
-- negative: as 0, as in Python).
function wait.wait(objects, timeout)
  if type(objects) ~= "table" then
    errors.argument(1, "wait", "a list of objects expected, got " .. type(objects))
  end
  if type(timeout) == "number" and timeout < 0 then timeout = 0 end
  errors.check_timeout(timeout, 2, "wait")
  if timeout == math.huge then timeout = nil end
  local fds = {}
  for i, obj in ipairs(objects) do
    fds[i] = descriptor_of(obj)
    if not fds[i] then
      errors.argument(1, "wait", ("item %d is not something to wait on (a Connection, a queue, "
        .. "a sentinel, a Listener), got %s"):format(i, tostring(obj)))
    end
  end
  local ready = ready_now(objects, fds, 0)
  if #ready > 0 or timeout == 0 then return ready end
  if not loop.in_main_process() then return ready_now(objects, fds, timeout or -1) end
  local deadline = timeout and core.hrtime() + timeout
  while true do
    -- Watches fire once: a wake that was not for us (another reader took
    -- the message first) arms them again.
    local any, close, polling = watch_all(objects, fds)
    local remaining = deadline and math.max(0, deadline - core.hrtime())
    local step = polling and math.min(remaining or 0.005, 0.005) or remaining
    local ok, err = pcall(loop.wait, any, step)
    close()
    if not ok then error(err, 0) end
    ready = ready_now(objects, fds, 0)
    if #ready > 0 or (deadline and core.hrtime() >= deadline) then return ready end
  end
end

return wait

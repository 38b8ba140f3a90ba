-- lmp.Pipe: two connected ends, as Python's multiprocessing.Pipe. Each end
-- sends and receives whole values (the value format, framed). In the main
-- process a recv that would wait turns the event loop (or yields in an
-- lmp.spawn coroutine); in a child it simply blocks. An end (and a Queue,
-- lock or shared value holding one) may be given to pool workers and
-- lmp.Process children, as an argument, a result or an initarg: its
-- descriptor travels with the message (SCM_RIGHTS).
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"

local connection = {}

local Connection = core.Connection -- the C metatable
local methods = Connection.__index
Connection.__name = "lmp.Connection"

-- Connections this process holds, by the OS object they are (device and
-- inode of the open file): one that arrives again becomes the Lua object
-- this process has already, and the descriptor that came is closed. So a
-- worker given the same Queue in a thousand tasks holds one descriptor
-- for it, not a thousand waiting for the collector, and an fcntl lock
-- held through one descriptor is not dropped when a copy of it is closed.
-- Only open connections of this very process count (a forked worker
-- inherits the table of its parent, whose descriptors it closed).
local known, known_generation = setmetatable({}, {__mode = "v"}), nil

local function known_here()
  local generation = core.descriptor_generation()
  if known_generation ~= generation then
    known, known_generation = setmetatable({}, {__mode = "v"}), generation
  end
  return known
end

-- Checking whether a value can be sent where descriptors travel: the
-- encoding is thrown away, so no descriptor is taken.
local checking = 0

-- Sent to pool workers and lmp.Process children (the worker's channel
-- carries descriptors): the data names the descriptor's slot among those
-- the frame carries (core.pass_fd), not its number here, which means
-- nothing elsewhere. Anywhere else (lmp.dumps, a Pipe, a Queue),
-- core.pass_fd refuses.
function Connection.__lmp_serialize(conn)
  local slot = 0
  if checking == 0 then
    local identity
    slot, identity = core.pass_fd(conn:fileno())
    known_here()[identity] = conn
  end
  local mode = conn:mode()
  if mode == "duplex" then return "lmp.Connection", slot end
  return "lmp.Connection", {slot, mode}
end

-- On arrival: the connection of the descriptor in that slot (one this
-- process has already, for the same OS object, if it has one).
function connection.from_slot(data)
  local slot, mode = data, "duplex"
  if type(data) == "table" then slot, mode = data[1], data[2] end
  local fd = core.take_fd(slot)
  local ok, id = pcall(core.fd_identity, fd)
  if not ok then core.fd_close(fd); error(id, 0) end
  local have = known_here()[id]
  if have and pcall(have.fileno, have) and have:mode() == mode then
    core.fd_close(fd)
    return have
  end
  local conn = core.connection(fd, mode)
  known[id] = conn
  return conn
end

-- core.dumps(...) that lets connections through (their data then names no
-- slot): checks, before anything is sent, a value bound where descriptors
-- travel (a task's function, an initializer's arguments, a process's).
function connection.dumps_checking(...)
  checking = checking + 1
  local results = table.pack(pcall(core.dumps, ...))
  checking = checking - 1
  if not results[1] then error(results[2], 0) end
  return results[2]
end

core.register("lmp.Connection", connection.from_slot)

-- Waits until conn has something to read (or timeout seconds).
local function wait_readable(conn, fname, timeout)
  if conn:readable(0) then return true end
  if not loop.in_main_process() then return conn:readable(timeout or -1) end
  local ready = false
  conn:watch(function() ready = true end)
  loop.wait(function() return ready end, timeout)
  return ready or conn:readable(0)
end

function methods.poll(conn, timeout)
  errors.check_timeout(timeout, 1, "poll")
  return wait_readable(conn, "poll", timeout or 0)
end

local raw_recv = methods.recv
-- conn:recv() -> the next value; raises kind "closed" at end of file
-- (every other end closed), as Python raises EOFError.
function methods.recv(conn)
  wait_readable(conn, "recv")
  local results = table.pack(pcall(raw_recv, conn))
  if not results[1] then errors.raise(errors.new("closed", tostring(results[2]))) end
  if results.n == 1 then
    errors.raise(errors.new("closed", "recv: end of file (the other end is closed)"))
  end
  return results[2]
end

-- lmp.Pipe([duplex]) -> conn1, conn2. Both ends can send and receive;
-- with duplex = false, as in Python, conn1 only receives and conn2 only
-- sends, and the wrong direction raises.
function connection.Pipe(duplex)
  if duplex ~= nil and type(duplex) ~= "boolean" then
    errors.argument(1, "Pipe", "boolean expected, got " .. type(duplex))
  end
  return core.pipe(duplex ~= false)
end

return connection

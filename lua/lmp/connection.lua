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
  if timeout == 0 then return false end
  local ready = false
  conn:watch(function() ready = true end)
  loop.wait(function() return ready end, timeout)
  return ready or conn:readable(0)
end

-- conn:poll([timeout = 0]) -> whether something waits, waiting up to
-- timeout seconds (math.huge: without end). A negative timeout does not
-- wait, as in Python.
function methods.poll(conn, timeout)
  if type(timeout) == "number" and timeout < 0 then timeout = 0 end
  errors.check_timeout(timeout, 1, "poll")
  if timeout == math.huge then timeout = nil else timeout = timeout or 0 end
  return wait_readable(conn, "poll", timeout)
end

-- Connections whose stream is out of step: recv_bytes refused a message
-- longer than its maxlength and left it unread, as Python's does.
local unreadable = setmetatable({}, {__mode = "k"})

local function check_readable(conn, fname)
  if unreadable[conn] then
    errors.raise(errors.new("closed", fname .. ": the connection is unusable for reading (a "
      .. "message longer than recv_bytes' maxlength was left on it)"))
  end
end

local raw_recv = methods.recv
-- conn:recv() -> the next value; raises kind "closed" at end of file
-- (every other end closed), as Python raises EOFError.
function methods.recv(conn)
  check_readable(conn, "recv")
  wait_readable(conn, "recv")
  local results = table.pack(pcall(raw_recv, conn))
  if not results[1] then errors.raise(errors.new("closed", tostring(results[2]))) end
  if results.n == 1 then
    errors.raise(errors.new("closed", "recv: end of file (the other end is closed)"))
  end
  return results[2]
end

local function check_size(n, value, fname, what)
  if value ~= nil and (math.type(value) ~= "integer" or value < 0) then
    errors.argument(n, fname, what .. " must be a non-negative integer")
  end
end

-- conn:send_bytes(s [, offset = 0 [, size]]): the bytes of s from offset
-- (0-based, as Python's), size of them (all that follow by default), as
-- one message. recv_bytes returns them whole; recv decodes them as the
-- value format, so that send(v) is send_bytes(lmp.dumps(v)).
function methods.send_bytes(conn, s, offset, size)
  if type(s) ~= "string" then errors.argument(1, "send_bytes", "string expected, got " .. type(s)) end
  check_size(2, offset, "send_bytes", "offset")
  check_size(3, size, "send_bytes", "size")
  offset = offset or 0
  if offset > #s then errors.argument(2, "send_bytes", "offset is past the end of the bytes") end
  size = size or #s - offset
  if offset + size > #s then errors.argument(3, "send_bytes", "offset + size is past the end of the bytes") end
  if conn:mode() == "receive" then methods.send(conn, nil) end -- raises the one-way message
  core.write_bytes(conn:fileno(), s, offset, size)
end

-- conn:recv_bytes([maxlength]) -> the next message as bytes (what
-- send_bytes sent, or lmp.dumps of what send sent). Raises kind "closed"
-- at end of file; kind "too_long" when the message is longer than
-- maxlength, after which the connection cannot be read any more (as
-- Python's OSError).
function methods.recv_bytes(conn, maxlength)
  check_size(1, maxlength, "recv_bytes", "maxlength")
  if conn:mode() == "send" then methods.recv(conn) end -- raises the one-way message
  check_readable(conn, "recv_bytes")
  wait_readable(conn, "recv_bytes")
  local ok, bytes, length = pcall(core.read_bytes, conn:fileno(), maxlength)
  if not ok then errors.raise(errors.new("closed", tostring(bytes))) end
  if bytes == nil then
    errors.raise(errors.new("closed", "recv_bytes: end of file (the other end is closed)"))
  end
  if bytes == false then
    unreadable[conn] = true
    errors.raise(errors.new("too_long", ("recv_bytes: the message is %d bytes, longer than "
      .. "maxlength %d; the connection cannot be read any more"):format(length, maxlength)))
  end
  return bytes
end

-- conn:recv_bytes_into(buffer [, offset = 0]) -> the size of the next
-- message, written into buffer at offset (0-based): a byte buffer with
-- write(offset, bytes) and a size field, as lmp.shared_memory.SharedMemory
-- is. A buffer too small takes nothing: kind "buffer_too_short" is raised
-- with the whole message in the error's value field (Python's
-- BufferTooShort).
function methods.recv_bytes_into(conn, buffer, offset)
  if (type(buffer) ~= "table" and type(buffer) ~= "userdata") or type(buffer.write) ~= "function"
      or math.type(buffer.size) ~= "integer" then
    errors.argument(1, "recv_bytes_into", "a byte buffer (write(offset, bytes) and size, as a "
      .. "SharedMemory) expected, got " .. type(buffer))
  end
  check_size(2, offset, "recv_bytes_into", "offset")
  offset = offset or 0
  if offset > buffer.size then errors.argument(2, "recv_bytes_into", "offset is past the end of the buffer") end
  local bytes = methods.recv_bytes(conn)
  if #bytes > buffer.size - offset then
    errors.raise(errors.new("buffer_too_short", ("recv_bytes_into: a message of %d bytes does "
      .. "not fit in %d bytes"):format(#bytes, buffer.size - offset), {value = bytes}))
  end
  buffer:write(offset, bytes)
  return #bytes
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

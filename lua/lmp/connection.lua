-- lmp.Pipe: two connected ends, as Python's multiprocessing.Pipe. Each end
-- sends and receives whole values (the value format, framed). In the main
-- process a recv that would wait turns the event loop (or yields in an
-- lmp.spawn coroutine); in a child it simply blocks. An end may be given
-- to an lmp.Process as an argument: the child inherits the descriptor.
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"

local connection = {}

local Connection = core.Connection -- the C metatable
local methods = Connection.__index
Connection.__name = "lmp.Connection"

-- While an lmp.Process is being started: connection -> its fd in the child.
local passing = nil

-- Sent only to a starting lmp.Process, as the descriptor it inherits.
function Connection.__lmp_serialize(conn)
  local fd = passing and passing[conn]
  if not fd then
    error("lmp: a Connection can be given to an lmp.Process only, as an argument "
      .. "when it starts; pool workers cannot receive one", 0)
  end
  local mode = conn:mode()
  if mode == "duplex" then return "lmp.Connection", fd end
  return "lmp.Connection", {fd, mode}
end

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

-- For lmp.Process: the connections found in args (to any depth), numbered
-- as the child's descriptors from 4 on; then the encoding runs with them.
function connection.collect(args)
  local found, list, seen = {}, {}, {}
  local function visit(v, depth)
    if getmetatable(v) == Connection then
      if not found[v] then
        list[#list + 1] = v:fileno()
        found[v] = 3 + #list
      end
    elseif type(v) == "table" and not seen[v] and depth < 100 then
      seen[v] = true
      for k, x in next, v do visit(k, depth + 1); visit(x, depth + 1) end
    end
  end
  visit(args, 0)
  return found, list
end

function connection.passing(map) passing = map end

-- In a child: rebuild an inherited end.
function connection.from_fd(data)
  if type(data) == "table" then return core.connection(data[1], data[2]) end
  return core.connection(data)
end

return connection

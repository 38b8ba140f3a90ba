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

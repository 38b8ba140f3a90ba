-- The manager's own process: it serves the managed objects to every
-- client on its socket. Each request runs in a coroutine of its own; one
-- that must wait (a queue's get, a lock's acquire, an event's wait...)
-- yields, parked on the object's list of waiters, and is resumed when that
-- object's state changes (or by a timer when its timeout passes), so a
-- waiting client never holds up the others and nothing polls. The objects'
-- logic is in lmp.managed; this file is the dispatch and the waiting.
--
-- A request is plain data: {id = object, op = method, args = {n = ...}}
-- (the server decoded it so: no function, no metatable, no name). Values
-- a client stores (dict and list items, queue items, namespace
-- attributes) arrive encoded as bytes, are kept so, and only clients
-- decode them. A reply is {true, {n = ..., results}} or
-- {false, message, kind}.
local core = require "lmp.core"

local server = {}

local objects = {}     -- id -> {typeid = , state = }
local next_id = 0
local types = {}       -- typeid -> {new = fn(context, ...), methods = {name = fn}}
local client_of = {}   -- running request coroutine -> client number
local parked = {}      -- client number -> its waiter, while its request waits
local listener         -- the server (core.listen)
local stopping = false

-- Raised by the objects' logic: reaches the client as an error of `kind`.
function server.fail(kind, message)
  error(setmetatable({kind = kind, message = message}, server), 0)
end

-- The client whose request runs now (an owner for locks).
function server.client()
  return client_of[coroutine.running()]
end

local function unpark(w)
  local list = w.list
  if list then
    for i = 1, #list do
      if list[i] == w then table.remove(list, i); break end
    end
    w.list = nil
  end
  if w.timer then w.timer:close(); w.timer = nil end
  if parked[w.client] == w then parked[w.client] = nil end
end

local resume

-- Parks the running request on `list` until server.wake picks it (true)
-- or timeout seconds pass (false). No timeout: as long as it takes.
function server.wait(list, timeout)
  if timeout and timeout <= 0 then return false end
  local co = coroutine.running()
  local w = {co = co, list = list, client = client_of[co]}
  list[#list + 1] = w
  parked[w.client] = w
  if timeout then
    w.timer = core.timer(timeout, function()
      if w.list then
        unpark(w)
        resume(co, false)
      end
    end)
  end
  return coroutine.yield()
end

-- Resumes the first n requests parked on list (all without n). Those that
-- wait again go back on the list behind the others.
-- A waiter whose client is gone (its end not read by the loop yet) is
-- dropped rather than counted: what it waited for goes to a live one.
local closed
function server.wake(list, n)
  local woken = {}
  while list[1] and (n == nil or #woken < n) do
    local w = list[1]
    unpark(w)
    if listener and not listener:connected(w.client) then
      client_of[w.co] = nil
      closed(w.client)
    else
      woken[#woken + 1] = w
    end
  end
  for _, w in ipairs(woken) do resume(w.co, true) end
  return #woken
end

-- The request's reply once its coroutine ended (true, reply) or nothing
-- while it waits.
local function outcome(co, ok, results)
  if coroutine.status(co) ~= "dead" then return nil end
  client_of[co] = nil
  if ok then return results end
  return {false, tostring(results), "task"}
end

local function send_later(client, reply)
  if listener and not pcall(listener.reply, listener, client, reply) then
    listener:reply(client, {false, "the reply cannot be sent (see lmp.dumps)", "serialize"})
  end
end

resume = function(co, ...)
  local client = client_of[co]
  local reply = outcome(co, coroutine.resume(co, ...))
  if reply then send_later(client, reply) end
end

local function run(request)
  if type(request) ~= "table" or type(request.op) ~= "string" then
    return {false, "a request is a table with an op", "task"}
  end
  local args = request.args
  if type(args) ~= "table" then args = {n = 0} end
  local n = math.type(args.n) == "integer" and args.n or #args
  local method, state, class
  if request.id == 0 then
    method, state = server[request.op .. "_request"], nil
  else
    local object = objects[request.id]
    if not object then return {false, "no such managed object", "closed"} end
    class = types[object.typeid]
    method, state = class.methods[request.op], object.state
    if method == nil then
      return {false, ("a managed %s has no method %s"):format(object.typeid, request.op), "task"}
    end
  end
  if method == nil then return {false, "no operation " .. request.op, "task"} end
  local results = table.pack(pcall(method, state, table.unpack(args, 1, n)))
  if results[1] then
    local reply = {true, table.pack(table.unpack(results, 2, results.n))}
    -- A user's method may return what cannot be sent (a coroutine): the
    -- client is told so, rather than losing its connection.
    if class and class.user then
      local sendable, err = pcall(core.dumps, reply)
      if not sendable then
        return {false, "the result cannot be sent: " .. tostring(err), "serialize"}
      end
    end
    return reply
  end
  local err = results[2]
  if getmetatable(err) == server then return {false, err.message, err.kind} end
  return {false, tostring(err), "task"}
end

-- Called by the socket server for each request: its reply now, or
-- nothing when it waits (server:reply sends it later).
local function handle(request, client)
  local co = coroutine.create(run)
  client_of[co] = client
  return outcome(co, coroutine.resume(co, request))
end

-- A client gone: its waiting request is dropped (never resumed, so what
-- it waited for goes to others), and the objects let go of what it held.
closed = function(client)
  local w = parked[client]
  local list = w and w.list
  if w then
    unpark(w)
    client_of[w.co] = nil
  end
  for _, object in pairs(objects) do
    local forget = types[object.typeid].client_gone
    if forget then forget(object.state, client, list) end
  end
end

-- ---- requests to the manager itself (id 0) ---------------------------------

function server.create_request(_, typeid, ...)
  local class = types[typeid]
  if type(typeid) ~= "string" or not class then
    server.fail("task", "no type " .. tostring(typeid) .. " is registered with this manager")
  end
  local state = class.new(...)
  next_id = next_id + 1
  objects[next_id] = {typeid = typeid, state = state}
  return next_id
end

-- The object behind an id a request names (Condition(lock) names its lock).
function server.object(id, typeid)
  local object = objects[id]
  if not object or (typeid and object.typeid ~= typeid) then return nil end
  return object.state
end

function server.types_request()
  local names = {}
  for name in pairs(types) do names[#names + 1] = name end
  table.sort(names)
  return names
end

function server.ping_request() return core.getpid() end

function server.shutdown_request()
  stopping = true
  return true
end

-- ---- the process -------------------------------------------------------------

-- Serves the standard types and user_types (typeid -> constructor, the
-- types given to register) on address: a Unix socket's path, or
-- {host, port} for TCP. A connection that has not proved the key within
-- handshake_seconds (default 20) is closed. Returns the address bound (for
-- TCP, the port the system chose for port 0). One server per process.
function server.listen(address, key, user_types, handshake_seconds)
  if listener then error("this process serves a manager already", 2) end
  local managed = require "lmp.managed"
  for typeid, class in pairs(managed.types(server)) do types[typeid] = class end
  for typeid, constructor in pairs(user_types or {}) do
    types[typeid] = managed.user_type(server, constructor)
  end
  local port
  listener, port = core.listen(address, handle, key, closed, handshake_seconds)
  if port then return {address[1], port} end
  return address
end

-- Serves until a shutdown request, or (with stop_signals) until the
-- process gets SIGTERM or SIGINT; then the clients are let go, the
-- listener closed. Returns what stopped it: "shutdown" or the signal's
-- name.
function server.serve_forever(stop_signals)
  local stopped_by = "shutdown"
  local watcher = stop_signals and core.watch_stop_signals(function(name)
    stopping, stopped_by = true, name
  end)
  listener:keep_loop_alive()
  while not stopping do core.run_once(true) end
  -- Lets the shutdown's reply go before the listener closes.
  core.run_once(false)
  if watcher then watcher:close() end
  listener:close()
  listener = nil
  return stopped_by
end

-- The target of the manager's process: serves on address until a
-- shutdown request (or until the parent dies: the process then goes with
-- it). ready is the sending end of a Pipe that hears the address bound,
-- or why there is none.
function server.serve(address, key, user_types, ready, handshake_seconds)
  -- Started by fork, this process has a copy of its parent's loop, which
  -- it cannot use: it makes one of its own.
  core.own_loop()
  local ok, bound = pcall(server.listen, address, key, user_types, handshake_seconds)
  ready:send(ok and {bound} or tostring(bound))
  ready:close()
  if not ok then return end
  server.serve_forever(false)
end

return server

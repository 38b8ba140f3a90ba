-- lmp.Manager: objects served by a process of their own (as Python's
-- multiprocessing.Manager), reached from any process through proxies:
-- dict, list, Queue, JoinableQueue, Lock, RLock, Semaphore,
-- BoundedSemaphore, Event, Condition, Barrier, Value, Array, Namespace, and
-- the user's own types given to register. The manager's process
-- (lmp.manager_server) answers while the process that made it computes.
--
-- Nobody else gets in: the socket is in a private directory (0700, a
-- random name) and is itself 0600; every connection proves the manager's
-- key (random, or the user's) by HMAC challenge, both ways, before any
-- request is read; the server decodes requests as plain data (no
-- functions, names or metatables), and keeps the values clients store as
-- the bytes they encoded, which only clients decode. The socket and its
-- directory are registered with the resource tracker, which removes them
-- if the process that made them ends without shutdown (SIGKILL, Ctrl-C,
-- os.exit); the manager's process dies with its parent, as every worker
-- does.
--
-- A proxy is a table {_typeid, _address, _id, _authkey} whose metatable
-- travels by name: it goes to pool workers and lmp.Process children as
-- any value does, and a proxy stored in a managed dict or list reads back
-- as a proxy to the same object. Each process keeps its connections to a
-- manager and reuses them; in the main process a call turns the event loop
-- while it waits (an lmp.spawn coroutine yields), elsewhere it blocks.
local core = require "lmp.core"
local errors = require "lmp.errors"
local proxies = require "lmp.proxies"

local manager = {}

local BaseManager = {}
BaseManager.__name = "lmp.Manager"
BaseManager.__lmp_nosend = "a manager belongs to the process that made it: send its proxies"
manager.BaseManager = BaseManager

-- The types every manager serves, and the proxy class of each.
local STANDARD = {
  dict = proxies.DictProxy, list = proxies.ListProxy, Queue = proxies.QueueProxy,
  JoinableQueue = proxies.QueueProxy, Lock = proxies.AcquirerProxy,
  RLock = proxies.AcquirerProxy, Semaphore = proxies.AcquirerProxy,
  BoundedSemaphore = proxies.AcquirerProxy, Event = proxies.EventProxy,
  Condition = proxies.ConditionProxy, Barrier = proxies.BarrierProxy,
  Value = proxies.ValueProxy, Array = proxies.ArrayProxy, Namespace = proxies.NamespaceProxy,
}

local serial = 0

-- Encodes what a constructor is given: stored values as bytes, proxies as
-- their ids; the rest travels as plain data.
local CREATE_ARGS = {
  dict = function(init)
    if init ~= nil and type(init) ~= "table" then
      errors.argument(1, "dict", "table expected, got " .. type(init))
    end
    return init and proxies.encode_map(init)
  end,
  list = function(init)
    if init ~= nil and type(init) ~= "table" then
      errors.argument(1, "list", "table expected, got " .. type(init))
    end
    return init and proxies.encode_list(init, "list")
  end,
  Namespace = function(init)
    if init ~= nil and type(init) ~= "table" then
      errors.argument(1, "Namespace", "table expected, got " .. type(init))
    end
    return init and proxies.encode_map(init)
  end,
  -- The action travels as bytes: the manager keeps them and hands them
  -- to the party that completes a round, which runs it.
  Barrier = function(parties, action, timeout)
    if action ~= nil and type(action) ~= "function" and not (getmetatable(action) or {}).__call then
      errors.argument(2, "Barrier", "action must be a function, got " .. type(action))
    end
    return parties, action ~= nil and core.dumps(action) or nil, timeout
  end,
  Condition = function(lock)
    if lock ~= nil and not (type(lock) == "table" and getmetatable(lock) == proxies.AcquirerProxy) then
      errors.argument(1, "Condition", "a managed Lock or RLock expected")
    end
    return lock and lock._id
  end,
}

function BaseManager:__index(name)
  local method = BaseManager[name]
  if method ~= nil then return method end
  -- A type's name is a method that makes an object of it: m:dict(),
  -- m:Queue(10), m:Counter() for a registered Counter.
  local class = type(name) == "string" and rawget(self, "_classes")[name]
  if class == nil then return nil end
  return function(m, ...)
    if getmetatable(m) ~= BaseManager then errors.argument(1, name, "call it as manager:" .. name .. "(...)") end
    return m:_create(name, class, ...)
  end
end

-- The address a manager is given: a Unix socket's path, or {host, port}
-- for TCP (port 0: the system chooses). A copy, so that the caller's
-- table is not the manager's.
local function check_address(address, fname)
  if address == nil or type(address) == "string" then return address end
  if type(address) ~= "table" or type(address[1]) ~= "string"
     or math.type(address[2]) ~= "integer" or address[2] < 0 or address[2] > 65535 then
    errors.argument(1, fname, "address must be a socket path or {host, port} (port 0-65535)")
  end
  return {address[1], address[2]}
end

-- lmp.BaseManager([{address =, authkey =, start_method =, context =,
-- handshake_timeout =}]): a
-- manager not started yet: register types, then start(), get_server(),
-- or connect() to a running one at address. address: a Unix socket's
-- path (connect only) or {host, port} for TCP.
function manager.base(opts, fname)
  fname = fname or "BaseManager"
  if opts ~= nil and type(opts) ~= "table" then
    errors.argument(1, fname, "options table expected, got " .. type(opts))
  end
  opts = opts or {}
  errors.check_options(opts, {"address", "authkey", "start_method", "context", "handshake_timeout"},
                       1, fname)
  errors.check_timeout(opts.handshake_timeout, 1, fname, true, "handshake_timeout")
  local key = opts.authkey
  if key ~= nil and (type(key) ~= "string" or key == "") then
    errors.argument(1, fname, "authkey must be a non-empty string")
  end
  local method = opts.start_method
  if opts.context ~= nil then
    if type(opts.context) ~= "table" or type(opts.context.get_start_method) ~= "function" then
      errors.argument(1, fname, "context must be a context (lmp.get_context)")
    end
    method = method or opts.context.get_start_method()
  end
  if method ~= nil and not require("lmp.workers").has_transport(method) then
    errors.argument(1, fname, "start_method must be one of "
      .. require("lmp.workers").transport_list() .. ", got " .. tostring(method))
  end
  local classes = {}
  for typeid, class in pairs(STANDARD) do classes[typeid] = class end
  return setmetatable({address = check_address(opts.address, fname),
                       authkey = key or core.random_bytes(32), start_method = method,
                       handshake_timeout = opts.handshake_timeout or 20,
                       state = "initial", _classes = classes, _registered = {},
                       owner = core.getpid()}, BaseManager)
end

-- m:register(typeid, constructor): constructor(...) makes an object in
-- the manager's process; m:typeid(...) returns a proxy whose every method
-- call runs the object's method there.
function BaseManager:register(typeid, constructor)
  if type(typeid) ~= "string" or not typeid:match("^[%a_][%w_]*$") then
    errors.argument(1, "register", "typeid must be a name, got " .. tostring(typeid))
  end
  if type(constructor) ~= "function" then
    errors.argument(2, "register", "constructor must be a function, got " .. type(constructor))
  end
  if BaseManager[typeid] ~= nil or STANDARD[typeid] then
    errors.argument(1, "register", typeid .. " is a name the manager uses already")
  end
  if self.state ~= "initial" then
    error(errors.new("closed", "register: the manager started already; register before start()"), 2)
  end
  self._registered[typeid] = constructor
  self._classes[typeid] = proxies.Proxy
end

-- Removes the directory and the socket made for a manager of ours.
local function remove_files(self)
  if not self.dir then return end
  os.remove(self.address)
  core.untrack("file", self.address)
  os.remove(self.dir)
  core.untrack("dir", self.dir)
  self.dir = nil
end

-- Makes a private directory (0700) for a manager's socket, both
-- registered with the resource tracker; sets self.dir and self.address.
local function private_socket(self, what)
  local dir, err = core.private_dir()
  if not dir then errors.raise(errors.new("closed", what .. ": " .. err)) end
  local tracked
  tracked, err = core.track("dir", dir)
  if not tracked then
    os.remove(dir)
    errors.raise(errors.new("closed", what .. ": " .. err))
  end
  self.dir, self.address = dir, dir .. "/socket"
  tracked, err = core.track("file", self.address)
  if not tracked then
    remove_files(self)
    errors.raise(errors.new("closed", what .. ": " .. err))
  end
end

-- m:start(): starts the manager's process (with the manager's start
-- method) and waits until it serves. On TCP ({host, port}), m.address
-- says the port bound.
function BaseManager:start()
  if self.state ~= "initial" then error(errors.new("closed", "start: the manager was started already"), 2) end
  if type(self.address) == "string" then
    error(errors.new("closed", "start: a manager serves in a directory of its own or on TCP; "
      .. "give no address or {host, port}"), 2)
  end
  -- Ctrl-C ends a script that uses a manager as one that runs workers:
  -- at once, with status 130, even while it waits in the loop.
  core.handle_interrupts()
  if self.address == nil then private_socket(self, "cannot start a manager") end
  local server = require "lmp.manager_server"
  local reader, writer = require("lmp.connection").Pipe(false)
  serial = serial + 1
  local process = require("lmp.process").new{target = server.serve, daemon = true,
    args = {self.address, self.authkey, self._registered, writer, self.handshake_timeout},
    name = "SyncManager-" .. serial,
    start_method = self.start_method}
  local ok, started = pcall(process.start, process)
  writer:close()
  if ok then
    self.process = process
    ok, started = pcall(reader.recv, reader)
  end
  reader:close()
  if not ok or type(started) ~= "table" then
    if self.process then self.process:kill(); self.process:join() end
    self.process = nil
    remove_files(self)
    self.state = "shutdown"
    errors.raise(errors.new("closed", "cannot start a manager: " .. tostring(started)))
  end
  self.address = started[1]
  self.path = self.address
  self.pid = self.process.pid
  self.state = "started"
  return self
end

local Server = {}
Server.__index = Server
Server.__name = "lmp.ManagerServer"
Server.__lmp_nosend = "a manager's server belongs to the process that made it"

-- m:get_server() -> a server for the manager's objects in this very
-- process (Python's get_server): it listens at once (server.address says
-- where: the address given, or a private Unix socket) and serves when
-- server:serve_forever() is called.
function BaseManager:get_server()
  if self.state ~= "initial" then
    error(errors.new("closed", "get_server: the manager was started already"), 2)
  end
  if self.address == nil then private_socket(self, "cannot serve a manager") end
  local server = require "lmp.manager_server"
  local ok, bound = pcall(server.listen, self.address, self.authkey, self._registered,
                          self.handshake_timeout)
  if not ok then
    remove_files(self)
    self.state = "shutdown"
    errors.raise(errors.new("closed", "cannot serve a manager: " .. tostring(bound)))
  end
  self.address, self.path = bound, bound
  self.state = "serving"
  return setmetatable({address = bound, manager = self}, Server)
end

-- server:serve_forever(): serves until a client asks the server to shut
-- down (m:shutdown_server() from a connected manager) or the process
-- gets SIGTERM or SIGINT (Ctrl-C); then closes the connections, removes
-- a Unix socket and returns the reason ("shutdown", "SIGTERM", "SIGINT").
function Server:serve_forever()
  local m = self.manager
  if m.state ~= "serving" then error(errors.new("closed", "serve_forever: the server is closed"), 2) end
  local ok, why = pcall(require("lmp.manager_server").serve_forever, true)
  m.state = "shutdown"
  if type(m.address) == "string" and not m.dir and m.owner == core.getpid() then
    os.remove(m.address)
  end
  remove_files(m)
  if not ok then error(why, 0) end
  return why
end

function Server:__tostring()
  return ("lmp.ManagerServer(%s)"):format(proxies.address_name(self.address))
end

-- m:connect(): uses the manager serving at address (the key must be
-- the one it was started with).
function BaseManager:connect()
  if self.state ~= "initial" then error(errors.new("closed", "connect: the manager was started already"), 2) end
  if self.address == nil then
    error(errors.new("closed", "connect: give the address of a running manager"), 2)
  end
  self.path = self.address
  local types = proxies.request(self.address, self.authkey, 0, "types", {n = 0},
                                self.handshake_timeout)
  for _, typeid in ipairs(types) do
    if not self._classes[typeid] then self._classes[typeid] = proxies.Proxy end
  end
  self.state = "connected"
  return self
end

function BaseManager:_create(typeid, class, ...)
  if self.state == "initial" then
    error(errors.new("closed", typeid .. ": the manager is not started (call start or connect)"), 3)
  end
  if self.state == "shutdown" then errors.raise(errors.new("closed", "the manager is shut down")) end
  local args = table.pack(...)
  local encode = CREATE_ARGS[typeid]
  if encode then args = table.pack(encode(...)) end
  local id = proxies.request(self.address, self.authkey, 0, "create",
                             {n = args.n + 1, typeid, table.unpack(args, 1, args.n)})
  return proxies.new(class, typeid, self.address, id, self.authkey)
end

-- m:shutdown(): ends the manager's process (after its reply, or by
-- SIGKILL if it does not end within a few seconds) and removes its
-- socket. Proxies raise kind "closed" from then on. A connected manager
-- only forgets it: the process that started the manager shuts it down.
function BaseManager:shutdown()
  if self.state == "shutdown" or self.owner ~= core.getpid() then return end
  local was = self.state
  self.state = "shutdown"
  if was ~= "started" then return end
  pcall(proxies.request, self.address, self.authkey, 0, "shutdown", {n = 0})
  local process = self.process
  pcall(process.join, process, 5)
  if process:is_alive() then
    process:kill()
    pcall(process.join, process)
  end
  -- Its handle and sentinel go now, not when the manager is collected.
  pcall(process.close, process)
  proxies.forget(self.address)
  remove_files(self)
end

BaseManager.__close = BaseManager.shutdown

-- m:shutdown_server(): asks the server this manager uses to stop (a
-- connected manager's, served by serve_forever or started elsewhere) and
-- forgets it. The server ends after its reply; for a manager this
-- process started, as shutdown().
function BaseManager:shutdown_server()
  if self.state == "started" then return self:shutdown() end
  if self.state ~= "connected" then
    error(errors.new("closed", "shutdown_server: the manager is not connected"), 2)
  end
  proxies.request(self.address, self.authkey, 0, "shutdown", {n = 0})
  proxies.forget(self.address)
  self.state = "shutdown"
end

-- Collected without shutdown: nothing may wait here (a finalizer runs
-- anywhere, even while the loop turns): the process is killed and
-- reaped at once, the files removed.
function BaseManager:__gc()
  if self.state ~= "started" or self.owner ~= core.getpid() then return end
  self.state = "shutdown"
  if self.process then self.process:_close_now() end
  remove_files(self)
end

-- m:join([timeout]): waits for the manager's process to end.
function BaseManager:join(timeout)
  if self.process then self.process:join(timeout) end
end

function BaseManager:__tostring()
  return ("lmp.Manager(%s, %s)"):format(self.state,
    self.address and proxies.address_name(self.address) or "nil")
end

-- lmp.Manager([{authkey =, address = {host, port}, start_method =,
-- context =}]): a manager started, as Python's multiprocessing.Manager().
function manager.new(opts)
  local m = manager.base(opts, "Manager")
  if type(m.address) == "string" then
    errors.argument(1, "Manager", "a socket path is for BaseManager{...}:connect(); "
      .. "a Manager serves on a private socket or on TCP ({host, port})")
  end
  return m:start()
end

return manager

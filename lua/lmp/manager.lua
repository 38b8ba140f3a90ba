-- lmp.Manager: dicts and lists that live in the main process and that any
-- process (pool workers, lmp.Process children) reads and changes through
-- proxies, as Python's multiprocessing.Manager. The main process serves
-- requests on a Unix socket from its event loop; a proxy in another
-- process sends each call there and waits for the reply. Requests are
-- served while the main process turns its loop (inside map, get, join,
-- lmp.run...), one at a time, so each call is atomic.
--
-- Nobody else gets in: the socket is in a private directory (0700, a
-- random name) and is itself 0600; every connection proves the manager's
-- key (random, or the user's) by HMAC challenge, both ways; the server
-- decodes requests as plain data (no functions, names or metatables), and
-- keeps the values it stores as the bytes the client encoded, which only
-- proxies decode. The socket and its directory are registered with the
-- resource tracker, which removes them if the process ends without
-- shutdown (SIGKILL, Ctrl-C, os.exit).
local core = require "lmp.core"
local errors = require "lmp.errors"

local manager = {}

local Manager = {}
Manager.__index = Manager
Manager.__name = "lmp.Manager"
Manager.__lmp_nosend = "a manager belongs to the process that made it: send its dict or list proxies"

local DictProxy = {}
DictProxy.__index = DictProxy
DictProxy.__name = "lmp.DictProxy"
manager.DictProxy = DictProxy -- reachable from package.loaded: travels by name

local ListProxy = {}
ListProxy.__index = ListProxy
ListProxy.__name = "lmp.ListProxy"
manager.ListProxy = ListProxy

-- The main process's objects, by manager path and id.
local served = {}
-- In other processes: one connection per manager path.
local connections = {}

local dumps, loads = core.dumps, core.loads

-- A stored value: the bytes a client encoded. The server never decodes
-- them, except as plain data for add.
local function stored(v)
  if type(v) ~= "string" then error("a stored value must be encoded", 0) end
  return v
end

-- What the server does with a request. Keys are plain data; values are
-- bytes (see stored) and go back as they came.
local OPERATIONS = {}

function OPERATIONS.get(t, k) return t[k] end
function OPERATIONS.set(t, k, v)
  if v ~= nil then stored(v) end
  t[k] = v
end
function OPERATIONS.pop(t, k)
  local v = t[k]
  t[k] = nil
  return v
end
function OPERATIONS.keys(t)
  local r = {}
  for k in pairs(t) do r[#r + 1] = k end
  return r
end
function OPERATIONS.values(t)
  local r = {}
  for _, v in pairs(t) do r[#r + 1] = v end
  return r
end
function OPERATIONS.items(t)
  local r = {}
  for k, v in pairs(t) do r[k] = v end
  return r
end
function OPERATIONS.len(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end
function OPERATIONS.contains(t, k) return t[k] ~= nil end
function OPERATIONS.update(t, other)
  if type(other) ~= "table" then error("table expected", 0) end
  for _, v in pairs(other) do stored(v) end
  for k, v in pairs(other) do t[k] = v end
end
function OPERATIONS.add(t, k, delta)
  if type(delta) ~= "number" then error("number expected", 0) end
  local ok, old = true, 0
  if t[k] ~= nil then ok, old = pcall(loads, t[k], false, false) end
  if not ok or type(old) ~= "number" then error("the value is not a number", 0) end
  local sum = old + delta
  t[k] = dumps(sum)
  return sum
end
local function check_index(t, i)
  if math.type(i) ~= "integer" or i < 1 or i > t.n then error("index out of range", 0) end
end
function OPERATIONS.append(t, v) t.n = t.n + 1; t[t.n] = stored(v) end
function OPERATIONS.extend(t, other)
  if type(other) ~= "table" or math.type(other.n) ~= "integer" then error("list expected", 0) end
  for i = 1, other.n do stored(other[i]) end
  for i = 1, other.n do t.n = t.n + 1; t[t.n] = other[i] end
end
function OPERATIONS.at(t, i)
  check_index(t, i)
  return t[i]
end
function OPERATIONS.put(t, i, v)
  check_index(t, i)
  t[i] = stored(v)
end
function OPERATIONS.remove(t, i)
  i = i or t.n
  check_index(t, i)
  local v = table.remove(t, i)
  t.n = t.n - 1
  return v
end
function OPERATIONS.count(t) return t.n end
function OPERATIONS.copy(t, _, kind)
  if kind == "list" then return table.move(t, 1, t.n, 1, {n = t.n}) end
  return OPERATIONS.items(t)
end

-- Runs one call on the main process's object; returns {true, result} or
-- {false, message}. The request is plain data (the server decoded it so),
-- but nothing else about it is trusted.
local function serve(path, request)
  if type(request) ~= "table" then return {false, "a request is a table"} end
  local objects = served[path]
  local object = objects and objects[request.id]
  if not object then return {false, "no such managed object"} end
  local op = OPERATIONS[request.op]
  if not op then return {false, "no operation " .. tostring(request.op)} end
  local ok, result = pcall(op, object.value, request.a, request.b, object.kind)
  if ok then return {true, result} end
  return {false, tostring(result)}
end

local function call(proxy, op, a, b)
  local reply
  if served[proxy.path] and proxy.pid == core.getpid() then
    reply = serve(proxy.path, {id = proxy.id, op = op, a = a, b = b})
  else
    local conn = connections[proxy.path]
    if not conn then
      local fd, err = core.unix_connect(proxy.path, proxy.authkey)
      if not fd then
        errors.raise(errors.new("closed", ("cannot reach the manager at %s: %s"):format(proxy.path, err)))
      end
      conn = core.connection(fd)
      connections[proxy.path] = conn
    end
    local sent, err = pcall(conn.send, conn, {id = proxy.id, op = op, a = a, b = b})
    if not sent then errors.raise(err) end
    local got
    got, reply = pcall(conn.recv, conn)
    if not got or reply == nil then
      connections[proxy.path] = nil
      errors.raise(errors.new("closed", "the manager closed the connection"))
    end
  end
  if not reply[1] then errors.raise(errors.new("task", op .. ": " .. tostring(reply[2]))) end
  return reply[2]
end

-- A value as the server keeps it, and back.
local function encode(v) return dumps(v) end
local function decode(bytes)
  if bytes == nil then return nil end
  return loads(bytes)
end
local function decode_all(t)
  for k, v in pairs(t) do t[k] = decode(v) end
  return t
end

-- ---- proxies -------------------------------------------------------------------

function DictProxy:get(k, default)
  local v = decode(call(self, "get", k))
  if v == nil then return default end
  return v
end
function DictProxy:set(k, v)
  if v == nil then return call(self, "set", k) end
  return call(self, "set", k, encode(v))
end
function DictProxy:pop(k, default)
  local v = decode(call(self, "pop", k))
  if v == nil then return default end
  return v
end
function DictProxy:keys() return call(self, "keys") end
function DictProxy:values() return decode_all(call(self, "values")) end
function DictProxy:items() return decode_all(call(self, "items")) end
function DictProxy:len() return call(self, "len") end
function DictProxy:contains(k) return call(self, "contains", k) end
function DictProxy:update(t)
  if type(t) ~= "table" then errors.argument(1, "update", "table expected, got " .. type(t)) end
  local encoded = {}
  for k, v in pairs(t) do encoded[k] = encode(v) end
  return call(self, "update", encoded)
end
-- d:add(k, delta) adds to a number in one atomic step; returns the sum.
function DictProxy:add(k, delta) return call(self, "add", k, delta or 1) end
function DictProxy:copy() return decode_all(call(self, "copy")) end
DictProxy.__len = DictProxy.len

local function encode_list(t)
  if type(t) ~= "table" then errors.argument(1, "extend", "table expected, got " .. type(t)) end
  local n = t.n or #t
  local encoded = {n = n}
  for i = 1, n do encoded[i] = encode(t[i]) end
  return encoded
end

function ListProxy:append(v) return call(self, "append", encode(v)) end
function ListProxy:extend(t) return call(self, "extend", encode_list(t)) end
function ListProxy:get(i) return decode(call(self, "at", i)) end
function ListProxy:set(i, v) return call(self, "put", i, encode(v)) end
function ListProxy:pop(i) return decode(call(self, "remove", i)) end
function ListProxy:len() return call(self, "count") end
function ListProxy:copy()
  local t = call(self, "copy")
  for i = 1, t.n do t[i] = decode(t[i]) end
  return t
end
ListProxy.__len = ListProxy.len

-- ---- the manager ---------------------------------------------------------------

-- lmp.Manager([{authkey = bytes}]): the key defaults to 32 random bytes.
function manager.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    errors.argument(1, "Manager", "options table expected, got " .. type(opts))
  end
  local key = opts and opts.authkey
  if key ~= nil and (type(key) ~= "string" or key == "") then
    errors.argument(1, "Manager", "authkey must be a non-empty string")
  end
  key = key or core.random_bytes(32)
  -- Ctrl-C ends a script that serves a manager as one that runs workers:
  -- at once, with status 130, even while it waits in the loop.
  core.handle_interrupts()
  local dir, err = core.private_dir()
  if not dir then errors.raise(errors.new("closed", "cannot start a manager: " .. err)) end
  local tracked
  tracked, err = core.track("dir", dir)
  if not tracked then
    os.remove(dir)
    errors.raise(errors.new("closed", "cannot start a manager: " .. err))
  end
  local path = dir .. "/socket"
  local m = setmetatable({path = path, dir = dir, authkey = key, objects = {}, next_id = 0,
                          owner = core.getpid()}, Manager)
  local listening, server = pcall(core.listen, path, function(request)
    return serve(path, request)
  end, key)
  if listening then tracked, err = core.track("file", path) end
  if not listening or not tracked then
    if listening then server:close() end
    os.remove(path)
    os.remove(dir)
    core.untrack("dir", dir)
    errors.raise(errors.new("closed", "cannot start a manager: " .. tostring(listening and err or server)))
  end
  m.server = server
  served[path] = m.objects
  return m
end

local function new_object(m, kind, value, proxy_class)
  if not m.server then errors.raise(errors.new("closed", "the manager is shut down")) end
  m.next_id = m.next_id + 1
  m.objects[m.next_id] = {kind = kind, value = value}
  -- The proxy carries the key: whoever is given the proxy may use it.
  return setmetatable({path = m.path, pid = core.getpid(), id = m.next_id, authkey = m.authkey},
                      proxy_class)
end

-- manager:dict([table]) -> proxy of a dict holding a copy of table.
function Manager:dict(init)
  if init ~= nil and type(init) ~= "table" then
    errors.argument(1, "dict", "table expected, got " .. type(init))
  end
  local value = {}
  if init then for k, v in pairs(init) do value[k] = encode(v) end end
  return new_object(self, "dict", value, DictProxy)
end

-- manager:list([array]) -> proxy of a list holding a copy of array.
function Manager:list(init)
  if init ~= nil and type(init) ~= "table" then
    errors.argument(1, "list", "table expected, got " .. type(init))
  end
  local value = {n = 0}
  if init then OPERATIONS.extend(value, encode_list(init)) end
  return new_object(self, "list", value, ListProxy)
end

function Manager:shutdown()
  -- A worker started by fork has a copy of this object: the server and
  -- its socket file are the parent's.
  if not self.server or self.owner ~= core.getpid() then return end
  self.server:close()
  self.server = nil
  served[self.path] = nil
  os.remove(self.path)
  core.untrack("file", self.path)
  os.remove(self.dir)
  core.untrack("dir", self.dir)
end

Manager.__close = Manager.shutdown
Manager.__gc = Manager.shutdown

return manager

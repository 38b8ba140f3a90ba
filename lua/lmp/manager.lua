-- lmp.Manager: dicts and lists that live in the main process and that any
-- process (pool workers, lmp.Process children) reads and changes through
-- proxies, as Python's multiprocessing.Manager. The main process serves
-- requests on a Unix socket from its event loop; a proxy in another
-- process sends each call there and waits for the reply. Requests are
-- served while the main process turns its loop (inside map, get, join,
-- lmp.run...), one at a time, so each call is atomic.
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
local serial = 0

local OPERATIONS = {}

function OPERATIONS.get(t, k, default)
  local v = t[k]
  if v == nil then return default end
  return v
end
function OPERATIONS.set(t, k, v) t[k] = v end
function OPERATIONS.pop(t, k, default)
  local v = t[k]
  t[k] = nil
  if v == nil then return default end
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
function OPERATIONS.update(t, other) for k, v in pairs(other) do t[k] = v end end
function OPERATIONS.add(t, k, delta)
  t[k] = (t[k] or 0) + delta
  return t[k]
end
function OPERATIONS.append(t, v) t.n = t.n + 1; t[t.n] = v end
function OPERATIONS.extend(t, other)
  for i = 1, other.n or #other do t.n = t.n + 1; t[t.n] = other[i] end
end
function OPERATIONS.at(t, i)
  if math.type(i) ~= "integer" or i < 1 or i > t.n then error("index out of range", 0) end
  return t[i]
end
function OPERATIONS.put(t, i, v)
  if math.type(i) ~= "integer" or i < 1 or i > t.n then error("index out of range", 0) end
  t[i] = v
end
function OPERATIONS.remove(t, i)
  i = i or t.n
  if math.type(i) ~= "integer" or i < 1 or i > t.n then error("index out of range", 0) end
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
-- {false, message}.
local function serve(path, request)
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
      local fd, err = core.unix_connect(proxy.path)
      if not fd then
        errors.raise(errors.new("closed", ("the manager at %s is gone: %s"):format(proxy.path, err)))
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
  if not reply[1] then errors.raise(errors.new("task", op .. ": " .. reply[2])) end
  return reply[2]
end

-- ---- proxies -------------------------------------------------------------------

function DictProxy:get(k, default) return call(self, "get", k, default) end
function DictProxy:set(k, v) return call(self, "set", k, v) end
function DictProxy:pop(k, default) return call(self, "pop", k, default) end
function DictProxy:keys() return call(self, "keys") end
function DictProxy:values() return call(self, "values") end
function DictProxy:items() return call(self, "items") end
function DictProxy:len() return call(self, "len") end
function DictProxy:contains(k) return call(self, "contains", k) end
function DictProxy:update(t) return call(self, "update", t) end
-- d:add(k, delta) adds to a number in one atomic step; returns the sum.
function DictProxy:add(k, delta) return call(self, "add", k, delta or 1) end
function DictProxy:copy() return call(self, "copy") end
DictProxy.__len = DictProxy.len

function ListProxy:append(v) return call(self, "append", v) end
function ListProxy:extend(t) return call(self, "extend", t) end
function ListProxy:get(i) return call(self, "at", i) end
function ListProxy:set(i, v) return call(self, "put", i, v) end
function ListProxy:pop(i) return call(self, "remove", i) end
function ListProxy:len() return call(self, "count") end
function ListProxy:copy() return call(self, "copy") end
ListProxy.__len = ListProxy.len

-- ---- the manager ---------------------------------------------------------------

function manager.new()
  serial = serial + 1
  local path = ("/tmp/lmp-manager-%d-%d.sock"):format(core.getpid(), serial)
  os.remove(path)
  local m = setmetatable({path = path, objects = {}, next_id = 0, owner = core.getpid()}, Manager)
  served[path] = m.objects
  m.server = core.listen(path, function(request) return serve(path, request) end)
  return m
end

local function new_object(m, kind, value, proxy_class)
  if not m.server then errors.raise(errors.new("closed", "the manager is shut down")) end
  m.next_id = m.next_id + 1
  m.objects[m.next_id] = {kind = kind, value = value}
  return setmetatable({path = m.path, pid = core.getpid(), id = m.next_id}, proxy_class)
end

-- manager:dict([table]) -> proxy of a dict holding a copy of table.
function Manager:dict(init)
  if init ~= nil and type(init) ~= "table" then
    errors.argument(1, "dict", "table expected, got " .. type(init))
  end
  local value = {}
  if init then for k, v in pairs(init) do value[k] = v end end
  return new_object(self, "dict", value, DictProxy)
end

-- manager:list([array]) -> proxy of a list holding a copy of array.
function Manager:list(init)
  if init ~= nil and type(init) ~= "table" then
    errors.argument(1, "list", "table expected, got " .. type(init))
  end
  local value = {n = 0}
  if init then OPERATIONS.extend(value, init) end
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
end

Manager.__close = Manager.shutdown
Manager.__gc = Manager.shutdown

return manager

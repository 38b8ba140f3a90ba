-- The proxies of a manager's objects, and the requests they make. A proxy
-- is {_typeid, _address, _id, _authkey}; its class travels by name (it is
-- reachable from package.loaded), so a proxy sent anywhere, or stored in
-- a managed dict or list, arrives as a proxy to the same object.
--
-- Values a proxy stores (dict and list items, queue items, namespace
-- attributes) are encoded here and sent as bytes: the manager keeps them
-- so, and they are decoded by the process that reads them. Everything
-- else a request carries is plain data.
local core = require "lmp.core"
local errors = require "lmp.errors"
local loop = require "lmp.loop"

local proxies = {}

local dumps, loads = core.dumps, core.loads

-- ---- connections --------------------------------------------------------------

-- A manager's address: a Unix socket's path, or {host, port} for one
-- served on TCP. Its name is the path, or "host:port".
local function address_name(address)
  if type(address) == "table" then return address[1] .. ":" .. tostring(address[2]) end
  return address
end
proxies.address_name = address_name

-- address .. "\0" .. key -> {pid = , idle = {connections}}: a process's
-- own connections (a forked child starts with none of its parent's). The
-- key is part of the name: a connection another key opened proves nothing
-- of this one.
local pools = {}

-- How long a manager may take to answer the key handshake (on a Unix
-- socket or TCP alike) when the caller gives no limit: a manager that
-- accepts and says nothing must not hold a client for ever.
local HANDSHAKE_SECONDS = 20

local function gone(address)
  return errors.new("closed", ("the manager at %s is gone (shut down, or its process died)")
    :format(address_name(address)))
end

local function take(address, authkey, seconds)
  local pid, name = core.getpid(), address_name(address) .. "\0" .. authkey
  local pool = pools[name]
  if not pool or pool.pid ~= pid then
    pool = {pid = pid, idle = {}}
    pools[name] = pool
  end
  local conn = table.remove(pool.idle)
  if conn then return conn, pool end
  local fd, err, kind
  seconds = seconds or HANDSHAKE_SECONDS
  if type(address) == "table" then
    fd, err, kind = core.connect_socket("tcp", address[1], address[2], authkey, seconds)
  else
    fd, err, kind = core.connect_socket("unix", address, authkey, seconds)
  end
  if not fd then
    -- A manager that refuses the key says so (kind "auth"); any other
    -- failure is a manager out of reach.
    errors.raise(errors.new(kind == "auth" and "auth" or "closed",
      ("cannot reach the manager at %s: %s"):format(address_name(address), err)))
  end
  return core.connection(fd), pool
end

-- Waits for the reply on conn. In the main process the loop turns
-- meanwhile (pool results, callbacks and other coroutines go on); where
-- the loop cannot turn (inside a luv callback) it simply blocks.
local function await_reply(conn)
  if not loop.in_main_process() then return end
  local ready = false
  conn:watch(function() ready = true end)
  local ok, err = pcall(loop.wait, function() return ready end)
  if not ok and not (type(err) == "table" and err.kind == "in_callback") then
    conn:close()
    error(err, 0)
  end
end

-- One request to the manager at address: the object id (0: the manager
-- itself), the method, its arguments packed; a new connection's
-- handshake may take `seconds` (default 20). Returns the results; raises
-- the manager's error with its kind, or kind "closed" when the manager is
-- unreachable or goes away meanwhile.
function proxies.request(address, authkey, id, op, args, seconds)
  local conn, pool = take(address, authkey, seconds)
  local sent, err = pcall(conn.send, conn, {id = id, op = op, args = args})
  if not sent then
    conn:close()
    if type(err) == "table" and err.kind == "serialize" then errors.raise(err) end
    errors.raise(gone(address))
  end
  await_reply(conn)
  local got, reply = pcall(conn.recv, conn)
  if not got or type(reply) ~= "table" then
    conn:close()
    errors.raise(gone(address))
  end
  pool.idle[#pool.idle + 1] = conn
  if reply[1] then
    local results = reply[2]
    return table.unpack(results, 1, results.n)
  end
  errors.raise(errors.new(reply[3] or "task", op .. ": " .. tostring(reply[2])))
end

-- Closes this process's connections to a manager that is shut down.
function proxies.forget(address)
  local prefix = address_name(address) .. "\0"
  for name, pool in pairs(pools) do
    if name:sub(1, #prefix) == prefix then
      pools[name] = nil
      if pool.pid == core.getpid() then
        for _, conn in ipairs(pool.idle) do conn:close() end
      end
    end
  end
end

-- ---- values ---------------------------------------------------------------------

local function encode(v) return dumps(v) end
local function decode(bytes)
  if bytes == nil then return nil end
  return loads(bytes)
end

function proxies.encode_map(t)
  local encoded = {}
  for k, v in pairs(t) do encoded[k] = encode(v) end
  return encoded
end

function proxies.encode_list(t, fname)
  if type(t) ~= "table" then errors.argument(1, fname, "table expected, got " .. type(t)) end
  local n = math.type(t.n) == "integer" and t.n or #t
  local encoded = {n = n}
  for i = 1, n do encoded[i] = encode(t[i]) end
  return encoded
end

local function decode_list(t)
  for i = 1, t.n do t[i] = decode(t[i]) end
  return t
end

-- ---- classes --------------------------------------------------------------------

local function call(p, op, ...)
  return proxies.request(p._address, p._authkey, p._id, op, table.pack(...))
end

local function class(name)
  local c = {}
  c.__index = c
  c.__name = "lmp." .. name
  -- p:_callmethod(name, ...): any method by name, as Python's proxies have.
  c._callmethod = call
  c.__eq = function(a, b)
    return address_name(a._address) == address_name(b._address) and a._id == b._id
  end
  c.__tostring = function(p)
    return ("lmp.%s(%s %d at %s)"):format(name, p._typeid, p._id, address_name(p._address))
  end
  proxies[name] = c
  return c
end

function proxies.new(class_, typeid, address, id, authkey)
  return setmetatable({_typeid = typeid, _address = address, _id = id, _authkey = authkey}, class_)
end

-- dict ---------------------------------------------------------------------------
local DictProxy = class("DictProxy")

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
function DictProxy:popitem()
  local k, v = call(self, "popitem")
  return k, decode(v)
end
function DictProxy:setdefault(k, default) return decode(call(self, "setdefault", k, encode(default))) end
function DictProxy:keys() return call(self, "keys") end
function DictProxy:values()
  local values = call(self, "values")
  for i = 1, #values do values[i] = decode(values[i]) end
  return values
end
function DictProxy:items()
  local items = call(self, "items")
  for i = 1, #items do items[i][2] = decode(items[i][2]) end
  return items
end
function DictProxy:len() return call(self, "len") end
function DictProxy:contains(k) return call(self, "contains", k) end
function DictProxy:update(t)
  if type(t) ~= "table" then errors.argument(1, "update", "table expected, got " .. type(t)) end
  return call(self, "update", proxies.encode_map(t))
end
function DictProxy:clear() return call(self, "clear") end
-- d:add(k, delta) adds to a number in one atomic step; returns the sum.
function DictProxy:add(k, delta) return call(self, "add", k, delta or 1) end
function DictProxy:copy()
  local t = call(self, "copy")
  for k, v in pairs(t) do t[k] = decode(v) end
  return t
end
DictProxy.__len = DictProxy.len
-- for k, v in pairs(d): the items as they were at the start, in order.
function DictProxy:__pairs()
  local items, i = self:items(), 0
  return function()
    i = i + 1
    local item = items[i]
    if item then return item[1], item[2] end
  end, self, nil
end

-- list ---------------------------------------------------------------------------
local ListProxy = class("ListProxy")

-- l[i] reads item i (nil past the end), l[i] = v sets it.
function ListProxy:__index(k)
  if math.type(k) == "integer" then return decode(call(self, "get", k, true)) end
  return ListProxy[k]
end
function ListProxy:__newindex(k, v)
  if math.type(k) == "integer" then return self:set(k, v) end
  rawset(self, k, v)
end
function ListProxy:get(i) return decode(call(self, "get", i)) end
function ListProxy:set(i, v) return call(self, "set", i, encode(v)) end
function ListProxy:append(v) return call(self, "append", encode(v)) end
function ListProxy:extend(t) return call(self, "extend", proxies.encode_list(t, "extend")) end
function ListProxy:insert(i, v) return call(self, "insert", i, encode(v)) end
function ListProxy:pop(i) return decode(call(self, "pop", i)) end
function ListProxy:remove(v) return call(self, "remove", encode(v)) end
function ListProxy:index(v, i, j) return call(self, "index", encode(v), i, j) end
function ListProxy:count(v) return call(self, "count", encode(v)) end
function ListProxy:contains(v) return call(self, "contains", encode(v)) end
function ListProxy:reverse() return call(self, "reverse") end
-- l:sort([{reverse = true}]): numbers or strings, in the manager, stable.
function ListProxy:sort(opts)
  if opts ~= nil and type(opts) ~= "table" then
    errors.argument(1, "sort", "options table expected, got " .. type(opts))
  end
  return call(self, "sort", opts and opts.reverse == true)
end
function ListProxy:slice(i, j) return decode_list(call(self, "slice", i, j)) end
function ListProxy:set_slice(i, j, t)
  return call(self, "set_slice", i, j, proxies.encode_list(t, "set_slice"))
end
function ListProxy:len() return call(self, "len") end
function ListProxy:clear() return call(self, "clear") end
function ListProxy:copy() return decode_list(call(self, "copy")) end
ListProxy.__len = ListProxy.len

-- Queue, JoinableQueue -------------------------------------------------------------
local QueueProxy = class("QueueProxy")

function QueueProxy:put(v, block, timeout) return call(self, "put", encode(v), block, timeout) end
function QueueProxy:get(block, timeout) return decode(call(self, "get", block, timeout)) end
function QueueProxy:put_nowait(v) return self:put(v, false) end
function QueueProxy:get_nowait() return self:get(false) end
function QueueProxy:qsize() return call(self, "qsize") end
function QueueProxy:empty() return call(self, "empty") end
function QueueProxy:full() return call(self, "full") end
function QueueProxy:task_done() return call(self, "task_done") end
function QueueProxy:join() return call(self, "join") end

-- Lock, RLock, Semaphore, BoundedSemaphore -----------------------------------------
local AcquirerProxy = class("AcquirerProxy")

function AcquirerProxy:acquire(block, timeout) return call(self, "acquire", block, timeout) end
function AcquirerProxy:release(n) return call(self, "release", n) end
function AcquirerProxy:locked() return call(self, "locked") end
function AcquirerProxy:get_value() return call(self, "get_value") end

-- Event ------------------------------------------------------------------------------
local EventProxy = class("EventProxy")

function EventProxy:set() return call(self, "set") end
function EventProxy:clear() return call(self, "clear") end
function EventProxy:is_set() return call(self, "is_set") end
function EventProxy:wait(timeout) return call(self, "wait", timeout) end

-- Condition ----------------------------------------------------------------------------
local ConditionProxy = class("ConditionProxy")

function ConditionProxy:acquire(block, timeout) return call(self, "acquire", block, timeout) end
function ConditionProxy:release() return call(self, "release") end
function ConditionProxy:wait(timeout) return call(self, "wait", timeout) end
function ConditionProxy:notify(n) return call(self, "notify", n) end
function ConditionProxy:notify_all() return call(self, "notify_all") end
-- c:wait_for(predicate [, timeout]): waits until predicate() is true, as
-- Python's (the predicate runs here, with the lock held).
function ConditionProxy:wait_for(predicate, timeout)
  if type(predicate) ~= "function" then
    errors.argument(1, "wait_for", "function expected, got " .. type(predicate))
  end
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

-- Barrier: b:wait(), b:reset(), b:abort(); b.parties, b.n_waiting, b.broken ------
local BarrierProxy = class("BarrierProxy")
local BARRIER_PROPERTIES = {parties = true, n_waiting = true, broken = true}

function BarrierProxy:__index(k)
  if BARRIER_PROPERTIES[k] then return call(self, k) end
  return BarrierProxy[k]
end
-- The party that completes a round gets the barrier's action (encoded:
-- the manager never runs a client's code) and runs it before any party
-- is released, as Python's Barrier does; an action that raises breaks the
-- barrier (the others raise kind "broken_barrier") and this wait raises its error.
function BarrierProxy:wait(timeout)
  local index, action, round = call(self, "wait", timeout)
  if action == nil then return index end
  local ok, err = pcall(function() return decode(action)() end)
  call(self, "release", round, ok)
  if not ok then error(err, 0) end
  return index
end
function BarrierProxy:reset() return call(self, "reset") end
function BarrierProxy:abort() return call(self, "abort") end

-- Value: v:get(), v:set(x), and v.value as Python's --------------------------------
local ValueProxy = class("ValueProxy")

function ValueProxy:__index(k)
  if k == "value" then return call(self, "get") end
  return ValueProxy[k]
end
function ValueProxy:__newindex(k, v)
  if k == "value" then return call(self, "set", v) end
  rawset(self, k, v)
end
function ValueProxy:get() return call(self, "get") end
function ValueProxy:set(v) return call(self, "set", v) end

-- Array: a[i], a[i] = x, #a, a:tolist(), a:slice(i, j) -----------------------------
local ArrayProxy = class("ArrayProxy")

function ArrayProxy:__index(k)
  if math.type(k) == "integer" then return call(self, "get", k, true) end
  return ArrayProxy[k]
end
function ArrayProxy:__newindex(k, v)
  if math.type(k) == "integer" then return call(self, "set", k, v) end
  rawset(self, k, v)
end
function ArrayProxy:get(i) return call(self, "get", i) end
function ArrayProxy:set(i, v) return call(self, "set", i, v) end
function ArrayProxy:len() return call(self, "len") end
function ArrayProxy:tolist() return call(self, "tolist") end
function ArrayProxy:slice(i, j) return call(self, "slice", i, j) end
ArrayProxy.__len = ArrayProxy.len

-- Namespace: ns.name reads, ns.name = v writes (nil deletes); names with a
-- leading "_" are the proxy's own. pairs(ns) goes over every attribute.
local NamespaceProxy = class("NamespaceProxy")

function NamespaceProxy:__index(k)
  if type(k) == "string" and k:sub(1, 1) == "_" then return NamespaceProxy[k] end
  return decode(call(self, "get", k))
end
function NamespaceProxy:__newindex(k, v)
  if type(k) ~= "string" then errors.argument(2, "Namespace", "attribute names are strings") end
  if k:sub(1, 1) == "_" then return rawset(self, k, v) end
  if v == nil then return call(self, "set", k) end
  return call(self, "set", k, encode(v))
end
function NamespaceProxy:__pairs()
  local t = call(self, "items")
  for k, v in pairs(t) do t[k] = decode(v) end
  return next, t, nil
end

-- A registered type: p:method(...) runs the object's method in the
-- manager's process; the arguments go as plain data.
local Proxy = class("Proxy")

function Proxy:__index(k)
  local own = Proxy[k]
  if own ~= nil or type(k) ~= "string" or k:sub(1, 1) == "_" then return own end
  return function(p, ...) return call(p, k, ...) end
end

return proxies

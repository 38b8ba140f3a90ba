-- Shared memory: lmp.Value and lmp.Array for lmp.Process children and
-- pool workers (an unlinked file whose descriptor travels with the
-- message that carries the object, mapped MAP_SHARED), and
-- lmp.shared_memory.SharedMemory, a POSIX shared memory object by name
-- that any process can attach to, pool workers included. Items use the
-- type codes of Python's array module: b B h H i I l L q Q f d.
local core = require "lmp.core"
local errors = require "lmp.errors"
local sync = require "lmp.sync"

local shared = {}

local SIZES = {b = 1, B = 1, h = 2, H = 2, i = 4, I = 4, l = 8, L = 8, q = 8, Q = 8,
               f = 4, d = 8}

-- Mappings are per process: made on first use, never sent.
local mappings = setmetatable({}, {__mode = "k"})

local function check_code(code, n, fname)
  if type(code) ~= "string" or not SIZES[code] then
    errors.argument(n, fname, "type code expected (b B h H i I l L q Q f d), got "
      .. tostring(code))
  end
end

local function mapping_of(object, fd, bytes, code)
  local m = mappings[object]
  if not m then
    m = core.map(fd, bytes, code)
    mappings[object] = m
  end
  return m
end

local function new_memory(code, count)
  local fd = core.memfile(SIZES[code] * count)
  return core.connection(fd)
end

-- ---- Value --------------------------------------------------------------------

local Value = {}
Value.__name = "lmp.Value"
shared.Value = Value -- reachable from package.loaded: travels by name
local value_methods = {}

local function value_mapping(v)
  local code = rawget(v, "code")
  return mapping_of(v, rawget(v, "file"):fileno(), SIZES[code], code)
end

local function slow_index(v, key)
  if key == "value" then return value_mapping(v):get(rawget(v, "code"), 1) end
  return value_methods[key]
end

local function slow_newindex(v, key, x)
  if key ~= "value" then error("lmp.Value: only .value can be set", 3) end
  value_mapping(v):set(rawget(v, "code"), 1, x)
end

-- v.value and v.value = x, once this process mapped v, are one call into
-- C that reads or writes the item (core.value_accessors); the functions
-- above map it first, and raise what there is to raise.
Value.__index, Value.__newindex = core.value_accessors(mappings, slow_index, slow_newindex,
  value_methods)

function Value.__tostring(v) return ("lmp.Value(%q, %s)"):format(rawget(v, "code"), tostring(v.value)) end

function value_methods.get_lock(v) return rawget(v, "lock") end

function shared.new_value(code, init, opts)
  check_code(code, 1, "Value")
  local v = setmetatable({code = code, file = new_memory(code, 1),
    lock = (opts == nil or opts.lock ~= false) and sync.new_lock(sync.RLock) or false}, Value)
  if init ~= nil then v.value = init end
  return v
end

-- ---- Array --------------------------------------------------------------------

local Array = {}
Array.__name = "lmp.Array"
shared.Array = Array
local array_methods = {}

local function array_mapping(a)
  return mapping_of(a, rawget(a, "file"):fileno(), SIZES[rawget(a, "code")] * rawget(a, "length"))
end

function Array.__index(a, key)
  if math.type(key) == "integer" then return array_mapping(a):get(rawget(a, "code"), key) end
  return array_methods[key]
end

function Array.__newindex(a, key, x)
  if math.type(key) ~= "integer" then error("lmp.Array: integer index expected", 2) end
  array_mapping(a):set(rawget(a, "code"), key, x)
end

function Array.__len(a) return rawget(a, "length") end

function Array.__tostring(a)
  return ("lmp.Array(%q, %d)"):format(rawget(a, "code"), rawget(a, "length"))
end

function array_methods.get_lock(a) return rawget(a, "lock") end

-- a:totable() -> a plain Lua array of the items.
function array_methods.totable(a)
  local t, m, code = {}, array_mapping(a), rawget(a, "code")
  for i = 1, rawget(a, "length") do t[i] = m:get(code, i) end
  return t
end

function shared.new_array(code, size_or_init, opts)
  check_code(code, 1, "Array")
  local init, length
  if math.type(size_or_init) == "integer" and size_or_init >= 0 then
    length = size_or_init
  elseif type(size_or_init) == "table" then
    init, length = size_or_init, #size_or_init
  else
    errors.argument(2, "Array", "size or table of initial values expected")
  end
  local a = setmetatable({code = code, length = length, file = new_memory(code, length),
    lock = (opts == nil or opts.lock ~= false) and sync.new_lock(sync.RLock) or false}, Array)
  if init then for i = 1, length do a[i] = init[i] end end
  return a
end

-- ---- shared_memory.SharedMemory ----------------------------------------------

local SharedMemory = {}
SharedMemory.__index = SharedMemory
-- The process that created each segment, kept here and not in the object:
-- a copy made by loads (a segment sent to another process, or dumps and
-- loads here) must not remove the creator's name when it is collected.
local creators = setmetatable({}, {__mode = "k"})
SharedMemory.__name = "lmp.SharedMemory"
shared.SharedMemory = SharedMemory

-- A fresh name: random, so that nobody can take it first (a name made of
-- the pid and a count could be made in /dev/shm before us and make
-- creation fail).
function shared.random_name()
  return "/lmp_" .. core.random_bytes(12):gsub(".", function(c) return ("%02x"):format(c:byte()) end)
end

-- Maps size bytes of the open descriptor fd, which is closed whatever
-- happens (the mapping keeps the memory); a failure raises after that.
local function map_and_close(fd, size)
  local ok, m = pcall(core.map, fd, size)
  core.fd_close(fd)
  if not ok then error(m, 0) end
  return m
end

-- The system's name of a segment: its name after a "/".
local function path_of(s)
  return "/" .. s.name
end

local function shm_mapping(s)
  local m = mappings[s]
  if not m then
    local fd, size = core.shm_open(path_of(s), false)
    if not fd then
      error(errors.new("closed", ("shared memory '%s' cannot be opened: %s"):format(s.name, size)), 3)
    end
    m = map_and_close(fd, s.size)
    mappings[s] = m
  end
  return m
end

-- The longest name a segment can have (a file name in /dev/shm).
local NAME_MAX = 255

-- lmp.shared_memory.SharedMemory{name=, create=, size=}
function shared.new_shared_memory(opts)
  if type(opts) ~= "table" then
    errors.argument(1, "SharedMemory", "options table expected, got " .. type(opts))
  end
  errors.check_options(opts, {"name", "create", "size"}, 1, "SharedMemory")
  local name, create, size = opts.name, opts.create == true, opts.size or 0
  if name ~= nil and (type(name) ~= "string" or name:find("/", 2, true)) then
    errors.argument(1, "SharedMemory", "name must be a string without '/'")
  end
  if name and name:find("\0", 1, true) then
    -- The system would see only the part before it: another segment.
    errors.argument(1, "SharedMemory", "name must not contain a NUL byte")
  end
  if name then
    -- A leading "/" is the system's; the name is what follows.
    name = name:gsub("^/", "")
    if name == "" or #name > NAME_MAX then
      errors.argument(1, "SharedMemory", ("name must have 1 to %d bytes, not %d")
        :format(NAME_MAX, #name))
    end
  end
  if math.type(size) ~= "integer" or size < 0 or (create and size == 0) then
    errors.argument(1, "SharedMemory", "size must be a positive integer when creating")
  end
  if not name and not create then errors.argument(1, "SharedMemory", "name expected to attach") end
  local path, fd, actual, exists
  if name then
    path = "/" .. name
    fd, actual = core.shm_open(path, create, size)
  else
    -- O_EXCL refuses a name that exists: take another.
    for _ = 1, 100 do
      path = shared.random_name()
      fd, actual, exists = core.shm_open(path, true, size)
      if fd or not exists then break end
    end
    name = path:sub(2)
  end
  if not fd then
    error(errors.new("closed", ("shared memory '%s' cannot be %s: %s")
      :format(name, create and "created" or "opened", actual)), 2)
  end
  if create then
    -- The tracker removes the name if this process ends without unlink.
    local tracked, err = core.track("shm", path)
    if not tracked then
      core.fd_close(fd)
      core.shm_unlink(path)
      error(errors.new("closed", ("shared memory '%s' cannot be created: %s"):format(name, err)), 2)
    end
  end
  local s = setmetatable({name = name, size = create and size or actual}, SharedMemory)
  if create then creators[s] = core.getpid() end
  local ok, m = pcall(map_and_close, fd, s.size)
  if not ok then
    -- A name made here and not mappable (too big for the address space)
    -- goes now, not when the collector finds s.
    if create then s:unlink() end
    error(errors.new("closed", ("shared memory '%s' cannot be mapped: %s")
      :format(name, tostring(m):gsub("^lmp: ", ""))), 2)
  end
  mappings[s] = m
  return s
end

-- shm:read([offset [, length]]) -> bytes; offsets from 0, as in Python.
function SharedMemory:read(offset, length) return shm_mapping(self):read(offset, length) end
function SharedMemory:write(offset, bytes) return shm_mapping(self):write(offset, bytes) end

-- Typed items, as Array has them (index from 1).
function SharedMemory:get(code, index) return shm_mapping(self):get(code, index) end
function SharedMemory:set(code, index, x) return shm_mapping(self):set(code, index, x) end

-- Detaches this process; the memory lives on until unlink.
function SharedMemory:close()
  local m = mappings[self]
  if m then m:close(); mappings[self] = nil end
end

-- Removes the name (the memory goes once every process closed it).
function SharedMemory:unlink()
  self.unlinked = true
  core.shm_unlink(path_of(self))
  if creators[self] == core.getpid() then core.untrack("shm", path_of(self)) end
end

-- The creating process removes a name nobody unlinked, so none leaks.
function SharedMemory:__gc()
  if creators[self] == core.getpid() and not self.unlinked then
    core.shm_unlink(path_of(self))
    core.untrack("shm", path_of(self))
  end
end

return shared

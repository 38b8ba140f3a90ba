-- lmp.shared_memory.ShareableList and SharedMemoryManager, as Python's
-- multiprocessing.shared_memory and managers have them.
--
-- A ShareableList lays its items out in one SharedMemory segment as
-- Python's does, so that either can read the other's: the item count
-- (8 bytes), the end offsets of the items' slots (8 bytes each, the first
-- 0), the slots (8 bytes for an integer, float, boolean or nil; a string
-- takes its length rounded up to the next multiple of 8, at least one NUL
-- past its end), each item's struct format (8 bytes, NUL-padded: "q",
-- "d", "xxxxxxx?", "xxxxxx?x", "<n>s") and each item's kind (one byte:
-- 0 number or boolean, 1 string, 2 bytes, 3 nil). Numbers are in the
-- machine's byte order. Indices count from 1, and from -1 at the end.
local core = require "lmp.core"
local errors = require "lmp.errors"
local shared = require "lmp.shared"

local shareable = {}

local SLOT = 8
local KIND_VALUE, KIND_STRING, KIND_BYTES, KIND_NIL = 0, 1, 2, 3
local BOOLEAN_FORMAT, NIL_FORMAT = "xxxxxxx?", "xxxxxx?x"

local ShareableList = {}
ShareableList.__name = "lmp.ShareableList"
shareable.ShareableList = ShareableList -- reachable from package.loaded: travels by name
local methods = {}

-- The format and kind of a value, and the bytes its slot needs.
local function describe(v, argn, fname)
  local t = math.type(v) or type(v)
  if t == "integer" then return "q", KIND_VALUE, SLOT end
  if t == "float" then return "d", KIND_VALUE, SLOT end
  if t == "boolean" then return BOOLEAN_FORMAT, KIND_VALUE, SLOT end
  if t == "nil" then return NIL_FORMAT, KIND_NIL, SLOT end
  if t == "string" then
    local size = SLOT * (#v // SLOT + 1)
    local format = size .. "s"
    if #format > SLOT then
      errors.argument(argn, fname, ("a string of %d bytes is too long for a ShareableList"):format(#v))
    end
    return format, KIND_STRING, size
  end
  errors.argument(argn, fname, ("integer, float, boolean, string or nil expected, got %s"):format(t))
end

local function shm_of(l) return rawget(l, "shm") end

local function count_of(l) return shm_of(l):get("q", 1) end

-- Where the slots start, and item i's (0-based) slot offset within them.
local function data_start(n) return (n + 2) * SLOT end
local function slot_offset(l, i) return shm_of(l):get("q", 2 + i) end

local function formats_start(l, n) return data_start(n) + slot_offset(l, n) end

local function format_of(l, n, i)
  return (shm_of(l):read(formats_start(l, n) + i * SLOT, SLOT):gsub("%z+$", ""))
end

local function kind_of(l, n, i)
  return shm_of(l):get("b", formats_start(l, n) + n * SLOT + i + 1)
end

-- Writes value v (whose format is `format`) into item i's slot.
local function store(l, n, i, v, format, kind)
  local shm, at = shm_of(l), data_start(n) + slot_offset(l, i)
  local formats = formats_start(l, n)
  if format == "q" then shm:set("q", at // SLOT + 1, v)
  elseif format == "d" then shm:set("d", at // SLOT + 1, v)
  elseif format == BOOLEAN_FORMAT then shm:write(at, ("\0"):rep(7) .. (v and "\1" or "\0"))
  elseif format == NIL_FORMAT then shm:write(at, ("\0"):rep(SLOT))
  else
    local size = slot_offset(l, i + 1) - slot_offset(l, i)
    shm:write(at, v .. ("\0"):rep(size - #v))
  end
  shm:write(formats + i * SLOT, format .. ("\0"):rep(SLOT - #format))
  shm:set("b", formats + n * SLOT + i + 1, kind)
end

local function load(l, n, i)
  local shm, at = shm_of(l), data_start(n) + slot_offset(l, i)
  local format, kind = format_of(l, n, i), kind_of(l, n, i)
  if kind == KIND_NIL then return nil end
  if format == "q" then return shm:get("q", at // SLOT + 1) end
  if format == "d" then return shm:get("d", at // SLOT + 1) end
  if format == BOOLEAN_FORMAT then return shm:read(at + 7, 1) ~= "\0" end
  local size = tonumber(format:match("^(%d+)s$"))
  if not size then
    error(errors.new("value", ("ShareableList: item %d has format '%s', unknown here"):format(i + 1, format)), 3)
  end
  return (shm:read(at, size):gsub("%z+$", ""))
end

-- Item index (1-based, or negative from the end) -> 0-based position.
local function position(l, index, fname)
  local n = count_of(l)
  if math.type(index) ~= "integer" then
    errors.argument(1, fname, "integer index expected, got " .. (math.type(index) or type(index)))
  end
  local i = index < 0 and n + index or index - 1
  if i < 0 or i >= n then
    error(errors.new("value", ("%s: index %d out of range (the list has %d items)")
      :format(fname, index, n)), 3)
  end
  return n, i
end

function ShareableList.__index(l, key)
  if math.type(key) == "integer" then
    local n, i = position(l, key, "ShareableList[]")
    return load(l, n, i)
  end
  if key == "format" then
    local n, parts = count_of(l), {}
    for i = 0, n - 1 do parts[#parts + 1] = format_of(l, n, i) end
    return table.concat(parts)
  end
  return methods[key]
end

-- An item takes a value of any kind that fits its slot: 8 bytes for any
-- number, boolean or nil; a string no longer than the slot it was given.
function ShareableList.__newindex(l, key, v)
  local n, i = position(l, key, "ShareableList[]=")
  local format, kind = describe(v, 2, "ShareableList[]=")
  if kind == KIND_STRING then
    local size = slot_offset(l, i + 1) - slot_offset(l, i)
    if #v > size then
      error(errors.new("value", ("ShareableList[]=: a string of %d bytes exceeds the %d bytes of item %d")
        :format(#v, size, key)), 2)
    end
    format = size .. "s"
  end
  store(l, n, i, v, format, kind)
end

function ShareableList.__len(l) return count_of(l) end

function ShareableList.__tostring(l)
  return ("lmp.ShareableList(%d items, name=%s)"):format(count_of(l), shm_of(l).name)
end

-- Whether item i (0-based) equals v (a nil item equals nil).
local function equals(l, n, i, v)
  if v == nil then return kind_of(l, n, i) == KIND_NIL end
  return load(l, n, i) == v
end

-- How many items equal v.
function methods.count(l, v)
  local n, found = count_of(l), 0
  for i = 0, n - 1 do
    if equals(l, n, i, v) then found = found + 1 end
  end
  return found
end

-- The index (1-based) of the first item equal to v; raises if none is.
function methods.index(l, v)
  local n = count_of(l)
  for i = 0, n - 1 do
    if equals(l, n, i, v) then return i + 1 end
  end
  error(errors.new("value", ("index: %s is not in the list"):format(tostring(v))), 2)
end

-- The items as a plain Lua array (with n).
function methods.totable(l)
  local n, t = count_of(l), {}
  for i = 0, n - 1 do t[i + 1] = load(l, n, i) end
  t.n = n
  return t
end

-- ShareableList(sequence [, {name = ...}]) makes a segment holding the
-- sequence's items (an array; its n counts, so nils are kept);
-- ShareableList(nil, {name = ...}) attaches to an existing one.
function shareable.new_shareable_list(sequence, opts, new_memory)
  if opts ~= nil then
    if type(opts) ~= "table" then
      errors.argument(2, "ShareableList", "options table expected, got " .. type(opts))
    end
    errors.check_options(opts, {"name"}, 2, "ShareableList")
  end
  local name = opts and opts.name
  if sequence == nil then
    if name == nil then sequence = {n = 0}
    else
      local shm = shared.new_shared_memory({name = name})
      return setmetatable({shm = shm}, ShareableList)
    end
  end
  if type(sequence) ~= "table" then
    errors.argument(1, "ShareableList", "sequence (array) or nil expected, got " .. type(sequence))
  end
  local n = sequence.n or #sequence
  local formats, kinds, offsets = {}, {}, {[0] = 0}
  for i = 1, n do
    local format, kind, size = describe(sequence[i], 1, "ShareableList")
    formats[i], kinds[i] = format, kind
    offsets[i] = offsets[i - 1] + size
  end
  local size = data_start(n) + offsets[n] + n * SLOT + n
  local shm = (new_memory or shared.new_shared_memory)({name = name, create = true,
                                                       size = math.max(size, 1)})
  local l = setmetatable({shm = shm}, ShareableList)
  shm:set("q", 1, n)
  for i = 0, n do shm:set("q", 2 + i, offsets[i]) end
  for i = 1, n do store(l, n, i - 1, sequence[i], formats[i], kinds[i]) end
  return l
end

-- ---- SharedMemoryManager --------------------------------------------------
-- Owns the segments made through it: shutdown unlinks them; so does the
-- resource tracker when the process that owns the manager dies.

local SharedMemoryManager = {}
SharedMemoryManager.__index = SharedMemoryManager
SharedMemoryManager.__name = "lmp.SharedMemoryManager"
SharedMemoryManager.__lmp_nosend = "a SharedMemoryManager belongs to the process that made it: send its segments"

function shareable.new_manager()
  return setmetatable({state = "initial", segments = {}}, SharedMemoryManager)
end

-- Starts the manager; returns it.
function SharedMemoryManager:start()
  if self.state ~= "initial" then
    error(errors.new("value", "start: the manager was started already"), 2)
  end
  self.state = "started"
  self.owner = core.getpid()
  return self
end

local function check_started(self, fname)
  if self.state ~= "started" then
    error(errors.new("closed", ("%s: the manager is %s"):format(fname,
      self.state == "initial" and "not started" or "shut down")), 3)
  end
end

local function create(self, opts)
  local shm = shared.new_shared_memory(opts)
  self.segments[#self.segments + 1] = shm
  return shm
end

-- A new SharedMemory of `size` bytes, unlinked at shutdown.
function SharedMemoryManager:SharedMemory(size)
  check_started(self, "SharedMemory")
  if math.type(size) ~= "integer" or size < 1 then
    errors.argument(1, "SharedMemory", "size must be a positive integer")
  end
  return create(self, {create = true, size = size})
end

-- A new ShareableList of the sequence's items, unlinked at shutdown.
function SharedMemoryManager:ShareableList(sequence)
  check_started(self, "ShareableList")
  return shareable.new_shareable_list(sequence, nil, function(opts) return create(self, opts) end)
end

-- Unlinks every segment made through the manager; it cannot be used after.
function SharedMemoryManager:shutdown()
  if self.state ~= "started" then self.state = "shut down"; return end
  self.state = "shut down"
  if self.owner ~= core.getpid() then return end
  for _, shm in ipairs(self.segments) do
    shm:close()
    if not shm.unlinked then shm:unlink() end
  end
  self.segments = {}
end

SharedMemoryManager.__close = SharedMemoryManager.shutdown
SharedMemoryManager.__gc = SharedMemoryManager.shutdown

function SharedMemoryManager:__tostring()
  return ("lmp.SharedMemoryManager(%s, %d segments)"):format(self.state, #self.segments)
end

return shareable

-- What "arrives equal" means, for the contract spec and the property test:
-- contract.same(expected, arrival) walks two values in parallel and checks
-- that they are equal and have the same sharing graph (a bijection between
-- the objects of each side: shared references, cycles, metatables, shared
-- upvalues), the subtype and every bit of numbers, and that the sender's
-- globals arrived as the receiver's own. contract.cases() is the corpus of
-- values every path must carry. Workers require this file too (a pool
-- gives them package.path), so that a worker can check what it got.
local core = require "lmp.core"

local contract = {}

-- ---- comparing -----------------------------------------------------------

local function is_object(v)
  local t = type(v)
  return t == "table" or t == "function" or t == "userdata" or t == "thread"
end

local function key_text(k)
  if type(k) == "string" then
    if k:match("^[%a_][%w_]*$") and #k <= 40 then return "." .. k end
    return ("[%q]"):format(#k > 40 and k:sub(1, 40) .. "..." or k)
  end
  if math.type(k) == "float" then return ("[%.17g]"):format(k) end
  if is_object(k) then return ("[<%s key>]"):format(type(k)) end
  return "[" .. tostring(k) .. "]"
end

local function number_text(x)
  if math.type(x) == "integer" then return ("integer %d"):format(x) end
  return ("float %.17g (bits %s)"):format(x, (string.pack("<d", x):gsub(".", function(c)
    return ("%02x"):format(c:byte()) end)))
end

local function value_text(v)
  local t = type(v)
  if t == "number" then return number_text(v) end
  if t == "string" then
    return #v <= 40 and ("string %q"):format(v) or ("string of %d bytes"):format(#v)
  end
  if rawequal(v, _G) then return "the globals table" end
  return (t == "nil" or t == "boolean") and tostring(v) or t
end

-- A walk: the object bijection (both directions), the upvalue bijection,
-- and a journal of what was added, so that a failed attempt to match a key
-- can be undone.
local Walk = {}
Walk.__index = Walk

local function new_walk()
  return setmetatable({a_to_b = {}, b_to_a = {}, up_a = {}, up_b = {}, journal = {}}, Walk)
end

function Walk:bind(map_ab, map_ba, a, b)
  map_ab[a], map_ba[b] = b, a
  local j = self.journal
  j[#j + 1] = {map_ab, a, map_ba, b}
end

function Walk:undo(mark)
  local j = self.journal
  for i = #j, mark + 1, -1 do
    local e = j[i]
    e[1][e[2]], e[3][e[4]] = nil, nil
    j[i] = nil
  end
end

-- Returns nil when equal, else the path below the values compared and
-- what differs there.
function Walk:compare(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return "", ("expected %s, got %s"):format(value_text(a), value_text(b)) end
  if ta == "number" then
    local differ
    if math.type(a) ~= math.type(b) then
      differ = true
    elseif math.type(a) == "integer" then
      differ = a ~= b
    else
      -- Bit for bit: -0.0 is not 0.0, and a NaN keeps its payload.
      differ = string.pack("<d", a) ~= string.pack("<d", b)
    end
    if differ then return "", ("expected %s, got %s"):format(number_text(a), number_text(b)) end
    return nil
  end
  if ta == "string" then
    if a == b then return nil end
    local i = 1
    while a:byte(i) == b:byte(i) do i = i + 1 end
    return "", ("strings differ (%d and %d bytes, first at byte %d)"):format(#a, #b, i)
  end
  if not is_object(a) then
    if a ~= b then return "", ("expected %s, got %s"):format(value_text(a), value_text(b)) end
    return nil
  end
  -- The receiver's globals stand for the sender's: within one process,
  -- the very same table on both sides.
  if rawequal(a, _G) or rawequal(b, _G) then
    if rawequal(a, b) then return nil end
    return "", rawequal(a, _G) and "expected the receiver's globals table (_ENV), got another table"
      or "got the globals table where another table was expected"
  end
  local seen_b = self.a_to_b[a]
  if seen_b ~= nil then
    if rawequal(seen_b, b) then return nil end
    return "", "sharing differs: expected a reference to an object met before, got another object"
  end
  if self.b_to_a[b] ~= nil then
    return "", "sharing differs: got a reference to an object met before, expected a new one"
  end
  self:bind(self.a_to_b, self.b_to_a, a, b)
  -- Values that travel by name (math.sqrt, string) arrive as the
  -- receiver's own: the same object here.
  if rawequal(a, b) then return nil end
  if ta == "table" then return self:compare_tables(a, b) end
  if ta == "function" then return self:compare_functions(a, b) end
  if ta == "userdata" then return self:compare_userdata(a, b) end
  return "", ("cannot compare two different %ss"):format(ta)
end

local function count_keys(t)
  local n = 0
  for _ in next, t do n = n + 1 end
  return n
end

function Walk:compare_tables(a, b)
  local ma, mb = debug.getmetatable(a), debug.getmetatable(b)
  if (ma == nil) ~= (mb == nil) then
    return "", ma and "the metatable is missing" or "a metatable appeared"
  end
  if ma then
    local where, why = self:compare(ma, mb)
    if where then return "(metatable)" .. where, why end
  end
  local na, nb = count_keys(a), count_keys(b)
  if na ~= nb then return "", ("expected %d keys, got %d"):format(na, nb) end
  -- Plain keys are looked up; object keys are matched through the
  -- bijection, or by trying the unmatched ones of the other side.
  local pending = {}
  for k, va in next, a do
    if is_object(k) then
      pending[#pending + 1] = k
    else
      local vb = rawget(b, k)
      if vb == nil then return key_text(k), "key missing" end
      local where, why = self:compare(va, vb)
      if where then return key_text(k) .. where, why end
    end
  end
  for _, k in ipairs(pending) do
    local va, kb = rawget(a, k), self.a_to_b[k]
    if kb == nil then
      for candidate, vb in next, b do
        if is_object(candidate) and self.b_to_a[candidate] == nil then
          local mark = #self.journal
          if not self:compare(k, candidate) and not self:compare(va, vb) then
            kb = candidate
            break
          end
          self:undo(mark)
        end
      end
      if kb == nil then return key_text(k), "no key of the arrival matches this key" end
    else
      local vb = rawget(b, kb)
      if vb == nil then return key_text(k), "key missing" end
      local where, why = self:compare(va, vb)
      if where then return key_text(k) .. where, why end
    end
  end
  return nil
end

function Walk:compare_functions(a, b)
  local ca, cb = debug.getinfo(a, "S").what == "C", debug.getinfo(b, "S").what == "C"
  if ca or cb then return "", "different C functions (a C function travels by name)" end
  if string.dump(a) ~= string.dump(b) then return "", "different bytecode" end
  for i = 1, debug.getinfo(a, "u").nups do
    local name_a, va = debug.getupvalue(a, i)
    local name_b, vb = debug.getupvalue(b, i)
    local part = ("(upvalue '%s')"):format(name_a or i)
    if name_a ~= name_b then return part, "upvalue names differ" end
    local ida, idb = debug.upvalueid(a, i), debug.upvalueid(b, i)
    local seen = self.up_a[ida]
    if seen ~= nil then
      if seen ~= idb then
        return part, "upvalue sharing differs: expected it shared with another function's"
      end
    elseif self.up_b[idb] ~= nil then
      return part, "upvalue sharing differs: it is shared with another function's, expected its own"
    else
      self:bind(self.up_a, self.up_b, ida, idb)
      local where, why = self:compare(va, vb)
      if where then return part .. where, why end
    end
  end
  return nil
end

function Walk:compare_userdata(a, b)
  -- A custom value is what its __lmp_serialize says it is.
  local sa = (debug.getmetatable(a) or {}).__lmp_serialize
  local sb = (debug.getmetatable(b) or {}).__lmp_serialize
  if not sa or not sb then return "", "two different userdata" end
  local name_a, data_a = sa(a)
  local name_b, data_b = sb(b)
  if name_a ~= name_b then return "(__lmp_serialize)", "constructor names differ" end
  local where, why = self:compare(data_a, data_b)
  if where then return "(__lmp_serialize data)" .. where, why end
  return nil
end

-- contract.same(expected, arrival [, walk]) -> true, or false and a message
-- naming where they differ. A walk given is kept, so that several values
-- can be compared under one bijection (the values of one message).
function contract.same(expected, arrival, walk)
  local where, why = (walk or new_walk()):compare(expected, arrival)
  if where == nil then return true end
  if where == "" then return false, why end
  return false, ("at %s: %s"):format(where, why)
end

contract.new_walk = new_walk

-- contract.check(expected, arrival, what): raises "what: message" unless same.
function contract.check(expected, arrival, what)
  local ok, why = contract.same(expected, arrival)
  if not ok then error(("%s: %s"):format(what or "value", why), 2) end
end

-- A list of values as one message carries them (sharing spans the list),
-- and back: what every path must match. The list wraps its values in a
-- level that does not count against the nesting limit, as on every path.
function contract.pack(list)
  return core.dumps(list, "", 1)
end

function contract.unpack(bytes)
  return core.loads(bytes, true, true, 1)
end

-- ---- the corpus ----------------------------------------------------------

-- Each case: name, args (a function making a fresh argument list, with n),
-- probe (optional): probe(args) calls the functions in it and returns
-- what they said, leaving the value as it found it; deep: nested within
-- two levels of the limit. Functions cannot be
-- compared by identity across processes: they are compared by bytecode,
-- upvalues and upvalue sharing, and called.

local function list(...) return table.pack(...) end

local function nest(depth)
  local root = {}
  local t = root
  for _ = 2, depth do
    t[1] = {}
    t = t[1]
  end
  return root
end
contract.nest = nest

local function depth_of(t)
  local d = 0
  while type(t) == "table" do
    d = d + 1
    t = t[1]
  end
  return d
end
contract.depth_of = depth_of

local all_bytes = {}
for i = 0, 255 do all_bytes[#all_bytes + 1] = string.char(i) end
all_bytes = table.concat(all_bytes)

-- A NaN with a payload of its own, and a negative one.
local nan_payload = string.unpack("<d", "\1\0\0\0\0\0\xf8\x7f")
local negative_nan = string.unpack("<d", "\0\0\0\0\0\0\xf8\xff")

local Point = {}
Point.__index = Point
function Point.norm2(p) return p.x * p.x + p.y * p.y end
Point.__add = function(p, q) return setmetatable({x = p.x + q.x, y = p.y + q.y}, getmetatable(p)) end

local function counter_pair()
  local count = 0
  local function add(d) count = count + d; return count end
  local function get() return count end
  return add, get
end

local cases = {
  {name = "nil", args = function() return list(nil) end},
  {name = "booleans", args = function() return list(true, false) end},
  {name = "integers at the edges of each width", args = function()
    return list({0, 1, -1, 127, 128, -128, -129, 2^31 - 1, 2^31, -2^31, -2^31 - 1,
                 math.maxinteger, math.mininteger, n = 13})
  end},
  {name = "integer max and min as arguments", args = function()
    return list(math.maxinteger, math.mininteger, 0)
  end},
  {name = "floats whose value is an integer stay floats", args = function()
    return list(1.0, 0.0, -1.0, 2.0^53, 2.0^63, -2.0^63)
  end},
  {name = "-0.0, infinities, subnormals", args = function()
    return list(-0.0, math.huge, -math.huge, 5e-324, 2.2250738585072014e-308, math.pi)
  end},
  {name = "NaN, with its payload and sign", args = function()
    return list(0 / 0, nan_payload, negative_nan, {nan = 0 / 0, list = {nan_payload, n = 1}})
  end},
  -- Sequences of only floats or only integers travel as one typed block
  -- (runtime/numbers.c); these must arrive as the general encoding would
  -- give them, and those that only look like one must not take that path.
  {name = "number arrays: floats bit for bit, integers of every width", args = function()
    return list({0.5, -0.0, 0 / 0, nan_payload, negative_nan, math.huge, -math.huge, 5e-324},
                {1.0, 2.0, 3.0, 2.0^53, -2.0^63},
                {0, 1, -1, 127, -128}, {0, 1, 300, -300, 32767}, {0, 1, 100000, -2^31, 2^31 - 1},
                {0, 1, math.maxinteger, math.mininteger, 2^31})
  end},
  -- One number alone: the one-value paths (map and imap items, ex:map)
  -- carry ten of them, so their chunks are lists of numbers, which travel
  -- as number arrays, run in the worker from C (runtime/map_numbers.c),
  -- are read and written in place in the main process and read by the
  -- imap's cursor from their bytes (runtime/cursor.c).
  {name = "a small integer alone", args = function() return list(-7) end},
  {name = "the smallest integer alone", args = function() return list(math.mininteger) end},
  {name = "-0.0 alone", args = function() return list(-0.0) end},
  {name = "a NaN with a payload alone", args = function() return list(nan_payload) end},
  {name = "number arrays: long ones", args = function()
    local floats, ints = {}, {}
    for i = 1, 5000 do floats[i] = i / 7; ints[i] = (i * 7919) % 200 - 100 end
    return list(floats, ints)
  end},
  {name = "number arrays: mixed subtypes, holes, extra keys, metatables stay as they are",
   args = function()
    return list({1, 2, 3, 4.5, 5}, {1.5, 2.5, 3.5, 4.5, 6}, {1, 2, 3, 4, n = 4},
                {1.5, 2.5, nil, 4.5, 5.5}, {1, 2, 3, 4, [6] = 6}, {[2] = 2, [3] = 3, [4] = 4, [5] = 5},
                {1, 2, 3, 4, "5"}, setmetatable({1, 2, 3, 4}, Point), {1, 2, 3})
  end},
  {name = "number arrays: one array shared from two places, and in its own table", args = function()
    local a = {1.5, 2.5, 3.5, 4.5}
    local b = {1, 2, 3, 4, 5}
    return list(a, {a, b, x = a}, b, {[a] = b})
  end},
  {name = "number arrays: integers that widen as they come, across the encoder's batches",
   args = function()
    local late, first, steps = {}, {}, {}
    for i = 1, 1500 do late[i] = i % 9; first[i] = -(i % 9); steps[i] = i % 5 end
    late[1500] = math.mininteger
    first[1] = 1 << 40
    steps[1024], steps[1025], steps[1400] = 300, -70000, 1 << 33
    return list(late, first, steps)
  end},
  {name = "number arrays: keys that only look like 1..n, keys 1..n in the hash part", args = function()
    local string_key = {1, 2, 3, 4}
    string_key["5"] = 5
    local descending = {}
    for i = 40, 1, -1 do descending[i] = i / 4 end
    local non_number_last = {}
    for i = 1, 2000 do non_number_last[i] = i end
    non_number_last[2000] = true
    return list(string_key, descending, non_number_last, {[0] = 0.5, 1.5, 2.5, 3.5, 4.5})
  end},
  {name = "strings: empty, binary, embedded zeros", args = function()
    return list("", "plain", all_bytes, "a\0b\0\0c", all_bytes:reverse():rep(4))
  end},
  {name = "a string long enough to be written from where it is", args = function()
    return list((all_bytes:rep(300)), {inside = (all_bytes:rep(257))})
  end},
  {name = "empty tables", args = function() return list({}, {{}}) end},
  {name = "an array, a hash and a mix", args = function()
    return list({1, 2, 3}, {a = 1, b = "two"}, {10, 20, x = "y", [true] = false, [-1] = -1})
  end},
  {name = "sparse tables and holes", args = function()
    return list({[1] = 1, [3] = 3, [1000000] = 4}, {1, nil, 3, n = 3}, {[2^40] = "far"})
  end},
  {name = "float and odd keys", args = function()
    return list({[1.5] = "a", [-0.5] = "b", [2^53] = "c", [math.huge] = "inf", [""] = "empty"})
  end},
  {name = "nils inside argument lists", args = function()
    return list(nil, 1, nil, {x = nil}, nil)
  end},
  {name = "a table shared within one argument", args = function()
    local s = {v = 1}
    return list({s, s, {s}, k = s})
  end},
  {name = "a table shared across arguments", args = function()
    local s = {v = 1}
    return list(s, s, {s})
  end},
  {name = "cycles", args = function()
    local c = {}
    c.self = c
    local a, b = {}, {}
    a.b, b.a = b, a
    return list(c, {a, b}, a)
  end},
  {name = "a table that is its own metatable", args = function()
    local t = {__index = function() return "dflt" end}
    return list(setmetatable(t, t))
  end},
  {name = "class instances sharing a metatable", args = function()
    local p = setmetatable({x = 3, y = 4}, Point)
    local q = setmetatable({x = 1, y = 1}, Point)
    return list(p, {q, p})
  end, probe = function(args)
    local p, q = args[1], args[2][1]
    return {p:norm2(), (p + q):norm2(), getmetatable(p) == getmetatable(q)}
  end},
  {name = "tables and functions as keys", args = function()
    local k, f = {id = 1}, function() return 1 end
    return list({[k] = "table key", [f] = "function key", [{}] = "fresh", again = k})
  end},
  {name = "a plain function", args = function()
    return list(function(x, y) return x * y + 1 end)
  end, probe = function(args) return {args[1](6, 7)} end},
  {name = "a closure with upvalues of every kind", args = function()
    local n, s, t, b = 42, "str", {1, 2}, false
    return list(function() return n, s, t[2], b end)
  end, probe = function(args) return {args[1]()} end},
  {name = "two closures sharing an upvalue, in one table", args = function()
    local add, get = counter_pair()
    return list({add = add, get = get})
  end, probe = function(args)
    local c = args[1]
    local r = {c.add(5), c.get()}
    c.add(-5)
    return r
  end},
  {name = "two closures sharing an upvalue, as separate arguments", args = function()
    local add, get = counter_pair()
    return list(add, get)
  end, probe = function(args)
    local r = {args[1](7), args[2]()}
    args[1](-7)
    return r
  end},
  {name = "a recursive local function", args = function()
    local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
    return list(fact)
  end, probe = function(args) return {args[1](10)} end},
  {name = "a function whose upvalue is shared with the data", args = function()
    local config = {scale = 3}
    return list(config, function(x) return x * config.scale end)
  end, probe = function(args)
    args[1].scale = 5
    local r = {args[2](2)}
    args[1].scale = 3
    return r
  end},
  {name = "a function using globals (_ENV)", args = function()
    return list(function(x) return type(string), math.floor(x), tostring(x) end)
  end, probe = function(args) return {args[1](2.5)} end},
  {name = "the globals table itself", args = function()
    return list({env = _G, again = _G}, _G)
  end},
  {name = "C functions and modules by name", args = function()
    return list(math.sqrt, string, {fmt = string.format, t = table})
  end, probe = function(args) return {args[1](16), args[2].rep("a", 3)} end},
  {name = "nesting at the limit (200 levels)", deep = true, args = function()
    return list(nest(200))
  end, probe = function(args) return {depth_of(args[1])} end},
  {name = "nesting near the limit, twice, sharing the innermost table", deep = true, args = function()
    local a, b = nest(198), nest(198)
    local inner = {"leaf"}
    local t = a
    while t[1] do t = t[1] end
    t[1] = inner
    t = b
    while t[1] do t = t[1] end
    t[1] = inner
    return list(a, b)
  end},
}

contract.by_name = {}
for _, case in ipairs(cases) do contract.by_name[case.name] = case end

function contract.cases() return cases end

-- Checks an arrival (a list with n) against the case's expected bytes;
-- raises with a message naming the case. Runs the probe on both.
function contract.verify(case_name, bytes, arrival, what)
  local case = contract.by_name[case_name]
  local expected = contract.unpack(bytes)
  local ok, why = contract.same(expected, arrival)
  if not ok then error(("%s, case '%s': %s"):format(what, case_name, why), 0) end
  if case and case.probe then
    local want, got = case.probe(expected), case.probe(arrival)
    local same, why2 = contract.same(want, got)
    if not same then
      error(("%s, case '%s': calling the functions differs: %s"):format(what, case_name, why2), 0)
    end
  end
  return true
end


-- A task function for a case: checks its arguments after the first three
-- (what, case name, expected bytes), functions called too, and returns
-- them as they came.
function contract.echo_case(what, case_name, bytes, ...)
  contract.verify(case_name, bytes, table.pack(...), what .. ", as the worker received it")
  return ...
end

-- The same for one item (map): item_checker(what, case_name, bytes)(v).
function contract.item_checker(what, case_name, bytes)
  return function(v)
    contract.verify(case_name, bytes, table.pack(v), what .. ", as the worker received it")
    return v
  end
end

-- An lmp.Process target for a case: checks its arguments, then sends its
-- verdict and them back through the Queue and through the Pipe end: as
-- one list, or the value alone when there is one (a list would add a
-- level to a value nested at the limit).
-- `case_name` may be a list of names: one argument per case, each the
-- case's argument list.
function contract.process_echo(queue, conn, case_name, bytes, ...)
  local what = "lmp.Process arguments, as the process received them"
  local ok, why = pcall(contract.verify, type(case_name) == "string" and case_name or nil,
                        bytes, table.pack(...), what)
  if ok and type(case_name) == "table" then
    local expected = contract.unpack(bytes)
    for i, name in ipairs(case_name) do
      ok, why = pcall(contract.verify, name, contract.pack(expected[i]), select(i, ...), what)
      if not ok then break end
    end
  end
  local back = table.pack(...)
  if back.n == 1 then back = back[1] end
  queue:put(ok or why)
  queue:put(back)
  conn:send(ok or why)
  conn:send(back)
  conn:close()
end

-- A 100 MB string of every byte value, made the same way on both sides.
function contract.big_string(megabytes)
  return all_bytes:rep((megabytes or 100) * 1024 * 1024 // 256)
end

-- ---- random values ---------------------------------------------------------

-- A generator of its own (splitmix64), so that a seed gives the same values
-- whatever else uses math.random.
local function new_rng(seed)
  local state = seed
  local rng = {}
  function rng.next()
    state = state + 0x9E3779B97F4A7C15
    local z = state
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    return z ~ (z >> 31)
  end
  function rng.below(n) return (rng.next() >> 1) % n end -- 0 .. n-1
  function rng.chance(p) return rng.below(1000000) < p * 1000000 end
  function rng.bytes(n)
    local t = {}
    for i = 1, n do t[i] = string.char(rng.below(256)) end
    return table.concat(t)
  end
  return rng
end
contract.new_rng = new_rng

-- Closures of a few shapes, to give random values functions with upvalues,
-- shared upvalues and globals.
local function closure_one(u) return function() return u end end
local function closure_two(u, w) return function(x) return x, u, w end end
local function closure_pair(u)
  return function() return u end, function(x) u = x end
end
local function closure_globals() return function(x) return type(x), math.type(x), _ENV end end

local function random_number(rng)
  local kind = rng.below(8)
  if kind == 0 then return rng.below(256) - 128 end
  if kind == 1 then return rng.below(1 << 32) - (1 << 31) end
  if kind == 2 then return rng.next() end -- all 64 bits
  if kind == 3 then return ({math.maxinteger, math.mininteger, 0, -1, 127, 128, -129})[rng.below(7) + 1] end
  if kind == 4 then return (string.unpack("<d", rng.bytes(8))) end -- any bits: NaNs too
  if kind == 5 then return ({0.0, -0.0, 1.0, math.huge, -math.huge, 0 / 0, 5e-324})[rng.below(7) + 1] end
  if kind == 6 then return rng.below(1000) / 8 end
  return (rng.below(1 << 20) + 0.0)
end

local function random_string(rng)
  local kind = rng.below(10)
  if kind == 0 then return "" end
  if kind <= 5 then return rng.bytes(rng.below(12) + 1) end
  if kind <= 8 then return ("k" .. rng.below(20)) end -- repeats: keys collide
  -- Rarely, long enough to be written from where it is.
  return rng.chance(0.1) and rng.bytes(70000) or rng.bytes(rng.below(300))
end

-- contract.random_value(rng [, opts]) -> a value: scalars of every kind,
-- tables (arrays, hashes, any keys, metatables), shared references,
-- cycles, closures sharing upvalues, the globals table, C functions.
-- opts.depth (default 6) bounds nesting, opts.size (default 40) the number
-- of objects made.
function contract.random_value(rng, opts)
  opts = opts or {}
  local objects, budget = {}, opts.size or 40
  local make
  local function scalar()
    local kind = rng.below(6)
    if kind == 0 then return rng.chance(0.5) end
    if kind <= 2 then return random_number(rng) end
    return random_string(rng)
  end
  local function key()
    local kind = rng.below(8)
    if kind <= 2 then return random_string(rng) end
    if kind <= 4 then
      local n = random_number(rng)
      if n ~= n then n = 0.5 end -- NaN is no key
      return n
    end
    if kind == 5 then return rng.chance(0.5) end
    if #objects > 0 and rng.chance(0.5) then return objects[rng.below(#objects) + 1] end
    -- A fresh key table says which it is: two keys alike in every way
    -- would leave the comparison to guess which matches which.
    budget = budget - 1
    local k = {key = rng.next()}
    objects[#objects + 1] = k
    return k
  end
  function make(depth)
    local kind = rng.below(10)
    if depth <= 0 or budget <= 0 or kind <= 3 then return scalar() end
    if kind == 4 and #objects > 0 then
      return objects[rng.below(#objects) + 1] -- shared, or a cycle
    end
    budget = budget - 1
    if kind == 5 then
      local f
      local shape = rng.below(5)
      if shape == 0 then f = closure_one(make(depth - 1))
      elseif shape == 1 then f = closure_two(make(depth - 1), make(depth - 1))
      elseif shape == 2 then
        local get, set = closure_pair(make(depth - 1))
        f = {get = get, set = set}
      elseif shape == 3 then f = closure_globals()
      else f = ({math.sqrt, string.format, string, table.concat})[rng.below(4) + 1] end
      objects[#objects + 1] = f
      return f
    end
    if kind == 6 and rng.chance(0.1) then return _G end
    local t = {}
    objects[#objects + 1] = t -- before its contents: it may contain itself
    for i = 1, rng.below(6) do t[i] = make(depth - 1) end
    if rng.chance(0.3) then t.n = rng.below(10) end -- arrays with holes say n
    for _ = 1, rng.below(5) do
      local k = key()
      if k ~= nil then t[k] = make(depth - 1) end
    end
    if rng.chance(0.15) then
      local mt = (#objects > 1 and rng.chance(0.5)) and objects[rng.below(#objects) + 1] or {}
      if type(mt) == "table" and not rawequal(mt, _G) then
        mt.__index = mt.__index or mt
        setmetatable(t, mt)
      end
    end
    return t
  end
  return make(opts.depth or 6)
end

-- contract.random_list(rng [, opts]) -> an argument list (with n, nils
-- included) whose values may share objects with each other.
function contract.random_list(rng, opts)
  local n = rng.below(5)
  local t = {n = n}
  local shared = contract.random_value(rng, opts)
  for i = 1, n do
    local pick = rng.below(6)
    if pick == 0 then t[i] = nil
    elseif pick == 1 then t[i] = shared
    else t[i] = contract.random_value(rng, opts) end
  end
  return t
end

-- ---- what runs on the other side ------------------------------------------

-- A task function: checks that its arguments after the first two are the
-- list `bytes` stands for, then returns them as they came.
function contract.echo_checked(what, bytes, ...)
  local ok, why = contract.same(contract.unpack(bytes), table.pack(...))
  if not ok then error(what .. ", as the worker received it: " .. why, 0) end
  return ...
end

-- A map function for items {index, value}: checks each item against the
-- list of its chunk (chunks[c] = bytes of chunk c, of `size` items), one
-- walk per chunk so that sharing between the items of a chunk counts too.
-- Returns the item as it came.
function contract.chunk_checker(what, chunks, size)
  local walks = {}
  return function(item)
    local c = (item[1] - 1) // size + 1
    local state = walks[c]
    if not state then
      state = {expected = contract.unpack(chunks[c]), walk = contract.new_walk()}
      walks[c] = state
    end
    local ok, why = contract.same(state.expected[item[1] - (c - 1) * size], item, state.walk)
    if not ok then error(what .. ", as the worker received item " .. item[1] .. ": " .. why, 0) end
    return item
  end
end

-- An lmp.Process target: gets (bytes, value) pairs from `inbox`, puts the
-- verdict and the value as it came into `outbox`, until "stop".
function contract.queue_echo(inbox, outbox)
  while true do
    local bytes = inbox:get()
    if bytes == "stop" then return end
    local value = inbox:get()
    local ok, why = contract.same(contract.unpack(bytes)[1], value)
    outbox:put(ok or ("as the process received it: " .. why))
    outbox:put(value)
  end
end

-- ---- the property: random values arrive equal ---------------------------------

-- contract.run_property(lmp, {pool=, seed=, seconds= or count=, log=})
-- sends random values through pool:apply, pool:map (random chunk sizes)
-- and an lmp.Queue to an lmp.Process and back, each checked on both sides.
-- Returns the number of values checked; raises on the first difference,
-- naming the seed and the value's number (LMP_SEED=seed reruns it).
function contract.run_property(lmp, opts)
  local seed = opts.seed
  local rng = new_rng(seed)
  local pool = opts.pool
  local inbox, outbox = lmp.Queue(), lmp.Queue()
  local process = lmp.Process{target = contract.queue_echo, args = {inbox, outbox}}
  process:start()
  local started = os.time()
  local values, round = 0, 0
  local function done()
    if opts.count then return round >= opts.count end
    return os.time() - started >= opts.seconds
  end
  local function fail(what, why)
    inbox:put("stop")
    process:join(5)
    error(("property failed (LMP_SEED=%d, round %d): %s: %s"):format(seed, round, what,
      tostring(why)), 0)
  end
  local function expect(what, expected, arrival, walk)
    local ok, why = contract.same(expected, arrival, walk)
    if not ok then fail(what .. ", as it came back", why) end
  end
  while not done() do
    round = round + 1
    local value_opts = {depth = 1 + rng.below(6), size = 1 + rng.below(40)}
    -- apply: an argument list, its values sharing objects.
    local args = contract.random_list(rng, value_opts)
    local bytes = contract.pack(args)
    local ok, back = pcall(function()
      return table.pack(pool:apply(contract.echo_checked,
        table.pack("apply", bytes, table.unpack(args, 1, args.n))))
    end)
    if not ok then fail("apply", back) end
    expect("apply", contract.unpack(bytes), back)
    values = values + args.n
    -- map: items that share objects, in chunks of a random size.
    local n = 1 + rng.below(12)
    local items, shared = {}, contract.random_value(rng, value_opts)
    for i = 1, n do
      items[i] = {i, rng.chance(0.3) and shared or contract.random_value(rng, value_opts)}
    end
    local size = ({1, 2, 3, 7, n})[rng.below(5) + 1]
    local chunks, expected = {}, {}
    for c = 1, (n + size - 1) // size do
      local list = table.move(items, (c - 1) * size + 1, math.min(c * size, n), 1, {})
      list.n = #list
      chunks[c] = contract.pack(list)
      expected[c] = contract.unpack(chunks[c])
    end
    local ok2, results = pcall(pool.map, pool, contract.chunk_checker("map", chunks, size), items, size)
    if not ok2 then fail("map (chunksize " .. size .. ")", results) end
    for c = 1, #chunks do
      local walk = contract.new_walk()
      for k = 1, expected[c].n do
        expect("map (chunksize " .. size .. ") item " .. ((c - 1) * size + k),
          expected[c][k], results[(c - 1) * size + k], walk)
      end
    end
    values = values + n
    -- A Queue to a process of its own and back.
    local value = contract.random_value(rng, value_opts)
    local one = contract.pack(table.pack(value))
    inbox:put(one)
    inbox:put(value)
    local got, verdict = pcall(outbox.get, outbox, true, 60)
    if not got or verdict ~= true then fail("Queue", verdict) end
    expect("Queue", contract.unpack(one)[1], outbox:get(true, 60))
    values = values + 1
    if opts.log and round % 1000 == 0 then opts.log(round, values) end
  end
  inbox:put("stop")
  process:join()
  inbox:close()
  outbox:close()
  return values, round
end

return contract

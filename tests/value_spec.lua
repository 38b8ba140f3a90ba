-- The value format (runtime/value_format.md and docs/reference.md, "The value format"): what
-- lmp.dumps and lmp.loads keep, what they refuse, and that no bytes given
-- to lmp.loads crash it. runtime/value_format.md describes the bytes.
-- busted runs a spec under an environment of its own; the functions here
-- should see the real globals, as they do in a script.
local describe, it, setup, teardown, assert, pcall =
  describe, it, setup, teardown, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"
local lfs = require "lfs"

local core = require "lmp.core"
local contract = require "contract"

-- A number array is written from Lua's array part read in place, and
-- its table written in place when decoded (runtime/table_peek.c), or both
-- through the C API (core.table_peek(false) forces that). fn(arg) with the
-- in-place path off.
local function through_the_api(fn, arg)
  local was_on = core.table_peek()
  core.table_peek(false)
  local ok, result = pcall(fn, arg)
  core.table_peek(was_on)
  if not ok then error(result, 0) end
  return result
end

-- Every round trip here encodes both ways, which must give the same bytes.
local function dumps_both_ways(value)
  local through_api = through_the_api(lmp.dumps, value)
  local bytes = lmp.dumps(value)
  if bytes ~= through_api then
    error("the encoding read in place differs from the one through the C API", 2)
  end
  return bytes
end

-- Decoding too: both must give what contract.same calls the same value.
local function loads_both_ways(bytes)
  local through_api = through_the_api(lmp.loads, bytes)
  local value = lmp.loads(bytes)
  local same, why = contract.same(through_api, value)
  if not same then error("decoded in place, not as through the C API: " .. why, 2) end
  return value
end

local function round_trip(value) return loads_both_ways(dumps_both_ways(value)) end

local function bits(x) return string.pack("<d", x) end

local function read_file(path) return assert(helpers.read_file(path)) end

local function write_file(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

-- Tags and helpers for hand-made encodings (value_format.md).
local VERSION = string.char(lmp.dumps(nil):byte(1))
local T_STRING, T_TABLE, T_FUNCTION = "\7", "\8", "\12"
local T_FLOAT_ARRAY, T_INT_ARRAY = "\16", "\17"
local function varint(n)
  local out = {}
  repeat
    local b = n & 0x7f
    n = n >> 7
    out[#out + 1] = string.char(b | (n ~= 0 and 0x80 or 0))
  until n == 0
  return table.concat(out)
end

-- Runs `code` in a fresh interpreter (the suite's own: lua5.4, or the
-- ASan runner) with the bytes of `value` in the file named by arg[1];
-- returns its exit status, output and error output.
local function load_elsewhere(value, code)
  local path = os.tmpname()
  write_file(path, lmp.dumps(value))
  local status, out, err = helpers.run_lua(
    'local lmp = require "lmp"\n' ..
    'local f = assert(io.open(arg[1], "rb")) local bytes = f:read("a") f:close()\n' .. code,
    os.getenv("LMP_TEST_LUA"), path)
  os.remove(path)
  return status, out, err
end

-- A userdata type with __lmp_serialize: a closed file (it holds nothing)
-- given a metatable of its own, its fields in a side table.
local point_fields = setmetatable({}, {__mode = "k"})
local Point = {__name = "value_spec.Point"}
Point.__index = function(p, key) return point_fields[p][key] end
Point.__lmp_serialize = function(p)
  return "value_spec.Point", {x = p.x, y = p.y}
end
local function new_point(x, y)
  local f = io.tmpfile()
  f:close()
  local p = debug.setmetatable(f, Point)
  point_fields[p] = {x = x, y = y}
  return p
end
lmp.register("value_spec.Point", function(fields) return new_point(fields.x, fields.y) end)
-- The constructor the fuzz corpus's custom values name.
lmp.register("lmp.fuzz.point", function(data) return data end)

describe("value format", function()
  describe("round trips", function()
    it("nil and booleans", function()
      assert.is_nil(round_trip(nil))
      assert.equal(true, round_trip(true))
      assert.equal(false, round_trip(false))
    end)

    it("integers keep their subtype and all 64 bits", function()
      local values = {0, 1, -1, 127, -128, 128, -129, 1 << 31, -(1 << 31), (1 << 31) - 1,
                      -(1 << 31) - 1, 1 << 32, math.maxinteger, math.mininteger}
      for bit = 0, 63 do
        values[#values + 1] = 1 << bit
        values[#values + 1] = ~(1 << bit)
      end
      values[#values + 1] = 0x5555555555555555
      values[#values + 1] = 0x2aaaaaaaaaaaaaaa
      for _, v in ipairs(values) do
        local r = round_trip(v)
        assert.equal("integer", math.type(r))
        assert.equal(v, r)
      end
      assert.equal("float", math.type(round_trip(3.0)))
      assert.equal("float", math.type(round_trip(2 ^ 63)))
    end)

    it("floats bit for bit: NaN, infinities, -0.0, subnormals", function()
      local payload_nan = string.unpack("<d", "\1\2\3\0\0\0\xf8\x7f")
      local values = {0.0, -0.0, 0 / 0, -(0 / 0), payload_nan, math.huge, -math.huge,
                      0.1, -2.5, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                      math.pi, 2 ^ 53 + 0.0}
      for _, v in ipairs(values) do
        local r = round_trip(v)
        assert.equal("float", math.type(r))
        assert.equal(bits(v), bits(r))
      end
    end)

    it("strings of any bytes, \\0 and a multi-megabyte one included", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      for _, s in ipairs {"", "\0", "a\0b", all, ("\0"):rep(1000), ("x"):rep(127),
                          ("x"):rep(128), ("y"):rep(16384)} do
        assert.equal(s, round_trip(s))
      end
      local big = all:rep(8 * 4096) -- 8 MB
      assert.equal(big, round_trip(big))
    end)

    it("a string is its tag, its length in 7-bit groups (low first) and its bytes", function()
      for _, length in ipairs {0, 1, 127, 128, 300, 16383, 16384, 65535, (1 << 21) + 5} do
        local s = ("s"):rep(length)
        assert.equal(VERSION .. T_STRING .. varint(length) .. s, lmp.dumps(s))
      end
    end)

    it("a table of many string keys of every short length and integer counts", function()
      -- The shape of a counting job's result (k-mers -> counts), the
      -- encoder's and decoder's fast paths for string keys.
      local counts, letters, n = {}, {"A", "C", "G", "T"}, 0
      for length = 1, 200 do
        for i = 1, length <= 18 and 200 or 3 do
          local key = {}
          for j = 1, length do key[j] = letters[(i * 7 + j * j) % 4 + 1] end
          key = table.concat(key) .. i
          if not counts[key] then n = n + 1 end
          counts[key] = i * 1000003 - length
        end
      end
      local back, seen = round_trip(counts), 0
      for key, value in pairs(back) do
        seen = seen + 1
        assert.equal(counts[key], value)
        assert.equal("integer", math.type(value))
      end
      assert.equal(n, seen)
    end)

    it("tables with keys of any type", function()
      local key_table, key_function = {"k"}, function() end
      local t = {1, 2, 3, [0] = "zero", [-1] = "minus", [1.5] = "float", [2 ^ 53] = "big",
                 [math.maxinteger] = "max", [true] = "yes", [false] = "no",
                 name = "n", ["with space"] = 1, ["\0"] = "nul", [key_table] = "table",
                 [key_function] = "function"}
      local r = round_trip(t)
      local count = 0
      for k, v in pairs(r) do
        count = count + 1
        if type(k) == "table" then
          assert.same({"k"}, k)
          assert.equal("table", v)
        elseif type(k) == "function" then
          assert.equal("function", v)
        else
          assert.equal(t[k], v)
        end
      end
      local expected = 0
      for _ in pairs(t) do expected = expected + 1 end
      assert.equal(expected, count)
    end)

    it("arrays with holes and sparse tables, without sending the holes", function()
      assert.same({1, nil, 3, [10] = 10}, round_trip({1, nil, 3, [10] = 10}))
      -- A border of this table is 2^26: it must not be sent as an array.
      local sparse = {1, 2, 3, 4, 5}
      for k = 3, 26 do
        sparse[1 << k] = k
        sparse[(1 << k) + 1] = k
      end
      local bytes = lmp.dumps(sparse)
      assert.is_true(#bytes < 2000)
      assert.same(sparse, lmp.loads(bytes))
    end)

    it("nested tables", function()
      local t = {a = {b = {c = {d = {1, 2, {3}}}}}, list = {{1}, {2}, {3}}}
      assert.same(t, round_trip(t))
    end)

    it("shared references stay shared", function()
      local shared = {1, 2}
      local r = round_trip({a = shared, b = shared, list = {shared}})
      assert.same({1, 2}, r.a)
      assert.equal(r.a, r.b)
      assert.equal(r.a, r.list[1])
    end)

    it("shared references and cycles among many objects: the first ones and those after", function()
      -- The decoder keeps its first objects apart from the rest (stack
      -- slots, then a table): references both ways across that line.
      local nodes = {}
      for i = 1, 40 do nodes[i] = {i = i} end
      for i = 1, 40 do
        nodes[i].first, nodes[i].last = nodes[1], nodes[40]
        nodes[i].next = nodes[i % 40 + 1]
        nodes[i].f = function() return nodes[i].i, nodes[1].i end
      end
      local r = round_trip(nodes)
      for i = 1, 40 do
        assert.equal(i, r[i].i)
        assert.equal(r[1], r[i].first)
        assert.equal(r[40], r[i].last)
        assert.equal(r[i % 40 + 1], r[i].next)
        assert.same({i, 1}, {r[i].f()})
      end
      -- A reference to an object that is not decoded yet is malformed,
      -- below the line as above it: a list of k empty tables (ids 2 ..
      -- k + 1, the list itself is 1), then a reference.
      local function list_then_ref(k, id)
        local empty = "\8" .. ("\0"):rep(8)
        return "\2\8" .. string.pack("<I4I4", k + 1, 0) .. empty:rep(k) .. "\10" .. string.char(id)
      end
      for _, k in ipairs{2, 12} do
        local r = lmp.loads(list_then_ref(k, k + 1))
        assert.equal(r[k], r[k + 1])
        local itself = lmp.loads(list_then_ref(k, 1))
        assert.equal(itself, itself[k + 1])
        local ok, err = pcall(lmp.loads, list_then_ref(k, k + 2))
        assert.is_false(ok)
        assert.matches("malformed data %(reference to nothing", tostring(err))
      end
    end)

    it("cycles", function()
      local t = {name = "root", child = {}}
      t.self = t
      t.child.parent = t
      t[t] = t
      local r = round_trip(t)
      assert.equal(r, r.self)
      assert.equal(r, r.child.parent)
      assert.equal(r, r[r])
      assert.equal("root", r.name)
    end)

    it("metatables, shared between tables as they were", function()
      local mt = {__index = function(_, k) return k .. "!" end, kind = "class"}
      local r = round_trip({setmetatable({}, mt), setmetatable({1}, mt)})
      assert.equal("x!", r[1].x)
      assert.equal(getmetatable(r[1]), getmetatable(r[2]))
      assert.equal("class", getmetatable(r[2]).kind)
      assert.equal(1, r[2][1])
    end)

    it("Lua functions with their upvalues", function()
      local n, s, t = 41, "answer", {1, 2}
      local function f(x) return n + x, s, t[2] end
      local g = round_trip(f)
      assert.are_not.equal(f, g)
      assert.same({42, "answer", 2}, {g(1)})
    end)

    it("closures that share an upvalue still share it", function()
      local function counter()
        local count = 0
        return function() count = count + 1 return count end, function() return count end
      end
      local increment, get = counter()
      increment()
      local r = round_trip({increment = increment, get = get})
      r.increment()
      r.increment()
      assert.equal(3, r.get())
      assert.equal(1, get())
    end)

    it("a recursive local function", function()
      local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
      local r = round_trip(fib)
      assert.equal(55, r(10))
      local name, value = debug.getupvalue(r, 1)
      assert.equal("fib", name)
      assert.equal(r, value)
    end)

    it("the globals table as an upvalue arrives as the receiver's _G", function()
      local function globals() return _G, print end
      local r = round_trip(globals)
      local env_name, env = debug.getupvalue(r, 1)
      assert.equal("_ENV", env_name)
      assert.is_true(rawequal(_G, env))
      assert.is_true(rawequal(_G, (r())))
      assert.is_true(rawequal(_G, round_trip(_G)))
      assert.is_true(#lmp.dumps(_G) <= 2)
    end)

    it("the globals an arriving function sees are the receiver's", function()
      local function marker() return lmp_value_spec_marker end
      local status, out = load_elsewhere(marker,
        'lmp_value_spec_marker = "receiver" io.write(lmp.loads(bytes)())')
      assert.equal(0, status)
      assert.equal("receiver", out)
    end)
  end)

  -- A sequence of only floats or only integers is one typed block
  -- (FLOAT_ARRAY, INT_ARRAY): every value keeps its subtype and bits.
  describe("number arrays", function()
    local function tag_of(value) return dumps_both_ways(value):sub(2, 2) end

    it("floats round-trip bit for bit: NaN payloads, -0.0, infinities, subnormals", function()
      local nan_payload = string.unpack("<d", "\1\0\0\0\0\0\xf8\x7f")
      local floats = {0.5, -0.0, 0 / 0, nan_payload, math.huge, -math.huge, 5e-324, 3.0}
      assert.equal(T_FLOAT_ARRAY, tag_of(floats))
      local back = round_trip(floats)
      assert.equal(#floats, #back)
      for i = 1, #floats do
        assert.equal(bits(floats[i]), bits(back[i]))
        assert.equal("float", math.type(back[i]))
      end
    end)

    it("integers of every width round-trip, in the narrowest width", function()
      for _, case in ipairs {
        {{1, -2, 3, 127, -128}, 1}, {{1, 2, 3, 300, -300}, 2},
        {{1, 2, 3, 100000, -100000}, 4}, {{1, 2, 3, math.maxinteger, math.mininteger}, 8},
      } do
        local ints, width = case[1], case[2]
        local bytes = dumps_both_ways(ints)
        assert.equal(T_INT_ARRAY, bytes:sub(2, 2))
        assert.equal(1 + 1 + 4 + 1 + #ints * width, #bytes)
        local back = loads_both_ways(bytes)
        assert.same(ints, back)
        for i = 1, #ints do assert.equal("integer", math.type(back[i])) end
      end
      local big = {}
      for i = 1, 100000 do big[i] = i % 100 end
      assert.equal(1 + 1 + 4 + 1 + 100000, #dumps_both_ways(big))
      assert.same(big, round_trip(big))
    end)

    it("tables that are not one take the general encoding", function()
      local hole = {1.5, 2.5, nil, 4.5, 5.5}
      for _, t in ipairs {
        {1, 2, 3, 4.5, 5}, {1.5, 2.5, 3.5, 4.5, 5}, {1, 2, 3, 4, n = 4}, hole,
        {1, 2, 3, 4, "5"}, {[2] = 2, [3] = 3, [4] = 4, [5] = 5}, {1, 2, 3},
        setmetatable({1, 2, 3, 4}, {__index = {}}), {1, 2, 3, 4, [6] = 6}, {"1", "2", "3", "4"},
      } do
        assert.equal(T_TABLE, tag_of(t):gsub("\9", T_TABLE))
        local back = round_trip(t)
        for k, v in pairs(t) do assert.equal(bits(v + 0.0), bits(back[k] + 0.0)) end
        for k, v in pairs(back) do assert.equal(math.type(t[k]), math.type(v)) end
      end
    end)

    it("integers wider than the ones before them, early, late and across batches", function()
      -- The encoder writes each integer in the width of those before it
      -- and widens what it wrote when one does not fit: the bytes must
      -- come out in the narrowest width of the whole array.
      local function check(ints, width)
        local bytes = dumps_both_ways(ints)
        assert.equal(T_INT_ARRAY, bytes:sub(2, 2))
        assert.equal(width, bytes:byte(7))
        assert.equal(1 + 1 + 4 + 1 + #ints * width, #bytes)
        local back = loads_both_ways(bytes)
        assert.equal(#ints, #back)
        for i = 1, #ints do
          if back[i] ~= ints[i] or math.type(back[i]) ~= "integer" then
            error(("element %d: %s, expected %d"):format(i, tostring(back[i]), ints[i]))
          end
        end
      end
      for _, n in ipairs {4, 1023, 1024, 1025, 3000} do
        local ints = {}
        for i = 1, n do ints[i] = i % 100 - 50 end
        check(ints, 1)
        ints[1] = 1000
        check(ints, 2)
        ints[n // 2] = -100000
        check(ints, 4)
        ints[n] = math.mininteger
        check(ints, 8)
      end
      local steps = {}
      for i = 1, 2100 do steps[i] = i % 7 end
      steps[1024], steps[1025], steps[2100] = 200, 40000, 1 << 40
      check(steps, 8)
    end)

    it("a million of each, and one that is not one at its last element", function()
      -- A tenth of it under valgrind, whose allocator runs out of room
      -- for the copies a million-element assert.same makes.
      local n = helpers.instrumented and 100000 or 1000000
      local floats, ints = {}, {}
      for i = 1, n do floats[i] = i + 0.25; ints[i] = i % 100 end
      assert.equal(T_FLOAT_ARRAY, tag_of(floats))
      assert.equal(T_INT_ARRAY, tag_of(ints))
      assert.equal(1 + 1 + 4 + 1 + n, #dumps_both_ways(ints))
      assert.same(floats, round_trip(floats))
      assert.same(ints, round_trip(ints))
      ints[n], floats[n] = "last", 7
      assert.equal(T_TABLE, tag_of(ints))
      assert.equal(T_TABLE, tag_of(floats))
      local back = round_trip(floats)
      assert.equal("integer", math.type(back[n]))
      assert.equal(0.25 + n - 1, back[n - 1])
      assert.equal("last", round_trip(ints)[n])
    end)

    it("keys that only look like 1..n take the general encoding and keep their types", function()
      -- "5" reads as 5 to lua_tointeger, and comes fifth in the
      -- traversal: it is still a string key.
      local string_key = {1, 2, 3, 4}
      string_key["5"] = 5
      local float_key = {1.5, 2.5, 3.5, 4.5}
      float_key[5.5] = 1.5
      local zero_key = {[0] = 0, 1, 2, 3, 4}
      -- Keys 1..n put in from the top down live in the hash part, in no
      -- particular order: whatever the encoding, each value stays at its
      -- key.
      local descending = {}
      for i = 300, 1, -1 do descending[i] = i * 3 end
      for _, t in ipairs {string_key, float_key, zero_key, descending} do
        local back = round_trip(t)
        local keys = 0
        for k, v in pairs(t) do
          keys = keys + 1
          assert.equal(math.type(v), math.type(back[k]))
          assert.equal(v, back[k])
        end
        for _ in pairs(back) do keys = keys - 1 end
        assert.equal(0, keys)
      end
      assert.equal(T_TABLE, tag_of(string_key))
      assert.is_nil(round_trip(string_key)[5])
      assert.equal(5, round_trip(string_key)["5"])
    end)

    it("are read from and written to Lua's array part in place, as through the C API", function()
      -- The mirror of Lua's table layout passed its check at load (on the
      -- Lua 5.4 lmp is built for, it must), and core.table_peek counts
      -- the tables it read: a test that the fast path runs at all.
      assert.is_true((core.table_peek()))
      local n = 100000
      local floats, ints, wide = {}, {}, {}
      for i = 1, n do floats[i] = i + 0.25; ints[i] = i % 100; wide[i] = i * 1000 end
      wide[n] = math.mininteger
      for _, t in ipairs {floats, ints, wide, {1.5, 2.5, 3.5, 4.5, 5.5}} do
        local _, before = core.table_peek()
        local bytes = dumps_both_ways(t)
        assert.equal(before + 1, select(2, core.table_peek()))
        -- Its table on arrival is written in place too.
        assert.same(t, loads_both_ways(bytes))
        assert.equal(before + 2, select(2, core.table_peek()))
      end
      local _, before = core.table_peek()
      core.table_peek(false)
      lmp.dumps(floats)
      assert.equal(before, select(2, core.table_peek()))
      core.table_peek(true)
    end)

    it("nils after the last number and a value past Lua's length hint are seen in place", function()
      -- Grown by appending, 5 values in an array part of 8; after #,
      -- Lua keeps 5 as a hint below the part's size.
      local appended = {}
      for i = 1, 5 do appended[i] = i * 1.5 end
      local _ = #appended
      -- 16 cells; # finds the border 9 and keeps it as the hint, with 11
      -- past it: not a number array.
      local beyond = {1, 2, 3, 4, 5, 6, 7, 8, 9, nil, 11, nil, nil, nil, nil, nil}
      _ = #beyond
      local _, before = core.table_peek()
      assert.equal(T_FLOAT_ARRAY, tag_of(appended))
      assert.equal(T_TABLE, tag_of(beyond))
      assert.equal(before + 1, select(2, core.table_peek()))
      local back = round_trip(beyond)
      assert.equal(11, back[11])
      assert.is_nil(back[10])
      assert.same(appended, round_trip(appended))
    end)

    it("an array met twice is one table on arrival, also as its own element's neighbour", function()
      local a = {1.5, 2.5, 3.5, 4.5}
      local back = round_trip({a, a, {a}, b = a})
      assert.equal(back[1], back[2])
      assert.equal(back[1], back[3][1])
      assert.equal(back[1], back.b)
      assert.same(a, back[1])
    end)
  end)

  describe("names", function()
    it("C functions and module tables travel by name", function()
      for _, v in ipairs {math.sqrt, string.format, print, string, math, io.write, io.stdout,
                          package.loaded, coroutine.wrap} do
        local bytes = lmp.dumps(v)
        assert.is_true(#bytes < 40)
        assert.is_true(rawequal(v, lmp.loads(bytes)))
      end
    end)

    it("a module required from a file on package.path travels by name", function()
      local dir = os.tmpname()
      os.remove(dir)
      assert(lfs.mkdir(dir))
      write_file(dir .. "/value_spec_module.lua",
        "local M = {} function M.hello() return 'hello' end M.data = {1} return M")
      local saved_path = package.path
      package.path = dir .. "/?.lua;" .. package.path
      local ok, err = pcall(function()
        local m = require "value_spec_module"
        assert.is_true(rawequal(m, round_trip(m)))
        assert.is_true(rawequal(m.hello, round_trip(m.hello)))
        assert.is_true(rawequal(m.data, round_trip(m.data)))
        assert.truthy(lmp.dumps(m.hello):find("value_spec_module", 1, true))
        -- Elsewhere, without the module on its path: the error names it.
        local status, out = load_elsewhere(m.hello,
          'local ok, err = pcall(lmp.loads, bytes) io.write(tostring(ok), " ", err)')
        assert.equal(0, status)
        assert.truthy(out:find("^false lmp: cannot find module 'value_spec_module'"))
      end)
      package.path = saved_path
      package.loaded.value_spec_module = nil
      os.remove(dir .. "/value_spec_module.lua")
      lfs.rmdir(dir)
      assert(ok, err)
    end)

    it("lmp.register(name, value) names any value", function()
      local config = {answer = 42}
      local handler = function() return "handled" end
      lmp.register("value_spec.config", config)
      lmp.register("value_spec.handler", handler)
      local r = round_trip({config, handler, config})
      assert.is_true(rawequal(config, r[1]))
      assert.is_true(rawequal(handler, r[2]))
      assert.is_true(rawequal(config, r[3]))
    end)

    it("a name missing on arrival is an error that names it", function()
      local thing = {}
      lmp.register("value_spec.only_here", thing)
      local status, out = load_elsewhere({value = thing},
        'local ok, err = pcall(lmp.loads, bytes) io.write(tostring(ok), " ", err)')
      assert.equal(0, status)
      assert.truthy(out:find("^false lmp: no value is registered as 'value_spec.only_here'"))
    end)
  end)

  describe("userdata with __lmp_serialize", function()
    it("round-trips through its registered constructor", function()
      local p = new_point(3, 4)
      local r = round_trip({p, p, label = "points"})
      assert.equal("userdata", type(r[1]))
      assert.is_false(rawequal(p, r[1]))
      assert.equal(Point, getmetatable(r[1]))
      assert.equal(3, r[1].x)
      assert.equal(4, r[1].y)
      assert.is_true(rawequal(r[1], r[2]))
    end)

    it("a table whose metatable has __lmp_serialize travels the same way, not field by field", function()
      -- Its fields could not travel (a C closure); what it says goes instead.
      local Handle = {__lmp_serialize = function(h) return "value_spec.Handle", h.id end}
      local made = 0
      lmp.register("value_spec.Handle", function(id)
        made = made + 1
        return setmetatable({id = id, here = true}, Handle)
      end)
      local h = setmetatable({id = 7, bound = coroutine.running}, Handle)
      -- One decode (round_trip decodes twice): one construction.
      local r = lmp.loads(lmp.dumps({h, h}))
      assert.equal(Handle, getmetatable(r[1]))
      assert.same({7, true}, {r[1].id, r[1].here})
      assert.is_nil(r[1].bound)
      assert.is_true(rawequal(r[1], r[2]))
      assert.equal(1, made)
    end)

    it("a constructor missing on arrival is an error that names it", function()
      local bytes = lmp.dumps(new_point(1, 2)):gsub("value_spec%.Point", "value_spec.Gone1")
      local ok, err = pcall(lmp.loads, bytes)
      assert.is_false(ok)
      assert.truthy(err:find("no constructor is registered as 'value_spec.Gone1'", 1, true))
    end)

    it("an __lmp_serialize that returns no name is refused", function()
      local p = new_point(1, 2)
      local bad = setmetatable({__lmp_serialize = function() return nil end}, {__index = Point})
      debug.setmetatable(p, bad)
      local ok, err = pcall(lmp.dumps, {p})
      assert.is_false(ok)
      assert.equal("serialize", err.kind)
      assert.truthy(err.message:find("returned no name", 1, true))
    end)
  end)

  describe("refusals", function()
    local function refusal(value)
      local ok, err = pcall(lmp.dumps, value)
      assert.is_false(ok)
      assert.equal("table", type(err))
      assert.equal("serialize", err.kind)
      assert.equal("lmp serialize error: " .. err.message, tostring(err))
      return err.message, err
    end

    it("a plain userdata, naming the path and the fix", function()
      local f = io.tmpfile()
      local message, err = refusal({1, {log = f}})
      f:close()
      assert.equal("cannot send userdata (FILE*) at [2].log: open it inside the worker, " ..
                   "or give it a __lmp_serialize metamethod", message)
      assert.equal("[2].log", err.path)
    end)

    it("light userdata", function()
      local message = refusal({pointer = debug.upvalueid(round_trip, 1)})
      assert.truthy(message:find("^cannot send light userdata at pointer: "))
    end)

    it("coroutines", function()
      local message = refusal({co = coroutine.create(print)})
      assert.truthy(message:find("^cannot send a coroutine at co: "))
      assert.truthy(refusal(coroutine.running()):find("^cannot send a coroutine: "))
    end)

    it("a C function with no name", function()
      local message = refusal({step = coroutine.wrap(function() end)})
      assert.truthy(message:find("^cannot send a C function at step: .*lmp%.register"))
      assert.truthy(refusal(string.gmatch("", "")):find("^cannot send a C function: "))
    end)

    it("inside upvalues, keys and metatables, with the path to it", function()
      local f = io.tmpfile()
      local function uses_file() return f end
      assert.truthy(refusal({fn = uses_file}):find("at fn(upvalue 'f')", 1, true))
      assert.truthy(refusal({[f] = 1}):find("at [<a key>]", 1, true))
      assert.truthy(refusal(setmetatable({}, {log = f})):find("at (metatable).log", 1, true))
      f:close()
    end)

    it("a table nested deeper than the limit, with a clear error", function()
      local function nest(depth)
        local root = {}
        local t = root
        for _ = 2, depth do t[1] = {} t = t[1] end
        return root
      end
      local r = round_trip(nest(200))
      for _ = 1, 199 do r = r[1] end
      assert.same({}, r)
      for _, depth in ipairs {201, 1000, 100000} do
        local message = refusal(nest(depth))
        assert.truthy(message:find("^cannot send a value nested deeper than 200 levels at %.%.%.%[1%]"))
        assert.truthy(#message < 500)
      end
    end)
  end)

  describe("loads", function()
    local samples = {
      lmp.dumps(nil), lmp.dumps(-12345678901), lmp.dumps("a string"),
      lmp.dumps({1, 2.5, "x", {nested = true}, [true] = false}),
      lmp.dumps(setmetatable({1}, {__index = {}})),
      lmp.dumps({math.sqrt, string}),
      lmp.dumps(new_point(1, 2)),
    }
    local up, other = 1, {2}
    local function_bytes = lmp.dumps(function() return up, other end)
    samples[#samples + 1] = function_bytes
    do
      samples[#samples + 1] = lmp.dumps({function() return up, other end, function() up = 2 end})
      local t = {}
      t.t = t
      samples[#samples + 1] = lmp.dumps({t, t})
    end

    it("bad argument #1 when not given a string", function()
      local ok, err = pcall(lmp.loads, 42)
      assert.is_false(ok)
      assert.truthy(err:find("bad argument #1 to 'loads'", 1, true))
      ok, err = pcall(lmp.loads)
      assert.is_false(ok)
      assert.truthy(err:find("bad argument #1 to 'loads'", 1, true))
    end)

    it("every prefix of an encoding is an error", function()
      for _, bytes in ipairs(samples) do
        for cut = 0, #bytes - 1 do
          local ok, err = pcall(lmp.loads, bytes:sub(1, cut))
          assert.is_false(ok)
          assert.equal("string", type(err))
        end
      end
    end)

    it("trailing bytes are an error", function()
      for _, bytes in ipairs(samples) do
        local ok, err = pcall(lmp.loads, bytes .. "\0")
        assert.is_false(ok)
        assert.truthy(err:find("trailing bytes", 1, true))
      end
    end)

    it("a wrong version byte is an error that says so", function()
      for _, version in ipairs {0, 1, 3, 255, 0x1b} do
        local ok, err = pcall(lmp.loads, string.char(version) .. samples[2]:sub(2))
        assert.is_false(ok)
        assert.truthy(err:find(("not lmp data, or format version %d"):format(version), 1, true))
      end
    end)

    it("huge length and count fields are errors, not allocations", function()
      for _, bytes in ipairs {
        VERSION .. T_STRING .. varint(1 << 62) .. "abc",
        VERSION .. T_STRING .. varint(math.maxinteger) .. "abc",
        VERSION .. T_TABLE .. string.pack("<I4I4", 0xffffffff, 0),
        VERSION .. T_TABLE .. string.pack("<I4I4", 0, 0xffffffff) .. ("\0"):rep(100),
        VERSION .. T_TABLE .. string.pack("<I4I4", 1000, 1000) .. ("\0"):rep(2500),
        VERSION .. T_FUNCTION .. function_bytes:sub(3, 7) .. string.pack("<I4", 0xffffffff),
        VERSION .. T_FLOAT_ARRAY .. string.pack("<I4", 0xffffffff) .. ("\0"):rep(100),
        VERSION .. T_FLOAT_ARRAY .. string.pack("<I4", 13) .. ("\0"):rep(100),
        VERSION .. T_INT_ARRAY .. string.pack("<I4", 0xffffffff) .. "\1" .. ("\0"):rep(100),
        VERSION .. T_INT_ARRAY .. string.pack("<I4", 26) .. "\4" .. ("\0"):rep(100),
        VERSION .. T_INT_ARRAY .. string.pack("<I4", 4) .. "\5" .. ("\0"):rep(100),
        -- two arrays each within the bytes, together beyond them
        VERSION .. T_TABLE .. string.pack("<I4I4", 2, 0) .. T_INT_ARRAY .. string.pack("<I4", 60)
          .. "\1" .. T_INT_ARRAY .. string.pack("<I4", 60) .. "\1" .. ("\0"):rep(60),
      } do
        local ok, err = pcall(lmp.loads, bytes)
        assert.is_false(ok)
        assert.truthy(err:find("^lmp.loads: malformed data"))
      end
    end)

    it("random byte flips give a value or an error, never a crash", function()
      local random = math.random
      math.randomseed(20240501)
      for _ = 1, 3000 do
        local bytes = samples[random(#samples)]
        local flipped = {bytes:byte(1, -1)}
        for _ = 1, random(3) do
          local at = random(#flipped)
          flipped[at] = flipped[at] ~ (1 << random(0, 7))
        end
        local ok, err = pcall(lmp.loads, string.char(table.unpack(flipped)))
        if not ok then assert.equal("string", type(err)) end
      end
      math.randomseed()
    end)

    it("bytecode from another Lua version or word size is refused, saying why", function()
      local bytes = function_bytes
      assert.equal(T_FUNCTION, bytes:sub(2, 2))
      local function with_header(version, pointer, integer, float)
        return bytes:sub(1, 2) .. string.pack("<I2BBB", version, pointer, integer, float) ..
               bytes:sub(8)
      end
      local ok, err = pcall(lmp.loads, with_header(503, 8, 8, 8))
      assert.is_false(ok)
      assert.equal("lmp.loads: a function was compiled by Lua 5.3 with 8-byte pointers, " ..
                   "8-byte integers and 8-byte floats; this process runs Lua 5.4 with 8, 8 and 8",
                   err)
      ok, err = pcall(lmp.loads, with_header(504, 4, 4, 8))
      assert.is_false(ok)
      assert.truthy(err:find("compiled by Lua 5.4 with 4-byte pointers, 4-byte integers", 1, true))
    end)

    describe("the fuzz corpus", function()
      local dir = helpers.root .. "/tests/fuzz/corpus/"
      local valid, malformed = {}, {}
      for entry in lfs.dir(dir) do
        if entry:match("^valid%-.*%.bin$") then valid[#valid + 1] = entry end
        if entry:match("^malformed%-.*%.bin$") then malformed[#malformed + 1] = entry end
      end
      table.sort(valid)
      table.sort(malformed)

      it("has both kinds", function()
        assert.is_true(#valid >= 20)
        assert.is_true(#malformed >= 50)
      end)

      it("valid inputs load, and load again after dumps", function()
        for _, name in ipairs(valid) do
          local ok, value = pcall(lmp.loads, read_file(dir .. name))
          assert(ok, name .. ": " .. tostring(value))
          local again = lmp.loads(lmp.dumps(value))
          assert.equal(type(value), type(again))
        end
      end)

      it("malformed inputs are errors", function()
        for _, name in ipairs(malformed) do
          local ok, err = pcall(lmp.loads, read_file(dir .. name))
          assert(not ok, name .. " loaded")
          assert(type(err) == "string", name .. ": error is a " .. type(err))
        end
      end)
    end)
  end)
  describe("loads with {functions = false}", function()
    it("refuses functions and values sent by name, and loads plain data", function()
      local ok, err = pcall(lmp.loads, lmp.dumps({f = function() end}), {functions = false})
      assert.is_false(ok)
      assert.matches("a function at byte %d+, and functions are refused %(loads was called with {functions = false}%)", err)
      ok, err = pcall(lmp.loads, lmp.dumps({os.execute}), {functions = false})
      assert.is_false(ok)
      assert.matches("a value sent by name", err)
      assert.same({1, "two", {3.5}}, lmp.loads(lmp.dumps({1, "two", {3.5}}), {functions = false}))
      assert.has_error(function() lmp.loads("x", 5) end,
        "bad argument #2 to 'loads' (options table expected, got number)")
    end)
  end)
  it("long strings joined in by dumps round-trip in place, several and nested", function()
    local a, b = ("a"):rep(70000), ("\0b"):rep(50000)
    local v = {a, {x = b, y = "short"}, a, n = 3, [a] = b}
    local back = lmp.loads(lmp.dumps(v))
    assert.equal(a, back[1])
    assert.equal(b, back[2].x)
    assert.equal("short", back[2].y)
    assert.equal(a, back[3])
    assert.equal(b, back[a])
    assert.equal(("z"):rep(100000), lmp.loads(lmp.dumps(("z"):rep(100000))))
  end)
end)

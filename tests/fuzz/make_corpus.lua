-- Writes tests/fuzz/corpus/: the seeds of the decoder's fuzz target and
-- the inputs tests/value_spec.lua feeds to lmp.loads.
--   valid-*.bin      made by lmp.dumps; loads must give the value back
--   malformed-*.bin  hand-made; loads must raise an error (never crash)
-- Run from the repository root after `make`, with LUA_PATH and LUA_CPATH
-- as tests/run.sh sets them:  lua5.4 tests/fuzz/make_corpus.lua
-- Inputs the fuzzer found are added to the corpus as malformed-found-*.bin
-- by hand; this script leaves them alone.
local lmp = require "lmp"

local dir = (os.getenv("LMP_ROOT") or ".") .. "/tests/fuzz/corpus/"

-- The tags of runtime/value_tags.h (value_format.md).
local T = {NIL = 0, FALSE = 1, TRUE = 2, INT8 = 3, INT32 = 4, INT64 = 5, FLOAT = 6,
           STRING = 7, TABLE = 8, TABLE_MT = 9, REF = 10, GLOBALS = 11, FUNCTION = 12,
           NAMED = 13, CUSTOM = 14, UPVALUE_REF = 15, FLOAT_ARRAY = 16, INT_ARRAY = 17}
local VERSION = string.char(lmp.dumps(nil):byte(1))

local function varint(n)
  local bytes = {}
  repeat
    local b = n & 0x7f
    n = n >> 7
    bytes[#bytes + 1] = string.char(b | (n ~= 0 and 0x80 or 0))
  until n == 0
  return table.concat(bytes)
end
local function tag(name) return string.char(T[name]) end
local function named(record) return tag "NAMED" .. varint(#record) .. record end
local function table_header(narray, nhash, with_meta)
  return tag(with_meta and "TABLE_MT" or "TABLE") .. string.pack("<I4I4", narray, nhash)
end

local files = {}
local function add(name, bytes) files[#files + 1] = {name, bytes} end

-- ---- valid: made by lmp.dumps -------------------------------------------
-- Functions are compiled from strings so that their bytecode does not carry
-- this file's path.
local function compile(code) return assert(load(code, "=corpus"))() end

-- A userdata for __lmp_serialize: a closed file, given a metatable of its
-- own (a closed file holds nothing, so nothing leaks).
local point_mt = {__lmp_serialize = function(p) return "lmp.fuzz.point", {x = 1, y = 2} end}
local function point()
  local f = io.tmpfile()
  f:close()
  return debug.setmetatable(f, point_mt)
end
lmp.register("lmp.fuzz.point", function(data) return data end)

local cycle = {name = "cycle"}
cycle.self = cycle
local shared = {1, 2}
local valid = {
  ["true"] = true, ["false"] = false,
  int8 = -100, int32 = 100000, int64 = math.mininteger, max = math.maxinteger,
  float = 0.1, nan = 0 / 0, inf = math.huge, neg_zero = -0.0,
  empty_string = "", string = "hello", binary = "\0\1\2\255", long_string = ("x"):rep(300),
  array = {1, 2.5, "three", true, false}, holes = {1, nil, 3, [10] = 10},
  nested = {a = {b = {c = {d = "deep"}}}},
  keys = {[true] = 1, [false] = 0, [1.5] = "float", [-1] = "negative", ["a b"] = "spaced"},
  table_key = {[{1}] = "table as key"},
  cycle = cycle, shared = {shared, shared, {shared}},
  metatable = setmetatable({1}, {__index = {answer = 42}}),
  named = {math.sqrt, string.format, string, io.stdout},
  globals = _G,
  ["function"] = compile "return function(a, b) return a + b end",
  upvalues = compile "local n, s = 10, 'x' return function() return n, s end",
  shared_upvalue = compile [[
    local count = 0
    return {function() count = count + 1 return count end, function() return count end}]],
  recursive = compile [[
    local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
    return fact]],
  uses_globals = compile "return function() return print, _G end",
  custom = point(),
  mixed = {point(), compile "return function() return 1 end", {math.sqrt, 2 ^ 53}},
  -- number arrays (FLOAT_ARRAY, INT_ARRAY) of each integer width, and
  -- tables that look like one but are not
  float_array = {0.5, -0.0, 0 / 0, math.huge, -math.huge, 1e300, 5e-324, 3.0},
  int8_array = {1, -2, 3, 127, -128}, int16_array = {1, 2, 3, 300, -300},
  int32_array = {1, 2, 3, 100000, -100000},
  int64_array = {1, 2, 3, math.maxinteger, math.mininteger},
  shared_array = (function() local a = {1.5, 2.5, 3.5, 4.5} return {a, a, {a}} end)(),
  mixed_numbers = {1, 2, 3, 4.5, 5}, array_with_key = {1, 2, 3, 4, n = 4},
  array_with_hole = {1.5, 2.5, nil, 4.5, 5.5},
}
for name in pairs(valid) do add("valid-" .. name .. ".bin", lmp.dumps(valid[name])) end
add("valid-nil.bin", lmp.dumps(nil))

-- ---- malformed: hand-made ------------------------------------------------
add("malformed-empty.bin", "")
add("malformed-version-0.bin", "\0" .. tag "NIL")
add("malformed-version-1.bin", "\1" .. tag "NIL")
add("malformed-version-3.bin", "\3" .. tag "NIL")
add("malformed-no-value.bin", VERSION)
add("malformed-unknown-tag.bin", VERSION .. "\99")
add("malformed-trailing-byte.bin", lmp.dumps(1) .. "\0")
add("malformed-trailing-value.bin", lmp.dumps({1}) .. lmp.dumps(2))
add("malformed-truncated-int32.bin", VERSION .. tag "INT32" .. "\1\2")
add("malformed-truncated-int64.bin", VERSION .. tag "INT64" .. "\1\2\3\4\5\6\7")
add("malformed-truncated-float.bin", VERSION .. tag "FLOAT" .. "\0\0\0")
add("malformed-truncated-string.bin", VERSION .. tag "STRING" .. varint(10) .. "abc")
add("malformed-string-length-huge.bin", VERSION .. tag "STRING" .. varint(1 << 62) .. "abc")
add("malformed-string-length-max.bin", VERSION .. tag "STRING" .. ("\xff"):rep(9) .. "\1")
add("malformed-varint-too-long.bin", VERSION .. tag "STRING" .. ("\x80"):rep(11) .. "\0")
add("malformed-varint-too-large.bin", VERSION .. tag "STRING" .. ("\xff"):rep(9) .. "\2")
add("malformed-table-array-huge.bin", VERSION .. table_header(0xffffffff, 0))
add("malformed-table-hash-huge.bin", VERSION .. table_header(0, 0xffffffff))
-- Number arrays whose counts claim more than the bytes, or bad widths.
local function u32(n) return string.pack("<I4", n) end
add("malformed-float-array-huge.bin", VERSION .. tag "FLOAT_ARRAY" .. u32(0xffffffff) .. ("\0"):rep(16))
add("malformed-float-array-short.bin", VERSION .. tag "FLOAT_ARRAY" .. u32(3) .. ("\0"):rep(23))
add("malformed-float-array-no-count.bin", VERSION .. tag "FLOAT_ARRAY" .. "\4\0")
add("malformed-int-array-huge.bin", VERSION .. tag "INT_ARRAY" .. u32(0x7fffffff) .. "\1" .. ("\0"):rep(16))
add("malformed-int-array-short.bin", VERSION .. tag "INT_ARRAY" .. u32(5) .. "\4" .. ("\0"):rep(19))
add("malformed-int-array-width-0.bin", VERSION .. tag "INT_ARRAY" .. u32(4) .. "\0" .. ("\0"):rep(16))
add("malformed-int-array-width-3.bin", VERSION .. tag "INT_ARRAY" .. u32(4) .. "\3" .. ("\0"):rep(16))
add("malformed-int-array-no-width.bin", VERSION .. tag "INT_ARRAY" .. u32(4))
-- A thousand arrays of 2^32 - 1 values, nested in a table: the budget of
-- the whole input bounds them, not each array alone.
add("malformed-int-array-nested-huge.bin", VERSION .. table_header(2, 0) .. tag "INT_ARRAY"
    .. u32(8) .. "\1" .. ("\0"):rep(8) .. tag "INT_ARRAY" .. u32(0xffffffff) .. "\1" .. ("\0"):rep(8))
add("malformed-table-truncated.bin", VERSION .. table_header(3, 0) .. tag "NIL")
add("malformed-table-header-truncated.bin", VERSION .. tag "TABLE" .. "\1\0")
-- Each table claims the rest of the input: nested, the claims add up.
do
  local bytes = {}
  for i = 1, 100 do bytes[i] = table_header(1000 - i, 0) end
  add("malformed-table-nested-claims.bin", VERSION .. table.concat(bytes) .. ("\0"):rep(1000))
end
add("malformed-nil-key.bin", VERSION .. table_header(0, 1) .. tag "NIL" .. tag "TRUE")
add("malformed-nan-key.bin", VERSION .. table_header(0, 1) .. tag "FLOAT"
    .. string.pack("<d", 0 / 0) .. tag "TRUE")
add("malformed-metatable-not-table.bin", VERSION .. table_header(0, 0, true) .. tag "TRUE")
add("malformed-ref-zero.bin", VERSION .. tag "REF" .. varint(0))
add("malformed-ref-ahead.bin", VERSION .. table_header(1, 0) .. tag "REF" .. varint(2))
add("malformed-ref-huge.bin", VERSION .. tag "REF" .. varint(1 << 62))
add("malformed-too-deep.bin", VERSION .. table_header(1, 0):rep(250) .. tag "NIL")
add("malformed-name-empty.bin", VERSION .. named "")
add("malformed-name-kind.bin", VERSION .. named "Xmath")
add("malformed-name-no-field.bin", VERSION .. named "Mmath")
add("malformed-name-missing-module.bin", VERSION .. named "Mno_such_module\0f")
add("malformed-name-missing-field.bin", VERSION .. named "Mmath\0no_such_field")
add("malformed-name-unregistered.bin", VERSION .. named "Rno.such.name")
add("malformed-name-truncated.bin", VERSION .. tag "NAMED" .. varint(20) .. "Mmath\0sqrt")
add("malformed-custom-unregistered.bin", VERSION .. tag "CUSTOM" .. varint(7) .. "no.such" .. tag "NIL")
add("malformed-custom-no-data.bin", VERSION .. tag "CUSTOM" .. varint(14) .. "lmp.fuzz.point")

-- Functions: take a real encoding apart.
local function parts(fn)
  local s = lmp.dumps(fn)
  assert(s:byte(2) == T.FUNCTION)
  local length = string.unpack("<I4", s, 8)
  return {header = s:sub(3, 7), chunk = s:sub(12, 11 + length), rest = s:sub(12 + length)}
end
local function function_bytes(p, header, chunk, rest)
  header, chunk, rest = header or p.header, chunk or p.chunk, rest or p.rest
  return VERSION .. tag "FUNCTION" .. header .. string.pack("<I4", #chunk) .. chunk .. rest
end
local one_upvalue = parts(compile "local up = 7 return function() return up end")
add("malformed-function-lua-5.3.bin", function_bytes(one_upvalue, string.pack("<I2BBB", 503, 8, 8, 8)))
add("malformed-function-32-bit.bin", function_bytes(one_upvalue, string.pack("<I2BBB", 504, 4, 4, 8)))
add("malformed-function-truncated-header.bin", VERSION .. tag "FUNCTION" .. "\xf8\1\8")
add("malformed-function-length-huge.bin", VERSION .. tag "FUNCTION" .. one_upvalue.header
    .. string.pack("<I4", 0xffffffff) .. one_upvalue.chunk)
add("malformed-function-not-bytecode.bin", function_bytes(one_upvalue, nil, "return 1"))
add("malformed-function-chunk-truncated.bin",
    function_bytes(one_upvalue, nil, one_upvalue.chunk:sub(1, #one_upvalue.chunk // 2)))
add("malformed-function-no-upvalues.bin", function_bytes(one_upvalue, nil, nil, ""))
add("malformed-function-upvalue-count.bin", function_bytes(one_upvalue, nil, nil, "\2" .. tag "NIL" .. tag "NIL"))
-- The closure's upvalue count (a byte of Lua's chunk header) says 2 where
-- the prototype has 1; joining upvalue 2 would write outside the closure.
add("malformed-function-forged-upvalues.bin", function_bytes(one_upvalue, nil,
    one_upvalue.chunk:sub(1, 31) .. "\2" .. one_upvalue.chunk:sub(33),
    "\2" .. tag "NIL" .. tag "UPVALUE_REF" .. varint(1) .. "\1"))
add("malformed-function-upvalue-ref-self-index.bin", function_bytes(one_upvalue, nil, nil,
    "\1" .. tag "UPVALUE_REF" .. varint(1) .. "\9"))
add("malformed-function-upvalue-ref-ahead.bin", function_bytes(one_upvalue, nil, nil,
    "\1" .. tag "UPVALUE_REF" .. varint(5) .. "\1"))
add("malformed-function-upvalue-ref-table.bin", VERSION .. table_header(1, 0)
    .. function_bytes(one_upvalue, nil, nil, "\1" .. tag "UPVALUE_REF" .. varint(1) .. "\1"):sub(2))
-- A 2 GB constant claimed by a 100-byte chunk: refused, not allocated.
-- Lua writes a string's size + 1 big-endian, 7 bits a byte, the last byte
-- marked with 0x80 (ldump.c).
local function lua_size(n)
  local bytes = {string.char(0x80 | (n & 0x7f))}
  n = n >> 7
  while n > 0 do
    table.insert(bytes, 1, string.char(n & 0x7f))
    n = n >> 7
  end
  return table.concat(bytes)
end
do
  local constant = "a constant string, longer than Lua's 40-byte short strings"
  local p = parts(compile(("return function() return %q end"):format(constant)))
  local size = lua_size(#constant + 1)
  local at = p.chunk:find(size .. constant, 1, true)
  assert(at, "the constant is not where it should be")
  add("malformed-function-constant-huge.bin", function_bytes(p, nil,
      p.chunk:sub(1, at - 1) .. lua_size(1 << 31) .. p.chunk:sub(at + #size)))
end

-- Functions nested deeper than Lua's compiler ever nests them: Lua's loader
-- would recurse once per level.
do
  local header = one_upvalue.chunk:sub(1, 31)
  local open = "\x80\x80\x80\0\0\2\x80\x80\x80\x81" -- no source, no code, one function
  local close = "\x80\x80\x80\x80"                    -- no debug information
  local chunk = header .. "\0" .. open:rep(250) .. open:sub(1, -2) .. "\x80" .. close:rep(251)
  add("malformed-function-nested-250.bin", function_bytes(one_upvalue, nil, chunk, "\0"))
  chunk = header .. "\0" .. open:rep(20) .. open:sub(1, -2) .. "\x80" .. close:rep(21)
  add("valid-function-nested-20.bin", function_bytes(one_upvalue, nil, chunk, "\0"))
end

-- Every prefix of a few valid encodings is malformed.
for _, name in ipairs {"nested", "cycle", "upvalues", "named", "custom", "float_array",
                       "int16_array", "shared_array"} do
  local bytes = lmp.dumps(valid[name])
  for cut = 0, #bytes - 1, math.max(1, #bytes // 12) do
    add(("malformed-prefix-%s-%d.bin"):format(name, cut), bytes:sub(1, cut))
  end
end

-- Write them; remove stale generated files but keep what the fuzzer found.
local lfs = require "lfs"
lfs.mkdir(dir)
for entry in lfs.dir(dir) do
  if entry:match("^valid%-") or (entry:match("^malformed%-") and not entry:match("^malformed%-found%-")) then
    os.remove(dir .. entry)
  end
end
for _, file in ipairs(files) do
  local f = assert(io.open(dir .. file[1], "wb"))
  f:write(file[2])
  f:close()
end
print(("%d files in %s"):format(#files, dir))

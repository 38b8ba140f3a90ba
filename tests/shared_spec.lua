-- lmp.Value, lmp.Array and lmp.shared_memory.SharedMemory.
local describe, it, assert, after_each, pcall = describe, it, assert, after_each, pcall
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"

local function shm_names()
  local names = {}
  for entry in require("lfs").dir("/dev/shm") do
    if entry:match("^lmp_") then names[#names + 1] = entry end
  end
  return names
end

describe("shared memory", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("a Value is shared with processes; its lock makes updates whole", function()
    local counter = lmp.Value("i", 0)
    local procs = {}
    for i = 1, 4 do
      procs[i] = lmp.Process{target = function(c)
        for _ = 1, 200 do
          local lock = c:get_lock()
          lock:acquire(); c.value = c.value + 1; lock:release()
        end
      end, args = {counter}}
      procs[i]:start()
    end
    for _, p in ipairs(procs) do p:join(); assert.equal(0, p.exitcode) end
    assert.equal(800, counter.value)
    local d = lmp.Value("d", 1.5)
    assert.equal(1.5, d.value)
    d.value = -0.25
    assert.equal(-0.25, d.value)
    assert.equal("integer", math.type(counter.value))
  end)

  it("two processes raising Values under their lock reach the exact count", function()
    local n, count, half = 5000, lmp.Value("q", 0), lmp.Value("d", 0)
    local procs = {}
    for i = 1, 2 do
      procs[i] = lmp.Process{target = function(c, h, k)
        local lock = c:get_lock()
        for _ = 1, k do
          lock:acquire(); c.value = c.value + 1; lock:release()
          h:get_lock():acquire(); h.value = h.value + 0.5; h:get_lock():release()
        end
      end, args = {count, half, n}}
      procs[i]:start()
    end
    for _, p in ipairs(procs) do p:join(); assert.equal(0, p.exitcode) end
    assert.equal(2 * n, count.value)
    assert.equal(n * 1.0, half.value)
  end)

  it("v.value reads and writes as an Array's item does, for every type code and value", function()
    -- v.value is C on the Value's mapping; a[1] goes through the mapping's
    -- methods: the same numbers stored, the same errors raised.
    local inputs = {0, -1, 127, 128, 255, 256, -32769, 65535, 2 ^ 31, 0x7fffffff + 1,
      math.maxinteger, math.mininteger, 3.0, 3.5, -0.0, 1e300, -1e-300, "12", "0x10",
      " 7 ", "1.5", "x", true, {}, 1 / 0}
    local function outcome(ok, x)
      if ok then return math.type(x) .. " " .. tostring(x) end
      return "error"
    end
    for code in ("bBhHiIlLqQfd"):gmatch(".") do
      local v, a = lmp.Value(code, 0), lmp.Array(code, 1)
      for _, x in ipairs(inputs) do
        local set_v = pcall(function() v.value = x end)
        local set_a = pcall(function() a[1] = x end)
        assert.equal(set_a, set_v, ("%s %s"):format(code, tostring(x)))
        assert.equal(outcome(pcall(function() return a[1] end)),
          outcome(pcall(function() return v.value end)), ("%s %s"):format(code, tostring(x)))
      end
      assert.error_matches(function() v.other = 1 end, "only .value can be set")
      assert.is_nil(v.other)
      assert.equal(v.lock, v:get_lock())
    end
  end)

  it("an Array is shared with processes, with # and totable", function()
    local a = lmp.Array("q", {10, 20, 30})
    assert.equal(3, #a)
    local p = lmp.Process{target = function(arr) for i = 1, #arr do arr[i] = arr[i] * 2 end end,
                          args = {a}}
    p:start(); p:join()
    assert.same({20, 40, 60}, a:totable())
    local zeros = lmp.Array("B", 4)
    zeros[4] = 255
    assert.same({0, 0, 0, 255}, zeros:totable())
    assert.has_error(function() return zeros[5] end)
    assert.has_error(function() zeros.x = 1 end)
  end)

  it("misuse raises bad argument errors", function()
    assert.error_matches(function() lmp.Value("z", 1) end, "bad argument #1 to 'Value'")
    assert.error_matches(function() lmp.Array("i", "x") end, "bad argument #2 to 'Array'")
    assert.error_matches(function() lmp.shared_memory.SharedMemory{create = true} end,
      "bad argument #1 to 'SharedMemory'")
  end)

  it("SharedMemory is found by name, by pool workers too, and unlinked", function()
    local before = #shm_names()
    local shm = lmp.shared_memory.SharedMemory{create = true, size = 32}
    shm:write(0, "hello")
    shm:set("i", 5, 12345)
    local pool <close> = lmp.Pool(1)
    local got, n = pool:apply(function(s)
      local text = s:read(0, 5)
      s:write(5, " world")
      return text, s:get("i", 5)
    end, {shm})
    assert.equal("hello", got)
    assert.equal(12345, n)
    assert.equal("hello world", shm:read(0, 11))
    local other = lmp.shared_memory.SharedMemory{name = shm.name}
    assert.equal("hello world", other:read(0, 11))
    other:close()
    shm:close()
    shm:unlink()
    assert.equal(before, #shm_names())
    local ok, err = pcall(lmp.shared_memory.SharedMemory, {name = shm.name})
    assert.is_false(ok)
    assert.matches("cannot be opened", err.message)
  end)

  it("a segment that cannot be mapped leaves no descriptor and no name behind", function()
    -- 256 TB: the file can have that size, no address space can map it.
    local name = "lmp_unmappable_" .. require("lmp.core").getpid()
    local fds = helpers.open_fds()
    for _ = 1, 3 do
      local ok, err = pcall(lmp.shared_memory.SharedMemory, {name = name, create = true,
                                                              size = 1 << 48})
      assert.is_false(ok)
      assert.equal("closed", err.kind)
      assert.matches("cannot be mapped", err.message)
      assert.is_nil(io.open("/dev/shm/" .. name))
    end
    assert.equal(fds, helpers.open_fds())
  end)

  it("a segment nobody unlinked is removed when its creator lets go", function()
    local status = helpers.run_lua([[
      local lmp = require "lmp"
      local shm = lmp.shared_memory.SharedMemory{create = true, size = 16}
      io.open(os.getenv("NAMEFILE"), "w"):write(shm.name):close()
    ]], "NAMEFILE=/tmp/lmp_shm_name_" .. require("lmp.core").getpid() .. " lua5.4")
    assert.equal(0, status)
    local namefile = "/tmp/lmp_shm_name_" .. require("lmp.core").getpid()
    local name = helpers.read_file(namefile)
    os.remove(namefile)
    assert.is_nil(io.open("/dev/shm/" .. name))
  end)
end)

-- CPython's Lib/test/_test_multiprocessing.py, the shared memory tests
-- (_TestValue, _TestArray, _TestSharedCTypes, _TestSharedMemory),
-- translated to lmp.Value, lmp.Array and lmp.shared_memory (SharedMemory,
-- ShareableList, SharedMemoryManager).
-- tests/peer/README.md says what was ported and what differs.
local describe, it, after_each, pending, assert, pcall =
  describe, it, after_each, pending, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"
local SharedMemory = lmp.shared_memory.SharedMemory
local ShareableList = lmp.shared_memory.ShareableList
local SharedMemoryManager = lmp.shared_memory.SharedMemoryManager

local function shm_exists(name)
  return helpers.read_file("/dev/shm/" .. name:gsub("^/", "")) ~= nil
end

describe("peer: _TestValue", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  -- Python's 'c' (one byte) has no counterpart: lmp's codes are numbers.
  local codes_values = {{"i", 4343, 24234}, {"d", 3.625, -4.25}, {"h", -232, 234},
                        {"q", 2 ^ 33 // 1, 2 ^ 34 // 1}}

  local function test_value(opts)
    local values = {}
    for i, cv in ipairs(codes_values) do values[i] = lmp.Value(cv[1], cv[2], opts) end
    for i, cv in ipairs(codes_values) do assert.equal(cv[2], values[i].value) end
    local proc = lmp.Process{target = function(vs, cvs)
      for i, cv in ipairs(cvs) do vs[i].value = cv[3] end
    end, args = {values, codes_values}, daemon = true}
    proc:start(); proc:join()
    assert.equal(0, proc.exitcode)
    for i, cv in ipairs(codes_values) do assert.equal(cv[3], values[i].value) end
  end

  it("test_value", function() test_value() end)

  -- Python's RawValue is a Value without a lock.
  it("test_rawvalue (Value with {lock = false})", function() test_value({lock = false}) end)

  it("test_getobj_getlock", function()
    local val1 = lmp.Value("i", 5)
    assert.is_truthy(val1:get_lock())
    assert.is_true(val1:get_lock():acquire())
    val1:get_lock():release()
    local val2 = lmp.Value("i", 5, {lock = false})
    assert.is_false(val2:get_lock())
  end)

  it("test_invalid_typecode", function()
    assert.has_error(function() lmp.Value("x", nil) end)
  end)
end)

describe("peer: _TestArray", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  local function running_sums(seq)
    for i = 2, #seq do seq[i] = seq[i] + seq[i - 1] end
  end

  local function test_array(opts)
    local seq = {680, 626, 934, 821, 150, 233, 548, 982, 714, 831}
    local arr = lmp.Array("i", seq, opts)
    assert.equal(#seq, #arr)
    assert.equal(seq[4], arr[4])
    for i = 5, 8 do arr[i] = i - 4; seq[i] = i - 4 end
    assert.same(seq, arr:totable())
    running_sums(seq)
    local p = lmp.Process{target = function(a)
      for i = 2, #a do a[i] = a[i] + a[i - 1] end
    end, args = {arr}, daemon = true}
    p:start(); p:join()
    assert.same(seq, arr:totable())
  end

  it("test_array", function() test_array() end)

  it("test_array_from_size: zeroed", function()
    for _ = 1, 3 do
      local arr = lmp.Array("i", 10)
      assert.equal(10, #arr)
      assert.same({0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, arr:totable())
      for i = 1, 10 do arr[i] = i - 1 end
      assert.same({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, arr:totable())
    end
  end)

  it("test_rawarray (Array with {lock = false})", function() test_array({lock = false}) end)

  it("test_getobj_getlock_obj", function()
    assert.is_truthy(lmp.Array("i", {0, 1, 2}):get_lock())
    assert.is_false(lmp.Array("i", {0, 1, 2}, {lock = false}):get_lock())
  end)

  it("test_invalid_typecode", function()
    assert.has_error(function() lmp.Array("x", {}) end)
  end)
end)

describe("peer: _TestSharedCTypes", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  -- Python's ctypes Structure and char arrays have no lmp counterpart;
  -- the numbers do.
  local function test_sharedctypes(opts)
    local x, y, z = lmp.Value("i", 7, opts), lmp.Value("d", 1.0 / 3.0, opts), lmp.Value("q", 2 ^ 33 // 1, opts)
    local arr = lmp.Array("d", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, opts)
    local p = lmp.Process{target = function(a, b, c, d)
      a.value = a.value * 2
      b.value = b.value * 2
      c.value = c.value * 2
      for i = 1, #d do d[i] = d[i] * 2 end
    end, args = {x, y, z, arr}, daemon = true}
    p:start(); p:join()
    assert.equal(14, x.value)
    assert.near(2.0 / 3.0, y.value, 1e-12)
    assert.equal(2 ^ 34 // 1, z.value)
    for i = 1, 10 do assert.equal((i - 1) * 2, arr[i]) end
  end

  it("test_sharedctypes", function() test_sharedctypes({lock = false}) end)
  it("test_synchronize", function() test_sharedctypes() end)
end)

describe("peer: _TestSharedMemory", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  local function new_name(prefix) return prefix .. core.getpid() end

  it("test_shared_memory_basics", function()
    local name = new_name("test01_tsmb")
    local sms = SharedMemory{name = name, create = true, size = 512}
    assert.equal(name, sms.name) -- without the system's leading "/"
    assert.is_true(sms.size >= 512)
    assert.matches(name, tostring(sms.name))
    sms:write(0, "\42")
    assert.equal("\42", sms:read(0, 1))
    local also = SharedMemory{name = name}
    assert.equal("\42", also:read(0, 1))
    also:close()
    -- Attaching with another size keeps the segment's own.
    local same = SharedMemory{name = name, size = 20 * sms.size}
    assert.equal(sms.size, same.size)
    same:close()
    assert.has_error(function() SharedMemory{create = true, size = -2} end)
    assert.has_error(function() SharedMemory{create = false} end)
    -- Creating a name that exists fails; attaching a missing one fails.
    assert.has_error(function() SharedMemory{name = name, create = true, size = 512} end)
    assert.has_error(function() SharedMemory{name = "test01_notthere" .. core.getpid()} end)
    sms:close()
    sms:unlink()
    assert.is_false(shm_exists(name))
  end)

  -- The name goes to shm_open as a C string, which ends at the NUL:
  -- "name\0a" would attach to "name". It raises bad argument.
  it("test_shared_memory_name_with_embedded_null: refused", function()
    local name = new_name("test01_null")
    local sms = SharedMemory{name = name, create = true, size = 512}
    assert.has_error(function() SharedMemory{name = name .. "\0a", size = 512} end)
    sms:close(); sms:unlink()
  end)

  it("test_invalid_shared_memory_creation", function()
    assert.has_error(function() SharedMemory{create = true, size = -1} end)
    assert.has_error(function() SharedMemory{create = true, size = 0} end)
    assert.has_error(function() SharedMemory{create = true} end)
  end)

  it("test_shared_memory_pickle_unpickle: a copy through dumps/loads is the same memory", function()
    local sms = SharedMemory{create = true, size = 512}
    sms:write(0, "pickle")
    local sms2 = lmp.loads(lmp.dumps(sms))
    assert.equal(sms.name, sms2.name)
    assert.equal("pickle", sms2:read(0, 6))
    sms:write(0, "newval")
    assert.equal("newval", sms2:read(0, 6))
    sms2:write(0, "oldval")
    assert.equal("oldval", sms:read(0, 6))
    sms2:close()
    sms:close(); sms:unlink()
  end)

  -- A copy made by loads is not the creator: collecting it leaves the
  -- name in place for the original and anyone attaching by name.
  it("collecting a loads() copy of a SharedMemory leaves the creator's segment", function()
    local sms = SharedMemory{create = true, size = 512}
    do local copy = lmp.loads(lmp.dumps(sms)); copy:close() end
    collectgarbage(); collectgarbage()
    assert.is_true(shm_exists(sms.name))
    local again = SharedMemory{name = sms.name}
    again:close()
    sms:close(); sms:unlink()
  end)

  it("test_shared_memory_pickle_unpickle_dead_object", function()
    local sms = SharedMemory{create = true, size = 512}
    local bytes = lmp.dumps(sms)
    sms:close(); sms:unlink()
    local copy = lmp.loads(bytes)
    assert.has_error(function() copy:read(0, 6) end)
  end)

  it("test_shared_memory_across_processes", function()
    local sms = SharedMemory{create = true, size = 512}
    local function attach_then_write(name_or_object, data)
      local l = require "lmp"
      local local_sms = type(name_or_object) == "string"
        and l.shared_memory.SharedMemory{name = name_or_object} or name_or_object
      local_sms:write(0, data)
      local_sms:close()
    end
    local p = lmp.Process{target = attach_then_write, args = {sms.name, "howdy"}, daemon = true}
    p:start(); p:join()
    assert.equal("howdy", sms:read(0, 5))
    p = lmp.Process{target = attach_then_write, args = {sms, "HELLO"}, daemon = true}
    p:start(); p:join()
    assert.equal("HELLO", sms:read(0, 5))
    -- And a pool worker, which Python's test does not try.
    local pool <close> = lmp.Pool(1)
    pool:apply(attach_then_write, {sms, "pool!"})
    assert.equal("pool!", sms:read(0, 5))
    sms:close(); sms:unlink()
  end)

  -- Bug: a process killed by SIGTERM never runs the finalizer that
  -- unlinks the segments it created, so they stay in /dev/shm. Python's
  -- resource tracker unlinks them. (lmp promises that nothing it creates
  -- outlives the processes that made it.)
  it("test_shared_memory_cleaned_after_process_termination: a killed creator's segment is removed", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
      local lmp = require "lmp"
      local sm = lmp.shared_memory.SharedMemory{create = true, size = 10}
      io.write(require("lmp.core").getpid(), " ", sm.name, "\n"); io.flush()
      lmp.sleep(100)
    ]])
    f:close()
    local out = io.popen("exec lua5.4 " .. script)
    local pid, name = out:read("l"):match("^(%d+) (%S+)$")
    os.execute("kill -TERM " .. pid)
    out:close()
    os.remove(script)
    local deadline = os.time() + 5
    while shm_exists(name) and os.time() <= deadline do lmp.sleep(0.05) end
    local leaked = shm_exists(name)
    if leaked then core.shm_unlink(name) end
    assert.is_false(leaked)
  end)

  -- Python's bytes and str are both Lua strings; its range(n) is the
  -- integers 0 to n - 1.
  local function range(n)
    local t = {}
    for i = 0, n - 1 do t[#t + 1] = i end
    return t
  end

  local function value_error(f)
    local ok, err = pcall(f)
    assert.is_false(ok)
    assert.equal("value", err.kind)
    return err
  end

  it("test_shared_memory_ShareableList_basics", function()
    local sl = ShareableList(table.pack("howdy", "HoWdY", -273.154, 100, nil, true, 42))
    local ok, err = pcall(function()
      assert.equal("8s8sdqxxxxxx?xxxxxxxx?q", sl.format)
      assert.equal(7, #sl)
      value_error(function() sl:index("100") end)
      assert.equal(4, sl:index(100)) -- from 1
      assert.equal("howdy", sl[1])
      assert.equal(true, sl[-2])
      assert.same({"howdy", "HoWdY", -273.154, 100, nil, true, 42, n = 7}, sl:totable())
      sl[4] = 42
      assert.equal(42, sl[4])
      sl[5] = "some" -- another type in the same slot
      assert.equal("some", sl[5])
      assert.equal("8s8sdq8sxxxxxxx?q", sl.format)
      assert.matches("exceeds", value_error(function() sl[5] = "far too many" end).message)
      assert.equal("some", sl[5])
      sl[1] = "encodés" -- eight bytes of UTF-8
      assert.equal("encodés", sl[1])
      assert.equal("HoWdY", sl[2]) -- nothing spilled over
      value_error(function() sl[1] = "encodées" end) -- nine
      assert.equal("HoWdY", sl[2])
      value_error(function() sl[2] = "123456789" end)
      assert.equal("HoWdY", sl[2])
      assert.equal(2, sl:count(42))
      assert.equal(1, sl:count("HoWdY"))
      assert.equal(0, sl:count("adios"))

      -- A copy in a segment of its own.
      local copy_name = new_name("test03_duplicate")
      local sl_copy = ShareableList(sl, {name = copy_name})
      local copied, copy_err = pcall(function()
        assert.are_not.equal(sl.shm.name, sl_copy.shm.name)
        assert.equal(copy_name, sl_copy.shm.name)
        assert.same(sl:totable(), sl_copy:totable())
        -- Differs: a string's slot follows its bytes (Python's rule for
        -- bytes); Python sizes a str by its characters, so "encodés", 7
        -- characters in 8 bytes, keeps a slot of 8 in Python's copy and
        -- gets 16 here.
        assert.equal("16s" .. sl.format:sub(3), sl_copy.format)
        sl_copy[-1] = 77
        assert.equal(77, sl_copy[-1])
        assert.are_not.equal(77, sl[-1])
      end)
      sl_copy.shm:close(); sl_copy.shm:unlink()
      assert(copied, copy_err)

      -- A second handle on the same list.
      local tethered = ShareableList(nil, {name = sl.shm.name})
      assert.equal(sl.shm.name, tethered.shm.name)
      tethered[-1] = 880
      assert.equal(880, sl[-1])
      tethered.shm:close()
    end)
    sl.shm:close(); sl.shm:unlink()
    assert(ok, err)

    local empty = ShareableList({})
    ok, err = pcall(function()
      assert.equal(0, #empty)
      assert.equal("", empty.format)
      assert.equal(0, empty:count("any"))
      value_error(function() empty:index(nil) end)
    end)
    empty.shm:close(); empty.shm:unlink()
    assert(ok, err)
  end)

  it("test_shared_memory_ShareableList_pickling", function()
    local sl = ShareableList(range(10))
    local larger = ShareableList(range(400))
    local ok, err = pcall(function()
      local bytes = lmp.dumps(sl)
      local copy = lmp.loads(bytes)
      assert.equal("lmp.ShareableList", getmetatable(copy).__name)
      assert.is_false(rawequal(sl, copy))
      assert.equal(9, copy[-1])
      copy[5] = "changed"
      assert.equal("changed", sl[5])
      -- The name travels, not the items: a list of 400 gives as many
      -- bytes as one of 10 (their random names have one length).
      assert.equal(#bytes, #lmp.dumps(larger))
      copy.shm:close()
    end)
    larger.shm:close(); larger.shm:unlink()
    sl.shm:close(); sl.shm:unlink()
    assert(ok, err)
  end)

  it("test_shared_memory_SharedMemoryManager_basics", function()
    local smm1 = SharedMemoryManager()
    local ok, err = pcall(smm1.SharedMemory, smm1, 9)
    assert.is_false(ok)
    assert.equal("closed", err.kind) -- Python's ValueError: not started
    smm1:start()
    local lol, lom = {}, {}
    for i = 5, 9 do lol[#lol + 1] = smm1:ShareableList(range(i)) end
    for j = 32, 127, 16 do lom[#lom + 1] = smm1:SharedMemory(j) end
    local doppelganger_list0 = ShareableList(nil, {name = lol[1].shm.name})
    assert.equal(5, #doppelganger_list0)
    local doppelganger_shm0 = SharedMemory{name = lom[1].name}
    assert.is_true(doppelganger_shm0.size >= 32)
    local held_name = lom[1].name
    doppelganger_list0.shm:close(); doppelganger_shm0:close()
    smm1:shutdown()
    -- No longer there to attach to.
    assert.has_error(function() SharedMemory{name = held_name} end)
    assert.is_false(shm_exists(held_name))

    do
      local smm2 <close> = SharedMemoryManager():start()
      local sl = smm2:ShareableList({"h", "o", "w", "d", "y"})
      smm2:SharedMemory(128)
      held_name = sl.shm.name
    end
    assert.has_error(function() ShareableList(nil, {name = held_name}) end)
    assert.is_false(shm_exists(held_name))
  end)
end)

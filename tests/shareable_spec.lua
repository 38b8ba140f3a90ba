-- lmp.shared_memory.ShareableList and SharedMemoryManager, in the manner
-- of CPython's _TestSharedMemory (test_shared_memory_ShareableList_basics,
-- _pickling, SharedMemoryManager_basics), and segment names.
local describe, it, assert, after_each, pcall = describe, it, assert, after_each, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"
local sm = lmp.shared_memory

local function exists(name)
  local f = io.open("/dev/shm/" .. name)
  if f then f:close() end
  return f ~= nil
end

describe("ShareableList", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  it("test_shared_memory_ShareableList_basics: Python's layout, items, count, index, format", function()
    local sl = sm.ShareableList({"howdy", 2.5, 42, true, nil, "", -7, n = 7})
    assert.equal(7, #sl)
    assert.equal("8sdqxxxxxxx?xxxxxx?x8sq", sl.format)
    assert.same({"howdy", 2.5, 42, true, nil, "", -7, n = 7}, sl:totable())
    assert.equal("howdy", sl[1])
    assert.equal(-7, sl[-1])
    assert.equal(math.type(42), math.type(sl[3]))
    assert.equal(1, sl:count(42))
    assert.equal(1, sl:count(nil))
    assert.equal(0, sl:count("absent"))
    assert.equal(3, sl:index(42))
    assert.equal(5, sl:index(nil))
    local ok, err = pcall(sl.index, sl, "absent")
    assert.is_false(ok)
    assert.equal("value", err.kind)
    -- Any number, boolean or nil fits an 8-byte slot; the format follows.
    sl[3] = 0.5
    assert.equal(0.5, sl[3])
    sl[3] = "12345678"
    assert.equal("12345678", sl[3])
    sl[3] = nil
    assert.is_nil(sl[3])
    -- A string no longer than its slot fits; a longer one is refused.
    sl[1] = "hi"
    assert.equal("hi", sl[1])
    ok, err = pcall(function() sl[1] = "much too long for it" end)
    assert.is_false(ok)
    assert.equal("value", err.kind)
    ok, err = pcall(function() return sl[8] end)
    assert.is_false(ok)
    assert.equal("value", err.kind)
    assert.is_false(pcall(function() return sl[-8] end))
    assert.is_false(pcall(sm.ShareableList, {{}}))
    assert.is_false(pcall(sm.ShareableList, {print}))
    -- An empty one.
    local empty = sm.ShareableList()
    assert.equal(0, #empty)
    assert.equal("", empty.format)
    local name = sl.shm.name
    sl.shm:unlink()
    empty.shm:unlink()
    assert.is_false(exists(name))
  end)

  it("attaches by name in another process and a pool worker, and travels as a task argument", function()
    local sl = sm.ShareableList({1, "two", 3.0})
    local name = sl.shm.name
    assert.is_nil(name:find("/", 1, true))
    local attached = sm.ShareableList(nil, {name = name})
    assert.equal("two", attached[2])
    local p = lmp.Process{args = {name}, target = function(n)
      local l = require("lmp").shared_memory.ShareableList(nil, {name = n})
      l[1] = l[1] + 100
      l[2] = "TWO"
    end}
    p:start()
    p:join(30)
    assert.equal(0, p.exitcode)
    assert.equal(101, sl[1])
    assert.equal("TWO", attached[2])
    local pool <close> = lmp.Pool{processes = 1}
    assert.equal(3.0, pool:apply(function(l)
      l[1] = -1
      return l[3]
    end, {sl}))
    assert.equal(-1, sl[1])
    sl.shm:unlink()
  end)

  it("Python's ShareableList reads what lmp wrote", function()
    if not os.execute("python3 -c 'import multiprocessing.shared_memory' 2>/dev/null") then
      return -- no CPython here
    end
    local sl = sm.ShareableList({"howdy", 2.5, 42, true, nil, n = 5})
    local status, out, err = helpers.run(("python3 -c '%s' %s"):format(
      "import sys; from multiprocessing import shared_memory as s, resource_tracker as r; "
      .. "l = s.ShareableList(name=sys.argv[1]); print(list(l)); l[2] = 43; "
      .. "r.unregister(l.shm._name, \"shared_memory\"); l.shm.close()", sl.shm.name))
    assert.equal(0, status, err)
    assert.equal("['howdy', 2.5, 42, True, None]\n", out)
    assert.equal(43, sl[3])
    sl.shm:unlink()
  end)
end)

describe("segment names", function()
  it("shm.name has no leading '/'; one given is dropped", function()
    local name = "lmp_names_" .. core.getpid()
    local shm = sm.SharedMemory{name = "/" .. name, create = true, size = 8}
    assert.equal(name, shm.name)
    assert.is_true(exists(name))
    shm:unlink()
    assert.is_false(exists(name))
  end)

  it("a name with a NUL byte or longer than 255 bytes is refused", function()
    local ok, err = pcall(sm.SharedMemory, {name = "lmp_a\0b", create = true, size = 8})
    assert.is_false(ok)
    assert.matches("NUL", tostring(err))
    ok, err = pcall(sm.SharedMemory, {name = ("x"):rep(256), create = true, size = 8})
    assert.is_false(ok)
    assert.matches("1 to 255 bytes", tostring(err))
    ok = pcall(sm.ShareableList, {1}, {name = "lmp_b\0c"})
    assert.is_false(ok)
    local long = sm.SharedMemory{name = "lmp_" .. ("y"):rep(251), create = true, size = 8}
    long:unlink()
  end)
end)

describe("SharedMemoryManager", function()
  it("test_shared_memory_SharedMemoryManager_basics: segments live until shutdown", function()
    local smm = sm.SharedMemoryManager()
    assert.is_false(pcall(smm.SharedMemory, smm, 8)) -- not started
    assert.equal(smm, smm:start())
    local a = smm:SharedMemory(64)
    local l = smm:ShareableList({"x", 1})
    local names = {a.name, l.shm.name}
    a = nil
    collectgarbage()
    collectgarbage()
    assert.is_true(exists(names[1])) -- dropped, yet kept for the manager
    assert.equal("x", l[1])
    smm:shutdown()
    assert.is_false(exists(names[1]))
    assert.is_false(exists(names[2]))
    local ok, err = pcall(smm.ShareableList, smm, {1})
    assert.is_false(ok)
    assert.equal("closed", err.kind)
    smm:shutdown() -- again: nothing
    do
      local scoped <close> = sm.SharedMemoryManager():start()
      names[3] = scoped:SharedMemory(8).name
      assert.is_true(exists(names[3]))
    end
    assert.is_false(exists(names[3]))
  end)

  it("its segments are unlinked when its process is killed with SIGKILL", function()
    local namefile = os.tmpname()
    local status, _, err = helpers.run_lua(([[
      local lmp = require "lmp"
      local smm = lmp.shared_memory.SharedMemoryManager():start()
      local a, l = smm:SharedMemory(64), smm:ShareableList({1, 2})
      local f = io.open(%q, "w")
      f:write(a.name, " ", l.shm.name)
      f:close()
      os.execute("kill -9 " .. require("lmp.core").getpid())
    ]]):format(namefile), helpers.runner)
    assert.equal(137, status, err)
    local names = {}
    for name in helpers.read_file(namefile):gmatch("%S+") do names[#names + 1] = name end
    os.remove(namefile)
    assert.equal(2, #names)
    for _, name in ipairs(names) do
      assert.is_true(helpers.wait_for(function() return not exists(name) end, 10), name)
    end
  end)
end)

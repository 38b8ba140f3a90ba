-- Every function the module exports, and every function of the C API, is
-- documented in docs/reference.md.
local describe, it, assert = describe, it, assert
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"

local reference = helpers.read_file(helpers.root .. "/docs/reference.md")

local function documented(pattern)
  return reference:find(pattern, 1, true) ~= nil
end

local function public_methods(class)
  local names = {}
  for name, value in pairs(class) do
    if type(value) == "function" and not name:match("^_") then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

describe("docs/reference.md", function()
  it("documents every function of require 'lmp'", function()
    for name, value in pairs(lmp) do
      if not name:match("^_") and (type(value) == "function" or name == "version") then
        assert.is_true(documented("### lmp." .. name .. "\n"), "lmp." .. name .. " is not documented")
      end
    end
  end)

  it("documents every other value of require 'lmp' (tables, classes, constants)", function()
    for name, value in pairs(lmp) do
      if not name:match("^_") and type(value) ~= "function" then
        assert.is_true(documented("lmp." .. name), "lmp." .. name .. " is not documented")
      end
    end
    -- And the names of its namespaces (lmp.shared_memory.SharedMemory, ...).
    for _, space in ipairs{"shared_memory", "connection", "futures"} do
      for name in pairs(lmp[space]) do
        if not name:match("^_") then
          assert.is_true(documented(space .. "." .. name) or documented("`" .. name),
            "lmp." .. space .. "." .. name .. " is not documented")
        end
      end
    end
    assert.equal(lmp.Error, getmetatable(select(2, pcall(lmp.Queue().get, lmp.Queue(), false))))
  end)

  it("documents every method of the objects of lmp's IPC", function()
    local a, b = lmp.Pipe()
    local m <close> = lmp.Manager()
    local shm = lmp.shared_memory.SharedMemory{create = true, size = 8}
    local list = lmp.shared_memory.ShareableList({1})
    local listener = lmp.connection.Listener{family = "unix"}
    local objects = {
      Queue = lmp.Queue(), JoinableQueue = lmp.JoinableQueue(), SimpleQueue = lmp.SimpleQueue(),
      Connection = a, Lock = lmp.Lock(), RLock = lmp.RLock(), Semaphore = lmp.Semaphore(),
      BoundedSemaphore = lmp.BoundedSemaphore(), Event = lmp.Event(),
      Condition = lmp.Condition(), Barrier = lmp.Barrier(2), Value = lmp.Value("i", 0),
      Array = lmp.Array("i", 2), SharedMemory = shm, ShareableList = list,
      SharedMemoryManager = lmp.shared_memory.SharedMemoryManager(),
      Process = lmp.Process{target = function() end}, Manager = m, Listener = listener,
      DictProxy = m:dict(), QueueProxy = m:Queue(), ConditionProxy = m:Condition(),
      EventProxy = m:Event(), LockProxy = m:Lock(),
    }
    -- The methods are those of the object's class and the classes above
    -- it (a field holding a function, as a Process's target, is not one).
    local function class_above(t)
      local mt = getmetatable(t)
      if type(mt) ~= "table" then return nil end
      local index = rawget(mt, "__index")
      if type(index) == "table" then return index end
      -- __index a function (a Manager's m:dict(), a Value's v.value): the
      -- methods, if any, are fields of the metatable itself.
      if type(index) == "function" and mt ~= t then return mt end
      return nil
    end
    for kind, object in pairs(objects) do
      local seen, class, depth = {}, class_above(object), 0
      while class and depth < 5 do
        for name, value in pairs(class) do
          if type(name) == "string" and not name:match("^_") and type(value) == "function"
             and not seen[name] then
            seen[name] = true
            -- Proxies' methods are listed in a table: `pop(k [, default])`.
            assert.is_true(documented(":" .. name .. "(") or documented(":" .. name .. "`")
              or kind:match("Proxy$") and (documented("`" .. name .. "(")
                                           or documented(", " .. name .. "(")),
              kind .. ":" .. name .. " is not documented")
          end
        end
        class, depth = class_above(class), depth + 1
      end
      -- (A Value, an Array and a ShareableList index through a function:
      -- their methods are listed below.)
      assert.is_true(next(seen) ~= nil or kind == "Array" or kind == "Value"
        or kind == "ShareableList", kind)
    end
    for kind, names in pairs{Array = {"get_lock", "totable"}, Value = {"get_lock"},
                             ShareableList = {"count", "index", "totable"}} do
      for _, name in ipairs(names) do
        assert.is_function(objects[kind][name])
        assert.is_true(documented(":" .. name .. "("), kind .. ":" .. name)
      end
    end
    a:close(); b:close(); listener:close()
    shm:unlink(); list.shm:unlink()
  end)

  it("documents every Pool method", function()
    for _, name in ipairs(public_methods(require("lmp.pool").Pool)) do
      assert.is_true(documented("### pool:" .. name .. "\n"), "pool:" .. name)
    end
  end)

  it("documents every AsyncResult, Executor and Future method", function()
    for _, name in ipairs(public_methods(require("lmp.pool").AsyncResult)) do
      assert.is_true(documented("r:" .. name .. "("), "AsyncResult:" .. name)
    end
    for _, name in ipairs(public_methods(require("lmp.executor").Executor)) do
      assert.is_true(documented("### executor:" .. name .. "\n"), "executor:" .. name)
    end
    for _, name in ipairs(public_methods(require("lmp.executor").Future)) do
      assert.is_true(documented("f:" .. name .. "("), "Future:" .. name)
    end
  end)

  it("documents every function of the C API in lmp.h", function()
    local header = helpers.read_file(helpers.root .. "/runtime/lmp.h")
    local count = 0
    for name in header:gmatch("\n[%w_ %*]-[ %*]([%w_]+)%(") do
      if name:match("^lmp_") or name:match("^luaopen_") then
        count = count + 1
        assert.is_true(documented("### " .. name .. "\n"), name .. " is not documented")
      end
    end
    assert.is_true(count >= 6)
  end)

  it("gives every documented function an example", function()
    for section in reference:gmatch("\n### [^\n]+\n(.-)\n#") do
      assert.is_truthy(section:find("```", 1, true), section:sub(1, 60))
    end
  end)
end)

-- What a worker makes of what it is sent: the script's globals beside
-- the initializer's, names it does not know, errors it cannot describe
-- plainly, running out of memory. Each case runs as a script of its own,
-- so that its globals are a script's globals.
local describe, it, assert, after_each = describe, it, assert, after_each
local _ENV = _G
local helpers = require "helpers"

local run = helpers.run_lua_ok

describe("worker", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  describe("initializer globals", function()
    local script = [[
      local lmp = require "lmp"
      STATUS = "uninitialized"
      LIMIT = 1
      local pool <close> = lmp.Pool{processes = 1, start_method = ...,
        initializer = function() STATUS = "ready"; CACHE = {} end}
      local function read() return STATUS, LIMIT, CACHE ~= nil end
      print(pool:apply(read, {}))
      -- The script changes both later: the initializer's name stays the
      -- worker's, the other follows the script.
      STATUS, LIMIT = "changed", 2
      print(pool:apply(function() return STATUS, LIMIT, CACHE ~= nil end, {}))
    ]]
    local expected = "ready\t1\ttrue\nready\t2\ttrue\n"

    it("what the initializer set wins over the script's globals, now and later", function()
      assert.equal(expected, run((script:gsub("%.%.%.", "'spawn'", 1))))
    end)

    it("the same under the runner and with the fork start method", function()
      assert.equal(expected, run((script:gsub("%.%.%.", "'spawn'", 1)), helpers.runner))
      assert.equal(expected, run((script:gsub("%.%.%.", "'fork'", 1))))
    end)
  end)
  describe("the interpreter a spawned worker runs", function()
    -- A worker started from lua5.4 ran Lua 3-9% slower per call than
    -- lua5.4 itself or a Lanes lane when its interpreter was the shared
    -- library's (position-independent code) and lua5.4's its own copy.
    it("carries its own copy of Lua when the program that started it does", function()
      local out = run([[
        local lmp = require "lmp"
        local function interpreter()
          for line in io.lines("/proc/self/maps") do
            if line:match("/liblua[^/]*%.so") then return "shared library" end
          end
          return "own copy"
        end
        local pool <close> = lmp.Pool(1)
        print(interpreter(), pool:apply(interpreter, {}))
      ]])
      local main, worker = out:match("^([^\t]*)\t([^\n]*)\n$")
      assert.is_not_nil(main, out)
      -- Where lua5.4 itself runs the shared library, either is as fast.
      if main == "own copy" then assert.equal("own copy", worker) end
    end)
  end)
  describe("the task loop's kept tables", function()
    it("each apply gets exactly its own arguments and results, whatever came before", function()
      -- The worker keeps one table for an apply's few arguments and one
      -- for its one result: nothing of an apply may reach the next.
      local out = run([[
        local lmp = require "lmp"
        local pool <close> = lmp.Pool(1)
        local function show(...)
          local t = table.pack(...)
          for i = 1, t.n do t[i] = tostring(t[i]) end
          return t.n .. ":" .. table.concat(t, ",")
        end
        local function none() end
        local cases = {{1, 2, 3, 4, 5, 6, 7, 8}, {n = 0}, {9}, {1, nil, 3, n = 3}, {n = 2},
                       {"a", "b", "c", "d", "e", "f", "g", "h", "i"}, {true}}
        for _, args in ipairs(cases) do
          io.write(pool:apply(show, args), " ")
          io.write(select("#", pool:apply(none, args)), " ")
        end
        local big = string.rep("x", 5 * 1024 * 1024)
        io.write(pool:apply(function(s, n) return #s + n end, {big, 1}), " ")
        io.write(pool:apply(show, {2}), "\n")
      ]], helpers.runner)
      assert.equal("8:1,2,3,4,5,6,7,8 0 0: 0 1:9 0 3:1,nil,3 0 2:nil,nil 0 9:a,b,c,d,e,f,g,h,i 0 "
                   .. "1:true 0 5242881 1:2\n", out)
    end)
  end)

  describe("a name the worker does not know", function()
    it("fails the task with kind serialize naming it and the fix; the worker lives on", function()
      local out = run([[
        local lmp = require "lmp"
        local thing = lmp.register("spec.thing", {v = 1})
        UNUSED_THING = thing  -- a global the tasks never use: left behind
        local pool <close> = lmp.Pool{processes = 2}
        local pids = {}
        for _, w in ipairs(pool.workers) do pids[#pids + 1] = w.pid end
        local kinds, messages = {}, {}
        for i = 1, 200 do
          local ok, err = pcall(pool.apply, pool, function(t) return t.v end, {thing})
          kinds[tostring(ok) .. " " .. tostring(err.kind)] = true
          messages[err.message:match("no value is registered as 'spec%.thing'.*initializer")
                   or err.message] = true
        end
        for k in pairs(kinds) do print(k) end
        for m in pairs(messages) do print(m) end
        -- In a map only the items that hold it fail.
        local ok, err = pcall(pool.map, pool, function(x) return type(x) end, {1, thing, "s"}, 3)
        print(ok, err.kind, err.index)
        print(table.concat(pool:map(function(x) return x * 2 end, {1, 2, 3}), ","))
        local now = {}
        for _, w in ipairs(pool.workers) do now[#now + 1] = w.pid end
        print(table.concat(pids, ",") == table.concat(now, ","))
      ]])
      assert.equal("false serialize\n"
        .. "no value is registered as 'spec.thing' in this process (call "
        .. "lmp.register('spec.thing', value) in it too, for a pool in its initializer\n"
        .. "false\tserialize\t2\n2,4,6\ntrue\n", out)
    end)

    it("in a function's upvalues fails every task of that function, and only those", function()
      local out = run([[
        local lmp = require "lmp"
        local thing = lmp.register("spec.thing", {v = 1})
        local pool <close> = lmp.Pool{processes = 1}
        local function uses() return thing.v end
        for i = 1, 2 do
          local ok, err = pcall(pool.apply, pool, uses, {})
          print(ok, err.kind, err.message:match("the task's function") ~= nil)
        end
        print(pool:apply(function() return "other" end, {}))
      ]])
      assert.equal("false\tserialize\ttrue\nfalse\tserialize\ttrue\nother\n", out)
    end)

    it("a module or constructor the worker lacks fails the task alike", function()
      local out = run([[
        local lmp = require "lmp"
        package.loaded["spec.only_in_main"] = {f = function() end}
        local f = package.loaded["spec.only_in_main"].f
        local pool <close> = lmp.Pool{processes = 1}
        local ok, err = pcall(pool.apply, pool, function(g) return g end, {f})
        print(ok, err.kind, err.message:match("cannot find module 'spec.only_in_main'") ~= nil)
        -- A userdata sent through a constructor only the main process has.
        local Point = {__lmp_serialize = function() return "spec.Point", {1, 2} end}
        local file = io.tmpfile(); file:close()
        local p = debug.setmetatable(file, Point)
        lmp.register("spec.Point", function(data) return data end)
        ok, err = pcall(pool.apply, pool, function(x) return x end, {p})
        print(ok, err.kind, err.message:match("no constructor is registered as 'spec.Point'") ~= nil)
        print(pool:apply(function() return "alive" end, {}))
      ]])
      assert.equal("false\tserialize\ttrue\nfalse\tserialize\ttrue\nalive\n", out)
    end)

    it("in an lmp.Process's arguments ends it with status 1, naming it", function()
      local status, out, err = helpers.run_lua([[
        local lmp = require "lmp"
        local thing = lmp.register("spec.thing", {v = 1})
        local p = lmp.Process{target = function(t) print(t.v) end, args = {thing}}
        p:start()
        p:join()
        print(p.exitcode)
      ]])
      assert.equal(0, status)
      assert.equal("1\n", out)
      assert.truthy(err:find("no value is registered as 'spec.thing'", 1, true))
    end)

    it("in the initializer fails pool creation with kind initializer, naming it", function()
      local out = run([[
        local lmp = require "lmp"
        local thing = lmp.register("spec.thing", {v = 1})
        local ok, err = pcall(lmp.Pool, {processes = 1, initializer = function(t) X = t end,
                                         initargs = {thing}})
        print(ok, err.kind, err.message:match("no value is registered as 'spec.thing'") ~= nil)
      ]])
      assert.equal("false\tinitializer\ttrue\n", out)
    end)
  end)
  describe("errors a worker cannot describe plainly", function()
    it("running out of memory fails the task with 'not enough memory'; the worker goes on", function()
      -- The worker's address space is limited from outside (prlimit), as
      -- a container's or a ulimit's would be, so the task fails fast and
      -- without pressing on the machine's memory. (Under the sanitizers
      -- the worker reserves terabytes of shadow memory first: a limit on
      -- its address space means nothing there.)
      if os.getenv("LMP_SANITIZED") then return end
      local out = run([[
        local lmp = require "lmp"
        local pool <close> = lmp.Pool{processes = 1}
        local pid = pool.workers[1].pid
        local status = io.open("/proc/" .. pid .. "/status"):read("a")
        local size = tonumber(status:match("VmSize:%s*(%d+) kB")) * 1024
        assert(os.execute(("prlimit --pid %d --as=%d"):format(pid, size + 48 * 1024 * 1024)))
        local function grow()
          local t = {}
          for i = 1, math.huge do t[i] = string.rep("x", 1024 * 1024 - 64) .. i end
        end
        local ok, err = pcall(pool.apply, pool, grow, {})
        print(ok, err.kind, err.message)
        -- In a map, the item that ran out fails; the others have results.
        local r = pool:map_async(function(x) if x == 2 then grow() end return x end, {1, 2, 3}, 3)
        r:wait()
        print(r:successful(), select(2, pcall(r.get, r)).index)
        print(pool:apply(function() return "alive" end, {}), pool.workers[1].pid == pid)
      ]])
      assert.equal("false\ttask\tnot enough memory\nfalse\t2\nalive\ttrue\n", out)
    end)

    it("an error object whose __tostring raises or returns a non-string fails only the task", function()
      local out = run([[
        local lmp = require "lmp"
        local pool <close> = lmp.Pool{processes = 1}
        local pid = pool.workers[1].pid
        local ok, err = pcall(pool.apply, pool, function()
          error(setmetatable({}, {__tostring = function() error("broken tostring", 0) end}))
        end, {})
        print(ok, err.kind, err.message)
        ok, err = pcall(pool.apply, pool, function()
          error(setmetatable({}, {__tostring = function() return {} end}))
        end, {})
        print(ok, err.kind, err.message)
        ok, err = pcall(pool.map, pool, function(x)
          error(setmetatable({}, {__tostring = function() error({}) end}))
        end, {1, 2})
        print(ok, err.kind, err.message)
        print(pool:apply(function() return "alive" end, {}), pool.workers[1].pid == pid)
      ]])
      assert.equal("false\ttask\terror object whose __tostring failed: broken tostring\n"
        .. "false\ttask\terror object whose __tostring failed: '__tostring' must return a string\n"
        .. "false\ttask\terror object whose __tostring failed: (error object: table)\n"
        .. "alive\ttrue\n", out)
    end)
  end)
end)

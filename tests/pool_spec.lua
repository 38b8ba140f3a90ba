-- The Pool API (docs/reference.md, "Pool"): every method and option.
-- busted runs a spec under an environment of its own; functions sent to
-- workers should see the real globals, as they do in a script.
local describe, it, setup, teardown, after_each, assert, pcall =
  describe, it, setup, teardown, after_each, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"

local function square(x) return x * x end
local function add(a, b) return a + b end

describe("Pool", function()
  local pool
  setup(function() pool = lmp.Pool(2) end)
  teardown(function()
    pool:close()
    pool:join()
    assert.is_true(helpers.no_children())
  end)

  it("map returns results in input order with n", function()
    assert.same({1, 4, 9, 16, 25, n = 5}, pool:map(square, {1, 2, 3, 4, 5}))
  end)

  it("map keeps nil results and honours an n field in the input", function()
    local r = pool:map(function(x) if x ~= nil then return x end end, {1, nil, 3, n = 4})
    assert.equal(4, r.n)
    assert.same({1, nil, 3, nil}, {r[1], r[2], r[3], r[4]})
  end)

  it("map of an empty array is an empty result", function()
    assert.same({n = 0}, pool:map(square, {}))
  end)

  it("map reads an iterator function (coroutine.wrap, io.lines)", function()
    local gen = coroutine.wrap(function() for i = 1, 5 do coroutine.yield(i) end end)
    assert.same({1, 4, 9, 16, 25, n = 5}, pool:map(square, gen))
    local path = os.tmpname()
    local f = io.open(path, "w"); f:write("3\n4\n"); f:close()
    assert.same({9, 16, n = 2}, pool:map(function(s) return tonumber(s) ^ 2 end, io.lines(path)))
    os.remove(path)
  end)

  it("map takes a chunksize or an options table", function()
    local items = {}
    for i = 1, 100 do items[i] = i end
    local r1 = pool:map(square, items, 7)
    local r2 = pool:map(square, items, {chunksize = 1})
    assert.equal(100, r1.n)
    assert.same(r1, r2)
    assert.equal(10000, r1[100])
  end)

  it("map keeps integer and float subtypes", function()
    local r = pool:map(function(x) return x end, {1, 1.0, math.maxinteger, -0.0})
    assert.equal("integer", math.type(r[1]))
    assert.equal("float", math.type(r[2]))
    assert.equal(math.maxinteger, r[3])
    assert.equal(1 / r[4], -math.huge)
  end)

  it("starmap unpacks each argument list", function()
    assert.same({3, 7, 11, n = 3}, pool:starmap(add, {{1, 2}, {3, 4}, {5, 6}}))
  end)

  it("map_async and starmap_async give AsyncResults", function()
    local r = pool:map_async(square, {1, 2, 3})
    assert.same({1, 4, 9, n = 3}, r:get())
    assert.is_true(r:ready())
    assert.is_true(r:successful())
    local s = pool:starmap_async(add, {{1, 1}, {2, 2}})
    assert.is_true(s:wait(10))
    assert.same({2, 4, n = 2}, s:get())
  end)

  it("map_async calls callback with the result array", function()
    local got
    local r = pool:map_async(square, {2, 3}, {callback = function(v) got = v end})
    r:wait()
    lmp.run()
    assert.same({4, 9, n = 2}, got)
  end)

  it("apply returns every value the function returned", function()
    local a, b, c = pool:apply(function(x, y) return x + y, x * y, nil end, {3, 4})
    assert.equal(7, a)
    assert.equal(12, b)
    assert.is_nil(c)
    assert.equal(3, select("#", pool:apply(function() return 1, nil, nil end)))
  end)

  it("apply_async calls callback with all the values", function()
    local got
    local r = pool:apply_async(function(x) return x, x * 2 end, {21},
      {callback = function(a, b) got = {a, b} end})
    assert.same({21, 42}, {r:get()})
    lmp.run()
    assert.same({21, 42}, got)
  end)

  it("a failing item makes map raise that item's error object", function()
    local ok, err = pcall(pool.map, pool, function(x)
      if x == 3 then error("boom") end
      return x
    end, {1, 2, 3, 4})
    assert.is_false(ok)
    assert.equal("task", err.kind)
    assert.equal(3, err.index)
    assert.is_number(err.pid)
    assert.matches("boom", err.message)
    assert.matches("boom", err.value)
    assert.matches("traceback", err.traceback)
    assert.matches("lmp task error %(item 3, process %d+%): .*boom", tostring(err))
  end)

  it("a table raised in a worker arrives as the error's value", function()
    local ok, err = pcall(pool.apply, pool, function() error({code = 42}) end, {})
    assert.is_false(ok)
    assert.same({code = 42}, err.value)
  end)

  it("apply_async with a failing task calls error_callback and get raises", function()
    local seen
    local r = pool:apply_async(function() error("nope") end, {},
      {error_callback = function(e) seen = e end})
    local ok, err = pcall(r.get, r)
    assert.is_false(ok)
    assert.equal("task", err.kind)
    lmp.run()
    assert.equal(err, seen)
    assert.is_false(r:successful())
  end)

  it("get(timeout) only stops waiting", function()
    local r = pool:apply_async(function()
      local t = os.clock()
      while os.clock() - t < 0.5 do end
      return "late"
    end, {})
    local ok, err = pcall(r.get, r, 0.05)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.is_false(r:ready())
    assert.equal("late", r:get())
  end)

  it("get(timeout) still times out after a long computation in the main process", function()
    local r = pool:apply_async(function() os.execute("sleep 1") end, {})
    local t = os.clock()
    while os.clock() - t < 0.2 do end
    assert.is_false(r:wait(0.05))
    r:wait()
  end)

  it("successful() before the result is ready raises", function()
    local r = pool:apply_async(function()
      local t = os.clock()
      while os.clock() - t < 0.2 do end
    end, {})
    assert.has_error(function() r:successful() end)
    r:wait()
  end)

  it("imap yields results lazily in input order", function()
    local out = {}
    for v, i in pool:imap(square, {1, 2, 3, 4, 5}) do out[i] = v end
    assert.same({1, 4, 9, 16, 25}, out)
  end)

  it("imap_unordered yields every result once", function()
    local seen = {}
    for v in pool:imap_unordered(square, {1, 2, 3, 4, 5, 6}, 2) do seen[#seen + 1] = v end
    table.sort(seen)
    assert.same({1, 4, 9, 16, 25, 36}, seen)
  end)

  it("imap gives nil results as lmp.null so the loop goes on", function()
    local out = {}
    for v in pool:imap(function(x) if x % 2 == 0 then return x end end, {1, 2, 3}) do
      out[#out + 1] = v
    end
    assert.same({lmp.null, 2, lmp.null}, out)
  end)

  it("imap over an endless generator stopped early uses bounded memory", function()
    local produced = 0
    local function endless() produced = produced + 1; return produced end
    local count = 0
    for _ in pool:imap(function(x) return x end, endless) do
      count = count + 1
      if count == 1000 then break end
    end
    assert.equal(1000, count)
    local ahead_early = produced - count
    for _ in pool:imap(function(x) return x end, endless) do
      count = count + 1
      if count == 200000 then break end
    end
    -- How far the reader runs ahead does not grow with the results taken.
    assert.is_true(produced - 200000 - ahead_early < 50000,
      "read " .. (produced - count) .. " items ahead")
  end)

  -- The scheduling's estimate of a task's time (which sets the chunk
  -- sizes of an imap and how many tasks a worker is given at once) is the
  -- time the task ran in its worker, not the time from sending it to
  -- reading its answer: here the answer waits unread for eight times the
  -- task's run (half a second at least). The task reports its own run
  -- through shared memory, and the main process spins without turning the
  -- loop, so the bounds follow the run however slow a loaded or sanitized
  -- machine makes it, and the wait still dwarfs it.
  it("a task's time is what it ran in the worker, not how long its answer waited", function()
    local core = require "lmp.core"
    local own <close> = lmp.Pool(1)
    local ran = lmp.Value("d", 0)
    local result = own:apply_async(function(reported)
      local c = require "lmp.core"
      local t0, c0 = c.hrtime(), os.clock()
      repeat until os.clock() - c0 > 0.03
      reported.value = c.hrtime() - t0
      return true
    end, {ran})
    local deadline = core.hrtime() + 60
    repeat until ran.value > 0 or core.hrtime() > deadline
    local run = ran.value
    assert.is_true(run > 0, "the task did not run within a minute")
    local wait = math.max(0.5, 8 * run)
    local t0 = core.hrtime()
    repeat until core.hrtime() - t0 > wait
    assert.is_true(result:get())
    assert.is_true(own.task_time >= 0.03, "task_time " .. own.task_time)
    -- Its run and the worker's own work around it, not the wait.
    assert.is_true(own.task_time < run + wait / 2,
                   ("task_time %g, run %g, wait %g"):format(own.task_time, run, wait))
  end)

  -- With the same estimate, an imap whose caller is slow between results
  -- (answers wait unread) still grows its chunks.
  it("imap's chunks grow with a caller that is slow between results", function()
    local own <close> = lmp.Pool(2)
    local items = {}
    for i = 1, 4000 do items[i] = i end
    local function sent()
      local n = 0
      for _, w in ipairs(own.workers) do n = n + w.sent end
      return n
    end
    local before, count = sent(), 0
    for v, i in own:imap(function(x) return x end, items) do
      assert.equal(i, v)
      count = count + 1
      if count % 100 == 1 then
        local t0 = os.clock()
        repeat until os.clock() - t0 > 0.01
      end
    end
    assert.equal(4000, count)
    -- Chunks of one item doubling to the largest (4000 / 8 = 500) take
    -- about 20 tasks; an estimate that counted the waits took 30 to 60.
    local tasks = sent() - before
    assert.is_true(tasks < 100, tasks .. " tasks for 4000 items")
  end)

  it("imap raises the failing item's error when it is reached", function()
    local got = {}
    local ok, err = pcall(function()
      for v in pool:imap(function(x)
        if x == 3 then error("bad three") end
        return x
      end, {1, 2, 3, 4}) do got[#got + 1] = v end
    end)
    assert.is_false(ok)
    assert.equal(3, err.index)
    assert.same({1, 2}, got)
  end)

  it("long strings cross whole both ways, written from the strings themselves", function()
    -- Strings of 64 kB and more are not copied into the encoding: the
    -- write takes them from the Lua string, which must stay alive until
    -- written even when nothing else refers to it any more.
    local function big(seed, n) return (string.char(seed % 251) .. "lmp"):rep(n // 4) end
    local function digest(s)
      local h = 0
      for i = 1, #s, 997 do h = (h * 31 + s:byte(i)) % 2147483647 end
      return #s, h
    end
    local results = {}
    for i = 1, 6 do
      local s = big(i, 300000 + i)
      results[i] = pool:apply_async(function(a, b, c) return #a, a == c, b, a .. "!" end,
                                    {s, "short", s})
    end
    collectgarbage()
    collectgarbage()
    for i = 1, 6 do
      local s = big(i, 300000 + i)
      local n, same, short, back = results[i]:get()
      assert.equal(#s, n)
      assert.is_true(same)
      assert.equal("short", short)
      assert.same({digest(s .. "!")}, {digest(back)})
      assert.is_true(back == s .. "!")
    end
  end)

  it("a worker's big strings sit on transparent huge pages when the kernel allows", function()
    local f = io.open("/sys/kernel/mm/transparent_hugepage/enabled")
    local setting = f and f:read("a") or "[never]"
    if f then f:close() end
    local huge_kb = pool:apply(function()
      local s = ("lmp!"):rep(16 << 20) -- 64 MB
      local rollup = io.open("/proc/self/smaps_rollup"):read("a")
      assert(#s == 64 << 20)
      return tonumber(rollup:match("AnonHugePages:%s*(%d+)"))
    end)
    if setting:find("[never]", 1, true) then
      assert.equal(0, huge_kb)
    else
      assert.is_true(huge_kb >= 32 * 1024, "AnonHugePages " .. huge_kb .. " kB")
    end
  end)

  it("a worker's big blocks are kept when freed and reused without page faults", function()
    if helpers.instrumented then return end -- valgrind manages memory its own way
    local faults = pool:apply(function()
      local function minflt()
        local f = io.open("/proc/self/stat")
        local fields = {}
        for x in f:read("a"):match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = x end
        f:close()
        return tonumber(fields[8])
      end
      local s = ("lmp!"):rep(16 << 20) -- 64 MB, and as much for string.rep's buffer
      s = nil -- luacheck: ignore
      collectgarbage()
      collectgarbage()
      local before = minflt()
      local t = ("LMP?"):rep(16 << 20)
      assert(#t == 64 << 20)
      return minflt() - before
    end)
    -- Fresh, it would be 32 faults per 64 MB on huge pages, 16384 without.
    assert.is_true(faults < 16, "page faults: " .. faults)
  end)

  it("a worker's values kept past their message cannot be read from freed bytes", function()
    -- The values reach the pool as a view of the received bytes, valid
    -- only while its message is handled: a view kept longer must raise,
    -- not read memory the next message reuses.
    local Pool = require("lmp.pool").Pool
    local on_message, kept = Pool._on_message, nil
    Pool._on_message = function(self, w, message, values)
      kept = kept or values
      return on_message(self, w, message, values)
    end
    local ok, r = pcall(pool.apply, pool, function() return "value" end)
    Pool._on_message = on_message
    assert.is_true(ok)
    assert.equal("value", r)
    assert.is_not_nil(kept)
    assert.has_error(function() require("lmp.core").payload_value(kept) end,
      "lmp: a payload view is used after its message was handled")
  end)

  it("a function is sent once per worker, not once per task", function()
    local calls = pool:map(function()
      _G.lmp_seen = (_G.lmp_seen or 0) + 1
      return _G.lmp_seen
    end, {1, 2, 3, 4, 5, 6, 7, 8}, 1)
    -- A fresh copy per task would restart its count at 1 every time.
    table.sort(calls)
    assert.is_true(calls[#calls] > 1)
  end)

  it("shared references, cycles and metatables span all arguments and results of a task", function()
    local s = {v = 1}
    assert.is_true(pool:apply(function(a, b) return a == b end, {s, s}))
    local c = {}; c.self = c
    assert.is_true(pool:apply(function(t) return t.self == t end, {c}))
    local r = pool:apply(function() local t = {}; t.me = t; return t end)
    assert.equal(r, r.me)
    local C = {}; C.__index = C
    function C:get() return self.x end
    assert.equal(5, pool:apply(function(o) return o:get() end, {setmetatable({x = 5}, C)}))
    assert.same({true, n = 1}, pool:map(function(t) return t[1] == t[2] end, {{s, s}}))
    local u = 0
    local function inc() u = u + 1; return u end
    local function get() return u end
    assert.equal(1, pool:apply(function(a, b) a(); return b() end, {inc, get}))
    local x, y = pool:apply(function() local t = {}; return t, t end)
    assert.equal(x, y)
  end)

  it("upvalues and the globals table travel with the function", function()
    local offset = 100
    local lookup = {a = 1, b = 2}
    local r = pool:map(function(k) return lookup[k] + offset end, {"a", "b"})
    assert.same({101, 102, n = 2}, r)
    assert.is_true(pool:apply(function() return _G == _ENV and string ~= nil end))
  end)

  it("the script's global functions and tables reach the workers", function()
    local status, out, err = helpers.run_lua([[
      local lmp = require "lmp"
      function helper(x) return x * factor end
      factor = 3
      config = {offset = 100}
      log = io.tmpfile()                      -- cannot be sent: left out
      grudge = coroutine.create(print)        -- neither can this
      function work(x) return helper(x) + config.offset end
      local pool <close> = lmp.Pool(2)
      print(table.concat(pool:map(work, {1, 2, 3}), " "))
      function later(x) return helper(x) * 2 end   -- defined after the first map
      factor = 10
      print(table.concat(pool:map(later, {1, 2}), " "))
      print(pool:apply(function() return log == nil and grudge == nil end))
    ]], helpers.runner)
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("103 106 109\n20 40\ntrue\n", out)
  end)

  it("workers know who they are; the main process too", function()
    local name, pid = pool:apply(function()
      local me = require("lmp").current_process()
      return me.name, me.pid
    end, {})
    assert.matches("^PoolWorker%-%d+$", name)
    assert.not_equal(lmp.current_process().pid, pid)
    assert.equal("MainProcess", lmp.current_process().name)
  end)

  it("an unsendable argument raises from the call, naming the path", function()
    local f = io.tmpfile()
    local ok, err = pcall(pool.apply_async, pool, print, {1, {log = f}})
    assert.is_false(ok)
    assert.equal("serialize", err.kind)
    assert.equal("cannot send userdata (FILE*) at args[2].log: open it inside the worker, "
      .. "or give it a __lmp_serialize metamethod", err.message)
    ok, err = pcall(pool.map, pool, print, {1, coroutine.create(print)})
    assert.is_false(ok)
    assert.matches("cannot send a coroutine at args%[2%]", err.message)
    f:close()
  end)

  it("a map of plain items sends its first tasks before it encodes the rest", function()
    -- The third task's encoding waits (in this process) until a worker has
    -- started on the first item: it only can if the first tasks went out
    -- before the rest were encoded.
    local core = require "lmp.core"
    local marker = os.tmpname()
    local seen, calls, encode_list = false, 0, core.encode_list
    core.encode_list = function(...)
      calls = calls + 1
      local deadline = core.hrtime() + 10
      while calls == 3 and not seen and core.hrtime() < deadline do
        local f = io.open(marker)
        seen = f:read("a") == "started"
        f:close()
      end
      return encode_list(...)
    end
    local ok, results = pcall(pool.map, pool, function(x)
      if x == "first" then
        local f = io.open(marker, "w")
        f:write("started")
        f:close()
      end
      return x
    end, {"first", "second", "third"}, 1)
    core.encode_list = encode_list
    os.remove(marker)
    assert.is_true(ok, results)
    assert.is_true(seen)
    assert.same({"first", "second", "third", n = 3}, results)
  end)

  it("a map of plain items sends each of its first tasks as soon as it is encoded", function()
    local core = require "lmp.core"
    local sent_before, encode_list = {}, core.encode_list
    local function sent()
      local n = 0
      for _, w in ipairs(pool.workers) do n = n + w.sent end
      return n
    end
    local start = sent()
    core.encode_list = function(...)
      sent_before[#sent_before + 1] = sent() - start
      return encode_list(...)
    end
    local ok, results = pcall(pool.map, pool, function(x) return x end, {1, 2, 3, 4}, 1)
    core.encode_list = encode_list
    assert.is_true(ok, results)
    assert.same({1, 2, 3, 4, n = 4}, results)
    -- The second task is encoded once the first went out.
    assert.equal(1, sent_before[2])
  end)

  it("an unsendable item late in a map fails the call, and nothing of the call runs", function()
    local items = {}
    for i = 1, 200 do items[i] = i end
    items[150] = coroutine.create(print)
    local marker = os.tmpname()
    local called = false
    local function mark(x)
      local f = io.open(marker, "a")
      f:write(x, " ")
      f:close()
      return x
    end
    local ok, err = pcall(pool.map_async, pool, mark, items, {chunksize = 10,
      callback = function() called = true end, error_callback = function() called = true end})
    assert.is_false(ok)
    assert.equal("serialize", err.kind)
    assert.matches("cannot send a coroutine at args%[150%]", err.message)
    ok, err = pcall(pool.map, pool, mark, items, 10)
    assert.is_false(ok)
    assert.matches("cannot send a coroutine at args%[150%]", err.message)
    assert.same({1, 4, 9, 16, 25, n = 5}, pool:map(square, {1, 2, 3, 4, 5}))
    lmp.sleep(0.1)
    local f = io.open(marker)
    local ran = f:read("a")
    f:close()
    os.remove(marker)
    assert.equal("", ran)
    assert.is_false(called)
  end)

  it("a function that captured the pool is refused naming the pool", function()
    local ok, err = pcall(pool.map, pool, function(x) return pool and x end, {1})
    assert.is_false(ok)
    assert.equal("serialize", err.kind)
    assert.matches("^cannot send lmp.Pool at function%(upvalue 'pool'%): a pool belongs to "
      .. "the process that made it", err.message)
    local r = pool:apply_async(function() return 1 end)
    ok, err = pcall(pool.apply, pool, function(h) return h end, {r})
    assert.matches("cannot send lmp.AsyncResult at args%[1%]", err.message)
    r:wait()
  end)

  it("a result that cannot be sent fails that task with kind serialize", function()
    local ok, err = pcall(pool.apply, pool, function() return io.tmpfile() end, {})
    assert.is_false(ok)
    assert.equal("serialize", err.kind)
    assert.equal(2, #pool:map(square, {1, 2}))
  end)

  it("bad arguments raise bad argument errors", function()
    assert.has_error(function() pool:map(square, true) end,
      "bad argument #2 to 'map' (iterable expected, got boolean)")
    assert.error_matches(function() pool:map(42, {}) end, "bad argument #1 to 'map'")
    assert.error_matches(function() pool:apply(square, 5) end, "bad argument #2 to 'apply'")
    assert.error_matches(function() pool:imap(square, {}, 0) end, "bad argument #3 to 'imap'")
    assert.error_matches(function() lmp.Pool(0) end, "bad argument #1 to 'Pool'")
    assert.error_matches(function() lmp.Pool{initializer = 3} end, "bad argument #1 to 'Pool'")
  end)
end)

describe("Pool options", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("processes defaults to cpu_count", function()
    local pool <close> = lmp.Pool()
    assert.equal(lmp.cpu_count(), pool.processes)
  end)

  it("an initializer with initargs configures each worker", function()
    local pool <close> = lmp.Pool{processes = 2, initializer = function(m) multiplier = m end,
                                  initargs = {10}}
    assert.same({10, 20, 30, n = 3}, pool:map(function(x) return x * multiplier end, {1, 2, 3}))
  end)

  it("maxtasksperchild replaces workers without losing or repeating a task", function()
    local pool <close> = lmp.Pool{processes = 2, maxtasksperchild = 2}
    local items = {}
    for i = 1, 20 do items[i] = i end
    local r = pool:map(function(x)
      return {x, require("lmp").current_process().pid}
    end, items, 1)
    local pids = {}
    for i = 1, 20 do
      assert.equal(i, r[i][1])
      pids[r[i][2]] = (pids[r[i][2]] or 0) + 1
    end
    for _, n in pairs(pids) do assert.is_true(n <= 2) end
  end)

  it("<close> closes and joins", function()
    local pids
    do
      local pool <close> = lmp.Pool(2)
      pids = {pool.workers[1].pid, pool.workers[2].pid}
    end
    for _, pid in ipairs(pids) do
      assert.is_nil(io.open("/proc/" .. pid .. "/stat"))
    end
  end)

  it("close lets queued work finish; join waits for the workers", function()
    local pool = lmp.Pool(2)
    local r = pool:map_async(function(x)
      local t = os.clock()
      while os.clock() - t < 0.05 do end
      return x
    end, {1, 2, 3, 4}, 1)
    pool:close()
    assert.is_true(pool:join(10))
    assert.same({1, 2, 3, 4, n = 4}, r:get())
  end)

  it("join before close raises; submitting after close raises kind closed", function()
    local pool = lmp.Pool(1)
    assert.has_error(function() pool:join() end)
    pool:close()
    local ok, err = pcall(pool.map, pool, square, {1})
    assert.is_false(ok)
    assert.equal("closed", err.kind)
    pool:join()
  end)

  it("terminate with answers already on their way reports no error", function()
    local pool = lmp.Pool(2)
    local reported = {}
    lmp.on_error(function(err) reported[#reported + 1] = tostring(err) end)
    local results = {}
    for i = 1, 2000 do results[i] = pool:apply_async(function(x) return x end, {i}) end
    -- Let the workers answer the tasks they hold before the pool goes.
    local t = require("lmp.core").hrtime()
    while require("lmp.core").hrtime() - t < 0.05 do end
    pool:terminate()
    pool:join()
    lmp.run()
    lmp.on_error(nil)
    assert.same({}, reported)
    local ok, err = pcall(results[2000].get, results[2000])
    assert.is_false(ok)
    assert.equal("closed", err.kind)
  end)

  it("terminate stops work at once and fails what was pending", function()
    local pool = lmp.Pool(2)
    local r = pool:apply_async(function()
      local t = os.clock()
      while os.clock() - t < 30 do end
    end, {})
    pool:terminate()
    pool:join()
    local ok, err = pcall(r.get, r)
    assert.is_false(ok)
    assert.equal("closed", err.kind)
  end)
end)

-- lmp.Pipe (docs/reference.md, "Processes").
local describe, it, assert, after_each, pcall = describe, it, assert, after_each, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"

describe("Pipe", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("carries any value between its ends, both ways", function()
    local a, b = lmp.Pipe()
    local t = {1, "two", {three = 3}, n = 3}
    t.self = t
    a:send(t)
    local got = b:recv()
    assert.equal(got, got.self)
    assert.same({three = 3}, got[3])
    b:send(nil)
    assert.is_nil(a:recv())
    a:close(); b:close()
  end)

  it("poll says whether something waits, within a timeout", function()
    local a, b = lmp.Pipe()
    assert.is_false(b:poll())
    local t0 = core.hrtime()
    assert.is_false(b:poll(0.1))
    assert.is_true(core.hrtime() - t0 >= 0.09)
    a:send(1)
    assert.is_true(b:poll())
    assert.is_true(b:poll(1))
    assert.equal(1, b:recv())
    a:close(); b:close()
  end)

  it("talks to an lmp.Process that was given one end", function()
    local parent_end, child_end = lmp.Pipe()
    local p = lmp.Process{target = function(conn, x)
      conn:send(x * 2)
      conn:send("child got " .. conn:recv())
      conn:close()
    end, args = {child_end, 21}}
    p:start()
    child_end:close()
    assert.equal(42, parent_end:recv())
    parent_end:send("ping")
    assert.equal("child got ping", parent_end:recv())
    p:join()
    assert.equal(0, p.exitcode)
    -- Every other end is closed now: end of file.
    local ok, err = pcall(parent_end.recv, parent_end)
    assert.is_false(ok)
    assert.equal("closed", err.kind)
    parent_end:close()
  end)

  it("recv in a spawned coroutine yields to the loop", function()
    local a, b = lmp.Pipe()
    local log = {}
    lmp.spawn(function() local v = b:recv(); log[#log + 1] = v end)
    log[#log + 1] = "main goes on"
    lmp.spawn(function() lmp.sleep(0.05); a:send("late value") end)
    lmp.run()
    assert.same({"main goes on", "late value"}, log)
    a:close(); b:close()
  end)

  it("a pool worker can be given a connection, and answers on it", function()
    local a, b = lmp.Pipe()
    local pool <close> = lmp.Pool(1)
    pool:apply(function(conn) conn:send("answered") end, {b})
    assert.equal("answered", a:recv())
    a:close(); b:close()
  end)

  it("Pipe(false) is one way: the receiving end first, the wrong direction refused", function()
    local r, w = lmp.Pipe(false)
    assert.equal("receive", r:mode())
    assert.equal("send", w:mode())
    w:send({1, 2})
    assert.same({1, 2}, r:recv())
    assert.error_matches(function() r:send(1) end, "only receives %(Pipe%(false%) returns the receiving end first")
    assert.error_matches(function() w:recv() end, "only sends")
    assert.error_matches(function() w:poll() end, "only sends")
    -- The direction travels with an end given to a process.
    local p = lmp.Process{target = function(rr, ww)
      local recv_refused = not pcall(ww.recv, ww)
      local send_refused = not pcall(rr.send, rr, "no")
      os.exit(recv_refused and send_refused and 7 or 1)
    end, args = {r, w}}
    p:start()
    p:join()
    assert.equal(7, p.exitcode)
    local x, y = lmp.Pipe()
    assert.equal("duplex", x:mode())
    x:close(); y:close(); r:close(); w:close()
  end)

  -- Sizes about the socket buffer and far above it, through ends the main
  -- process waited on (which libuv leaves non-blocking, in both processes
  -- that share them), to a reader in another process that takes its time.
  it("sends of any size arrive whole after waits, to a slow reader in another process", function()
    local mine, theirs = lmp.Pipe()
    local sizes = {10, 200 * 1024, 212992, 300 * 1024, 4 * 1024 * 1024, 24 * 1024 * 1024}
    local p = lmp.Process{target = function(c, sizes)
      for i = 1, #sizes do
        os.execute("sleep 0.05") -- a slow reader
        local s = c:recv()
        assert(#s == sizes[i] and s:sub(-6) == ("%6d"):format(i), "bad value " .. i)
      end
      -- And back: big values to a main process that waited on its end.
      for i = 1, #sizes do c:send(("x"):rep(sizes[i] - 6) .. ("%6d"):format(i)) end
      c:close()
    end, args = {theirs, sizes}}
    p:start()
    theirs:close()
    for i = 1, #sizes do
      assert.is_false(mine:poll(0.01)) -- the main process waits on its end
      mine:send(("y"):rep(sizes[i] - 6) .. ("%6d"):format(i))
    end
    for i = 1, #sizes do
      local s = mine:recv()
      assert.equal(sizes[i], #s)
      assert.equal(("%6d"):format(i), s:sub(-6))
    end
    p:join()
    assert.equal(0, p.exitcode)
    mine:close()
  end)

  it("misuse raises", function()
    assert.error_matches(function() lmp.Pipe(5) end, "bad argument #1 to 'Pipe'")
    local a, b = lmp.Pipe()
    a:close()
    assert.has_error(function() a:send(1) end)
    b:close()
  end)

  it("a descriptor this process does not have is refused when the connection is made", function()
    local ok, err = pcall(core.connection, 1000)
    assert.is_false(ok)
    assert.matches("no connection on descriptor 1000", err)
    local a, b = lmp.Pipe()
    local fd = a:fileno()
    assert.is_true(core.fd_lock(fd, 0, false))
    assert.is_true(core.fd_unlock(fd, 0))
    a:close()
    b:close()
    assert.is_false(core.fd_unlock(fd, 0))
  end)
end)

describe("Queue", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("is first in, first out, with qsize, empty, full and nowait forms", function()
    local q = lmp.Queue(3)
    assert.is_true(q:empty())
    q:put({a = 1}); q:put("two"); q:put_nowait(nil)
    assert.equal(3, q:qsize())
    assert.is_true(q:full())
    assert.same({a = 1}, q:get())
    assert.equal("two", q:get_nowait())
    assert.is_nil(q:get())
    assert.is_true(q:empty())
    q:close()
  end)

  it("get and put give up with kinds empty and full", function()
    local q = lmp.Queue(1)
    local ok, err = pcall(q.get, q, false)
    assert.is_false(ok)
    assert.equal("empty", err.kind)
    local t0 = core.hrtime()
    ok, err = pcall(q.get, q, true, 0.1)
    assert.is_false(ok)
    assert.equal("empty", err.kind)
    assert.is_true(core.hrtime() - t0 >= 0.09)
    q:put(1)
    ok, err = pcall(q.put, q, 2, true, 0.05)
    assert.is_false(ok)
    assert.equal("full", err.kind)
    ok, err = pcall(q.put_nowait, q, 2)
    assert.equal("full", err.kind)
    q:close()
  end)

  it("carries work to several lmp.Process consumers and results back", function()
    local tasks, results = lmp.Queue(), lmp.Queue()
    local procs = {}
    for i = 1, 3 do
      procs[i] = lmp.Process{target = function(inq, outq)
        while true do
          local item = inq:get()
          if item == "stop" then break end
          outq:put({item, item * item})
        end
      end, args = {tasks, results}}
      procs[i]:start()
    end
    for i = 1, 60 do tasks:put(i) end
    for _ = 1, 3 do tasks:put("stop") end
    local seen = {}
    for _ = 1, 60 do
      local r = results:get(true, 60) -- workers under valgrind start slowly
      assert.equal(r[1] * r[1], r[2])
      assert.is_nil(seen[r[1]])
      seen[r[1]] = true
    end
    for _, p in ipairs(procs) do p:join(); assert.equal(0, p.exitcode) end
    assert.is_true(results:empty())
    tasks:close(); results:close()
  end)

  -- Each of these runs in a script of its own, under a timeout: put used
  -- to wait for a reader, and a test that hangs tells nothing.
  local function run_script(code, interpreter)
    local status, out, err = helpers.run_lua(code, "timeout -s KILL 120 "
      .. (interpreter or helpers.runner))
    assert.equal(0, status, err)
    return out
  end

  it("put returns at once with nobody reading; a reader in another process gets all in order", function()
    assert.equal("put returned\nall in order\n", run_script([[
      local lmp = require "lmp"
      local q, results = lmp.Queue(), lmp.Queue()
      for i = 1, 10000 do q:put(i) end
      q:put(string.rep("z", 10 << 20))
      q:put("last")
      print("put returned")
      local p = lmp.Process{target = function(q, out)
        os.execute("sleep 0.2") -- a reader that comes late
        for i = 1, 10000 do
          local v = q:get()
          if v ~= i then out:put("item " .. i .. " is " .. tostring(v)); return end
        end
        local big, last = q:get(), q:get()
        out:put((#big == 10 << 20 and last == "last") and "all in order" or "wrong end")
      end, args = {q, results}}
      p:start()
      print(results:get())
      p:join()
      assert(p.exitcode == 0 and q:empty())
    ]]))
  end)

  it("a process that put values and exits leaves them all for a reader", function()
    assert.equal("the child put all\nall in order\n0\n", run_script([[
      local lmp = require "lmp"
      local q = lmp.Queue()
      local mine, theirs = lmp.Pipe()
      local p = lmp.Process{target = function(q, c)
        for i = 1, 10000 do q:put(i) end
        q:put(string.rep("z", 10 << 20))
        c:send("the child put all") -- before anyone reads: put did not wait
      end, args = {q, theirs}}
      p:start()
      theirs:close()
      print(mine:recv())
      os.execute("sleep 0.2") -- the child is at its exit, waiting for a reader
      local ok = true
      for i = 1, 10000 do ok = ok and q:get() == i end
      ok = ok and #q:get() == 10 << 20
      print(ok and "all in order" or "wrong")
      p:join()
      print(p.exitcode)
    ]]))
  end)

  it("the main process waits at exit until a reader took what it put", function()
    -- Under lua5.4 nothing joins the child at exit, which then goes with
    -- its parent: there the run only proves that the exit is clean while
    -- the feeder's thread writes (lua_close unloads C modules).
    for _, interpreter in ipairs{helpers.runner, "lua5.4"} do
      local out = run_script([[
      local lmp = require "lmp"
      local q = lmp.Queue()
      local p = lmp.Process{target = function(q)
        os.execute("sleep 0.3")
        print(#q:get())
      end, args = {q}}
      p:start()
      q:put(string.rep("z", 10 << 20))
    ]], interpreter)
      if interpreter == helpers.runner then assert.equal("10485760\n", out) end
    end
  end)

  it("maxsize still makes put wait; cancel_join_thread lets a process exit without a reader", function()
    assert.equal("full\n0\n", run_script([[
      local lmp = require "lmp"
      local q = lmp.Queue(2)
      q:put(1); q:put(2)
      local ok, err = pcall(q.put, q, 3, true, 0.1)
      print(err.kind)
      local unread = lmp.Queue()
      local p = lmp.Process{target = function(q)
        q:put(string.rep("z", 10 << 20))
        q:cancel_join_thread()
      end, args = {unread}}
      p:start()
      p:join(60)
      print(p.exitcode)
      unread:close()
    ]]))
  end)

  it("refuses what cannot be sent before queueing it", function()
    local q = lmp.Queue()
    local ok, err = pcall(q.put, q, {io.tmpfile()})
    assert.is_false(ok)
    assert.equal("serialize", err.kind)
    assert.is_true(q:empty())
    assert.error_matches(function() lmp.Queue(-1) end, "bad argument #1 to 'Queue'")
    q:close()
  end)
end)

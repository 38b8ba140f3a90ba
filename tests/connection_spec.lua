-- Connection bytes (send_bytes, recv_bytes, recv_bytes_into), poll's
-- timeouts, Process.sentinel and lmp.connection.wait (docs/reference.md,
-- "Processes"), with other processes that write, die and end.
local describe, it, assert, after_each, pcall = describe, it, assert, after_each, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"
helpers.build_crash_module() -- tests/c/crash.c: raw bytes on a connection

describe("Connection bytes", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("send_bytes with offset and size; recv_bytes; both interoperate with send and recv", function()
    local a, b = lmp.Pipe()
    a:send_bytes("hello world")
    a:send_bytes("hello world", 6)
    a:send_bytes("hello world", 2, 3)
    a:send_bytes("")
    assert.equal("hello world", b:recv_bytes())
    assert.equal("world", b:recv_bytes())
    assert.equal("llo", b:recv_bytes())
    assert.equal("", b:recv_bytes())
    -- send(v) is send_bytes(lmp.dumps(v)), both ways.
    local v = {1, "two", {three = 3}}
    a:send(v)
    assert.equal(lmp.dumps(v), b:recv_bytes())
    a:send_bytes(lmp.dumps(v))
    assert.same(v, b:recv())
    -- Bytes that are not the value format: recv raises, no crash.
    a:send_bytes("\255\254 not a value")
    assert.has_error(function() b:recv() end)
    assert.error_matches(function() a:send_bytes("abc", 4) end, "bad argument #2 to 'send_bytes'")
    assert.error_matches(function() a:send_bytes("abc", 1, 3) end, "bad argument #3 to 'send_bytes'")
    assert.error_matches(function() a:send_bytes(5) end, "bad argument #1 to 'send_bytes'")
    a:close(); b:close()
  end)

  it("bytes of any size cross to another process and back", function()
    local mine, theirs = lmp.Pipe()
    local p = lmp.Process{target = function(c)
      for _ = 1, 3 do c:send_bytes(c:recv_bytes():upper()) end
    end, args = {theirs}}
    p:start(); theirs:close()
    for _, n in ipairs{1, 300 * 1024, 8 * 1024 * 1024} do
      mine:send_bytes(("ab"):rep(n // 2))
      assert.equal(("AB"):rep(n // 2), mine:recv_bytes())
    end
    p:join()
    assert.equal(0, p.exitcode)
    local ok, err = pcall(mine.recv_bytes, mine)
    assert.equal("closed", err.kind)
    mine:close()
  end)

  it("recv_bytes(maxlength) refuses a longer message with kind too_long; the end is unreadable after", function()
    local a, b = lmp.Pipe()
    a:send_bytes("12345")
    a:send_bytes("next")
    assert.equal("12345", b:recv_bytes(5))
    local ok, err = pcall(b.recv_bytes, b, 3)
    assert.is_false(ok)
    assert.equal("too_long", err.kind)
    ok, err = pcall(b.recv_bytes, b)
    assert.equal("closed", err.kind)
    ok, err = pcall(b.recv, b)
    assert.equal("closed", err.kind)
    b:send("it can still send")
    assert.equal("it can still send", a:recv())
    a:close(); b:close()
  end)

  it("recv_bytes_into a SharedMemory at an offset; a buffer too short gets kind buffer_too_short", function()
    local a, b = lmp.Pipe()
    local shm = lmp.shared_memory.SharedMemory{create = true, size = 16}
    a:send_bytes("abcdef")
    assert.equal(6, b:recv_bytes_into(shm, 4))
    assert.equal("abcdef", shm:read(4, 6))
    a:send_bytes(("x"):rep(13))
    local ok, err = pcall(b.recv_bytes_into, b, shm, 4)
    assert.is_false(ok)
    assert.equal("buffer_too_short", err.kind)
    assert.equal(("x"):rep(13), err.value)
    assert.equal("abcdef", shm:read(4, 6)) -- untouched
    assert.error_matches(function() b:recv_bytes_into({}, 0) end, "bad argument #1 to 'recv_bytes_into'")
    shm:close(); shm:unlink()
    a:close(); b:close()
  end)

  it("a peer killed in the middle of a message: recv_bytes and recv raise kind closed", function()
    for _, method in ipairs{"recv_bytes", "recv"} do
      local mine, theirs = lmp.Pipe()
      local p = lmp.Process{target = function(c, method)
        -- Far more than the socket holds: the writer waits mid-message.
        if method == "recv" then c:send(("z"):rep(64 << 20)) else c:send_bytes(("z"):rep(64 << 20)) end
      end, args = {theirs, method}}
      p:start(); theirs:close()
      assert.is_true(mine:poll(60)) -- the message has begun
      assert.is_true(helpers.wait_for(function() return p:is_alive() end, 5))
      p:kill()
      p:join()
      local ok, err = pcall(mine[method], mine)
      assert.is_false(ok)
      assert.equal("closed", err.kind)
      mine:close()
    end
  end)

  it("a peer that closes in the middle of a frame's prefix: recv and recv_bytes say so", function()
    -- Three bytes of the eight-byte length, then the end: not the clean
    -- end between two messages, which reads as "end of file".
    for _, method in ipairs{"recv", "recv_bytes"} do
      local a, b = lmp.Pipe()
      require("crash").write(a:fileno(), "\0\0\0")
      a:close()
      local ok, err = pcall(b[method], b)
      assert.is_false(ok)
      assert.equal("closed", err.kind)
      assert.matches("in the middle of a message", err.message, 1, true)
      b:close()
    end
  end)

  it("poll with a negative timeout does not wait; math.huge waits for the message", function()
    local a, b = lmp.Pipe()
    assert.is_false(b:poll(-1))
    lmp.spawn(function() lmp.sleep(0.05); a:send(1) end)
    assert.is_true(b:poll(math.huge))
    assert.equal(1, b:recv())
    assert.error_matches(function() core.connection(-1) end, "bad argument #1")
    a:close(); b:close()
  end)
end)

describe("connection.wait", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("nothing ready: an empty list after the timeout", function()
    local a, b = lmp.Pipe()
    local q = lmp.Queue()
    local p = lmp.Process{target = function(c) c:recv() end, args = {a}}
    p:start()
    local t0 = core.hrtime()
    local ready = lmp.connection.wait({b, q, p.sentinel}, 0.2)
    assert.same({}, ready)
    assert.is_true(core.hrtime() - t0 >= 0.19)
    assert.same({}, lmp.connection.wait({b, q, p.sentinel}, 0))
    b:send("go")
    p:join()
    a:close(); b:close(); q:close()
  end)

  it("one ready among connections, a queue and sentinels: that one, put by another process", function()
    local a, b = lmp.Pipe()
    local q = lmp.Queue()
    local sleeper = lmp.Process{target = function() os.execute("sleep 30") end}
    sleeper:start()
    assert.is_not_nil(sleeper.sentinel)
    local putter = lmp.Process{target = function(q) os.execute("sleep 0.1"); q:put("hi") end, args = {q}}
    putter:start()
    local ready = lmp.connection.wait({b, q, sleeper.sentinel}, 60)
    assert.equal(1, #ready)
    assert.equal(q, ready[1])
    assert.equal("hi", q:get())
    putter:join()
    -- Both ready: in the order given.
    a:send(1); q:put(2)
    assert.equal(1, #lmp.connection.wait({q}, 10))
    ready = lmp.wait({q, b}, 10) -- lmp.wait takes the same list
    assert.equal(2, #ready)
    assert.equal(q, ready[1]); assert.equal(b, ready[2])
    sleeper:kill(); sleeper:join()
    a:close(); b:close(); q:close()
  end)

  it("a process killed from outside: its sentinel becomes ready", function()
    local a, b = lmp.Pipe()
    local p = lmp.Process{target = function() os.execute("sleep 30") end}
    p:start()
    assert.same({}, lmp.connection.wait({p.sentinel, b}, 0.05))
    -- SIGKILL from another process, not from this one.
    helpers.run("kill -9 " .. p.pid)
    local ready = lmp.connection.wait({b, p.sentinel}, 60)
    assert.same({p.sentinel}, ready)
    p:join()
    assert.equal(-9, p.exitcode)
    -- A process that exits by itself too, and its end of file.
    local q = lmp.Process{target = function(c) c:send("bye") end, args = {a}}
    q:start(); a:close()
    q:join()
    ready = lmp.connection.wait({q.sentinel, b}, 10)
    assert.same({q.sentinel, b}, ready)
    assert.equal("bye", b:recv())
    b:close()
  end)

  it("without a pidfd (old kernels, valgrind) a sentinel is an eventfd signalled at the child's end", function()
    local p = lmp.Process{target = function() os.execute("sleep 30") end}
    p:start()
    local sentinel, dropped = core.sentinel(p.pid, true), core.sentinel(p.pid, true)
    dropped:close() -- closed before the child ends: nothing is written to a stale descriptor
    assert.same({}, lmp.connection.wait({sentinel}, 0.05))
    helpers.run("kill -9 " .. p.pid)
    assert.same({sentinel}, lmp.connection.wait({sentinel}, 60))
    p:join()
    assert.equal(-9, p.exitcode)
    assert.same({sentinel}, lmp.connection.wait({sentinel}, 0)) -- and stays ready once reaped
    sentinel:close()
    -- Only a child has one.
    local ok, err = pcall(core.sentinel, 1, true)
    assert.is_false(ok)
    assert.matches("no sentinel for process 1", err)
    -- In a child too, where the wait blocks in poll(2).
    local out = lmp.Queue()
    local parent = lmp.Process{target = function(out)
      local lmp, core = require "lmp", require "lmp.core"
      local kid = lmp.Process{target = function() end}
      kid:start()
      local s = core.sentinel(kid.pid, true)
      out:put(#lmp.connection.wait({s}, 60))
      kid:join()
    end, args = {out}}
    parent:start()
    assert.equal(1, out:get(true, 60))
    parent:join()
    assert.equal(0, parent.exitcode)
    out:close()
  end)

  it("waits in a child without a loop, and yields in lmp.spawn", function()
    local mine, theirs = lmp.Pipe()
    local p = lmp.Process{target = function(c)
      local none = lmp.connection.wait({c}, 0.05)
      local ready = lmp.connection.wait({c})
      c:send(#none .. " " .. #ready .. " " .. c:recv())
    end, args = {theirs}}
    p:start(); theirs:close()
    os.execute("sleep 0.2")
    mine:send("x")
    assert.equal("0 1 x", mine:recv())
    p:join()
    local a, b = lmp.Pipe()
    local log = {}
    lmp.spawn(function() local r = lmp.connection.wait({b}); log[#log + 1] = #r end)
    log[#log + 1] = "main goes on"
    lmp.spawn(function() lmp.sleep(0.05); a:send(1) end)
    lmp.run()
    assert.same({"main goes on", 1}, log)
    a:close(); b:close(); mine:close()
  end)

  it("refuses what cannot be waited on", function()
    assert.error_matches(function() lmp.connection.wait({{}}) end, "bad argument #1 to 'wait'")
    assert.error_matches(function() lmp.connection.wait(5) end, "bad argument #1 to 'wait'")
  end)
end)

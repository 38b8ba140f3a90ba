-- CPython's Lib/test/_test_multiprocessing.py, the Pipe and connection
-- tests (_TestConnection, _TestListener, _TestListenerClient, TestWait,
-- _TestPoll, TestInvalidHandle), translated to lmp.Pipe and lmp.connection. Python's send_bytes/recv_bytes are send/recv of a Lua string
-- here. tests/peer/README.md says what was ported and what differs.
local describe, it, after_each, pending, assert, pcall =
  describe, it, after_each, pending, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"

-- The child of Python's _echo: sends back what it gets until the
-- sentinel (false here: Python's empty bytes are a value like any other).
local function echo(conn)
  while true do
    local msg = conn:recv()
    if msg == false then break end
    conn:send(msg)
  end
  conn:close()
end

describe("peer: _TestConnection", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  it("test_connection", function()
    local conn, child_conn = lmp.Pipe()
    local p = lmp.Process{target = echo, args = {child_conn}, daemon = true}
    p:start()
    local seq = {1, 2.25, nil, n = 3}
    local msg = "hello world"
    assert.equal("integer", math.type(conn:fileno()))
    assert.is_nil(conn:send(seq))
    assert.same(seq, conn:recv())
    conn:send(msg)
    assert.equal(msg, conn:recv())
    conn:send(msg:rep(10))
    assert.equal(msg:rep(10), conn:recv())
    assert.is_false(conn:poll())
    assert.is_false(conn:poll(0.1))
    conn:send(nil)
    lmp.sleep(0.1)
    assert.is_true(conn:poll(0.1))
    assert.is_nil(conn:recv())
    conn:send(false) -- tell the child to quit
    child_conn:close()
    p:join()
    local ok, err = pcall(conn.recv, conn)
    assert.is_false(ok)
    assert.equal("closed", err.kind) -- Python's EOFError
    conn:close()
  end)

  -- Bug (issue 11, item 4): once the main process has waited on an end
  -- (poll/recv turn the loop and watch it), a send of several MB fails
  -- with "channel write failed: Resource temporarily unavailable",
  -- possibly after writing part of a frame.
  it("test_connection (really_big_msg): a 16 MB send after waiting on the end arrives whole", function()
    local conn, child_conn = lmp.Pipe()
    local p = lmp.Process{target = echo, args = {child_conn}, daemon = true}
    p:start()
    child_conn:close()
    conn:send("warm up")
    assert.equal("warm up", conn:recv())
    local really_big_msg = ("X"):rep(1024 * 1024 * 16)
    conn:send(really_big_msg)
    assert.equal(really_big_msg, conn:recv())
    conn:send(false)
    p:join()
    conn:close()
  end)

  it("test_duplex_false (one direction)", function()
    local reader, writer = lmp.Pipe(false)
    assert.is_nil(writer:send(1))
    assert.equal(1, reader:recv())
    reader:close(); writer:close()
  end)

  -- Bug (issue 11, item 8): Pipe(false) gives two duplex ends.
  it("test_duplex_false: Pipe(false) ends refuse the wrong direction", function()
    local reader, writer = lmp.Pipe(false)
    assert.has_error(function() reader:send(2) end)
    assert.has_error(function() writer:recv() end)
    assert.has_error(function() writer:poll() end)
    reader:close(); writer:close()
  end)

  it("test_spawn_close: the child's end closed right after start", function()
    local conn, child_conn = lmp.Pipe()
    local p = lmp.Process{target = echo, args = {child_conn}, daemon = true}
    p:start()
    child_conn:close()
    conn:send("hello")
    assert.equal("hello", conn:recv())
    conn:send(false)
    conn:close()
    p:join()
  end)

  it("test_context: ends as to-be-closed variables", function()
    local outer_a, outer_b
    do
      local a <close>, b = lmp.Pipe()
      local b_closing <close> = b
      outer_a, outer_b = a, b
      a:send(1729)
      assert.equal(1729, b:recv())
    end
    assert.has_error(function() outer_a:recv() end)
    assert.has_error(function() outer_b:recv() end)
  end)

  it("test_sendbytes: offsets from 0, as Python's", function()
    local msg = "abcdefghijklmnopqrstuvwxyz"
    local a, b = lmp.Pipe()
    a:send_bytes(msg)
    assert.equal(msg, b:recv_bytes())
    a:send_bytes(msg, 5)
    assert.equal(msg:sub(6), b:recv_bytes())
    a:send_bytes(msg, 7, 8)
    assert.equal(msg:sub(8, 15), b:recv_bytes())
    a:send_bytes(msg, 26)
    assert.equal("", b:recv_bytes())
    a:send_bytes(msg, 26, 0)
    assert.equal("", b:recv_bytes())
    -- Python's ValueError: outside the string, or a negative offset or size.
    for _, bad in ipairs{{27}, {22, 5}, {26, 1}, {-1}, {4, -1}} do
      assert.has_error(function() a:send_bytes(msg, bad[1], bad[2]) end)
    end
    assert.is_false(b:poll(0)) -- nothing was sent by the refused calls
    a:close(); b:close()
  end)
end)

-- Python's families are "AF_UNIX" and "AF_INET"; lmp's "unix" and "tcp".
local families = {unix = {}, tcp = {address = {"127.0.0.1", 0}}}

local function listener(family)
  return lmp.connection.Listener{family = family, address = families[family].address}
end

describe("peer: _TestListener", function()
  it("test_multiple_bind: a second listener on the same address fails", function()
    for family in pairs(families) do
      local l <close> = listener(family)
      local ok, err = pcall(lmp.connection.Listener, {address = l.address, family = family})
      assert.is_false(ok)
      assert.equal("os", err.kind) -- Python's OSError
    end
  end)

  it("test_context: listener, client and accepted end as to-be-closed variables", function()
    local outer
    do
      local l <close> = lmp.connection.Listener{}
      outer = l
      local c <close> = lmp.connection.Client(l.address)
      local d <close> = l:accept(30)
      c:send(1729)
      assert.equal(1729, d:recv())
    end
    assert.has_error(function() outer:accept(0) end)
  end)
end)

describe("peer: _TestListenerClient", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  local function client(address)
    local conn = require("lmp").connection.Client(address)
    conn:send("hello")
    conn:close()
  end

  it("test_listener_client", function()
    for family in pairs(families) do
      local l = listener(family)
      local p = lmp.Process{target = client, args = {l.address}, daemon = true}
      p:start()
      local conn = l:accept(30)
      assert.equal("hello", conn:recv())
      p:join()
      conn:close()
      l:close()
    end
  end)

  -- The client has connected, sent and closed before accept: the message
  -- is still read.
  it("test_issue14725", function()
    local l = lmp.connection.Listener{}
    local p = lmp.Process{target = client, args = {l.address}, daemon = true}
    p:start()
    p:join()
    local conn = l:accept(30)
    assert.equal("hello", conn:recv())
    conn:close()
    l:close()
  end)

  it("test_issue16955: poll sees bytes the accepted end sent", function()
    for family in pairs(families) do
      local l = listener(family)
      local c = lmp.connection.Client(l.address)
      local a = l:accept(30)
      a:send_bytes("hello")
      assert.is_true(c:poll(1))
      a:close(); c:close(); l:close()
    end
  end)
end)

describe("peer: TestWait", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  local function child_wait(w, slow)
    local l = require("lmp")
    for i = 0, 9 do
      if slow then l.sleep(math.random() * 0.02) end
      w:send({i, require("lmp.core").getpid()})
    end
    w:close()
  end

  local function test_wait(slow)
    local readers, procs, messages = {}, {}, {}
    for i = 1, 4 do
      local r, w = lmp.Pipe(false)
      procs[i] = lmp.Process{target = child_wait, args = {w, slow}, daemon = true}
      procs[i]:start()
      w:close()
      readers[i] = r
    end
    while #readers > 0 do
      for _, r in ipairs(lmp.connection.wait(readers, 30)) do
        local ok, msg = pcall(r.recv, r)
        if ok then
          messages[#messages + 1] = msg[1] .. ":" .. msg[2]
        else
          assert.equal("closed", msg.kind) -- Python's EOFError
          for i, x in ipairs(readers) do if x == r then table.remove(readers, i) break end end
          r:close()
        end
      end
    end
    local expected = {}
    for _, p in ipairs(procs) do
      for i = 0, 9 do expected[#expected + 1] = i .. ":" .. p.pid end
    end
    table.sort(messages); table.sort(expected)
    assert.same(expected, messages)
    for _, p in ipairs(procs) do p:join() end
  end

  it("test_wait", function() test_wait(false) end)

  it("test_wait_slow (sleeps up to 20 ms, not 100)", function() test_wait(true) end)

  it("test_wait_timeout (0.5 s for 5)", function()
    local a, b = lmp.Pipe()
    local t0 = core.hrtime()
    assert.same({}, lmp.connection.wait({a, b}, 0.5))
    local delta = core.hrtime() - t0
    assert.is_true(delta > 0.25, delta) -- Python's lower bound; no upper bound
    b:send(false)
    assert.same({a}, lmp.connection.wait({a, b}, 20))
    a:close(); b:close()
  end)

  -- A sentinel is an object here (Python's is a descriptor number).
  it("test_wait_integer", function()
    local sem = lmp.Semaphore(0)
    local a, b = lmp.Pipe()
    local p = lmp.Process{target = function(s) s:release(); require("lmp").sleep(0.5) end,
                          args = {sem}}
    p:start()
    assert.is_true(sem:acquire(true, 20))
    -- Without Python's bounds on the time taken (a loaded machine).
    assert.same({p.sentinel}, lmp.connection.wait({a, p.sentinel, b}, 20))
    assert.is_false(p:is_alive())
    a:send(false)
    assert.same({p.sentinel, b}, lmp.connection.wait({a, p.sentinel, b}, 20))
    b:send(false)
    assert.same({a, p.sentinel, b}, lmp.connection.wait({a, p.sentinel, b}, 20))
    p:join()
    a:close(); b:close()
  end)

  it("test_neg_timeout: does not wait", function()
    local a, b = lmp.Pipe()
    local t0 = core.hrtime()
    assert.same({}, lmp.connection.wait({a}, -1))
    assert.is_true(core.hrtime() - t0 < 1)
    a:close(); b:close()
  end)
end)

describe("peer: _TestPoll", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  it("test_empty_string", function()
    local a, b = lmp.Pipe()
    assert.is_false(a:poll())
    b:send("")
    assert.is_true(a:poll())
    assert.is_true(a:poll())
    a:close(); b:close()
  end)

  it("test_strings", function()
    local strings = {"hello", "", "a", "b", "", "bye", "", "lop"}
    local a, b = lmp.Pipe()
    local p = lmp.Process{target = function(conn, list)
      for _, s in ipairs(list) do require("lmp").sleep(0.02); conn:send(s) end
      conn:close()
    end, args = {b, strings}}
    p:start()
    for _, s in ipairs(strings) do
      for _ = 1, 200 do if a:poll(0.01) then break end end
      assert.equal(s, a:recv())
    end
    p:join()
    a:close(); b:close()
  end)

  it("test_boundaries: a child polling an end does not take half a message", function()
    local r, w = lmp.Pipe()
    local p = lmp.Process{target = function(conn) conn:poll(5) end, args = {r}}
    p:start()
    lmp.sleep(0.2)
    local messages = {first = true, second = true}
    w:send("first"); w:send("second")
    w:close()
    p:join()
    assert.is_true(messages[r:recv()])
    r:close()
  end)

  it("test_dont_merge", function()
    local a, b = lmp.Pipe()
    assert.is_false(a:poll(0.0))
    assert.is_false(a:poll(0.1))
    local p = lmp.Process{target = function(conn)
      conn:send("a"); conn:send("b"); conn:send("cd")
    end, args = {b}}
    p:start()
    assert.equal("a", a:recv())
    assert.is_true(a:poll(1.0))
    assert.is_true(a:poll(1.0))
    assert.equal("b", a:recv())
    assert.is_true(a:poll(1.0))
    assert.is_true(a:poll(1.0))
    assert.is_true(a:poll(0.0))
    assert.equal("cd", a:recv())
    p:join()
    a:close(); b:close()
  end)
end)

describe("peer: TestInvalidHandle", function()
  it("test_invalid_handles: bad descriptors give errors, never a crash", function()
    -- Python builds a Connection from a number; lmp's internal
    -- core.connection is the counterpart. poll may fail or not: it must
    -- not crash.
    local ok, conn = pcall(core.connection, 44977608)
    if ok then
      pcall(conn.poll, conn)
      pcall(conn.close, conn)
    end
    -- Python refuses Connection(-1) at once; so does core.connection.
    assert.is_false(pcall(core.connection, -1))
  end)
end)

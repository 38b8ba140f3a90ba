-- CPython's Lib/test/_test_multiprocessing.py, the Process tests
-- (_TestProcess, _TestSubclassingProcess, TestStartMethod, TestCloseFds,
-- _TestAtExit, _TestSpawnedSysPath), translated to lmp.Process.
-- tests/peer/README.md says what was ported and what differs.
local describe, it, after_each, pending, assert, pcall =
  describe, it, after_each, pending, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"

local function plain(t)
  local r = {}
  for i = 1, t.n or #t do r[i] = t[i] end
  return r
end

-- Whether p is among lmp.active_children().
local function listed(p)
  for _, child in ipairs(lmp.active_children()) do
    if child == p then return true end
  end
  return false
end

describe("peer: _TestProcess", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  it("test_current", function()
    local current = lmp.current_process()
    assert.equal("MainProcess", current.name)
    assert.equal(core.getpid(), current.pid)
  end)

  it("test_args_argument", function()
    for _, args in ipairs{1, "str", {1}} do
      local q = lmp.Queue(1)
      local p = lmp.Process{target = function(queue, arg) queue:put(arg) end, args = {q, args}, daemon = true}
      p:start()
      assert.same(args, q:get(true, 30))
      p:join()
      q:close()
    end
  end)

  it("test_daemon_argument", function()
    local function target() end
    assert.is_false(lmp.Process{target = target}.daemon)
    assert.is_true(lmp.Process{target = target, daemon = true}.daemon)
    assert.is_false(lmp.Process{target = target, daemon = false}.daemon)
  end)

  it("test_process", function()
    local q = lmp.Queue(1)
    local p = lmp.Process{target = function(queue, ...)
      local current = require("lmp").current_process()
      queue:put(table.pack(...))
      queue:put(current.name)
      queue:put(current.pid)
    end, args = {q, 1, 2}, name = "SomeProcess", daemon = true}
    assert.is_false(p:is_alive())
    assert.is_true(p.daemon)
    assert.is_false(listed(p))
    assert.equal("table", type(lmp.active_children()))
    assert.is_nil(p.exitcode)
    p:start()
    assert.is_nil(p.exitcode)
    assert.is_true(p:is_alive())
    assert.is_true(listed(p))
    assert.same({1, 2}, plain(q:get(true, 30)))
    assert.equal("SomeProcess", q:get(true, 30))
    assert.equal(p.pid, q:get(true, 30))
    p:join()
    assert.equal(0, p.exitcode)
    assert.is_false(p:is_alive())
    assert.is_false(listed(p))
    q:close()
  end)

  -- Python's _kill_process: the child sets an event and sleeps; join(0)
  -- and join(-1) return at once; the signal ends it.
  local function kill_process(method)
    local event = lmp.Event()
    local p = lmp.Process{target = function(e) e:set(); require("lmp").sleep(100) end,
                          args = {event}, daemon = true}
    p:start()
    assert.is_true(p:is_alive())
    assert.is_true(listed(p))
    assert.is_nil(p.exitcode)
    p:join(0)
    assert.is_true(p:is_alive())
    -- Python takes join(-1) as join(0); lmp refuses a negative timeout
    -- (a sign of a computed deadline gone wrong), as every wait does.
    local ok, err = pcall(p.join, p, -1)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'join'", err)
    assert.is_true(p:is_alive())
    assert.is_true(event:wait(30))
    p[method](p)
    p:join(10)
    assert.is_false(p:is_alive())
    assert.is_false(listed(p))
    return p.exitcode
  end

  it("test_terminate", function()
    assert.equal(-15, kill_process("terminate"))
  end)

  it("test_kill", function()
    assert.equal(-9, kill_process("kill"))
  end)

  it("test_active_children", function()
    assert.equal("table", type(lmp.active_children()))
    local event = lmp.Event()
    local p = lmp.Process{target = function(e) e:wait(30) end, args = {event}, daemon = true}
    assert.is_false(listed(p))
    p:start()
    assert.is_true(listed(p))
    event:set()
    p:join()
    assert.is_false(listed(p))
  end)

  it("test_parent_process_attributes", function()
    assert.is_nil(lmp.parent_process())
    local rconn, wconn = lmp.Pipe(false)
    local p = lmp.Process{target = function(conn)
      local parent = require("lmp").parent_process()
      conn:send({parent.pid, parent.name})
    end, args = {wconn}}
    p:start()
    p:join()
    local got = rconn:recv()
    assert.equal(lmp.current_process().pid, got[1])
    assert.equal(core.getpid(), got[1])
    assert.equal(lmp.current_process().name, got[2])
    rconn:close(); wconn:close()
  end)

  -- Python's grandchild outlives its terminated parent and sees it dead;
  -- an lmp child dies with its parent (the kernel kills it when the
  -- parent goes), so no orphan is left running: the pipe's last writer
  -- is gone and the reader sees its end.
  it("test_parent_process (the grandchild dies with its parent: differs)", function()
    local rconn, wconn = lmp.Pipe(false)
    local p = lmp.Process{target = function(conn)
      local grandchild = require("lmp").Process{target = function(c)
        c:send(require("lmp").parent_process():is_alive() and "alive" or "not alive")
        require("lmp").sleep(300)
      end, args = {conn}}
      grandchild:start()
      conn:close()
      require("lmp").sleep(300)
    end, args = {wconn}}
    p:start()
    wconn:close()
    assert.is_true(rconn:poll(30))
    assert.equal("alive", rconn:recv())
    p:terminate()
    p:join()
    assert.is_true(rconn:poll(30))
    local ok, err = pcall(rconn.recv, rconn)
    assert.is_false(ok)
    assert.equal("closed", err.kind)
    rconn:close()
  end)

  it("test_close", function()
    local q = lmp.Queue()
    local p = lmp.Process{target = function(queue) queue:get() end, args = {q}, daemon = true}
    p:start()
    assert.is_true(p:is_alive())
    -- Still running: cannot close.
    local ok, err = pcall(p.close, p)
    assert.is_false(ok)
    assert.equal("value", err.kind)
    q:put(false)
    p:join()
    assert.is_false(p:is_alive())
    assert.equal(0, p.exitcode)
    p:close()
    for _, method in ipairs{"is_alive", "join", "terminate"} do
      ok, err = pcall(p[method], p)
      assert.is_false(ok)
      assert.equal("closed", err.kind) -- Python's ValueError
    end
    p:close()
    local weak = setmetatable({p}, {__mode = "v"})
    p = nil
    collectgarbage(); collectgarbage()
    assert.is_nil(weak[1])
    q:close()
  end)

  it("test_cpu_count", function()
    local cpus = lmp.cpu_count()
    assert.equal("integer", math.type(cpus))
    assert.is_true(cpus >= 1)
  end)

  it("test_recursion: processes started by processes, writing to one pipe", function()
    local rconn, wconn = lmp.Pipe()
    local function recurse(conn, id)
      conn:send(id)
      if #id < 2 then
        for i = 0, 1 do
          local child_id = {table.unpack(id)}
          child_id[#child_id + 1] = i
          local p = require("lmp").Process{target = recurse, args = {conn, child_id}}
          p:start(); p:join()
        end
      end
    end
    recurse(wconn, {})
    local result = {}
    while rconn:poll(0.1) do result[#result + 1] = rconn:recv() end
    assert.same({{}, {0}, {0, 0}, {0, 1}, {1}, {1, 0}, {1, 1}}, result)
    rconn:close(); wconn:close()
  end)

  it("test_many_processes", function()
    local procs = {}
    for i = 1, 5 do procs[i] = lmp.Process{target = function() require("lmp").sleep(0.01) end} end
    for _, p in ipairs(procs) do p:start() end
    for _, p in ipairs(procs) do p:join(30) end
    for _, p in ipairs(procs) do assert.equal(0, p.exitcode) end
    procs = {}
    for i = 1, 5 do procs[i] = lmp.Process{target = function() require("lmp").sleep(100) end} end
    for _, p in ipairs(procs) do p:start() end
    lmp.sleep(0.001)
    for _, p in ipairs(procs) do p:terminate() end
    for _, p in ipairs(procs) do p:join(30) end
    for _, p in ipairs(procs) do assert.equal(-15, p.exitcode) end
  end)

  it("test_lose_target_ref: a started process does not keep its target alive", function()
    local weak = setmetatable({}, {__mode = "k"})
    local q = lmp.Queue()
    local p
    do
      local c = {}
      weak[c] = true
      p = lmp.Process{target = function(queue) queue:put(c and 5) end, args = {q}}
    end
    p:start()
    p:join()
    collectgarbage(); collectgarbage()
    assert.is_nil(next(weak))
    assert.equal(5, q:get(true, 30))
    q:close()
  end)

  it("test_child_fd_inflation: children's descriptors do not grow with their number", function()
    local event, q = lmp.Event(), lmp.Queue()
    local procs = {}
    for i = 1, 5 do
      procs[i] = lmp.Process{target = function(e, queue)
        local n = 0
        for entry in require("lfs").dir("/proc/self/fd") do
          if entry:match("^%d+$") then n = n + 1 end
        end
        queue:put(n)
        e:wait(30)
      end, args = {event, q}}
      procs[i]:start()
    end
    local counts = {}
    for i = 1, 5 do counts[q:get(true, 30)] = true end
    event:set()
    for _, p in ipairs(procs) do p:join() end
    local distinct = 0
    for _ in pairs(counts) do distinct = distinct + 1 end
    assert.equal(1, distinct)
    q:close()
  end)

  it("test_error_on_stdio_flush_2: a child that closes its standard streams exits 0", function()
    for _, stream in ipairs{"stdout", "stderr"} do
      local event = lmp.Event()
      local p = lmp.Process{target = function(e, name) io[name]:close(); e:set() end,
                            args = {event, stream}}
      p:start(); p:join()
      assert.is_true(event:is_set())
      assert.equal(0, p.exitcode)
    end
  end)
end)

describe("peer: _TestProcess sentinel", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  it("test_sentinel: not ready while the process runs, ready once it ended", function()
    local event = lmp.Event()
    local p = lmp.Process{target = function(e) e:wait(60) end, args = {event}}
    assert.is_nil(p.sentinel) -- Python raises ValueError before start
    p:start()
    local sentinel = p.sentinel
    assert.is_not_nil(sentinel)
    assert.same({}, lmp.connection.wait({sentinel}, 0))
    event:set()
    p:join()
    assert.same({sentinel}, lmp.connection.wait({sentinel}, 1))
  end)
end)

describe("peer: _TestSubclassingProcess", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  -- Python subclasses Process (_UpperCaser); in Lua the target is the
  -- run method and the pipe its state.
  it("test_subclassing: an upper-caser serving over a pipe", function()
    local parent_conn, child_conn = lmp.Pipe()
    local uppercaser = lmp.Process{target = function(conn)
      while true do
        local s = conn:recv()
        if s == false then break end
        conn:send(s:upper())
      end
      conn:close()
    end, args = {child_conn}, daemon = true}
    uppercaser:start()
    child_conn:close()
    local function submit(s) parent_conn:send(s); return parent_conn:recv() end
    assert.equal("HELLO", submit("hello"))
    assert.equal("WORLD", submit("world"))
    parent_conn:send(false)
    parent_conn:close()
    uppercaser:join()
    assert.equal(0, uppercaser.exitcode)
  end)

  it("test_stderr_flush: a failing child's traceback reaches stderr whole", function()
    local status, _, err = helpers.run_lua([[
      local lmp = require "lmp"
      local p = lmp.Process{target = function() local x = 1 // 0 end} -- MARKER
      p:start(); p:join()
      io.write(p.exitcode)
    ]], helpers.runner)
    assert.equal(0, status)
    assert.matches("divide by zero", err)
    assert.matches("stack traceback", err)
  end)

  it("test_sys_exit", function()
    local status, out, err = helpers.run_lua([[
      local lmp = require "lmp"
      local p = lmp.Process{target = function() error("ignore this", 0) end}
      p:start(); p:join()
      io.write(p.exitcode)
    ]], helpers.runner)
    assert.equal(0, status)
    assert.equal("1", out)
    assert.matches("ignore this", err)
    -- Lua's os.exit(true) is success and os.exit(false) failure, the
    -- other way round from Python's sys.exit(True).
    for _, case in ipairs{{{true}, 0}, {{false}, 1}, {{8}, 8}, {{}, 0}} do
      local p = lmp.Process{target = os.exit, args = case[1], daemon = true}
      p:start(); p:join()
      assert.equal(case[2], p.exitcode)
    end
  end)
end)

describe("peer: TestStartMethod", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  it("test_context", function()
    for _, method in ipairs{"fork", "spawn", "forkserver"} do
      local ctx = lmp.get_context(method)
      assert.equal(method, ctx.get_start_method())
      local pool <close> = ctx.Pool(1)
      assert.equal(4, pool:apply(function(x) return x * x end, {2}))
    end
    require("lmp.core").forkserver_stop()
    assert.has_error(function() lmp.get_context("vfork") end)
  end)

  it("test_set_get", function()
    local old = lmp.get_start_method()
    for _, method in ipairs{"fork", "spawn"} do
      lmp.set_start_method(method)
      assert.equal(method, lmp.get_start_method())
      assert.equal(method, lmp.get_context().get_start_method())
    end
    lmp.set_start_method(old)
    assert.has_error(function() lmp.set_start_method(nil) end)
  end)

  it("test_nested_startmethod: a child gives its own arguments to a grandchild", function()
    local queue = lmp.Queue()
    local p = lmp.Process{target = function(q)
      q:put(2)
      local l = require "lmp"
      local inner = l.Process{target = function(q2) q2:put(1) end, args = {q}}
      inner:start(); inner:join()
    end, args = {queue}}
    p:start(); p:join()
    local results = {}
    while not queue:empty() do results[queue:get()] = true end
    assert.same({true, true}, results)
    queue:close()
  end)
end)

describe("peer: TestCloseFds", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  it("test_closefd: a spawned child does not inherit the parent's descriptors", function()
    -- A file only this test opens (without close-on-exec, as io.open
    -- does): the child must not find it among its descriptors.
    -- Python makes the descriptor's number high (>= 50) so that the
    -- child's own descriptors cannot land on it; so does this test.
    local fillers = {}
    for i = 1, 50 do fillers[i] = assert(io.open("/dev/null")) end
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    local function holds(name)
      local lfs = require "lfs"
      for entry in lfs.dir("/proc/self/fd") do
        if entry:match("^%d+$") and lfs.symlinkattributes("/proc/self/fd/" .. entry, "target") == name then
          return true
        end
      end
      return false
    end
    local reader, writer = lmp.Pipe()
    local p = lmp.Process{target = function(conn, name) conn:send(holds(name)) end,
                          args = {writer, path}}
    p:start()
    writer:close()
    local inherited = reader:recv()
    p:join()
    -- Nor does a pool worker started after the file was opened.
    local pool <close> = lmp.Pool(1)
    assert.is_false(pool:apply(holds, {path}))
    f:close(); reader:close()
    for _, filler in ipairs(fillers) do filler:close() end
    os.remove(path)
    assert.is_false(inherited)
    -- The script's own children still inherit it, as they would without
    -- lmp: only lmp's workers are spared it.
    f = assert(io.open(path, "w"))
    local seen = io.popen("ls -l /proc/self/fd/ 2>/dev/null"):read("a")
    f:close()
    os.remove(path)
    assert.matches(path, seen, 1, true)
  end)
end)

describe("peer: _TestAtExit", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  -- Python registers an atexit handler; Lua's counterpart is a finalizer,
  -- run when the child's state is closed at a normal exit.
  it("test_atexit: the child's finalizers run at exit", function()
    local path = os.tmpname()
    local p = lmp.Process{target = function(output_path)
      KEEP = setmetatable({}, {__gc = function()
        local f = io.open(output_path, "w"); f:write("deadbeef"); f:close()
      end})
    end, args = {path}}
    p:start(); p:join()
    local content = helpers.read_file(path)
    os.remove(path)
    assert.equal("deadbeef", content)
  end)
end)

describe("peer: _TestSpawnedSysPath", function()
  after_each(function() assert.is_true(helpers.no_children(5)) end)

  it("test_child_sys_path: the child searches modules where the parent does", function()
    local q = lmp.Queue()
    local p = lmp.Process{target = function(queue)
      queue:put({package.path, package.cpath, (pcall(require, "peer.common"))})
    end, args = {q}}
    p:start()
    local got = q:get(true, 30)
    p:join()
    assert.same({package.path, package.cpath, true}, got)
    q:close()
  end)
end)

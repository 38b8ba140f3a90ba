-- Start methods ("spawn", "fork", "forkserver") for processes and pools,
-- contexts, and the process functions that go with them: Process:close,
-- active_children, parent_process, current_process():is_alive.
local describe, it, assert, after_each, pcall = describe, it, assert, after_each, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"

-- A module the script loaded: a forked worker has it, a worker from the
-- forkserver (which loaded nothing of the script) or a spawned one has not.
package.loaded["start_method_marker"] = true
local function has_marker()
  return package.loaded["start_method_marker"] == true
end

local function finish()
  core.forkserver_stop()
  assert.is_true(helpers.no_children(5))
end

describe("start methods", function()
  after_each(finish)

  it("get_all_start_methods lists spawn (the default) first, then fork and forkserver", function()
    assert.same({"spawn", "fork", "forkserver"}, lmp.get_all_start_methods())
  end)

  for _, method in ipairs{"spawn", "fork", "forkserver"} do
    it(("a %s Process runs its target, gets a Pipe end, exits with its status"):format(method),
       function()
      local parent_end, child_end = lmp.Pipe()
      local p = lmp.Process{start_method = method, args = {child_end, 6},
        target = function(conn, n)
          conn:send({n * 7, package.loaded["start_method_marker"] == true})
          os.exit(3)
        end}
      p:start()
      child_end:close()
      local got = parent_end:recv()
      p:join(30)
      assert.equal(3, p.exitcode)
      assert.equal(42, got[1])
      assert.equal(method == "fork", got[2])
      parent_end:close()
    end)
  end

  it("a forkserver pool's workers are this process's children and load nothing of the script",
     function()
    local pool <close> = lmp.Pool{processes = 2, start_method = "forkserver"}
    local results = pool:map(function(x)
      local c = require "lmp.core"
      return {x * x, c.getppid(), package.loaded["start_method_marker"] == true}
    end, {1, 2, 3})
    for i, r in ipairs(results) do
      assert.equal(i * i, r[1])
      assert.equal(core.getpid(), r[2])
      assert.is_false(r[3])
    end
    local server = core.forkserver_pid()
    assert.is_number(server)
    pool:close()
    pool:join()
    assert.is_true(helpers.alive(server)) -- it serves the next pool
    core.forkserver_stop()
    assert.is_false(helpers.alive(server))
  end)

  it("a forkserver killed under a pool: tasks in flight finish, new workers come from a new one",
     function()
    -- One task per worker: every task needs a new worker, so the pool
    -- asks the forkserver again after it was killed.
    local pool <close> = lmp.Pool{processes = 2, start_method = "forkserver",
                                  maxtasksperchild = 1}
    local slow = pool:map_async(function(x)
      local t = os.time()
      while os.time() - t < 1 do end
      return x
    end, {1, 2})
    local first = core.forkserver_pid()
    assert.is_number(first)
    assert.is_true(core.kill(first, 9))
    assert.same({1, 2, n = 2}, slow:get(60))
    -- The workers that ran them were replaced through a new forkserver.
    assert.same({10, 20, 30, n = 3}, pool:map(function(x) return x * 10 end, {1, 2, 3}))
    local second = core.forkserver_pid()
    assert.is_number(second)
    assert.are_not.equal(first, second)
  end)

  it("the forkserver and its workers end when the main process is killed with SIGKILL", function()
    local pidfile = os.tmpname()
    local script = pidfile .. ".lua"
    local f = assert(io.open(script, "w"))
    f:write(([[
      local lmp = require "lmp"
      local core = require "lmp.core"
      local pool = lmp.Pool{processes = 2, start_method = "forkserver"}
      local pids = pool:map(function() return require("lmp.core").getpid() end, {1, 2}, 1)
      local f = io.open(%q, "w")
      f:write(core.forkserver_pid(), " ", pids[1], " ", pids[2], "\n")
      f:close()
      os.execute("kill -9 " .. core.getpid())
    ]]):format(pidfile))
    f:close()
    local status, _, err = helpers.run(("%s %s </dev/null & wait $!"):format(helpers.runner, script))
    os.remove(script)
    assert.equal(137, status, err) -- the shell's wait: killed by signal 9
    local pids = {}
    for pid in helpers.read_file(pidfile):gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
    os.remove(pidfile)
    assert.equal(3, #pids)
    for _, pid in ipairs(pids) do
      assert.is_true(helpers.wait_for(function() return not helpers.alive(pid) end, 10),
                     "process " .. pid .. " outlived its parent")
    end
  end)

  it("an unknown start method is refused, naming the known ones", function()
    local ok, err = pcall(lmp.Pool, {processes = 1, start_method = "vfork"})
    assert.is_false(ok)
    assert.matches("start method 'vfork' is not supported; use 'spawn', 'fork' or 'forkserver'",
                   tostring(err), 1, true)
    ok, err = pcall(lmp.Process, {target = print, start_method = "vfork"})
    assert.is_false(ok)
    ok = pcall(lmp.get_context, "vfork")
    assert.is_false(ok)
  end)
end)

describe("contexts", function()
  after_each(finish)

  it("get_context(m) binds Process, Pool and ProcessPoolExecutor to m, and delegates the rest",
     function()
    local ctx = lmp.get_context("fork")
    assert.equal("fork", ctx.get_start_method())
    assert.equal("fork", ctx:get_start_method())
    assert.equal(lmp.Queue, ctx.Queue)
    assert.equal(lmp.Lock, ctx.Lock)
    assert.equal(lmp.Value, ctx.Value)
    lmp.brand_new_name_for_the_context_test = 1
    assert.equal(1, ctx.brand_new_name_for_the_context_test)
    lmp.brand_new_name_for_the_context_test = nil
    local pool <close> = ctx.Pool(1)
    assert.is_true(pool:apply(has_marker))
    local ex <close> = ctx.ProcessPoolExecutor{max_workers = 1}
    assert.is_true(ex:submit(has_marker):result(30))
    local p = ctx:Process{target = function() os.exit(has_marker() and 5 or 6) end}
    p:start()
    p:join(30)
    assert.equal(5, p.exitcode)
  end)

  it("Pool{context = ctx} and ProcessPoolExecutor{mp_context = ctx} use its method", function()
    local fork, spawn = lmp.get_context("fork"), lmp.get_context("spawn")
    local a <close> = lmp.Pool{processes = 1, context = fork}
    local b <close> = lmp.Pool{processes = 1, context = spawn}
    assert.is_true(a:apply(has_marker))
    assert.is_false(b:apply(has_marker))
    local ex <close> = lmp.ProcessPoolExecutor{max_workers = 1, mp_context = fork}
    assert.is_true(ex:submit(has_marker):result(30))
    local ok = pcall(lmp.Pool, {processes = 1, context = "fork"})
    assert.is_false(ok)
  end)

  it("a forkserver context starts its processes through the forkserver", function()
    local ctx = lmp.get_context("forkserver")
    local p = ctx.Process{target = function() os.exit(has_marker() and 5 or 6) end}
    p:start()
    p:join(30)
    assert.equal(6, p.exitcode)
    assert.is_number(core.forkserver_pid())
  end)
end)

describe("process functions", function()
  after_each(finish)

  it("Process:close raises while it runs, releases after, and later uses raise", function()
    local p = lmp.Process{target = function() require("lmp").sleep(30) end}
    p:start()
    local ok, err = pcall(p.close, p)
    assert.is_false(ok)
    assert.equal("value", err.kind)
    p:kill()
    p:join(30)
    p:close()
    p:close() -- twice is fine
    for _, name in ipairs{"is_alive", "join", "start", "terminate", "kill"} do
      ok, err = pcall(p[name], p)
      assert.is_false(ok, name)
      assert.equal("closed", err.kind, name)
    end
    assert.equal(-9, p.exitcode)
  end)

  it("active_children lists the running processes and joins the ended ones", function()
    local long = lmp.Process{target = function() require("lmp").sleep(30) end}
    local short = lmp.Process{target = function() end}
    long:start()
    short:start()
    assert.is_true(helpers.wait_for(function()
      local kids = lmp.active_children()
      return #kids == 1 and kids[1] == long
    end, 30))
    assert.equal(0, short.exitcode) -- joined on the way
    long:terminate()
    long:join(30)
    assert.same({}, lmp.active_children())
  end)

  it("parent_process is nil here; in a child, this process (pid, name, is_alive)", function()
    assert.is_nil(lmp.parent_process())
    assert.is_true(lmp.current_process():is_alive())
    for _, method in ipairs{"spawn", "fork", "forkserver"} do
      local parent_end, child_end = lmp.Pipe()
      local p = lmp.Process{start_method = method, args = {child_end}, target = function(conn)
        local l = require "lmp"
        local parent = l.parent_process()
        conn:send({parent.pid, parent.name, parent:is_alive(), l.current_process():is_alive()})
      end}
      p:start()
      child_end:close()
      assert.same({core.getpid(), "MainProcess", true, true}, parent_end:recv())
      p:join(30)
      parent_end:close()
    end
    local pool <close> = lmp.Pool{processes = 1}
    assert.equal(core.getpid(), pool:apply(function()
      return require("lmp").parent_process().pid
    end))
  end)
end)

-- SIGPIPE keeps its default for the script and the programs it starts;
-- only lmp's own writes are shielded from it (a reader that went away
-- fails that write, and a dead worker shows up as its exit). Every script
-- here starts with SIGPIPE at its default (env --default-signal), as a
-- shell gives it, whatever the test runner inherited.
local describe, it, assert, after_each = describe, it, assert, after_each
local _ENV = _G
local helpers = require "helpers"
local core = require "lmp.core"

local DEFAULT = "env --default-signal=PIPE "

-- Whether SIGPIPE (13) is in a SigIgn mask line of /proc/<pid>/status.
local function ignores_sigpipe(status_line)
  local mask = tonumber(status_line:match("SigIgn:%s*(%x+)"), 16)
  return mask & (1 << 12) ~= 0
end

local write_script = helpers.write_script

describe("SIGPIPE", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  for _, how in ipairs{{"the runner", helpers.runner}, {"lua5.4", "lua5.4"}} do
    it("a script printing for ever into `| head -2` ends (" .. how[1] .. ")", function()
      local script = write_script([[
        local lmp = require "lmp"
        local pool <close> = lmp.Pool(1)
        print(pool:apply(function() return "from a worker" end))
        while true do print("line") end
      ]])
      -- timeout kills the whole group if the script never ends.
      local status, out = helpers.run("timeout -s KILL 60 " .. DEFAULT .. "sh -c '"
        .. how[2] .. " " .. script .. " | head -2'")
      os.remove(script)
      assert.equal(0, status)
      assert.equal("from a worker\nline\n", out)
    end)
  end

  it("programs the script and its workers start see SIGPIPE at its default", function()
    local status, out = helpers.run_lua([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool{processes = 1}
      local forked <close> = lmp.Pool{processes = 1, start_method = "fork"}
      local function child_status()
        local f = io.popen("grep SigIgn /proc/self/status")
        local line = f:read("a")
        f:close()
        return line
      end
      io.write(child_status())
      io.write(pool:apply(child_status))
      io.write(forked:apply(child_status))
      local p = lmp.Process{target = function() io.write(child_status()) end}
      p:start(); p:join()
    ]], DEFAULT .. helpers.runner)
    assert.equal(0, status)
    local lines = 0
    for line in out:gmatch("[^\n]+") do
      lines = lines + 1
      assert.is_false(ignores_sigpipe(line), line)
    end
    assert.equal(4, lines)
  end)

  it("a worker killed from outside while the main process writes to it kills only itself", function()
    local status, out, err = helpers.run_lua([[
      local lmp = require "lmp"
      local core = require "lmp.core"
      local pool = lmp.Pool(1)
      local pid = pool:apply(function() return core.getpid() end)
      local busy = pool:apply_async(function()
        local t = os.clock() while os.clock() - t < 0.5 do end
      end)
      -- More than the channel takes: the rest waits on the loop, written
      -- when the worker reads, which it never will.
      local big = pool:apply_async(function(s) return #s end, {string.rep("x", 64 << 20)})
      os.execute("kill -9 " .. pid)
      -- What the pool makes of it is the pool's business; here only the
      -- main process's survival counts.
      pcall(big.get, big, 30)
      pcall(busy.get, busy, 30)
      print("still here")
      pcall(pool.terminate, pool)
    ]], DEFAULT .. helpers.runner)
    assert.equal(0, status, err)
    assert.equal("still here\n", out)
  end)

  it("a write to a Pipe whose reader is gone fails with an error, in either process", function()
    local status, out, err = helpers.run_lua([[
      local lmp = require "lmp"
      local big = string.rep("x", 32 << 20)
      -- A child writes to a reader (another child) that leaves at once.
      local w, r = lmp.Pipe()
      local writer = lmp.Process{target = function(c)
        local ok, e = pcall(c.send, c, big)
        os.exit(not ok and tostring(e):find("Broken pipe") and 5 or 1)
      end, args = {w}}
      local reader = lmp.Process{target = function(c) c:close() end, args = {r}}
      writer:start(); reader:start()
      w:close(); r:close()
      writer:join(); reader:join()
      print(writer.exitcode)
      -- The main process writes to a child that leaves without reading.
      local mine, theirs = lmp.Pipe()
      local p = lmp.Process{target = function(c) c:close() end, args = {theirs}}
      p:start(); theirs:close(); p:join()
      local ok, e = pcall(mine.send, mine, big)
      print(ok, (tostring(e):match("Broken pipe")))
    ]], DEFAULT .. helpers.runner)
    assert.equal(0, status, err)
    assert.equal("5\nfalse\tBroken pipe\n", out)
  end)

  it("a worker whose main process dies while it writes a result ends quietly", function()
    local script, outfile, errfile = write_script([[
      local lmp = require "lmp"
      local core = require "lmp.core"
      local pool = lmp.Pool(1)
      local pid = pool:apply(function() return core.getpid() end)
      print(pid)
      io.stdout:flush()
      pool:apply_async(function() return string.rep("x", 256 << 20) end)
      lmp.sleep(0.3)
      core.kill(core.getpid(), 9)
    ]]), os.tmpname(), os.tmpname()
    -- The worker writes to the same stderr file, perhaps after its main
    -- process died: the file is read once the worker is gone.
    local _, _, status = os.execute("exec " .. DEFAULT .. helpers.runner .. " " .. script
      .. " >" .. outfile .. " 2>" .. errfile)
    local out = helpers.read_file(outfile)
    os.remove(script); os.remove(outfile)
    assert.equal(9, status) -- killed by SIGKILL
    local pid = tonumber(out:match("%d+"))
    assert.is_number(pid)
    local deadline = core.hrtime() + 10
    while io.open("/proc/" .. pid .. "/stat") and core.hrtime() < deadline do
      os.execute("sleep 0.05")
    end
    assert.is_nil(io.open("/proc/" .. pid .. "/stat"))
    local err = helpers.read_file(errfile)
    os.remove(errfile)
    assert.equal("", err)
  end)
end)

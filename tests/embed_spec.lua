-- Embedding from C (docs/reference.md, "C embedding API"): examples/embed/host.c opens lmp
-- in its own lua_State, hands lmp its own uv_loop_t, and is its own worker
-- executable, so that its C function host.checksum exists in the workers.
local describe, it, setup, assert = describe, it, setup, assert
local _ENV = _G
local helpers = require "helpers"

local root, build = helpers.root, helpers.build
local host = build .. "/examples/embed-host"

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs the host on `script` from the repository root; returns its exit
-- status, stdout and stderr.
local function run_host(script)
  return helpers.run(("cd %s && %s %s"):format(quote(root), quote(host), quote(script)))
end

local write_script = helpers.write_script

describe("embedding host", function()
  setup(function()
    -- `make asan` sets LMP_SANITIZED: its liblmp.a is instrumented.
    local flags = os.getenv("LMP_SANITIZED")
      and " SANFLAGS='-fsanitize=address,undefined -fno-sanitize-recover=undefined'" or ""
    local status, out, err = helpers.run(("make -s -C %s BUILD=%s%s %s"):format(
      quote(root), quote(build), flags, quote(host)))
    assert(status == 0, "building the example host failed:\n" .. out .. err)
  end)

  it("runs the host's C function in the workers, which are the host itself", function()
    local status, out, err = run_host("examples/embed/script.lua")
    assert.equal(0, status, err)
    assert.equal("", err)
    local host_pid = tonumber(out:match("host: MainProcess pid (%d+)"))
    assert.truthy(host_pid, out)
    local words, worker_pids = 0, {}
    for word, sum, name, pid, verdict in
        out:gmatch("checksum (%a+) *= *(%d+) in (PoolWorker%-%d+) pid (%d+), (%a+)") do
      words = words + 1
      assert.equal("matches", verdict, word)
      assert.truthy(tonumber(sum))
      assert.not_equal(host_pid, tonumber(pid))
      worker_pids[tonumber(pid)] = name
    end
    assert.equal(6, words, out)
    assert.truthy(next(worker_pids))
    -- The callback of apply_async, delivered by lmp_run.
    assert.truthy(out:find("callback: checksum omega = %d+ in PoolWorker%-%d+ pid %d+"), out)
  end)

  it("drives pools with the host's own uv_loop_t and leaves it closable", function()
    local status, out = run_host("examples/embed/script.lua")
    assert.equal(0, status)
    assert.truthy(out:find("host: the heartbeat on the host's loop ticked while lmp waited: yes",
      1, true), out)
    assert.truthy(out:find("host: loop closed cleanly", 1, true), out)
  end)

  it("stops workers still busy when the script fails, and still closes the loop", function()
    local script = write_script([[
      local lmp = require "lmp"
      pool = lmp.Pool(2)
      local pids = pool:map(function() return require("lmp").current_process().pid end, {1, 2}, 1)
      print("workers " .. table.concat(pids, " ", 1, pids.n))
      pool:map_async(function() local t = os.clock() + 5 while os.clock() < t do end end, {1, 2}, 1)
      error("stop here")
    ]])
    local started = os.time()
    local status, out, err = run_host(script)
    os.remove(script)
    assert.equal(1, status)
    assert.truthy(os.time() - started < 4, "lua_close waited for the busy workers")
    assert.truthy(err:find("stop here", 1, true), err)
    assert.truthy(out:find("host: loop closed cleanly", 1, true), out)
    local pids = out:match("workers ([%d ]+)")
    assert.truthy(pids, out)
    for pid in pids:gmatch("%d+") do
      assert.is_nil(helpers.read_file("/proc/" .. pid .. "/stat"), "worker " .. pid .. " is left")
    end
    assert.is_true(helpers.no_children())
  end)
end)

-- Installing lmp (README "Install"): `make install` into a prefix and the
-- rockspec into a LuaRocks tree, each into a fresh temporary directory.
-- What is installed must work without the source tree: require finds the
-- module, a pool starts its workers from the installed tree, the installed
-- runner runs a script, and lmp.pc builds an embedding host.
local describe, it, setup, teardown, assert = describe, it, setup, teardown, assert
local _ENV = _G
local helpers = require "helpers"

local root, build = helpers.root, helpers.build
-- `make asan` sets LMP_SANITIZED: the installed liblmp.a is instrumented,
-- so a host linked against it needs the sanitizer runtimes too.
local sanitizer_flags = os.getenv("LMP_SANITIZED")
  and "-fsanitize=address,undefined -fno-sanitize-recover=undefined" or ""

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function temporary_directory()
  local status, out = helpers.run("mktemp -d")
  assert.equal(0, status)
  return (out:gsub("%s+$", ""))
end

local function real_path(path)
  local status, out = helpers.run("realpath " .. quote(path))
  assert.equal(0, status)
  return (out:gsub("%s+$", ""))
end

-- Runs `command` (a shell command) and asserts that it succeeded.
local function must_run(command)
  local status, out, err = helpers.run(command)
  assert(status == 0, ("%s\nexited %s\n%s%s"):format(command, tostring(status), out, err))
  return out, err
end

-- A pool whose workers report the executable they run, read from /proc.
local POOL_SCRIPT = [[
local lmp = require "lmp"
local pool <close> = lmp.Pool(2)
local results = pool:map(function(x)
  local me = require("lmp").current_process()
  local pipe = io.popen("readlink /proc/" .. me.pid .. "/exe")
  local exe = pipe:read("l")
  pipe:close()
  return {square = x * x, exe = exe}
end, {1, 2, 3, 4}, 1)
local squares, executables = {}, {}
for i = 1, results.n do
  squares[i] = results[i].square
  executables[results[i].exe] = true
end
print("squares " .. table.concat(squares, " "))
for exe in pairs(executables) do print("worker " .. exe) end
print("core " .. tostring(package.searchpath("lmp.core", package.cpath)))
]]

-- Runs POOL_SCRIPT with `interpreter` under a clean environment (`env`
-- holds the only Lua paths); returns the workers' executables and the
-- path of lmp.core that require would load.
local function run_pool(interpreter, env)
  -- os.tmpname makes the file it names: removed with the script.
  local base = os.tmpname()
  local path = base .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(POOL_SCRIPT)
  f:close()
  local out = must_run("cd / && env -u LMP_WORKER -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 "
    .. "-u LUA_CPATH_5_4 " .. (env or "") .. " " .. interpreter .. " " .. path)
  os.remove(path)
  os.remove(base)
  assert.truthy(out:find("squares 1 4 9 16", 1, true), out)
  local workers = {}
  for exe in out:gmatch("worker ([^\n]+)") do workers[#workers + 1] = exe end
  return workers, out:match("core ([^\n]+)")
end

local function lua_paths(luadir, cmoddir)
  return ("LUA_PATH=%s LUA_CPATH=%s"):format(
    quote(luadir .. "/?.lua;" .. luadir .. "/?/init.lua;;"), quote(cmoddir .. "/?.so;;"))
end

describe("make install", function()
  local prefix
  setup(function()
    prefix = real_path(temporary_directory())
    must_run(("make -s -C %s BUILD=%s install PREFIX=%s"):format(quote(root), quote(build),
      quote(prefix)))
  end)
  teardown(function()
    if prefix then must_run("rm -rf " .. quote(prefix)) end
    assert.is_true(helpers.no_children())
  end)

  it("installs the standard Lua layout, the header, the library and lmp.pc", function()
    for _, file in ipairs{"lib/lua/5.4/lmp/core.so", "share/lua/5.4/lmp/init.lua",
        "share/lua/5.4/lmp/pool.lua", "bin/lmp", "bin/lmp-worker", "include/lmp.h",
        "lib/liblmp.a", "lib/pkgconfig/lmp.pc"} do
      assert.truthy(helpers.read_file(prefix .. "/" .. file), "missing " .. file)
    end
  end)

  it("gives lua5.4 a module whose pool starts the installed lmp-worker", function()
    local workers, core = run_pool("lua5.4",
      lua_paths(prefix .. "/share/lua/5.4", prefix .. "/lib/lua/5.4"))
    assert.equal(prefix .. "/lib/lua/5.4/lmp/core.so", core)
    assert.same({prefix .. "/bin/lmp-worker"}, workers)
  end)

  it("installs a runner that runs a script, being its own worker", function()
    local workers = run_pool(prefix .. "/bin/lmp")
    assert.same({prefix .. "/bin/lmp"}, workers)
    local out = must_run("cd " .. quote(root) .. " && env -u LUA_PATH -u LUA_CPATH "
      .. prefix .. "/bin/lmp examples/squares.lua")
    assert.equal("1 4 9 16 25 36 49 64 81 100\n", out)
  end)

  it("gives pkg-config what builds the embedding example", function()
    local pc = "PKG_CONFIG_PATH=" .. quote(prefix .. "/lib/pkgconfig")
    local flags = must_run(pc .. " pkg-config --cflags --libs lmp")
    assert.truthy(flags:find("-I" .. prefix .. "/include", 1, true), flags)
    assert.truthy(flags:find("-llmp", 1, true), flags)
    local host = prefix .. "/embed-host"
    must_run(("cc -std=c99 %s -o %s %s/examples/embed/host.c $(%s pkg-config --cflags --libs lmp)")
      :format(sanitizer_flags, quote(host), quote(root), pc))
    local out = must_run("cd " .. quote(root) .. " && " .. quote(host)
      .. " examples/embed/script.lua")
    assert.truthy(out:find("in PoolWorker%-%d+ pid %d+, matches the host's"), out)
    assert.truthy(out:find("host: loop closed cleanly", 1, true), out)
  end)

  it("stages under DESTDIR with paths that name the final prefix", function()
    local stage = temporary_directory()
    must_run(("make -s -C %s BUILD=%s install PREFIX=/opt/lmp DESTDIR=%s"):format(
      quote(root), quote(build), quote(stage)))
    assert.truthy(helpers.read_file(stage .. "/opt/lmp/bin/lmp-worker"))
    local pc = helpers.read_file(stage .. "/opt/lmp/lib/pkgconfig/lmp.pc")
    assert.truthy(pc:find("libdir=/opt/lmp/lib\n", 1, true), pc)
    must_run("rm -rf " .. quote(stage))
  end)
end)

describe("rockspec", function()
  local tree
  -- LuaRocks runs under its own Lua; the suite's paths must not leak in,
  -- nor an outer make's variables (LMP_SPECS=... on its command line would
  -- reach the `make test` that `luarocks test` runs).
  local luarocks = "env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 "
    .. "-u MAKEFLAGS -u MFLAGS -u MAKELEVEL luarocks --lua-version 5.4"
  setup(function()
    tree = real_path(temporary_directory())
    must_run(("cd %s && %s make rockspec/lmp-scm-1.rockspec --tree=%s"):format(
      quote(root), luarocks, quote(tree)))
  end)
  teardown(function()
    if tree then must_run("rm -rf " .. quote(tree)) end
    assert.is_true(helpers.no_children())
  end)

  it("luarocks make installs the module, the runner, the worker, the header and the license", function()
    for _, file in ipairs{"lib/lua/5.4/lmp/core.so", "share/lua/5.4/lmp/init.lua", "bin/lmp",
        "bin/lmp-worker", "lib/luarocks/rocks-5.4/lmp/scm-1/embed/include/lmp.h",
        "lib/luarocks/rocks-5.4/lmp/scm-1/embed/lib/liblmp.a",
        "lib/luarocks/rocks-5.4/lmp/scm-1/embed/lib/pkgconfig/lmp.pc",
        "lib/luarocks/rocks-5.4/lmp/scm-1/doc/LICENSE"} do
      assert.truthy(helpers.read_file(tree .. "/" .. file), "missing " .. file)
    end
  end)

  it("the module from the tree starts the tree's lmp-worker", function()
    local workers, core = run_pool("lua5.4",
      lua_paths(tree .. "/share/lua/5.4", tree .. "/lib/lua/5.4"))
    assert.equal(tree .. "/lib/lua/5.4/lmp/core.so", core)
    assert.same({tree .. "/bin/lmp-worker"}, workers)
  end)

  it("the runner in the tree's bin runs a script", function()
    local workers = run_pool(tree .. "/bin/lmp")
    assert.same({tree .. "/bin/lmp"}, workers)
  end)

  it("luarocks test runs the suite through make test", function()
    -- One short spec, and never this one again inside: no recursion.
    if os.getenv("LMP_INSIDE_LUAROCKS_TEST") then return end
    local out = must_run(("cd %s && LMP_INSIDE_LUAROCKS_TEST=1 LMP_SPECS=tests/embed_spec.lua "
      .. "%s test rockspec/lmp-scm-1.rockspec"):format(quote(root), luarocks))
    assert.truthy(out:find("%d+ passed, 0 failed"), out)
  end)
end)

-- The runner: `lmp [options] [script [args]]` behaves like lua5.4 with the
-- same command line, then delivers every pending callback and closes the
-- pools.
local describe, it, after_each, assert = describe, it, after_each, assert
local _ENV = _G
local helpers = require "helpers"

local function run(code, args)
  return helpers.run_lua(code, helpers.runner, args)
end

describe("the lmp runner", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("gives the script arg and ... as lua5.4 does", function()
    local code = [[
      print(#arg, arg[1], arg[2], select("#", ...), ...)
      print(arg[0]:match("%.lua$") ~= nil, arg[-1] ~= nil)
    ]]
    local status, out = run(code, "one two")
    local _, expected = helpers.run_lua(code, "lua5.4", "one two")
    assert.equal(0, status)
    assert.equal(expected, out)
  end)

  it("fires every pending callback after the main chunk returns", function()
    local status, out = run([[
      local lmp = require "lmp"
      local pool = lmp.Pool(2)
      for i = 1, 3 do
        pool:apply_async(function(x) return x * x end, {i}, {callback = function(v)
          print("callback", v)
        end})
      end
      print("main chunk done")
    ]])
    assert.equal(0, status)
    assert.matches("^main chunk done\n", out)
    for _, v in ipairs{1, 4, 9} do assert.matches("callback\t" .. v .. "\n", out, 1, true) end
  end)

  it("waits for spawned coroutines and sleeps", function()
    local status, out = run([[
      local lmp = require "lmp"
      lmp.spawn(function() lmp.sleep(0.05); print("woke") end)
      print("first")
    ]])
    assert.equal(0, status)
    assert.equal("first\nwoke\n", out)
  end)

  it("an error exits 1 with the message and a traceback on stderr", function()
    local status, out, err = run([[
      print("before")
      local function inner() error("it broke") end
      inner()
    ]])
    assert.equal(1, status)
    assert.equal("before\n", out)
    assert.matches("^lmp: .*: it broke\nstack traceback:", err)
    local lua_status = helpers.run_lua('error("x")', "lua5.4")
    assert.equal(lua_status, status)
  end)

  it("an error object raised by the script is shown with its tostring", function()
    local status, _, err = run([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(1)
      pool:apply(function() error("in the worker") end, {})
    ]])
    assert.equal(1, status)
    assert.matches("lmp task error %(item 1, process %d+%): .*in the worker", err)
  end)

  it("an uncaught task error shows the task's frames and the script's line that called map", function()
    local status, _, err = run([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(1)
      local function inner(x) error("bad item " .. x) end
      local function f(x) return inner(x) end
      local r = pool:map(f, {1, 2, 3})
    ]])
    assert.equal(1, status)
    assert.matches("^lmp: lmp task error %(item 1, process %d+%): [^\n]*:3: bad item 1\n", err)
    assert.matches("\nin the worker %(process %d+%):\n[^\n]*\n\t[^\n]*:3: in [^\n]*\n", err)
    assert.matches("\nstack traceback:\n\t[^\n]*:5: in main chunk\n", err)
    -- lmp's own frames, in the worker and in the main process, are left out.
    assert.is_nil(err:find("lmp/[%w_]+%.lua:%d"))
  end)

  it("a submission refused for an unsendable argument leaves nothing pending", function()
    local status, out = helpers.run_lua([[
      local lmp = require "lmp"
      local pool = lmp.Pool(1)
      print(pcall(pool.apply_async, pool, print, {io.tmpfile()}))
      print(pcall(pool.map_async, pool, print, {1, coroutine.create(print)}))
      print("end of script")
    ]], "timeout 10 " .. helpers.runner)
    assert.equal(0, status)
    assert.matches("end of script\n$", out)
  end)

  it("os.exit keeps its status", function()
    local status = run("os.exit(3)")
    assert.equal(3, status)
  end)

  -- Runs `flags` under lmp and under lua5.4 (from a folder of its own, with
  -- `env` before the command) and asserts the same status and output; the
  -- program's name in messages is the only difference allowed.
  local function same_as_lua(flags, env, stdin)
    env = env and env .. " " or ""
    local input = os.tmpname()
    local f = assert(io.open(input, "w"))
    f:write(stdin or "")
    f:close()
    local s1, o1, e1 = helpers.run(env .. helpers.runner .. " " .. flags .. " <" .. input)
    local s2, o2, e2 = helpers.run(env .. "lua5.4 " .. flags .. " <" .. input)
    os.remove(input)
    e1 = e1:gsub("lmp: ", "PROG: "):gsub("usage: lmp", "usage: PROG")
    e2 = e2:gsub("lua5.4: ", "PROG: "):gsub("usage: lua5.4", "usage: PROG")
    assert.equal(s2, s1)
    assert.equal(o2, o1)
    return e1, e2
  end

  it("takes lua5.4's flags: -e, -l mod, -l g=mod, -v, -W, --, - and the arg table", function()
    same_as_lua("-e 'print(1 + 1)' -e 'print(#arg, arg[1], arg[2])'")
    same_as_lua("-l string -e 'print(string.rep(\"ab\", 2))'")
    same_as_lua("-l g=string -e 'print(g.upper(\"x\"))'")
    same_as_lua("-lstring -e'print(string.len(\"abc\"))'")
    same_as_lua("-v")
    same_as_lua("-W -e 'warn(\"careful\")'")
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("print(#arg, arg[0] ~= nil, arg[1], arg[2], arg[-1] ~= nil, ...)\n")
    f:close()
    same_as_lua("-e 'x = 1' -- " .. path .. " one two")
    same_as_lua("- a b", nil, "print('from stdin', ...)")
    same_as_lua("", nil, "print('no arguments: stdin is run')")
    os.remove(path)
  end)

  it("runs LUA_INIT_5_4 or LUA_INIT first, @file too, and -E ignores them and LUA_PATH", function()
    same_as_lua("-e 'print(X)'", "LUA_INIT='X = 1'")
    same_as_lua("-e 'print(X)'", "LUA_INIT='X = 1' LUA_INIT_5_4='X = 2'")
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("X = 'from a file'\n")
    f:close()
    same_as_lua("-e 'print(X)'", "LUA_INIT=@" .. path)
    same_as_lua("-E -e 'print(X, package.path:find(\"nowhere\", 1, true))'",
                "LUA_INIT='X = 1' LUA_PATH='/nowhere/?.lua'")
    os.remove(path)
  end)

  it("refuses a bad option or a missing argument as lua5.4 does, with its usage", function()
    local e1, e2 = same_as_lua("-x")
    assert.equal(e2:gsub("\n  %-%-help.-\n  %-%-", "\n  --"):match("^[^\n]*\n[^\n]*"),
                 e1:match("^[^\n]*\n[^\n]*"))
    assert.matches("unrecognized option '%-x'", e1)
    e1 = same_as_lua("-e")
    assert.matches("'%-e' needs argument", e1)
  end)

  it("--help and --version", function()
    local status, out = helpers.run(helpers.runner .. " --help")
    assert.equal(0, status)
    assert.matches("^usage: lmp %[options%] %[script %[args%]%]", out)
    status, out = helpers.run(helpers.runner .. " --version")
    assert.equal(0, status)
    assert.matches("^lmp %d+%.%d+%.%d+, Lua 5%.4%.%d+, libuv %d+%.%d+%.%d+\n$", out)
  end)

  it("an error in -e or a script exits 1 with lua5.4's message", function()
    local e1, e2 = same_as_lua("-e 'error(\"no\")'")
    assert.equal(e2, e1)
  end)

  it("-i prompts, prints expressions, continues incomplete lines, reports errors", function()
    local input = os.tmpname()
    local f = assert(io.open(input, "w"))
    f:write("1 + 1\nx = \n5\n=x\nreturn 1, nil, 'a'\nerror('boom')\nprint('last')\n")
    f:close()
    local status, out, err = helpers.run(helpers.runner .. " -i <" .. input)
    os.remove(input)
    assert.equal(0, status)
    out = out:gsub(">> ", ""):gsub("> ", "")
    assert.equal("2\n5\n1\tnil\ta\nlast\n\n", out:gsub("^Lua[^\n]*\n", ""))
    assert.matches("^stdin:1: boom\nstack traceback:\n", err)
  end)

  it("delivers callbacks at the prompt while it waits for the next line", function()
    local status, out = helpers.run("(printf 'lmp = require \"lmp\"\\npool = lmp.Pool(1)\\n"
      .. "pool:apply_async(function() return 42 end, {}, {callback = function(v) print(\"callback\", v) end})\\n';"
      .. " sleep 1; printf 'print(\"next line\")\\n') | " .. helpers.runner .. " -i")
    assert.equal(0, status)
    assert.matches("callback\t42\n.*next line\n", out)
  end)

  it("alone on a terminal opens the interactive prompt", function()
    local status, out = helpers.run("(sleep 0.5; printf 'print(6 * 7)\\n'; sleep 0.5; printf '\\004') | "
      .. "script -qec " .. helpers.runner .. " /dev/null")
    assert.equal(0, status)
    assert.matches("^Lua 5%.4", out)
    assert.matches("\n42\r?\n", out)
  end)

  -- The programs carry Lua (the Makefile links its static library where
  -- the system has one): a worker calling into liblua5.4.so ran Lua 3-15%
  -- slower than lua5.4, the serial program it is compared with. Their Lua
  -- API stays exported to the C modules a task loads (tests/c/crash.c).
  it("and its workers run Lua from their own program, and C modules load in them", function()
    local _, libdir = helpers.run("pkg-config --variable=libdir lua5.4")
    local static = io.open(libdir:gsub("%s+$", "") .. "/liblua5.4.a")
    if not static then return end -- no static library here: shared, as before
    static:close()
    helpers.build_crash_module()
    local status, out = run([[
      package.cpath = os.getenv("LMP_BUILD") .. "/test/?.so;" .. package.cpath
      local function libraries()
        local f = assert(io.open("/proc/self/maps"))
        local maps = f:read("a")
        f:close()
        return (maps:match("liblua[%w.%-]*%.so[%w.]*") or "none")
      end
      local lmp = require "lmp"
      for _, method in ipairs{"spawn", "fork", "forkserver"} do
        local pool <close> = lmp.Pool(1, {start_method = method})
        print(method, pool:apply(function(f) require("crash"); return f() end, {libraries}))
      end
      print("runner", libraries())
    ]])
    assert.equal(0, status, out)
    assert.equal("spawn\tnone\nfork\tnone\nforkserver\tnone\nrunner\tnone\n", out)
    -- Under lua5.4 the workers (spawned) are lmp-worker: the same.
    status, out = helpers.run_lua([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(1)
      print(pool:apply(function()
        local f = assert(io.open("/proc/self/maps"))
        local maps = f:read("a")
        f:close()
        return maps:match("liblua[%w.%-]*%.so") or "none"
      end))
    ]])
    assert.equal(0, status, out)
    assert.equal("none\n", out)
  end)

  it("runs the README example end to end", function()
    local status, out = helpers.run(helpers.runner .. " " .. helpers.root .. "/examples/count_primes.lua")
    assert.equal(0, status)
    assert.matches("Total primes found: %d+\n$", out)
  end)
end)

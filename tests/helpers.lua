-- Shared test helpers: running scripts, and proving no process is left.
local helpers = {}

helpers.root = os.getenv("LMP_ROOT") or "."
helpers.build = os.getenv("LMP_BUILD") or "build"
helpers.runner = helpers.build .. "/bin/lmp"

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
helpers.read_file = read_file

-- Whether this suite runs under valgrind or the sanitizers, where timings
-- say nothing (a forked worker stays under valgrind, for one).
helpers.instrumented = (os.getenv("LMP_TEST_LUA") or ""):find("valgrind", 1, true) ~= nil
  or os.getenv("LMP_SANITIZED") ~= nil

-- Keeps a CPU busy for `seconds` (of CPU time): a task that takes a while.
function helpers.busy(seconds)
  local t = os.clock()
  while os.clock() - t < seconds do end
end

-- Starts a long task on `pool` (one worker), kills that worker from
-- outside with kill(pid) while it runs, and checks what the user gets:
-- the task fails with worker_lost naming SIGKILL, and a new worker (another
-- pid) takes the next task. Raises (a failed luassert) otherwise.
function helpers.check_killed_worker_is_replaced(pool, kill)
  local expect = require "luassert"
  local core = require "lmp.core"
  local busy = helpers.busy
  local pid = pool:apply(function() return core.getpid() end)
  -- Killed once it runs the task: one it was sent but never read would
  -- run on its replacement.
  local path, started = helpers.start_signal()
  local touch = helpers.touch
  local r = pool:apply_async(function() touch(path); busy(30) end)
  expect.is_true(started())
  kill(pid)
  local ok, err = pcall(r.get, r, 30)
  expect.is_false(ok)
  expect.equal("worker_lost", err.kind)
  expect.matches("killed by signal 9 %(SIGKILL%)", err.message)
  local replacement = pool:apply(function() return core.getpid() end)
  expect.are_not.equal(pid, replacement)
end

-- Child processes of `pid` (default: this one) that are still there,
-- zombies included.
function helpers.children(pid)
  pid = pid or require("lmp.core").getpid()
  local found = {}
  for entry in require("lfs").dir("/proc") do
    if entry:match("^%d+$") then
      local stat = read_file("/proc/" .. entry .. "/stat")
      if stat then
        local ppid = stat:match("^%d+ %b() %a (%d+)")
        if tonumber(ppid) == pid then found[#found + 1] = tonumber(entry) end
      end
    end
  end
  return found
end

-- Waits (up to `seconds`) until this process has no children left.
function helpers.no_children(seconds)
  local deadline = os.time() + (seconds or 2)
  repeat
    collectgarbage()
    local kids = helpers.children()
    if #kids == 0 then return true end
    -- Turning lmp's loop lets libuv reap exited workers.
    local ok, lmp = pcall(require, "lmp.core")
    if ok then lmp.run_once(false) end
    os.execute("sleep 0.02")
  until os.time() > deadline
  return false, helpers.children()
end

function helpers.open_fds()
  collectgarbage() -- files a test dropped are closed by their finalizers
  local n = 0
  for entry in require("lfs").dir("/proc/self/fd") do
    if entry:match("^%d+$") then n = n + 1 end
  end
  return n
end

-- Runs a shell command; returns its exit status, stdout and stderr.
function helpers.run(command)
  local out, err = os.tmpname(), os.tmpname()
  local ok, how, status = os.execute(command .. " >" .. out .. " 2>" .. err)
  local stdout, stderr = read_file(out), read_file(err)
  os.remove(out)
  os.remove(err)
  if how == "signal" then status = 128 + status end
  return status, stdout, stderr
end

-- Builds `target` (a path under helpers.build) with the Makefile, with the
-- sanitizer flags when the suite runs sanitized (`make asan` sets
-- LMP_SANITIZED: its objects are instrumented); same return as run.
function helpers.make(target)
  local flags = os.getenv("LMP_SANITIZED")
    and " SANFLAGS='-fsanitize=address,undefined -fno-sanitize-recover=undefined'" or ""
  return helpers.run(("make -s -C '%s' BUILD='%s'%s '%s'"):format(
    helpers.root, helpers.build, flags, target))
end

-- The C module that crashes on purpose (tests/c/crash.c), which only
-- `make test` builds: a spec that needs it builds it first, so that it
-- runs alone after `make all` too. Raises when it cannot be built.
function helpers.build_crash_module()
  local status, out, err = helpers.make(helpers.build .. "/test/crash.so")
  if status ~= 0 then error("cannot build the crash module:\n" .. out .. err, 2) end
end

-- Writes `code` to a new file in /tmp and returns its path, for the caller
-- to remove. The file is the one os.tmpname made, not a name derived from
-- it: a derived name ("<tmpname>.lua") left os.tmpname's file behind.
function helpers.write_script(code)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  return path
end

-- Runs a Lua script (a string) with lua5.4 or the runner; same return.
function helpers.run_lua(code, interpreter, args)
  local path = helpers.write_script(code)
  local status, out, err = helpers.run((interpreter or "lua5.4") .. " " .. path .. " " .. (args or ""))
  os.remove(path)
  return status, out, err
end

-- Runs a Lua script as run_lua does and returns its stdout; raises unless
-- it exited with 0 and wrote nothing on stderr.
function helpers.run_lua_ok(code, interpreter)
  local status, out, err = helpers.run_lua(code, interpreter)
  if status ~= 0 or err ~= "" then
    error(("the script exited with %s, stderr:\n%s"):format(tostring(status), err), 2)
  end
  return out
end

-- Whether process `pid` runs (a zombie waiting for its reaper does not).
function helpers.alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
end

-- Turns lmp's loop until predicate() is true (true) or `seconds` (default
-- 5) passed (false).
function helpers.wait_for(predicate, seconds)
  local lmp, core = require "lmp", require "lmp.core"
  local deadline = core.hrtime() + (seconds or 5)
  while not predicate() do
    if core.hrtime() > deadline then return false end
    lmp.sleep(0.01)
  end
  return true
end

-- A file a task makes once it runs, for a test that must act on the
-- worker (kill it) only once the worker has read the task, not merely
-- been sent it. Returns the path (for the task: helpers.touch(path)) and
-- started(), which turns lmp's loop until the file is there (true) or 10 s
-- passed (false), and removes it.
function helpers.start_signal()
  local path = os.tmpname()
  os.remove(path)
  return path, function()
    local ok = helpers.wait_for(function()
      local f = io.open(path)
      if f then f:close() end
      return f ~= nil
    end, 10)
    os.remove(path)
    return ok
  end
end

-- Makes the file at path (in a task, where helpers is not loaded: pass it
-- as an upvalue).
function helpers.touch(path)
  local f = assert(io.open(path, "w"))
  f:close()
end

-- A shell command that runs the script named by $0 with the lmp runner,
-- waits until it prints "waiting", sends it SIGINT from outside as a
-- terminal's Ctrl-C would, and prints "status N" with its exit status
-- (killing it after 10 s if the interrupt did not end it).
helpers.ctrl_c_when_waiting = "sh -c '" .. helpers.runner .. " \"$0\" & pid=$!; "
  .. "for i in $(seq 100); do sleep 0.05; grep -q waiting /proc/$pid/fd/1 2>/dev/null && break; done; "
  .. "sleep 0.2; kill -INT $pid; "
  .. "for i in $(seq 200); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done; "
  .. "kill -9 $pid 2>/dev/null; wait $pid; echo status $?'"

return helpers

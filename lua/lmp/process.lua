-- lmp.Process: one function run in a process of its own, as Python's
-- multiprocessing.Process. It is a worker that runs a single target and
-- exits; its exit code tells how it went.
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"
local protocol = require "lmp.protocol"
local workers = require "lmp.workers"

local Process = {}
Process.__index = Process
Process.__lmp_nosend = "a process handle belongs to the process that started it"
Process.__name = "lmp.Process"

local process_serial = 0
local live = setmetatable({}, {__mode = "k"}) -- started, not yet joined

local PROCESS_OPTIONS = {"target", "args", "name", "daemon"}

local function new(opts)
  if type(opts) ~= "table" then
    errors.argument(1, "Process", "options table expected, got " .. type(opts))
  end
  errors.check_options(opts, PROCESS_OPTIONS, 1, "Process")
  if type(opts.target) ~= "function" then
    errors.argument(1, "Process", "target must be a function, got " .. type(opts.target))
  end
  if opts.args ~= nil and type(opts.args) ~= "table" then
    errors.argument(1, "Process", "args must be a table")
  end
  if opts.name ~= nil and type(opts.name) ~= "string" then
    errors.argument(1, "Process", "name must be a string")
  end
  process_serial = process_serial + 1
  local args = opts.args or {}
  return setmetatable({
    target = opts.target,
    args = table.pack(table.unpack(args, 1, args.n or #args)),
    name = opts.name or ("Process-" .. process_serial),
    identity = {process_serial},
    daemon = opts.daemon == true,
  }, Process)
end

function Process:start()
  if self.started then error(errors.new("closed", "start: a process can be started once"), 2) end
  -- Refuse what cannot be sent before a process exists.
  local message = protocol.process(self.target, self.args, require("lmp.globals").snapshot())
  -- The message wraps target and args in two levels of its own: each may
  -- nest as deep as lmp.dumps allows. Connections among them (Pipe ends,
  -- queues, locks, shared values) travel with the message, as
  -- descriptors (see connection.lua).
  local ok, err = pcall(require("lmp.connection").dumps_checking, message, "", 2)
  if not ok then error(err, 0) end
  core.handle_interrupts()
  local state = {}
  self._state = state
  local spawned, handle = pcall(workers.spawn, function() end,
    function(status, signal)
      state.exitcode = signal ~= 0 and -signal or status
    end)
  if not spawned then error(handle, 0) end
  self.started = true
  self.pid = handle:pid()
  self._handle = handle
  -- Made before the loop turns again, so before the child can be reaped:
  -- the pid is still this child's. Nil where the kernel has no pidfd.
  local made, sentinel = pcall(core.sentinel, self.pid)
  self.sentinel = made and sentinel or nil
  handle:send(protocol.init({path = package.path, cpath = package.cpath, name = self.name,
                             identity = self.identity}))
  handle:send(message)
  handle:close_input()
  -- The child has its own copy now: let go of the target and arguments
  -- (and whatever they hold), as Python's Process does once started.
  self.target, self.args = nil, nil
  live[self] = true
end

function Process:_reap()
  if self._state and self._state.exitcode ~= nil and self.exitcode == nil then
    self.exitcode = self._state.exitcode
    live[self] = nil
  end
end

function Process:is_alive()
  if not self.started then return false end
  pcall(core.run_once, false) -- take in an exit that happened (not inside a callback)
  self:_reap()
  return self.exitcode == nil
end

-- Waits for the process to end (or timeout seconds); exitcode is then
-- 0, the status it exited with, or -N when signal N ended it.
function Process:join(timeout)
  if not self.started then error(errors.new("closed", "join: the process was not started"), 2) end
  errors.check_timeout(timeout, 1, "join")
  loop.wait(function() return self._state.exitcode ~= nil end, timeout)
  self:_reap()
end

local function signal(self, fname, number)
  if not self.started then error(errors.new("closed", fname .. ": the process was not started"), 3) end
  if self.exitcode == nil and self._state.exitcode == nil then self._handle:kill(number) end
end

function Process:terminate() signal(self, "terminate", core.signals.SIGTERM) end
function Process:kill() signal(self, "kill", core.signals.SIGKILL) end

function Process:__tostring()
  local state = not self.started and "initial" or self.exitcode ~= nil
    and ("stopped exitcode=" .. self.exitcode) or "started"
  return ("lmp.Process(%s, %s%s)"):format(self.name, state, self.daemon and " daemon" or "")
end

-- At the end of the runner: non-daemon processes are waited for, daemon
-- ones are killed, as Python does at exit.
local function finish_all()
  for p in pairs(live) do
    if p.daemon then p:kill() end
    p:join()
  end
end

return {new = new, Process = Process, finish_all = finish_all}

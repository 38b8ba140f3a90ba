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
-- Started, not yet known to have ended: held strongly, as Python's
-- _children, so that active_children lists a process nobody keeps.
local live = {}

local PROCESS_OPTIONS = {"target", "args", "name", "daemon", "start_method", "context"}

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
  local method = opts.start_method
  if opts.context ~= nil then
    if type(opts.context) ~= "table" or type(opts.context.get_start_method) ~= "function" then
      errors.argument(1, "Process", "context must be a context from lmp.get_context")
    end
    method = method or opts.context.get_start_method()
  end
  if method ~= nil and not workers.has_transport(method) then
    errors.argument(1, "Process", ("start method '%s' is not supported; use one of %s")
      :format(tostring(method), table.concat(workers.transports(), ", ")))
  end
  process_serial = process_serial + 1
  local args = opts.args or {}
  return setmetatable({
    start_method = method,
    target = opts.target,
    args = table.pack(table.unpack(args, 1, args.n or #args)),
    name = opts.name or ("Process-" .. process_serial),
    identity = {process_serial},
    daemon = opts.daemon == true,
  }, Process)
end

-- After close, every method but close raises, as Python's ValueError.
local function check_open(self, fname, level)
  if self.closed then
    error(errors.new("closed", fname .. ": the process object is closed"), level + 1)
  end
end

function Process:start()
  check_open(self, "start", 2)
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
  local method = self.start_method or require("lmp.pool").settings.start_method
  local spawned, handle = workers.start(method, function() end,
    function(status, signal)
      state.exitcode = signal ~= 0 and -signal or status
    end)
  if not spawned then error(handle, 0) end
  self.started = true
  self.pid = handle:pid()
  self._handle = handle
  -- Made before the loop turns again, so before the child can be reaped:
  -- the pid is still this child's (a pidfd, or an eventfd a thread
  -- signals where there is none); nil only if neither can be made.
  local made, sentinel = pcall(core.sentinel, self.pid)
  self.sentinel = made and sentinel or nil
  handle:send(protocol.init({path = package.path, cpath = package.cpath, name = self.name,
                             identity = self.identity,
                             parent_name = require("lmp").current_process().name}))
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

-- For an owner that ends the process from a finalizer, where nothing may
-- wait (the Manager): closing the handle kills and reaps the process at
-- once, and no exit callback comes after it, so the process is recorded
-- here as killed; otherwise the runner's exit would wait for it for ever.
function Process:_close_now()
  if self._handle then self._handle:close() end
  if self._state and self._state.exitcode == nil then
    self._state.exitcode = -core.signals.SIGKILL
  end
  self:_reap()
  live[self] = nil
end

function Process:is_alive()
  check_open(self, "is_alive", 2)
  if not self.started then return false end
  pcall(core.run_once, false) -- take in an exit that happened (not inside a callback)
  self:_reap()
  return self.exitcode == nil
end

-- Waits for the process to end (or timeout seconds); exitcode is then
-- 0, the status it exited with, or -N when signal N ended it.
function Process:join(timeout)
  check_open(self, "join", 2)
  if not self.started then error(errors.new("closed", "join: the process was not started"), 2) end
  errors.check_timeout(timeout, 1, "join")
  loop.wait(function() return self._state.exitcode ~= nil end, timeout)
  self:_reap()
end

local function signal(self, fname, number)
  check_open(self, fname, 3)
  if not self.started then error(errors.new("closed", fname .. ": the process was not started"), 3) end
  if self.exitcode == nil and self._state.exitcode == nil then self._handle:kill(number) end
end

function Process:terminate() signal(self, "terminate", core.signals.SIGTERM) end
function Process:kill() signal(self, "kill", core.signals.SIGKILL) end

-- Releases what the process object holds (its handle and channel); raises
-- if the process still runs. Later uses raise; close again does nothing.
function Process:close()
  if self.closed then return end
  if self.started then
    self:_reap()
    if self.exitcode == nil then pcall(core.run_once, false); self:_reap() end
    if self.exitcode == nil then
      error(errors.new("value", "close: the process is still running; join or terminate it first"), 2)
    end
  end
  live[self] = nil
  if self._handle then self._handle:close() end
  -- As Python's close: the sentinel's descriptor goes now, not when the
  -- object is collected.
  if self.sentinel then self.sentinel:close() end
  self._handle, self.target, self.args = nil, nil, nil
  self.closed = true
end

-- The processes started here that still run; the ones that ended are
-- joined on the way, as Python's active_children does.
local function active_children()
  local alive = {}
  pcall(core.run_once, false)
  for p in pairs(live) do
    p:_reap()
    if p.exitcode == nil then alive[#alive + 1] = p end
  end
  table.sort(alive, function(a, b) return a.identity[1] < b.identity[1] end)
  return alive
end

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

return {new = new, Process = Process, finish_all = finish_all, active_children = active_children}

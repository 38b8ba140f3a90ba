-- Starting a worker process, for a pool and for lmp.Process alike: which
-- program it runs, the arguments it is given, and how its death reads.
local core = require "lmp.core"

local workers = {}

-- The program a new worker runs: $LMP_WORKER overrides (a debugger or a
-- valgrind wrapper); then what the host or the runner set; then the
-- lmp-worker installed beside the module.
function workers.executable()
  local exe = os.getenv("LMP_WORKER")
  if exe == nil or exe == "" then exe = core.worker_executable() or core.find_worker() end
  return exe
end

-- Starts a worker by running its program; on_message(message, payload)
-- and on_exit(status, signal) are called from the loop; fds are
-- descriptors the child inherits (lmp.Process's pipe ends). Returns the
-- worker's handle; raises when it cannot start.
function workers.spawn(on_message, on_exit, fds)
  local exe = workers.executable()
  return core.spawn(exe, {exe, core.worker_flag, tostring(core.getpid())}, on_message, on_exit, fds)
end

-- Starts a worker through the forkserver (started on first need: an
-- lmp-worker that loaded nothing of the script, which forks workers on
-- request); arguments and result as workers.spawn's.
function workers.forkserver(on_message, on_exit, fds)
  local exe = workers.executable()
  return core.forkserver_fork(exe, {exe, core.worker_flag, tostring(core.getpid()),
                                    core.forkserver_flag}, on_message, on_exit, fds)
end

-- The ways a worker can be started, by name: start(on_message, on_exit,
-- options) -> handle, raising when it cannot (options.fds: descriptors
-- the worker gets as fd 4, 5, ...).
local transports = {
  spawn = function(on_message, on_exit, options)
    return workers.spawn(on_message, on_exit, options and options.fds)
  end,
  fork = function(on_message, on_exit, options)
    return core.fork_worker(on_message, on_exit, options and options.fds)
  end,
  forkserver = function(on_message, on_exit, options)
    return workers.forkserver(on_message, on_exit, options and options.fds)
  end,
}

-- Adds a way to start workers under `name`, for the start_method option.
function workers.register_transport(name, start)
  assert(type(name) == "string" and type(start) == "function")
  transports[name] = start
end

-- Whether `name` names a start method.
function workers.known(name)
  return transports[name] ~= nil
end

-- The names of the start methods, sorted.
function workers.names()
  local names = {}
  for name in pairs(transports) do names[#names + 1] = name end
  table.sort(names)
  return names
end

-- Starts a pool worker by `method` -> ok, handle or error.
function workers.start(method, on_message, on_exit, options)
  local start = transports[method] or transports.spawn
  return pcall(start, on_message, on_exit, options)
end

local SIGNALS = {[1] = "SIGHUP", [2] = "SIGINT", [3] = "SIGQUIT", [4] = "SIGILL",
  [6] = "SIGABRT", [7] = "SIGBUS", [8] = "SIGFPE", [9] = "SIGKILL",
  [11] = "SIGSEGV", [13] = "SIGPIPE", [14] = "SIGALRM", [15] = "SIGTERM"}

-- How a worker's unexpected end reads in the error it causes.
function workers.death_message(pid, status, signal)
  if signal ~= 0 then
    return ("worker process %d died: killed by signal %d (%s)"):format(
      pid, signal, SIGNALS[signal] or "?")
  end
  return ("worker process %d died: exited with status %d"):format(pid, status)
end

return workers

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

-- Starts a pool worker by `method`, "spawn", "fork" (a copy of this
-- process: no executable to load, no Lua to start) or "mpi" (a worker
-- rank of the MPI job, see lmp.mpi). -> ok, handle or error.
function workers.start(method, on_message, on_exit)
  if method == "fork" then return pcall(core.fork_worker, on_message, on_exit) end
  if method == "mpi" then return pcall(core.mpi_start, on_message, on_exit) end
  return pcall(workers.spawn, on_message, on_exit)
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

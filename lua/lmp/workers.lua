-- Starting a worker process, for a pool and for lmp.Process alike: which
-- program it runs, the arguments it is given, and how its death reads.
local core = require "lmp.core"

local workers = {}

-- The program a new worker runs ($LMP_WORKER, or what the host set, or
-- the lmp-worker beside the module: core.find_worker decides).
function workers.executable()
  return core.find_worker()
end

-- Starts a worker by running its program; on_message(message, payload)
-- and on_exit(status, signal, taken) are called from the loop. Returns the
-- worker's handle; raises when it cannot start.
function workers.spawn(on_message, on_exit)
  local exe = workers.executable()
  return core.spawn(exe, {exe, core.worker_flag, tostring(core.getpid())}, on_message, on_exit)
end

-- The transport registry: how a pool starts its workers, by name. A
-- transport's start(on_message, on_exit, options) starts one worker and
-- returns its handle (send, send_task, close_input, keep_loop_alive, kill,
-- pid; flush optional), or raises when it cannot; the pool calls on_message(message,
-- payload) once per frame, in order, and on_exit(status, signal [, taken])
-- once, after the last message (taken: the frames the worker took out of
-- its channel, where the transport can tell). docs/architecture.md "How to add a transport"
-- gives the whole contract. A pool's start_method names the transport.
local transports, transport_order = {}, {}
-- Transports that start several workers in one call, by name:
-- start_many({on_message, on_exit, on_message, on_exit, ...}, options)
-- -> a list of handles, the first ones of those asked for, and the error
-- that stopped the rest (or raises when it starts none).
local batch_starts = {}

-- Registers (or replaces) the transport `name`; start_many, when given,
-- starts a pool's workers in one call (batch_starts above says how).
function workers.register_transport(name, start, start_many)
  if type(name) ~= "string" or name == "" then
    error(("bad argument #1 to 'register_transport' (non-empty string expected, got %s)")
      :format(type(name)), 2)
  end
  if type(start) ~= "function" then
    error(("bad argument #2 to 'register_transport' (function expected, got %s)")
      :format(type(start)), 2)
  end
  if start_many ~= nil and type(start_many) ~= "function" then
    error(("bad argument #3 to 'register_transport' (function or nil expected, got %s)")
      :format(type(start_many)), 2)
  end
  if not transports[name] then transport_order[#transport_order + 1] = name end
  transports[name] = start
  -- A name registered again without a start_many starts its workers
  -- through `start` alone.
  batch_starts[name] = start_many
end

-- The names registered, in the order they were first registered.
function workers.transports()
  return table.move(transport_order, 1, #transport_order, 1, {})
end

-- Whether `name` is a registered transport.
function workers.has_transport(name)
  return transports[name] ~= nil
end

-- "'spawn' or 'fork'": the registered names, for error messages.
function workers.transport_list()
  local quoted = {}
  for i, name in ipairs(transport_order) do quoted[i] = "'" .. name .. "'" end
  if #quoted < 2 then return quoted[1] or "nothing" end
  return table.concat(quoted, ", ", 1, #quoted - 1) .. " or " .. quoted[#quoted]
end

-- Starts a pool worker through the transport `name`; options is the pool's
-- start_options, passed on untouched. -> ok, handle or error.
function workers.start(name, on_message, on_exit, options)
  local start = transports[name]
  if not start then
    return false, ("start method '%s' is not supported; use %s"):format(
      tostring(name), workers.transport_list())
  end
  return pcall(start, on_message, on_exit, options)
end

-- Starts count workers through the transport `name`, callbacks holding
-- each one's on_message and on_exit in turn. -> a list of handles (as many
-- as started) and, when fewer than count started, the error that stopped
-- the rest. A transport with a start_many starts them in one call; any
-- other one at a time, stopping at the first failure.
function workers.start_many(name, callbacks, options)
  local start_many = batch_starts[name]
  if start_many and transports[name] then
    local ok, handles, err = pcall(start_many, callbacks, options)
    if not ok then return {}, handles end
    return handles, err
  end
  local handles = {}
  for i = 1, #callbacks, 2 do
    local ok, handle = workers.start(name, callbacks[i], callbacks[i + 1], options)
    if not ok then return handles, handle end
    handles[#handles + 1] = handle
  end
  return handles
end

-- A fresh worker executable, sent what each task needs.
workers.register_transport("spawn", function(on_message, on_exit)
  return workers.spawn(on_message, on_exit)
end)

-- A copy of this process: no executable to load, no Lua to start. The
-- worker's module is loaded here, once, before the first fork: each copy
-- inherits it compiled, where it would otherwise compile it itself, every
-- page its compiler and collector wrote costing it a copy-on-write fault
-- (about 100 per worker, a third of its start).
-- A pool's workers are forked one right after another (core.fork_workers
-- says why).
workers.register_transport("fork", function(on_message, on_exit)
  require "lmp.worker"
  return core.fork_worker(on_message, on_exit)
end, function(callbacks)
  require "lmp.worker"
  return core.fork_workers(callbacks)
end)

-- A copy of the forkserver: an lmp-worker started on first need that
-- loaded nothing of the script and forks workers on request (forkserver.c).
workers.register_transport("forkserver", function(on_message, on_exit)
  local exe = workers.executable()
  return core.forkserver_fork(exe, {exe, core.worker_flag, tostring(core.getpid()),
                                    core.forkserver_flag}, on_message, on_exit)
end)

-- How a worker's unexpected end reads in the error it causes.
function workers.death_message(pid, status, signal)
  if signal ~= 0 then
    return ("worker process %d died: killed by signal %d (%s)"):format(
      pid, signal, core.signals[signal] or "?")
  end
  return ("worker process %d died: exited with status %d"):format(pid, status)
end

return workers

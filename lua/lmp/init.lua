-- lmp: multiprocessing for Lua. require "lmp" gives this table; the C core
-- (lmp.core) does the work that must be fast or touches the OS, the
-- modules beside this file are the Lua half. docs/reference.md documents
-- every function.
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"
local pool = require "lmp.pool"
local workers = require "lmp.workers"

local lmp = {}

lmp.version = "0.1.0"
lmp.null = errors.null
lmp.Error = core.Error

-- The value format (like pickle).
function lmp.dumps(...)
  if select("#", ...) == 0 then
    error("bad argument #1 to 'dumps' (value expected)", 2)
  end
  return core.dumps((...))
end

local LOADS_OPTIONS = {"functions", "metatables"}

-- lmp.loads(bytes [, {functions = false, metatables = false}]): with
-- functions = false, bytes holding anything that could run code here (a
-- function, a value sent by name, a registered constructor's value, the
-- globals table) are refused, for input that is not trusted; with
-- metatables = false, metatables too (docs/reference.md says what the
-- default may run).
function lmp.loads(bytes, opts)
  if type(bytes) ~= "string" then
    error(("bad argument #1 to 'loads' (string expected, got %s)"):format(type(bytes)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("bad argument #2 to 'loads' (options table expected, got %s)"):format(type(opts)), 2)
  end
  if opts then errors.check_options(opts, LOADS_OPTIONS, 2, "loads") end
  return core.loads(bytes, not opts or opts.functions ~= false,
                    not opts or opts.metatables ~= false)
end

function lmp.register(name, value)
  if type(name) ~= "string" then
    error(("bad argument #1 to 'register' (string expected, got %s)"):format(type(name)), 2)
  end
  if value == nil then
    error("bad argument #2 to 'register' (value expected, got nil)", 2)
  end
  core.register(name, value)
  return value
end

function lmp.cpu_count()
  return core.cpu_count()
end

-- Which process this is: "MainProcess" here; in a worker, what the pool
-- told it ("PoolWorker-N", or a Process's name). Asked each time: a worker
-- started by fork loaded this module in its parent.
local CurrentProcess = {__name = "lmp.CurrentProcess"}
CurrentProcess.__index = CurrentProcess
-- The process asking is running.
function CurrentProcess.is_alive() return true end

local main_process = setmetatable({name = "MainProcess", pid = core.getpid(), identity = {}},
                                  CurrentProcess)

-- In an MPI job (lmp.mpi) every process of a rank, its workers included,
-- also tells the rank and the host it runs on.
local function with_rank(p)
  local rank = os.getenv("LMP_MPI_RANK")
  if rank and p.rank == nil then
    p.rank = math.tointeger(tonumber(rank))
    local f = io.open("/proc/sys/kernel/hostname")
    p.host = f and f:read("l") or nil
    if f then f:close() end
  end
  return p
end

function lmp.current_process()
  local identity = core.worker_identity
  if identity == nil then return with_rank(main_process) end
  if getmetatable(identity) == nil then setmetatable(identity, CurrentProcess) end
  return with_rank(identity)
end

-- The process that started this one, as lmp.parent_process() gives it.
local ParentProcess = {__name = "lmp.ParentProcess"}
ParentProcess.__index = ParentProcess

-- Whether the parent still runs: a worker's parent is the process that
-- started it, and stays its parent until it dies (then the worker is
-- given to another process, and is killed besides).
function ParentProcess:is_alive()
  return core.getppid() == self.pid and core.kill(self.pid, 0) == true
end

-- nil in the main process; in a worker or an lmp.Process, the process
-- that started it (pid, name, is_alive).
function lmp.parent_process()
  local identity = core.worker_identity
  if identity == nil or identity.parent == nil then return nil end
  return setmetatable({pid = identity.parent.pid, name = identity.parent.name}, ParentProcess)
end

function lmp.get_start_method()
  return pool.settings.start_method
end

-- "spawn" (the default: a fresh worker executable), "fork" (a copy of
-- this process) or "forkserver" (a copy of a clean server process), for
-- pools and processes made without a start_method.
function lmp.set_start_method(method)
  if not workers.has_transport(method) then
    error(("bad argument #1 to 'set_start_method' (%s expected, got %s)")
      :format(workers.transport_list(), tostring(method)), 2)
  end
  pool.settings.start_method = method
end

-- The start methods this system has, the default first.
function lmp.get_all_start_methods()
  local names = {"spawn"}
  for _, name in ipairs(workers.transports()) do
    if name ~= "spawn" then names[#names + 1] = name end
  end
  return names
end

-- The pool.
function lmp.Pool(opts)
  return pool.new(opts, "Pool")
end
lmp.AsyncResult = pool.AsyncResult

-- concurrent.futures.
local executor = require "lmp.executor"
function lmp.ProcessPoolExecutor(opts)
  return executor.new(opts)
end
lmp.as_completed = executor.as_completed
-- lmp.wait is both concurrent.futures.wait and connection.wait: a list
-- of futures goes to the first, a list of connections, queues, sentinels
-- or listeners (with an optional number of seconds) to the second.
function lmp.wait(objects, opts)
  if type(objects) == "table" and objects[1] ~= nil and getmetatable(objects[1]) ~= executor.Future
      and (opts == nil or type(opts) == "number") then
    return require("lmp.wait").wait(objects, opts)
  end
  return executor.wait(objects, opts)
end
-- lmp.Future() makes a future the caller settles; lmp.futures gathers
-- concurrent.futures' names.
lmp.Future = setmetatable({}, {__index = executor.Future,
  __call = function() return executor.new_future() end})
lmp.futures = {Future = lmp.Future, ProcessPoolExecutor = lmp.ProcessPoolExecutor,
  wait = executor.wait, as_completed = executor.as_completed,
  ALL_COMPLETED = "ALL_COMPLETED", FIRST_COMPLETED = "FIRST_COMPLETED",
  FIRST_EXCEPTION = "FIRST_EXCEPTION"}

-- Processes.
local process = require "lmp.process"
function lmp.Process(opts)
  return process.new(opts)
end
lmp.active_children = process.active_children

-- Pipes and queues.
lmp.Pipe = require("lmp.connection").Pipe
local wait = require "lmp.wait"
local listener = require "lmp.listener"
-- lmp.connection: Python's multiprocessing.connection.
lmp.connection = {
  Pipe = lmp.Pipe,
  wait = wait.wait,
  Listener = listener.new,
  Client = listener.client,
}
local queue = require "lmp.queue"
function lmp.Queue(maxsize)
  return queue.new(maxsize)
end
function lmp.JoinableQueue(maxsize)
  return queue.new_joinable(maxsize)
end
function lmp.SimpleQueue()
  return queue.new_simple()
end

-- Locks, semaphores, events, conditions, barriers.
local sync = require "lmp.sync"
function lmp.Lock() return sync.new_lock(sync.Lock) end
function lmp.RLock() return sync.new_lock(sync.RLock) end
function lmp.Semaphore(value) return sync.new_semaphore(value) end
function lmp.BoundedSemaphore(value) return sync.new_semaphore(value, true) end
function lmp.Event() return sync.new_event() end
function lmp.Condition(lock) return sync.new_condition(lock) end
function lmp.Barrier(parties, action, timeout) return sync.new_barrier(parties, action, timeout) end

-- Shared memory.
local shared = require "lmp.shared"
local SHARED_OPTIONS = {"lock"}
local function shared_options(opts, fname)
  if opts ~= nil then
    if type(opts) ~= "table" then
      errors.argument(3, fname, "options table expected, got " .. type(opts))
    end
    errors.check_options(opts, SHARED_OPTIONS, 3, fname)
  end
  return opts
end
function lmp.Value(code, init, opts)
  return shared.new_value(code, init, shared_options(opts, "Value"))
end
function lmp.Array(code, size_or_init, opts)
  return shared.new_array(code, size_or_init, shared_options(opts, "Array"))
end
local shareable = require "lmp.shareable"
lmp.shared_memory = {SharedMemory = shared.new_shared_memory,
  ShareableList = function(sequence, opts) return shareable.new_shareable_list(sequence, opts) end,
  SharedMemoryManager = shareable.new_manager}

-- Managers.
local manager = require "lmp.manager"
function lmp.Manager(opts) return manager.new(opts) end
function lmp.BaseManager(opts) return manager.base(opts) end

-- The event loop.
lmp.run = loop.run
lmp.spawn = loop.spawn
lmp.sleep = loop.sleep
lmp.on_error = loop.on_error

-- Called by the runner once the script has returned: turns the loop until
-- no callback is due, lmp's or luv's when the script loaded luv (its
-- handles are the runner's to serve, as a uv.run() at the end of the
-- script would), then lets live pools finish and go.
function lmp._finish()
  while true do
    loop.run()
    local luv = package.loaded.luv
    if type(luv) ~= "table" or type(luv.loop_alive) ~= "function"
       or type(luv.run) ~= "function" or not luv.loop_alive() then
      break
    end
    luv.run()
  end
  lmp._shutdown()
end

-- Called by lmp._finish: lets live pools finish and go.
local live_pools = setmetatable({}, {__mode = "k"})
local new = pool.new
pool.new = function(...)
  local p = new(...)
  live_pools[p] = true
  return p
end

function lmp._shutdown()
  for p in pairs(live_pools) do
    if p.state == "running" then p:close() end
    p:join()
  end
  process.finish_all()
  core.forkserver_stop()
end

-- Contexts, as in Python: an object with the whole API, the functions
-- that start processes bound to one start method. Everything else is
-- lmp's own (looked up in lmp, so names added to lmp are there too).
-- Called with a dot or a colon alike.
function lmp.get_context(method)
  method = method or pool.settings.start_method
  if not workers.has_transport(method) then
    error(("bad argument #1 to 'get_context' (%s expected, got %s)")
      :format(workers.transport_list(), tostring(method)), 2)
  end
  local ctx = setmetatable({}, {__index = lmp, __name = "lmp.Context",
    __tostring = function() return "lmp.Context(" .. method .. ")" end})
  local function with_method(opts, count_field)
    if math.type(opts) == "integer" or opts == nil then opts = {[count_field] = opts} end
    if type(opts) == "table" and opts.start_method == nil then
      local copy = {}
      for k, v in pairs(opts) do copy[k] = v end
      copy.start_method = method
      opts = copy
    end
    return opts
  end
  -- ctx:Pool{...} passes the context first: it is dropped.
  local function drop_self(first, ...)
    if rawequal(first, ctx) then return ... end
    return first, ...
  end
  ctx.Pool = function(...)
    return lmp.Pool(with_method(drop_self(...), "processes"))
  end
  ctx.ProcessPoolExecutor = function(...)
    return lmp.ProcessPoolExecutor(with_method(drop_self(...), "max_workers"))
  end
  ctx.Process = function(...)
    local opts = drop_self(...)
    if type(opts) ~= "table" then return lmp.Process(opts) end
    return lmp.Process(with_method(opts))
  end
  -- The manager's process starts with this method too.
  ctx.Manager = function(...)
    local opts = drop_self(...)
    if opts == nil then opts = {} end
    if type(opts) ~= "table" then return lmp.Manager(opts) end
    return lmp.Manager(with_method(opts))
  end
  ctx.get_start_method = function() return method end
  return ctx
end

return lmp

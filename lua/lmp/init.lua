-- lmp: multiprocessing for Lua. require "lmp" gives this table; the C core
-- (lmp.core) does the work that must be fast or touches the OS, the
-- modules beside this file are the Lua half. docs/reference.md documents
-- every function.
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"
local pool = require "lmp.pool"

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
local main_process = {name = "MainProcess", pid = core.getpid(), identity = {}}

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
  return with_rank(core.worker_identity or main_process)
end

local START_METHODS = {spawn = true, fork = true}

function lmp.get_start_method()
  return pool.settings.start_method
end

-- "spawn" (the default: a fresh worker executable) or "fork" (a copy of
-- this process), for pools made without a start_method.
function lmp.set_start_method(method)
  if not START_METHODS[method] then
    error(("bad argument #1 to 'set_start_method' ('spawn' or 'fork' expected, got %s)")
      :format(tostring(method)), 2)
  end
  pool.settings.start_method = method
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
lmp.wait = executor.wait
lmp.Future = executor.Future

-- Processes.
local process = require "lmp.process"
function lmp.Process(opts)
  return process.new(opts)
end

-- Pipes and queues.
lmp.Pipe = require("lmp.connection").Pipe
local queue = require "lmp.queue"
function lmp.Queue(maxsize)
  return queue.new(maxsize)
end

-- Locks, semaphores, events.
local sync = require "lmp.sync"
function lmp.Lock() return sync.new_lock(sync.Lock) end
function lmp.RLock() return sync.new_lock(sync.RLock) end
function lmp.Semaphore(value) return sync.new_semaphore(value) end
function lmp.Event() return sync.new_event() end

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
lmp.shared_memory = {SharedMemory = shared.new_shared_memory}

-- Managers.
local manager = require "lmp.manager"
function lmp.Manager(opts) return manager.new(opts) end

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
end

-- Contexts, as in Python: an object with the API for one start method.
function lmp.get_context(method)
  method = method or pool.settings.start_method
  if not START_METHODS[method] then
    error(("bad argument #1 to 'get_context' ('spawn' or 'fork' expected, got %s)")
      :format(tostring(method)), 2)
  end
  local function with_method(opts)
    if math.type(opts) == "integer" or opts == nil then opts = {processes = opts} end
    if type(opts) == "table" and opts.start_method == nil then
      local copy = {}
      for k, v in pairs(opts) do copy[k] = v end
      copy.start_method = method
      opts = copy
    end
    return opts
  end
  return {
    Pool = function(opts) return lmp.Pool(with_method(opts)) end,
    ProcessPoolExecutor = function(opts)
      if math.type(opts) == "integer" then opts = {max_workers = opts} end
      return lmp.ProcessPoolExecutor(with_method(opts or {}))
    end,
    Process = lmp.Process,
    cpu_count = lmp.cpu_count, current_process = lmp.current_process,
    get_start_method = function() return method end,
  }
end

return lmp

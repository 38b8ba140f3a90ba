-- A worker's life: read a message from the channel, run it, answer.
-- Functions arrive once and are kept by id; each task names its function.
local core = require "lmp.core"

local worker = {}

local BIG_MESSAGE = 4 * 1024 * 1024 -- bytes (memory.c keeps blocks this big)

local function error_info(err, traceback)
  local info = {traceback = traceback}
  if type(err) == "string" then
    info.message = err
  else
    local mt = getmetatable(err)
    info.message = (mt and mt.__tostring) and tostring(err)
      or ("(error object: %s)"):format(type(err))
  end
  if pcall(core.dumps, err) then info.value = err else info.value = info.message end
  return info
end

local function handler(err)
  return {err = err, traceback = debug.traceback(type(err) == "string" and err or nil, 2)}
end

-- xpcall's status, and what followed it packed in one table.
local function status_and_values(ok, ...)
  return ok, {n = select("#", ...), ...}
end

local function run(fn, mode, args)
  local n = args.n or #args
  if mode == "apply" then
    local ok, r = status_and_values(xpcall(fn, handler, table.unpack(args, 1, n)))
    if ok then return r, nil end
    return {n = 0}, {error_info(r[1].err, r[1].traceback)}
  end
  local values, errors = core.new_table(n, 1), nil
  values.n = n
  local star = mode == "star"
  local i = 0
  -- One protected call for the whole chunk; after an error it resumes
  -- with the next item (i says which one failed). The loops keep what
  -- they use in locals: this is the innermost loop of every map.
  local function chunk()
    local v, a, f = values, args, fn
    if star then
      local unpack = table.unpack
      for k = i + 1, n do
        i = k
        local item = a[k]
        v[k] = f(unpack(item, 1, item.n or #item))
      end
    else
      for k = i + 1, n do
        i = k
        v[k] = f(a[k])
      end
    end
  end
  while i < n do
    local ok, v = xpcall(chunk, handler)
    if not ok then
      errors = errors or {}
      errors[i] = error_info(v.err, v.traceback)
    end
  end
  return values, errors
end

-- A task's answer: its id alone when every item succeeded, else
-- {"done", id, errors}; the values follow as the frame's payload.
-- A result that cannot be sent fails its own item with kind "serialize".
local function send_result(id, values, errors)
  local n = values.n or #values
  local ok, err = pcall(core.channel_send, errors and {"done", id, errors} or id, values, n)
  if ok then return end
  if type(err) ~= "table" or err.kind ~= "serialize" then error(err, 0) end
  errors = errors or {}
  for i = 1, values.n or #values do
    local sendable, refusal = pcall(core.dumps, values[i], ("result[%d]"):format(i))
    if not sendable then
      values[i] = nil
      errors[i] = {message = refusal.message, kind = "serialize", value = refusal.message}
    end
  end
  for i, e in pairs(errors) do
    if not pcall(core.dumps, e) then
      errors[i] = {message = tostring(e.message), traceback = e.traceback, value = tostring(e.message)}
    end
  end
  core.channel_send({"done", id, errors}, values, n)
end

-- An lmp.Process: run its target once; the exit status says how it went
-- (0, or 1 with the error and traceback on stderr, as Python does).
function worker.run_process(target, args)
  local ok, failure = xpcall(target, handler, table.unpack(args, 1, args.n or #args))
  io.stdout:flush()
  if ok then return 0 end
  local info = error_info(failure.err, failure.traceback)
  io.stderr:write(("Process %s (pid %d) failed:\n%s\n"):format(
    core.worker_identity.name, core.getpid(), info.traceback or info.message))
  io.stderr:flush()
  return 1
end

function worker.main()
  -- A Pipe end given to an lmp.Process arrives as the descriptor inherited.
  core.register("lmp.Connection", function(fd) return require("lmp.connection").from_fd(fd) end)
  local init = core.channel_recv()
  if init == nil then return 0 end
  local config = init[2]
  package.path, package.cpath = config.path, config.cpath
  -- Before the initializer or any task can start a process of its own.
  if config.own_process_group then assert(core.new_process_group()) end
  -- Who this worker is, for lmp.current_process() should a task require
  -- lmp; loading the whole module here would only slow the start.
  core.worker_identity = {name = config.name, pid = core.getpid(), identity = config.identity}
  -- The globals the initializer set or changed belong to this worker:
  -- the script's values for those names, which travel with tasks, never
  -- replace them (not with the first task, not when the script changes
  -- them later), as in Python, where the initializer runs after the main
  -- module's globals exist and nothing the parent changes later arrives.
  local owned = {}
  if config.initializer then
    local before = {}
    for name, value in pairs(_G) do before[name] = value end
    local args = config.initargs or {n = 0}
    local ok, failure = xpcall(config.initializer, handler,
                               table.unpack(args, 1, args.n or #args))
    if not ok then
      core.channel_send({"init_error", error_info(failure.err, failure.traceback)})
      return 1
    end
    for name, value in pairs(_G) do
      if not rawequal(before[name], value) then owned[name] = true end
    end
    for name in pairs(before) do
      if rawget(_G, name) == nil then owned[name] = true end
    end
  end
  core.channel_send({"ready"})
  local functions = {}
  while true do
    local message, args, size = core.channel_recv()
    if message == nil then return 0 end
    if message[1] == "process" then
      if message[4] then require("lmp.globals").install(message[4], owned) end
      return worker.run_process(message[2], message[3])
    end
    local id, function_id, fn, mode, reset, script_globals =
      message[2], message[3], message[4], message[5], message[6], message[7]
    if reset then functions = {} end
    if script_globals then require("lmp.globals").install(script_globals, owned) end
    if fn then functions[function_id] = fn else fn = functions[function_id] end
    local values, errors = run(fn, mode, args)
    io.stdout:flush()
    send_result(id, values, errors)
    -- Big arguments go back to the memory kept for the next big message
    -- now, not whenever the collector would get to them.
    if size >= BIG_MESSAGE then
      args, values = nil, nil
      collectgarbage()
    end
  end
end

return worker

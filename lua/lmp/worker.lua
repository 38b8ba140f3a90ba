-- A worker's life: read a message from the channel, run it, answer.
-- Functions arrive once and are kept by id; each task names its function.
local core = require "lmp.core"
local protocol = require "lmp.protocol"

local worker = {}

local BIG_MESSAGE = 4 * 1024 * 1024 -- bytes (memory.c keeps blocks this big)

-- What every task uses, in locals: the task loop is the worker's inner
-- loop, and each global or field lookup there is paid once per task.
local unpack, hrtime, channel_send = table.unpack, core.hrtime, core.channel_send
local answer, tag_of, read_task = protocol.answer, protocol.tag, protocol.read_task
-- The script's standard output, flushed after each task so that what a
-- task printed arrives before its answer. A task that assigns io.stdout
-- does not change which stream that is.
local stdout = io.stdout

-- A readable line for any error value. tostring would raise for an
-- object whose __tostring raises or returns a non-string, and that must
-- fail the task, not the worker.
local function describe(err)
  local kind = type(err)
  if kind == "string" then return err end
  if kind == "number" then return tostring(err) end
  local mt = debug.getmetatable(err)
  if not (mt and rawget(mt, "__tostring")) then
    return ("(error object: %s)"):format(kind)
  end
  local ok, text = pcall(tostring, err)
  if ok and type(text) == "string" then return text end
  return "error object whose __tostring failed: " .. (type(text) == "string" and text
    or ("(error object: %s)"):format(type(text)))
end

-- What went wrong, as sent back: message, traceback, and the error value
-- itself when it can be sent (its message otherwise).
local function error_info(err, traceback)
  local info = {traceback = traceback, message = describe(err)}
  if pcall(core.dumps, err) then info.value = err else info.value = info.message end
  return info
end

-- What the message handler returns, marked so that a failure it never saw
-- can be told apart: Lua calls no handler when memory runs out (xpcall
-- then returns "not enough memory" as it is), nor for an error inside
-- the handler.
local Failure = {}

local function handler(err)
  return setmetatable({err = err, traceback = debug.traceback(type(err) == "string" and err or nil, 2)},
    Failure)
end

-- The error value and traceback of a failed xpcall with `handler`.
local function failure_of(v)
  if getmetatable(v) == Failure then return v.err, v.traceback end
  return v, nil
end

-- An apply's one result (or none), in a table kept for every apply: a
-- table per task was a good part of what the collector did per small
-- task. The task loop empties it once the answer is sent, so that it
-- holds nothing between tasks.
local one_result = {n = 0}

-- xpcall's status, and what followed it packed in one table.
local function status_and_values(ok, ...)
  local n = select("#", ...)
  if n <= 1 then
    one_result.n, one_result[1] = n, ...
    return ok, one_result
  end
  return ok, {n = n, ...}
end

-- A map's chunk of numbers, which comes as the bytes of its number array
-- (a string, see core.channel_recv): run in C, with no table for the
-- items nor, while the results are numbers of one subtype, for the
-- results, which then are the bytes of the answer's number array.
-- The third value says which the results are.
local map_numbers = core.map_numbers
local function run_numbers(fn, items)
  local values, failures = map_numbers(fn, items, handler)
  if failures then
    for i, failure in pairs(failures) do failures[i] = error_info(failure_of(failure)) end
  end
  return values, failures, type(values) == "string"
end

local function run(fn, mode, args)
  if mode == "apply" then
    local ok, r = status_and_values(xpcall(fn, handler, unpack(args, 1, args.n or #args)))
    if ok then return r, nil end
    return {n = 0}, {error_info(failure_of(r[1]))}
  end
  -- (After the apply's branch: a call of type is worth sparing an apply.)
  if type(args) == "string" then return run_numbers(fn, args) end
  local n = args.n or #args
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
      errors[i] = error_info(failure_of(v))
    end
  end
  return values, errors
end

-- A task's answer (protocol.answer), with `ran`, the seconds the task
-- ran here; the values follow as the frame's payload.
-- A result that cannot be sent fails its own item with kind "serialize",
-- whether it was refused or its __lmp_serialize raised. (Should the
-- channel itself fail, every item encodes alone and the last send raises:
-- the main process is gone, and so goes this worker.)
-- `encoded`: values are the bytes of the list (run_numbers), in which
-- nothing can be refused.
local function send_result(id, values, errors, ran, encoded)
  if encoded then return channel_send(answer(id, errors, ran), values) end
  local n = values.n or #values
  local ok = pcall(channel_send, answer(id, errors, ran), values, n)
  if ok then return end
  errors = errors or {}
  for i = 1, values.n or #values do
    local where = ("result[%d]"):format(i)
    -- Connections are checked as they travel: with the frame's descriptors.
    local sendable, refusal = pcall(require("lmp.connection").dumps_checking, values[i], where)
    if not sendable then
      local message = type(refusal) == "table" and refusal.kind == "serialize"
        and tostring(refusal.message)
        or ("cannot send %s: encoding it raised: %s"):format(where, tostring(refusal))
      values[i] = nil
      errors[i] = {message = message, kind = "serialize", value = message}
    end
  end
  for i, e in pairs(errors) do
    if not pcall(core.dumps, e) then
      errors[i] = {message = tostring(e.message), traceback = e.traceback, value = tostring(e.message)}
    end
  end
  core.channel_send(protocol.answer(id, errors, ran), values, n)
end

-- ---- names this worker does not know --------------------------------------
-- A value sent by name (lmp.register, a module) that this process lacks
-- arrives as a placeholder while the channel is read (see names.c); the
-- task whose function or arguments hold one fails with kind "serialize"
-- naming it, and the worker goes on.

-- Reads the next frame: message, payload, size, and the reasons of the
-- names it could not resolve (nil when there were none); for a usual task
-- (a function this worker has, nothing to reset, no globals) the message
-- is not made: its id, function id and mode follow instead, and an
-- apply's few arguments come in kept_arguments, which holds them until
-- the next apply's (core.channel_recv).
local channel_recv = core.channel_recv
local kept_arguments = {}
local function receive()
  return channel_recv(kept_arguments)
end

-- The reasons of the placeholders inside v (through tables, keys,
-- metatables and upvalues), as a string, or nil when it holds none.
local function missing_in(v)
  local seen, found, reasons = {[_G] = true}, {}, {}
  local function walk(x)
    local kind = type(x)
    if (kind ~= "table" and kind ~= "function" and kind ~= "userdata") or seen[x] then return end
    seen[x] = true
    local mt = debug.getmetatable(x)
    if mt and rawget(mt, "__name") == "lmp.MissingName" then
      local reason = tostring(rawget(x, "message")):gsub("^lmp: ", "")
      if not found[reason] then
        found[reason] = true
        reasons[#reasons + 1] = reason
      end
      return
    end
    if kind == "table" then
      for key, value in next, x do
        walk(key)
        walk(value)
      end
    elseif kind == "function" then
      for i = 1, math.huge do
        local name, value = debug.getupvalue(x, i)
        if not name then break end
        walk(value)
      end
    end
    if mt then walk(mt) end
  end
  walk(v)
  if #reasons > 0 then return table.concat(reasons, "; ") end
end

local function serialize_failure(what, reason)
  local message = ("cannot receive %s in worker %d: %s"):format(what, core.getpid(), reason)
  return {kind = "serialize", message = message, value = message}
end

-- Leaves out of a snapshot of the script's globals those that hold a
-- name this worker does not know: a task that does not use them runs.
local function without_missing(snapshot)
  for name, value in pairs(snapshot) do
    if missing_in(value) then snapshot[name] = nil end
  end
end

-- A task some of whose arguments could not be received: those items fail
-- with kind "serialize", the others run.
local function run_partially(fn, mode, args)
  local n = args.n or #args
  if mode == "apply" then
    return {n = 0}, {serialize_failure("the arguments", missing_in(args))}
  end
  local values, errors = {n = n}, {}
  for k = 1, n do
    local reason = missing_in(args[k])
    if reason then
      errors[k] = serialize_failure("this item", reason)
    else
      local v, e = run(fn, mode, {n = 1, args[k]})
      values[k], errors[k] = v[1], e and e[1]
    end
  end
  return values, errors
end

-- An lmp.Process: run its target once; the exit status says how it went
-- (0, or 1 with the error and traceback on stderr, as Python does).
function worker.run_process(target, args)
  local ok, failure = xpcall(target, handler, table.unpack(args, 1, args.n or #args))
  io.stdout:flush()
  if ok then return 0 end
  local info = error_info(failure_of(failure))
  io.stderr:write(("Process %s (pid %d) failed:\n%s\n"):format(
    core.worker_identity.name, core.getpid(), info.traceback or info.message))
  io.stderr:flush()
  return 1
end

-- A message this worker cannot read (no main process of this version sends
-- one): it says so on stderr and exits with status 1, which the main
-- process sees as the worker's death.
local function unknown_message(message)
  io.stderr:write(("lmp worker %d: a message it does not know (%s), from a main process"
    .. " of another version?\n"):format(core.getpid(), protocol.tag(message) or type(message)))
  return 1
end

function worker.main()
  -- A connection (a Pipe end, or what a Queue, lock or shared value holds)
  -- arrives as a descriptor that came with the frame.
  core.register("lmp.Connection", function(data) return require("lmp.connection").from_slot(data) end)
  for _, name in ipairs{"lmp.Lock", "lmp.RLock"} do
    core.register(name, function(file) return require("lmp.sync").arrived(name, file) end)
  end
  local init, _, _, init_missing = receive()
  if init == nil then return 0 end
  if protocol.tag(init) ~= "init" then return unknown_message(init) end
  local config = protocol.read_init(init)
  -- A ring beside the socket (process_ring.c): frames come and go through
  -- it from now on.
  if type(config.ring) == "table" then
    local ring_end, wake_end = config.ring[1], config.ring[2]
    core.ring_attach(ring_end:fileno(), wake_end:fileno())
    ring_end:close()
    wake_end:close()
    config.ring = nil
  end
  if init_missing then
    core.channel_send(protocol.init_error(serialize_failure("the initializer or its arguments",
      missing_in(config) or table.concat(init_missing, "; "))))
    return 1
  end
  package.path, package.cpath = config.path, config.cpath
  -- Before the initializer or any task can start a process of its own.
  if config.own_process_group then assert(core.new_process_group()) end
  -- Who this worker is, for lmp.current_process() should a task require
  -- lmp; loading the whole module here would only slow the start.
  core.worker_identity = {name = config.name, pid = core.getpid(), identity = config.identity,
                          parent = {name = config.parent_name or "MainProcess",
                                    pid = core.getppid()}}
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
      core.channel_send(protocol.init_error(error_info(failure_of(failure))))
      return 1
    end
    for name, value in pairs(_G) do
      if not rawequal(before[name], value) then owned[name] = true end
    end
    for name in pairs(before) do
      if rawget(_G, name) == nil then owned[name] = true end
    end
  end
  core.channel_send(protocol.ready())
  local functions = {}
  -- function id -> why this worker could not receive that function.
  local unreceived = {}
  while true do
    local message, args, size, missing, task_id, task_function, task_mode = receive()
    if message == nil then return 0 end
    local tag = task_id and "task" or tag_of(message)
    if tag == "process" then
      local target, process_args, process_globals = protocol.read_process(message)
      if missing and process_globals then without_missing(process_globals) end
      if process_globals then require("lmp.globals").install(process_globals, owned) end
      local reason = missing and missing_in({target, process_args})
      if reason then
        io.stderr:write(("Process %s (pid %d) failed:\n%s\n"):format(
          config.name, core.getpid(), serialize_failure("its target or arguments", reason).message))
        return 1
      end
      return worker.run_process(target, process_args)
    end
    local id, function_id, fn, mode, reset, script_globals
    if task_id then
      id, function_id, mode = task_id, task_function, task_mode
    elseif tag == "function" then
      -- A map's function, its payload, ahead of its first task here.
      function_id, reset, script_globals = protocol.read_function(message)
      fn, args = args, nil
    elseif tag == "task" then
      id, function_id, fn, mode, reset, script_globals = read_task(message)
    else
      return unknown_message(message)
    end
    if reset then functions, unreceived = {}, {} end
    if missing and script_globals then without_missing(script_globals) end
    if script_globals then require("lmp.globals").install(script_globals, owned) end
    if fn then
      local reason = missing and missing_in(fn)
      if reason then
        -- The main process sends a function once: later tasks of it fail
        -- alike.
        unreceived[function_id] = serialize_failure("the task's function", reason)
        fn = nil
      end
      functions[function_id] = fn
    else
      fn = functions[function_id]
    end
    if tag == "function" then goto next_message end
    local values, errors, encoded
    local started = hrtime()
    if (missing or not fn) and type(args) == "string" then
      -- A chunk of numbers (see run_numbers) that is not run as one.
      args = core.loads(args)
    end
    if not fn and unreceived[function_id] then
      values, errors = {n = 0}, {}
      for i = 1, mode == "apply" and 1 or (args.n or #args) do
        errors[i] = unreceived[function_id]
      end
    elseif missing and missing_in(args) then
      values, errors = run_partially(fn, mode, args)
    else
      values, errors, encoded = run(fn, mode, args)
    end
    local ran = hrtime() - started
    stdout:flush()
    send_result(id, values, errors, ran, encoded)
    one_result[1] = nil
    -- Big arguments go back to the memory kept for the next big message
    -- now, not whenever the collector would get to them.
    if size >= BIG_MESSAGE then
      if args == kept_arguments then
        for i = 1, args.n do args[i] = nil end
      end
      args, values = nil, nil
      collectgarbage()
    end
    ::next_message::
  end
end

return worker

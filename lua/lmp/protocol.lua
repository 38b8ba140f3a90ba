-- The messages between the main process and a worker, built and read in
-- one place (docs/protocol.md describes them). Each is one frame on the
-- worker's channel: a message (a tagged table, or a bare task id) and, for
-- tasks and their answers, a payload of values after it.
--
-- One message has a C fast path: a task whose function the worker already
-- has is written by handle:send_task (lmp__encode_task_message in
-- runtime/value.c) without making its table. A field added to the task
-- message goes into protocol.task and protocol.read_task here and into
-- that C function.
--
-- What a worker sends is read with rawget and next, so that a forged
-- message with metamethods runs nothing in the main process.
local protocol = {}

-- ---- main process -> worker ------------------------------------------------

-- The first message to every worker: the module paths and who it is, and
-- for a pool's worker its initializer.
function protocol.init(config)
  return {"init", config}
end

-- A task: the function is sent once per worker (false when the worker has
-- it, under function_id); reset tells the worker to forget the functions
-- it keeps first; script_globals are the script's globals when they
-- changed since the worker had them (false otherwise). The arguments are
-- the frame's payload.
function protocol.task(id, function_id, fn, mode, reset, script_globals)
  return {"task", id, function_id, fn or false, mode, reset or false, script_globals or false}
end

-- A map's function, sent to each worker that lacks it ahead of the
-- worker's first task of it: the function is the frame's payload, encoded
-- once per call and written as it is to every worker (Pool:_send); reset
-- and script_globals as in a task. The worker keeps it under function_id.
function protocol.function_message(function_id, reset, script_globals)
  return {"function", function_id, reset or false, script_globals or false}
end

-- Sends a task on a worker's handle, the usual one (a function the worker
-- has, nothing to reset, no globals) through the C fast path. Returns
-- false when the channel is broken.
function protocol.send_task(handle, id, function_id, fn, mode, reset, script_globals, payload)
  if fn or reset or script_globals then
    return handle:send(protocol.task(id, function_id, fn, mode, reset, script_globals), payload)
  end
  return handle:send_task(id, function_id, mode, payload)
end

-- An lmp.Process's one job: its target, its arguments and the script's
-- globals. No payload.
function protocol.process(target, args, script_globals)
  return {"process", target, args, script_globals}
end

-- ---- read by the worker ----------------------------------------------------

-- The tag of a message from the main process ("init", "task", "function",
-- "process"), or nil when it is no tagged table.
function protocol.tag(message)
  if type(message) == "table" then
    local tag = message[1]
    if type(tag) == "string" then return tag end
  end
  return nil
end

function protocol.read_init(message)
  return message[2]
end

-- -> id, function_id, fn (or false), mode, reset, script_globals (or false)
function protocol.read_task(message)
  return message[2], message[3], message[4], message[5], message[6], message[7]
end

-- -> function_id, reset, script_globals (or false)
function protocol.read_function(message)
  return message[2], message[3], message[4]
end

-- -> target, args, script_globals
function protocol.read_process(message)
  return message[2], message[3], message[4]
end

-- ---- worker -> main process ------------------------------------------------

local READY = {"ready"}

function protocol.ready()
  return READY
end

-- The initializer failed: info is {message =, traceback =, value =, kind =}.
function protocol.init_error(info)
  return {"init_error", info}
end

-- Below this many seconds a task's run time is not reported: its answer
-- is the bare id, which the main process reads without a table (the
-- usual answer of short tasks, where a table per answer would show).
protocol.QUICK = 0.00005

-- A task's answer: its id alone when every item succeeded and it ran in
-- under protocol.QUICK seconds; else {"done", id, errors or false, ran}
-- with errors item index -> info and ran the seconds the task ran in the
-- worker (its clock, from the task's arrival to its last item's end: the
-- time it waited in the channel, or its answer waited to be read, is not
-- in it). The values are the payload.
function protocol.answer(id, errors, ran)
  if errors or ran >= protocol.QUICK then return {"done", id, errors or false, ran} end
  return id
end

-- ---- read by the main process ----------------------------------------------

-- What a worker sent: "answer", id, errors (or nil), ran (the seconds
-- the task ran in the worker; for a bare id, under protocol.QUICK: 0 is
-- returned); "ready"; "init_error", info; or "unknown" when it is none of
-- those. The fields of an answer are checked against the task it answers
-- (see valid_errors); its run time and those of an init_error here.
function protocol.read(message)
  if math.type(message) == "integer" then return "answer", message, nil, 0 end
  if type(message) ~= "table" then return "unknown" end
  local tag = rawget(message, 1)
  if tag == "done" then
    local errs, ran = rawget(message, 3), rawget(message, 4)
    -- A run time that is no time cannot steer the scheduling.
    if type(ran) ~= "number" or not (ran >= 0 and ran < math.huge) then return "unknown" end
    if errs == false then errs = nil end
    return "answer", rawget(message, 2), errs, ran
  end
  if tag == "ready" then return "ready" end
  if tag == "init_error" then
    local info = rawget(message, 2)
    -- {info} alone would pass with info nil, as an empty error table.
    if type(info) == "table" and protocol.valid_errors({info}, 1) then return "init_error", info end
  end
  return "unknown"
end

-- Whether `errs` is what a worker sends for a task of `count` items:
-- item index -> {message = string, kind = string or nil, ...}.
function protocol.valid_errors(errs, count)
  if type(errs) ~= "table" or getmetatable(errs) ~= nil then return false end
  for i, info in next, errs do
    if math.type(i) ~= "integer" or i < 1 or i > count or type(info) ~= "table"
       or getmetatable(info) ~= nil or type(rawget(info, "message")) ~= "string"
       or (rawget(info, "kind") ~= nil and type(rawget(info, "kind")) ~= "string") then
      return false
    end
  end
  return true
end

-- A few words on a message the main process cannot use, for the error
-- that ends the worker which sent it.
function protocol.describe(message)
  if type(message) == "table" then
    local tag = rawget(message, 1)
    return ("a table message %s"):format(type(tag) == "string"
      and ("%q"):format(tag:sub(1, 40)) or "of no known kind")
  end
  return ("a %s message"):format(math.type(message) or type(message))
end

return protocol

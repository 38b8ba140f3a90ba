-- A test double of a transport, written in Lua against the documented
-- interface (docs/architecture.md, "How to add a transport") and
-- registered as the start method "double". It carries frames differently
-- from "spawn": the worker is a real lmp-worker process, but every frame
-- crosses a relay in the main process that holds it and hands it on later,
-- from a timer, in order:
--
-- - to the worker: send and send_task queue the message and its payload
--   and return true; the relay writes them on the next turn of the loop;
-- - from the worker: each message's payload is decoded at once into the
--   table a payload view stands for (core.payload_value), since a view is
--   valid only during the call, and delivered with the message later;
-- - on_exit is delivered once, after the last message the relay holds.
--
-- So the scheduler meets a carriage whose sends complete late, whose
-- payloads are tables rather than views, and whose messages arrive in
-- batches; it must not be changed for it. `double.handles` lists the
-- handles made, for tests that watch them.
local core = require "lmp.core"
local workers = require "lmp.workers"

local double = {handles = {}}

local Handle = {}
Handle.__index = Handle

-- Runs the relay's queues: what is held for the worker, then what is held
-- for the pool, then (once the worker is gone and nothing is held) on_exit.
local function flush(h)
  if h.timer then h.timer:close(); h.timer = nil end
  while h.out_head <= h.out_tail do
    local entry = h.outgoing[h.out_head]
    h.outgoing[h.out_head] = nil
    h.out_head = h.out_head + 1
    if not h.broken then
      local ok
      if entry.task then
        ok = h.inner:send_task(entry[1], entry[2], entry[3], entry[4])
      else
        ok = h.inner:send(entry[1], entry[2], entry[3])
      end
      -- The worker is gone: what is left is dropped, as a socket would;
      -- on_exit tells the pool.
      if not ok then h.broken = true end
    end
  end
  if h.input_closed and not h.input_close_sent and not h.broken then
    h.input_close_sent = true
    h.inner:close_input()
  end
  while h.in_head <= h.in_tail do
    local entry = h.incoming[h.in_head]
    h.incoming[h.in_head] = nil
    h.in_head = h.in_head + 1
    h.delivered = h.delivered + 1
    h.on_message(entry[1], entry[2])
  end
  if h.exit and not h.exited then
    h.exited = true
    h.on_exit(h.exit[1], h.exit[2])
  end
end

-- Schedules a flush on the next turn of the loop (a timer keeps the loop
-- turning until it runs).
local function later(h)
  if h.timer == nil then
    h.timer = core.timer(0, function() flush(h) end)
  end
end

function Handle:send(message, payload, root)
  if self.broken then return false end
  self.out_tail = self.out_tail + 1
  self.outgoing[self.out_tail] = {message, payload, root}
  later(self)
  return true
end

function Handle:send_task(id, function_id, mode, payload)
  if self.broken then return false end
  self.out_tail = self.out_tail + 1
  self.outgoing[self.out_tail] = {id, function_id, mode, payload, task = true}
  later(self)
  return true
end

-- After what was sent: the worker finishes it and exits.
function Handle:close_input()
  self.input_closed = true
  later(self)
end

function Handle:keep_loop_alive(on)
  self.inner:keep_loop_alive(on)
end

function Handle:kill(signal)
  return self.inner:kill(signal)
end

function Handle:pid()
  return self.pid_
end

function double.start(on_message, on_exit)
  local h = setmetatable({on_message = on_message, on_exit = on_exit,
                          outgoing = {}, out_head = 1, out_tail = 0,
                          incoming = {}, in_head = 1, in_tail = 0,
                          delivered = 0, exits = 0}, Handle)
  h.inner = workers.spawn(function(message, payload)
    if payload ~= nil then
      local ok, value = pcall(core.payload_value, payload)
      if not ok then
        -- The pool reports a payload that does not load as the task's
        -- error: hand this one over now, in order, while its view is valid.
        flush(h)
        h.delivered = h.delivered + 1
        on_message(message, payload)
        return
      end
      payload = value
    end
    h.in_tail = h.in_tail + 1
    h.incoming[h.in_tail] = {message, payload}
    later(h)
  end, function(status, signal)
    h.exits = h.exits + 1
    h.exit = {status, signal}
    h.broken = true
    later(h)
  end)
  h.pid_ = h.inner:pid()
  double.handles[#double.handles + 1] = h
  return h
end

workers.register_transport("double", double.start)

return double

-- The iterator of imap, imap_unordered and the executor's map: the input
-- read as workers free up, a bounded number of items in flight, results
-- handed out one at a time.
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"
local progress = require "lmp.progress"
local chunking = require "lmp.chunking"
local job_module = require "lmp.job"

local new_job, new_task = job_module.new_job, job_module.new_task
local cursor_position, cursor_load, cursor_take = core.cursor_position, core.cursor_load,
  core.cursor_take
local PIPELINE = chunking.PIPELINE

-- imap and imap_unordered read their input as workers free up, keeping a
-- bounded number of items in flight, and pick a chunk size from how long
-- items take when none is given. The iterator gives (value, index): a nil
-- result would end a generic for, so it arrives as lmp.null. The fourth
-- value is a to-be-closed handle, so that leaving the loop early (break,
-- return, error) stops reading the input at once; the iterator is also let
-- go when it is collected, and join runs the rest of the input of one
-- still held (see Pool:join).
--
-- An input that raises ends the input: the items read before it are run
-- and given to the caller, then the error is raised from the loop, as
-- Python's imap does; the pool is not affected.

local ImapCloser = {__name = "lmp.ImapCloser"}
function ImapCloser.__close(closer) closer.stop() end
-- Only flags change here: a finalizer may run in the middle of any of the
-- pool's own work.
function ImapCloser.__gc(closer) closer.abandon() end

-- imap.iterate(pool, fname, fn, read, total, opts, ordered [, mode [,
-- array]]) -> iterator, nil, nil, closer; `read` gives (true, item) until
-- the end; `total` is the count of items when known; mode "star" unpacks
-- each item as the arguments; `array`, when given, is the input itself
-- (read then in place). opts: chunksize, timeout, deadline (hrtime),
-- progress.
local function iterate_imap(self, fname, fn, read, total, opts, ordered, mode, array)
  self:_check_open(fname)
  local job = new_job("imap", false)
  local bar = self:_wants_progress(opts) and progress.new(fname, total)
  -- Without a bar to advance, a chunk of numbers is read from its bytes
  -- (see Job:_deliver and runtime/cursor.c).
  job.numbers_as_bytes = not bar
  local fixed = opts.chunksize
  local limit = total and chunking.default_chunksize(total, self.processes) or 4096
  local chunksize = fixed or 1
  local read_count, taken, exhausted = 0, 0, false
  local input_error, input_failed = nil, false  -- what reading the input raised
  -- Arrived results, a chunk (one task's values and errors) at a time:
  -- by first input index for imap, in arrival order for imap_unordered.
  local chunks, fifo, head, tail = {}, {}, 1, 0
  -- The chunk being read, and its fields; the items taken from it are
  -- counted by the cursor (cursor_position), whose C iterator hands them
  -- out (see runtime/cursor.c).
  local current, values, count, base, errs = nil, nil, 0, 0, nil
  local slow -- below
  local step, cursor = core.imap_cursor(function() return slow() end, errors.null)
  local next_index = 1
  local per_item            -- seconds an item takes, measured
  local processes = self.processes
  local function window() return chunking.window(chunksize, processes) end
  -- Items read and not yet given to the caller: queued, in flight, or
  -- arrived and waiting, the chunk being read included. The window bounds
  -- these; were any left out, the caller could wait for results that are
  -- not on their way while the window holds the input back.
  local function outstanding() return read_count - taken - cursor_position(cursor) end

  job.refill = function()
    if exhausted or job.done then return end
    if not job.draining and outstanding() >= window() then return end
    if not fixed and per_item then
      chunksize = chunking.grow(chunksize, limit, per_item)
    end
    local source, from, count = array, read_count + 1, 0
    if array then
      count = math.min(chunksize, total - read_count)
      if read_count + count >= total then exhausted = true end
    else
      source, from = {}, 1
      while count < chunksize do
        local ok, more, item = pcall(read)
        if not ok then
          input_error, input_failed, exhausted = more, true, true
          break
        end
        if not more then exhausted = true; break end
        count = count + 1
        source[count] = item
      end
    end
    if count > 0 then
      self:_enqueue(new_task(job, fn, mode or "map", source, from, count, read_count + 1,
                             opts.timeout))
      read_count = read_count + count
    end
    if exhausted then self.imaps[job] = nil end
  end

  job.on_chunk = function(task, results, errs)
    -- How long the worker ran the task (see _on_message), not counting
    -- the time it waited behind another or its answer waited to be read:
    -- that time says nothing of these items, and counting it would shrink
    -- the chunks for no reason. A task its worker died running says
    -- nothing of its items' time.
    if task.took then per_item = chunking.item_time(per_item, task.took, task.count) end
    local chunk = {first = task.first, count = task.count, values = results, errs = errs}
    if ordered then
      chunks[task.first] = chunk
    else
      tail = tail + 1
      fifo[tail] = chunk
    end
  end

  self.imaps[job] = true
  self:_pump()

  local pool, owner = self, core.getpid()
  -- Makes `current` a chunk with an item left to take, if one has arrived;
  -- `taken` counts the items of the chunks finished before it.
  local function advance()
    if current and cursor_position(cursor) < count then return true end
    local chunk
    if ordered then
      chunk = chunks[next_index]
      if chunk then chunks[next_index] = nil; next_index = next_index + chunk.count end
    else
      chunk = fifo[head]
      if chunk then fifo[head] = nil; head = head + 1 end
    end
    if not chunk then return false end
    if current then taken = taken + current.count end
    current = chunk
    values, count, base, errs = chunk.values, chunk.count, chunk.first - 1, chunk.errs
    -- Items of a chunk with errors, or with a progress bar to advance, go
    -- through `slow` below.
    cursor_load(step, values, count, base, not (bar or errs))
    return true
  end
  local function have()
    return advance() or job.error ~= nil or (exhausted and outstanding() <= 0)
  end
  -- The next chunk, waiting for it if need be; nil at the end.
  local function next_chunk()
    if not advance() then
      pool:_pump()
      local timeout = opts.deadline and opts.deadline - core.hrtime()
      if not loop.wait(have, timeout and math.max(timeout, 0)) then
        errors.raise(errors.new("timeout", ("%s: no result within %g s of the call")
          :format(fname, opts.timeout)))
      end
      if not advance() then
        if bar then bar:finish() end
        if job.error then errors.raise(job.error) end
        if input_failed then
          -- Raised once, as it was raised to us; the loop ends with it.
          input_failed = false
          error(input_error, 0)
        end
        return nil
      end
    end
    -- A new chunk frees room in the window: read more input if the
    -- workers could use it.
    if not exhausted and outstanding() < window()
      and pool:_queued() < #pool.workers * PIPELINE then pool:_pump() end
    return current
  end
  local closer = setmetatable({stop = function()
    if bar then bar:finish() end
    exhausted = true
    pool.imaps[job] = nil
    pool:_pump()
  end, abandon = function()
    -- A worker started by fork has a copy of this iterator: its collector
    -- must not touch the parent's pool.
    if core.getpid() ~= owner then return end
    -- Nothing will read the results: stop reading the input, and skip the
    -- tasks still queued (Pool:_pump skips a finished job's tasks).
    exhausted = true
    job.done = true
    pool.imaps[job] = nil
    loop.defer(function()
      if bar then bar:finish() end
      pool:_pump()
    end)
  end}, ImapCloser)
  -- What the C iterator does not do itself: move to the next chunk (the
  -- one read is used up), and items with an error or a progress bar.
  function slow()
    if cursor_position(cursor) >= count then
      -- The closer lives as long as this function does: its finalizer
      -- lets the imap go once neither is referenced.
      if not (closer and next_chunk()) then return nil end
      if not (bar or errs) then return step() end
    end
    local position = cursor_take(cursor)
    if bar then bar:advance(1) end
    if errs and errs[position] then errors.raise(errs[position]) end
    -- Handed out, a result is the caller's alone: the chunk keeps no
    -- reference to it (as Python's iterator does not).
    local value = values[position]
    values[position] = nil
    if value == nil then value = errors.null end
    return value, base + position
  end
  return step, nil, nil, closer
end

return {iterate = iterate_imap}

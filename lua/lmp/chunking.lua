-- How a pool cuts its input into tasks: pure functions of sizes and
-- timings, with no pool, worker or loop in them, so that they can be
-- tested alone.
local chunking = {}

-- Tasks in flight per worker when tasks are short: a second one hides the
-- round trip (the worker need not wait for the main process between
-- tasks). The scheduler and the imap window both count with it.
chunking.PIPELINE = 2

-- How long a chunk of an imap should take, in seconds, once the time of
-- an item is known: long enough that the per-task cost is small beside it,
-- short enough that results keep coming.
local CHUNK_TIME = 0.02

-- The smallest imap window, in items: even with chunks of one item, this
-- many may be read ahead so that the workers have tasks waiting.
local MIN_WINDOW = 64

-- Python's chunk size for a map of `total` items: total / (4 x processes),
-- rounded up. The imap uses it as the largest chunk it grows to when the
-- input's length is known.
function chunking.default_chunksize(total, processes)
  if not total or total == 0 then return 1 end
  local size = total // (processes * 4)
  if total % (processes * 4) ~= 0 then size = size + 1 end
  return size
end

-- How long, in seconds, the last tasks of a map should take once the time
-- of its items is known (chunking.tail_size): short enough that a worker
-- that ran out of work waits little for the others, long enough that the
-- main process's cost of a task (tens of microseconds, taken from the
-- same CPUs as the workers') stays a few percent of it. On
-- spectral-norm's maps (1,000 items of about 40 us) a quarter of a
-- millisecond made a fifth more tasks, and the gap between maps did not
-- shrink on a loaded machine: their plan's chunks of 16 stand.
local TAIL_TASK_TIME = 0.001

-- The chunk sizes for a map of `total` items when the caller gave none:
-- each chunk takes a quarter of a worker's share of what is left
-- ("guided" scheduling), so chunks shrink towards the end and the workers
-- finish together even when later items cost more; a floor keeps tiny
-- items from being swamped by per-task overhead (at most about 32 chunks
-- per worker). Measured on 1M trivial items and on 64 prime-counting
-- ranges of rising cost: both beat Python's fixed total/(4 x processes).
-- A quarter rather than an eighth: every chunk's end wakes the main
-- process, and on a loaded machine the worker that woke it often waits
-- milliseconds for a CPU again. Profiled (tests/bench/workloads/run.lua
-- profile) at load average 6-9, alternating, three runs each: 60 equal
-- blocks of fannkuch-redux in 20 chunks instead of 32 kept the two
-- workers in items 98.8% of the time instead of 98.2%, 300 uneven tasks
-- in 23 instead of 36, 98.7% instead of 96.8%; the idle at the end did not
-- grow (the last chunks are single items either way).
local GUIDED_PARTS = 4
chunking.GUIDED_PARTS = GUIDED_PARTS

local function plan_floor(total, processes)
  return math.max(1, -(-total // (processes * 32)))
end

function chunking.chunk_plan(total, processes)
  local floor = plan_floor(total, processes)
  local sizes, left = {}, total
  while left > 0 do
    local size = math.min(left, math.max(floor, -(-left // (processes * GUIDED_PARTS))))
    sizes[#sizes + 1] = size
    left = left - size
  end
  return sizes
end

-- How many of the last items of a map of `total` items chunk_plan puts
-- in chunks at its floor: the tail, which tail_size may cut finer (a task
-- before it is at the guided size already).
function chunking.tail_items(total, processes)
  return math.min(total, plan_floor(total, processes) * processes * GUIDED_PARTS)
end

-- How many of a queued task's `count` items to send now, the rest going
-- back to the queue: the plan's floor (chunk_plan) is a guess made before
-- any item ran, and its last chunks can be long (300 items of 10 ms make
-- chunks of 5, 50 ms). Once `per_item`, the measured seconds an item of
-- this map takes, is known (nil before), a task is cut to what runs in
-- TAIL_TASK_TIME, but never below the guided size for the `unsent`
-- items left (a quarter of a worker's share), so that only the tail is
-- cut finer. Returns count when the task goes whole.
function chunking.tail_size(count, unsent, processes, per_item)
  if not per_item or per_item <= 0 or count <= 1 then return count end
  local by_time = math.max(1, math.ceil(TAIL_TASK_TIME / per_item))
  local guided = -(-unsent // (processes * GUIDED_PARTS))
  return math.min(count, math.max(by_time, guided))
end

-- The chunk sizes for a map of `total` items in chunks of `chunksize`
-- given by the caller: all that size but the last.
function chunking.fixed_plan(total, chunksize)
  local sizes = {}
  for first = 1, total, chunksize do sizes[#sizes + 1] = math.min(chunksize, total - first + 1) end
  return sizes
end

-- The next chunk size of an imap that picks its own: double the last one,
-- at most `limit` and at most what runs in CHUNK_TIME given `per_item`,
-- the measured seconds an item takes; never below 1.
function chunking.grow(chunksize, limit, per_item)
  return math.max(1, math.min(limit, chunksize * 2, math.floor(CHUNK_TIME / per_item)))
end

-- How long a task ran, for the estimates: `ran`, the seconds its worker
-- reported; a worker reports none (0) for a task that ran under `quick`
-- seconds, and then `seen`, the time the main process saw from sending
-- to answer, is taken, but never above `quick`: what it holds beyond the
-- run is waiting (in the channel, or for this process to read), and
-- counted as work it would make the chunks small for no reason.
function chunking.run_time(ran, seen, quick)
  if ran > 0 then return ran end
  return math.max(0, math.min(seen, quick))
end

-- The estimate of an item's time after a chunk of `count` items that ran
-- `took` seconds, from the previous estimate (nil at first): the mean of
-- the two, so that it follows a change within a few chunks.
function chunking.item_time(previous, took, count)
  local item = took / math.max(1, count)
  if previous then return (previous + item) / 2 end
  return item
end

-- How many items an imap lets be outstanding (read and not yet given to
-- the caller) with chunks of `chunksize` on `processes` workers: enough
-- that every worker has PIPELINE tasks in flight and as many again
-- queued, so the pipeline never runs dry while the caller keeps reading.
function chunking.window(chunksize, processes)
  return math.max(MIN_WINDOW, chunksize * processes * chunking.PIPELINE * 2)
end

return chunking

-- lmp.chunking alone: the pure functions that cut a pool's input into
-- tasks and bound an imap's read-ahead, with no pool, worker or loop.
local describe, it, assert = describe, it, assert
local _ENV = _G
local chunking = require "lmp.chunking"

local function sum(sizes)
  local total = 0
  for _, size in ipairs(sizes) do total = total + size end
  return total
end

-- Sizes and worker counts chosen to hit the edges: empty, one item, fewer
-- items than workers, exact and inexact multiples, primes, large.
local TOTALS = {0, 1, 2, 3, 7, 31, 32, 33, 63, 64, 65, 100, 127, 1000, 1023, 4096, 99991,
  1000000}
local PROCESSES = {1, 2, 3, 4, 7, 16, 64}

describe("chunking", function()
  it("default_chunksize is Python's total / (4 x processes), rounded up, at least 1", function()
    assert.equal(1, chunking.default_chunksize(nil, 4))
    assert.equal(1, chunking.default_chunksize(0, 4))
    for _, total in ipairs(TOTALS) do
      for _, p in ipairs(PROCESSES) do
        local size = chunking.default_chunksize(total, p)
        assert.equal(math.max(1, math.ceil(total / (4 * p))), size)
      end
    end
  end)

  it("chunk_plan's sizes sum to the total, each at least 1", function()
    for _, total in ipairs(TOTALS) do
      for _, p in ipairs(PROCESSES) do
        local sizes = chunking.chunk_plan(total, p)
        assert.equal(total, sum(sizes), ("total %d, %d processes"):format(total, p))
        for _, size in ipairs(sizes) do
          if not (math.type(size) == "integer" and size >= 1) then
            error(("total %d, %d processes: a chunk of %s"):format(total, p, size))
          end
        end
      end
    end
  end)

  it("chunk_plan's chunks shrink towards the end, never growing", function()
    for _, total in ipairs(TOTALS) do
      for _, p in ipairs(PROCESSES) do
        local sizes = chunking.chunk_plan(total, p)
        for i = 2, #sizes do
          assert.is_true(sizes[i] <= sizes[i - 1],
            ("total %d, %d processes: chunk %d (%d) after %d"):format(total, p, i, sizes[i],
              sizes[i - 1]))
        end
      end
    end
    local sizes = chunking.chunk_plan(1000000, 4)
    assert.is_true(sizes[#sizes] < sizes[1] / 4)
  end)

  it("chunk_plan cuts a few long items in few chunks, the last ones single items", function()
    -- Each chunk's end wakes the main process, which costs a loaded
    -- machine's worker milliseconds: fannkuch-redux's 60 blocks and 300
    -- uneven tasks over 2 workers, in at most 20 and 24 chunks (32 and
    -- 36 with chunks of an eighth of a worker's share).
    for _, case in ipairs{{60, 20}, {300, 24}} do
      local sizes = chunking.chunk_plan(case[1], 2)
      assert.is_true(#sizes <= case[2], ("%d items: %d chunks"):format(case[1], #sizes))
    end
    local sizes = chunking.chunk_plan(60, 2)
    for i = #sizes - 5, #sizes do assert.equal(1, sizes[i]) end
  end)

  it("chunk_plan keeps a floor: at most 32 chunks per worker, all but the last at the floor or above",
    function()
    for _, total in ipairs(TOTALS) do
      for _, p in ipairs(PROCESSES) do
        local sizes = chunking.chunk_plan(total, p)
        local floor = math.max(1, math.ceil(total / (p * 32)))
        assert.is_true(#sizes <= 32 * p, ("total %d, %d processes: %d chunks"):format(total, p,
          #sizes))
        local low = nil
        for i = 1, #sizes - 1 do if sizes[i] < floor then low = low or i end end
        assert.is_nil(low)
      end
    end
  end)

  it("fixed_plan gives chunks of the size asked but the last, summing to the total", function()
    assert.same({}, chunking.fixed_plan(0, 5))
    assert.same({5, 5, 2}, chunking.fixed_plan(12, 5))
    assert.same({1, 1, 1}, chunking.fixed_plan(3, 1))
    assert.same({3}, chunking.fixed_plan(3, 100))
    for _, total in ipairs(TOTALS) do
      for _, size in ipairs{1, 2, 7, 64, 5000} do
        -- At most 100,000 chunks: a million-entry plan is no more telling,
        -- and under valgrind it runs out of memory.
        if total // size <= 100000 then
          local sizes = chunking.fixed_plan(total, size)
          assert.equal(total, sum(sizes))
          local odd = nil
          for i = 1, #sizes - 1 do if sizes[i] ~= size then odd = odd or i end end
          assert.is_nil(odd, ("total %d, chunks of %d: chunk %s"):format(total, size, odd))
        end
      end
    end
  end)

  it("grow at most doubles, stays within 1 and the limit, for any measured item time", function()
    local times = {0, 1e-12, 1e-9, 1e-6, 1e-4, 0.01, 0.02, 0.5, 1, 1e6, math.huge}
    for _, chunksize in ipairs{1, 2, 3, 100, 4096} do
      for _, limit in ipairs{1, 10, 4096} do
        for _, t in ipairs(times) do
          local next_size = chunking.grow(chunksize, limit, t)
          assert.is_true(next_size >= 1)
          assert.is_true(next_size <= math.max(1, limit))
          assert.is_true(next_size <= chunksize * 2)
        end
      end
    end
    -- Instant items grow to the limit by doubling; slow ones fall to one.
    assert.equal(8, chunking.grow(4, 4096, 0))
    assert.equal(1, chunking.grow(4096, 4096, 1))
  end)

  -- The imap reads another chunk whenever fewer items than the window are
  -- outstanding. Were the window smaller than every worker's pipeline of
  -- chunks plus the chunk being read, a reader keeping up would still see
  -- workers wait for work.
  it("run_time takes the worker's figure; without one, what was seen, at most the quick bound", function()
    assert.equal(0.25, chunking.run_time(0.25, 3, 0.00005))
    assert.equal(0.00001, chunking.run_time(0, 0.00001, 0.00005))
    -- A bare-id answer read late: the wait is not the task's.
    assert.equal(0.00005, chunking.run_time(0, 2.5, 0.00005))
    assert.equal(0, chunking.run_time(0, -1, 0.00005))
  end)

  it("item_time is a chunk's time per item, averaged with the previous estimate", function()
    assert.equal(0.01, chunking.item_time(nil, 0.1, 10))
    assert.equal(0.1, chunking.item_time(nil, 0.1, 0))
    assert.equal(0.015, chunking.item_time(0.02, 0.1, 10))
  end)

  it("the imap window always has room for every worker's pipeline and the next chunk", function()
    for _, p in ipairs(PROCESSES) do
      for _, chunksize in ipairs{1, 2, 3, 15, 16, 17, 1000, 4096, 1000000} do
        local window = chunking.window(chunksize, p)
        assert.is_true(window >= chunksize * p * chunking.PIPELINE + chunksize,
          ("chunksize %d, %d processes: window %d"):format(chunksize, p, window))
        assert.is_true(window >= 64)
      end
    end
  end)

  -- An imap picking its own chunk size, fed adversarial item times (a
  -- run of instant items, then very slow ones, alternating, falling by
  -- tenfold steps): in a model of its read-ahead (read while fewer items
  -- than the window are outstanding, then every worker takes a task),
  -- each refill leaves a task queued for every worker.
  it("with chunk sizes picked from adversarial timings, each refill queues a task per worker",
    function()
    local patterns = {
      function() return 0 end,
      function(i) return i < 50 and 0 or 1 end,
      function(i) return i % 2 == 0 and 1e-7 or 0.5 end,
      function(i) return 10 ^ -(i % 9) end,
    }
    for _, p in ipairs{1, 2, 4, 16} do
      for _, time_of in ipairs(patterns) do
        local chunksize, limit, per_item = 1, chunking.default_chunksize(100000, p), nil
        local queue = {}
        for step = 1, 200 do
          -- Read while the window has room, at the size of this step.
          if per_item then chunksize = chunking.grow(chunksize, limit, per_item) end
          local outstanding = 0
          for _, size in ipairs(queue) do outstanding = outstanding + size end
          local read = false
          while outstanding < chunking.window(chunksize, p) do
            queue[#queue + 1] = chunksize
            outstanding = outstanding + chunksize
            read = true
          end
          -- Every worker has a task to run: the queue holds at least one
          -- per worker whenever the window just let input in.
          if read then assert.is_true(#queue >= p, ("step %d: %d queued for %d workers")
            :format(step, #queue, p)) end
          -- The workers take and finish one round of tasks.
          for _ = 1, math.min(p, #queue) do table.remove(queue, 1) end
          local item_time = time_of(step)
          per_item = per_item and (per_item + item_time) / 2 or item_time
        end
      end
    end
  end)

  it("tail_items covers the plan's chunks at its floor, and no more", function()
    for _, total in ipairs(TOTALS) do
      for _, p in ipairs(PROCESSES) do
        local sizes, tail = chunking.chunk_plan(total, p), chunking.tail_items(total, p)
        assert.is_true(tail >= 0 and tail <= total)
        -- Every chunk that starts before the tail is at the guided size.
        local first = 1
        for _, size in ipairs(sizes) do
          if first <= total - tail then
            assert.is_true(size <= math.max(1, math.ceil((total - first + 1)
                                                          / (p * chunking.GUIDED_PARTS))),
              ("total %d, %d workers: chunk of %d at %d"):format(total, p, size, first))
          end
          first = first + size
        end
      end
    end
  end)

  it("tail_size cuts a task only once items are timed, never below the guided size", function()
    -- Untimed, or one item: whole.
    assert.equal(7, chunking.tail_size(7, 100, 2, nil))
    assert.equal(1, chunking.tail_size(1, 1, 2, 0.01))
    for _, p in ipairs(PROCESSES) do
      for _, count in ipairs{2, 5, 16, 100} do
        for _, unsent in ipairs{count, count * 3, count * 100} do
          for _, per_item in ipairs{1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.02} do
            local size = chunking.tail_size(count, unsent, p, per_item)
            assert.is_true(size >= 1 and size <= count)
            -- Never below the guided size for what is left to send.
            assert.is_true(size >= math.min(count, math.ceil(unsent / (p * chunking.GUIDED_PARTS))))
            -- Quick items are never cut: at 10 us, a task of 100 runs
            -- a millisecond.
            if per_item <= 1e-5 then assert.equal(count, size) end
          end
        end
      end
    end
    -- 10 ms items at the end of a map: one at a time once no more than a
    -- quarter of each worker's share is left.
    assert.equal(1, chunking.tail_size(5, 8, 2, 0.01))
    assert.equal(2, chunking.tail_size(5, 10, 2, 0.01))
    -- 40 us items (spectral-norm's): the plan's 16 stand; 200 us items:
    -- a millisecond's worth.
    assert.equal(16, chunking.tail_size(16, 40, 2, 0.00004))
    assert.equal(5, chunking.tail_size(16, 40, 2, 0.0002))
  end)
end)

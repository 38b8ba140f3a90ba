-- The workloads of the workloads benchmark, each written once against an
-- executor, so that the serial run, the lmp run and the LuaLanes run are
-- the same algorithm with the same chunks of work. tests/bench/workloads/
-- workloads.py holds the same algorithms in Python, and each workload
-- returns the same checksum there.
--
-- An executor has two methods: ex:map(f, items) returns the results of
-- f(item) in order, and ex:imap_unordered(f, items) returns them in any
-- order. f may close over anything the executor can carry to a worker.
--
-- Each workload: setup(quick) -> state (untimed: built before the clock
-- starts), and run(ex, state) -> checksum string (timed).

local workloads = {}

-- Mandelbrot: the set over [-1.5, 0.5] x [-1, 1] on an N x N grid, 50
-- iterations, one bit per pixel packed eight to a byte; one task per row.
-- The checksum counts the pixels in the set.
workloads.mandelbrot = {
  setup = function(quick) return {size = quick and 400 or 800} end,
  run = function(ex, state)
    local size = state.size
    local function row(y)
      local bytes, ci = {}, 2.0 * y / size - 1.0
      local byte, bit = 0, 0
      for x = 0, size - 1 do
        local cr = 2.0 * x / size - 1.5
        local zr, zi, inside = 0.0, 0.0, 1
        for _ = 1, 50 do
          local zr2, zi2 = zr * zr, zi * zi
          if zr2 + zi2 > 4.0 then inside = 0; break end
          zi = 2.0 * zr * zi + ci
          zr = zr2 - zi2 + cr
        end
        byte = byte * 2 + inside
        bit = bit + 1
        if bit == 8 then
          bytes[#bytes + 1] = byte
          byte, bit = 0, 0
        end
      end
      if bit > 0 then bytes[#bytes + 1] = byte << (8 - bit) end
      return string.char(table.unpack(bytes))
    end
    local rows = {}
    for y = 1, size do rows[y] = y - 1 end
    local image = table.concat(ex:map(row, rows))
    local count = 0
    for i = 1, #image do
      local b = image:byte(i)
      while b > 0 do count = count + (b & 1); b = b >> 1 end
    end
    return ("%d bytes, %d in the set"):format(#image, count)
  end,
}

-- Spectral norm of the infinite matrix A(i, j) = 1 / ((i+j)(i+j+1)/2 + i + 1)
-- truncated to N x N, by 10 rounds of the power method on A'A. Each product
-- with A or A' is one map over the rows, its function closing over the
-- current vector: 40 maps in a row, each waiting on the one before.
workloads["spectral-norm"] = {
  setup = function(quick) return {size = quick and 300 or 600} end,
  run = function(ex, state)
    local size = state.size
    local rows = {}
    for i = 1, size do rows[i] = i - 1 end
    local function times(v, transposed)
      return ex:map(function(i)
        local sum = 0.0
        for j = 0, size - 1 do
          local a, b = i, j
          if transposed then a, b = j, i end
          sum = sum + v[j + 1] / ((a + b) * (a + b + 1) // 2 + a + 1)
        end
        return sum
      end, rows)
    end
    local function times_transposed_times(v)
      return times(times(v, false), true)
    end
    local u, v = {}, nil
    for i = 1, size do u[i] = 1.0 end
    for _ = 1, 10 do
      v = times_transposed_times(u)
      u = times_transposed_times(v)
    end
    local vbv, vv = 0.0, 0.0
    for i = 1, size do
      vbv = vbv + u[i] * v[i]
      vv = vv + v[i] * v[i]
    end
    return ("%.9f"):format(math.sqrt(vbv / vv))
  end,
}

-- Fannkuch-redux: for every permutation of 1..n, count the prefix
-- reversals ("flips") until 1 comes first; the maximum, and a checksum
-- that adds the flips of even-numbered permutations and subtracts the
-- odd ones. Permutations are numbered in the order of the usual
-- rotation-based generator; a task takes a block of consecutive numbers,
-- rebuilds the first permutation of its block from its number (factorial
-- digits, each a rotation) and runs the generator from there.
workloads["fannkuch-redux"] = {
  setup = function(quick) return {n = quick and 9 or 10, blocks = 60} end,
  run = function(ex, state)
    local n, blocks = state.n, state.blocks
    local factorial = {[0] = 1}
    for i = 1, n do factorial[i] = factorial[i - 1] * i end
    local block_size = factorial[n] // blocks
    local function block(first)
      -- perm and count are 0-based, as the generator's description is.
      local perm, count, flipped = {}, {}, {}
      for i = 0, n - 1 do perm[i] = i end
      local index = first
      for i = n - 1, 1, -1 do
        local d = index // factorial[i]
        index = index % factorial[i]
        count[i] = d
        -- Rotate perm[0..i] left by d places.
        local copy = {}
        for j = 0, i do copy[j] = perm[j] end
        for j = 0, i do perm[j] = copy[(j + d) % (i + 1)] end
      end
      local checksum, max_flips = 0, 0
      for number = first, first + block_size - 1 do
        local head = perm[0]
        if head ~= 0 then
          for i = 1, n - 1 do flipped[i] = perm[i] end
          local flips = 1
          while true do
            local next_head = flipped[head]
            if next_head == 0 then break end
            flipped[head] = head
            if head > 2 then
              local lo, hi = 1, head - 1
              while lo < hi do
                flipped[lo], flipped[hi] = flipped[hi], flipped[lo]
                lo, hi = lo + 1, hi - 1
              end
            end
            head = next_head
            flips = flips + 1
          end
          if flips > max_flips then max_flips = flips end
          if number % 2 == 0 then checksum = checksum + flips
          else checksum = checksum - flips end
        end
        -- The next permutation: swap the first two, then carry through
        -- the counters, rotating one place further for each carry.
        local first_value = perm[1]
        perm[1], perm[0] = perm[0], first_value
        local i = 1
        count[i] = count[i] + 1
        while count[i] > i do
          count[i] = 0
          i = i + 1
          if i >= n then break end
          local next_value = perm[1]
          perm[0] = next_value
          for j = 1, i - 1 do perm[j] = perm[j + 1] end
          perm[i] = first_value
          first_value = next_value
          count[i] = count[i] + 1
        end
      end
      return {checksum, max_flips}
    end
    local firsts = {}
    for b = 1, blocks do firsts[b] = (b - 1) * block_size end
    local checksum, max_flips = 0, 0
    for _, r in ipairs(ex:map(block, firsts)) do
      checksum = checksum + r[1]
      if r[2] > max_flips then max_flips = r[2] end
    end
    return ("%d\nPfannkuchen(%d) = %d"):format(checksum, n, max_flips)
  end,
}

-- Binary trees: allocate and walk complete binary trees. The stretch tree
-- (depth max+1), the long-lived tree (depth max), and for each depth d of
-- 4, 6, .., max, 2^(max-d+4) trees of depth d, split in four ranges: every
-- depth costs about the same, so the tasks are of a few sizes.
workloads["binary-trees"] = {
  setup = function(quick) return {max_depth = quick and 12 or 15} end,
  run = function(ex, state)
    local max_depth = state.max_depth
    local function walk(job)
      local function build(depth)
        if depth == 0 then return {} end
        depth = depth - 1
        return {build(depth), build(depth)}
      end
      local function check(tree)
        if tree[1] then return 1 + check(tree[1]) + check(tree[2]) end
        return 1
      end
      local sum = 0
      for _ = 1, job.count do sum = sum + check(build(job.depth)) end
      return sum
    end
    local jobs = {{depth = max_depth + 1, count = 1}, {depth = max_depth, count = 1}}
    for depth = 4, max_depth, 2 do
      local trees = 1 << (max_depth - depth + 4)
      for part = 0, 3 do
        jobs[#jobs + 1] = {depth = depth, count = trees // 4 + (part < trees % 4 and 1 or 0)}
      end
    end
    local results = ex:map(walk, jobs)
    local lines = {}
    for i, job in ipairs(jobs) do
      local key = i <= 2 and ("depth " .. job.depth) or ("%d trees of depth %d"):format(
        1 << (max_depth - job.depth + 4), job.depth)
      if not lines[key] then lines[key] = 0; lines[#lines + 1] = key end
      lines[key] = lines[key] + results[i]
    end
    for i, key in ipairs(lines) do lines[i] = key .. " check " .. lines[key] end
    return table.concat(lines, "\n")
  end,
}

-- A k-nucleotide-like count: a DNA string made by the fasta benchmark's
-- generator (its linear congruential random numbers over four weighted
-- letters), cut in chunks that overlap by 17 letters; each task counts
-- every k-mer starting in its chunk for k = 1, 2, 3, 4, 6, 12, 18 and
-- returns the tables for k <= 6 and the counts of the five sequences
-- looked for; the main process adds them up.
local TARGETS = {"GGT", "GGTA", "GGTATT", "GGTATTTTAATT", "GGTATTTTAATTTATAGT"}
workloads["k-nucleotide"] = {
  setup = function(quick)
    local length = quick and 100000 or 400000
    local letters, weights = {"a", "c", "g", "t"},
      {0.3029549426680, 0.1979883004921, 0.1975473066391, 0.3015094502008}
    local cumulative, total = {}, 0.0
    for i = 1, 4 do total = total + weights[i]; cumulative[i] = total end
    local seed, out = 42, {}
    for i = 1, length do
      seed = (seed * 3877 + 29573) % 139968
      local r = seed / 139968
      local pick = 4
      for j = 1, 3 do
        if r < cumulative[j] then pick = j; break end
      end
      out[i] = letters[pick]
    end
    return {dna = table.concat(out):upper(), chunks = 16}
  end,
  run = function(ex, state)
    local dna, chunks = state.dna, state.chunks
    local ks = {1, 2, 3, 4, 6, 12, 18}
    local pieces, step = {}, -(-#dna // chunks)
    for start = 1, #dna, step do
      local owned = math.min(step, #dna - start + 1)
      pieces[#pieces + 1] = {owned = owned, text = dna:sub(start, start + owned - 1 + 17)}
    end
    local function count(piece)
      local text, owned, sub = piece.text, piece.owned, string.sub
      local result = {}
      for _, k in ipairs(ks) do
        local counts = {}
        for p = 1, math.min(owned, #text - k + 1) do
          local key = sub(text, p, p + k - 1)
          counts[key] = (counts[key] or 0) + 1
        end
        if k <= 6 then
          result[k] = counts
        else
          for _, target in ipairs(TARGETS) do
            if #target == k then result[target] = counts[target] or 0 end
          end
        end
      end
      return result
    end
    local totals = {}
    for _, result in ipairs(ex:map(count, pieces)) do
      for key, value in pairs(result) do
        if type(value) == "table" then
          local into = totals[key] or {}
          totals[key] = into
          for kmer, n in pairs(value) do into[kmer] = (into[kmer] or 0) + n end
        else
          totals[key] = (totals[key] or 0) + value
        end
      end
    end
    local lines = {}
    for _, k in ipairs({1, 2}) do
      local keys = {}
      for kmer in pairs(totals[k]) do keys[#keys + 1] = kmer end
      table.sort(keys)
      for _, kmer in ipairs(keys) do lines[#lines + 1] = kmer .. " " .. totals[k][kmer] end
    end
    for _, target in ipairs(TARGETS) do
      local n = #target <= 6 and (totals[#target][target] or 0) or totals[target]
      lines[#lines + 1] = n .. "\t" .. target
    end
    local distinct = 0
    for _ in pairs(totals[6]) do distinct = distinct + 1 end
    lines[#lines + 1] = distinct .. " distinct 6-mers"
    return table.concat(lines, "\n")
  end,
}

-- A task of a given size: integer arithmetic (a linear congruential
-- sequence) for `steps` rounds. WORK_PER_MS is how many rounds take about
-- a millisecond in lua5.4 on the machine the README's figures come from.
local WORK_PER_MS = 90000
local function spin(steps)
  local x = steps
  for _ = 1, steps do x = (x * 1103515245 + 12345) & 0x7fffffff end
  return x
end

-- Many medium tasks: 20,000 tasks of about 200 us through imap_unordered
-- with its default chunking; the checksum adds up the results.
workloads["medium-tasks"] = {
  setup = function(quick) return {tasks = quick and 5000 or 20000} end,
  run = function(ex, state)
    local steps = WORK_PER_MS // 5
    local items = {}
    for i = 1, state.tasks do items[i] = steps + i % 7 end
    local sum = 0
    for _, r in ipairs(ex:imap_unordered(spin, items)) do sum = (sum + r) % 1000000007 end
    return tostring(sum)
  end,
}

-- Uneven tasks: 300 tasks of 0.1 to 20 ms, sizes drawn from a fixed
-- pseudo-random sequence, through map with its default chunking.
workloads["uneven-tasks"] = {
  setup = function(quick)
    local tasks, seed, items = quick and 100 or 300, 7, {}
    for i = 1, tasks do
      seed = (seed * 3877 + 29573) % 139968
      items[i] = math.floor((0.1 + 19.9 * seed / 139968) * WORK_PER_MS)
    end
    return {items = items}
  end,
  run = function(ex, state)
    local sum = 0
    for _, r in ipairs(ex:map(spin, state.items)) do sum = (sum + r) % 1000000007 end
    return tostring(sum)
  end,
}

workloads.order = {"mandelbrot", "spectral-norm", "fannkuch-redux", "binary-trees",
  "k-nucleotide", "medium-tasks", "uneven-tasks"}

return workloads

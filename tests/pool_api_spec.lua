-- The Pool API's edges: inputs of every form (arrays, iterator functions,
-- a generic for's triplets, inputs that raise), options checked by name,
-- timeouts checked for NaN, chunking that never stalls, and imap
-- iterators that are dropped or left unread when the pool is joined.
local describe, it, setup, teardown, after_each, assert, pcall =
  describe, it, setup, teardown, after_each, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"

local function square(x) return x * x end

-- An iterator function giving 1..n, then raising at item n + 1.
local function failing_input(n)
  local i = 0
  return function()
    i = i + 1
    if i > n then error("input broke at " .. i) end
    return i
  end
end

-- Runs a script with the runner; returns its exit status, stdout and
-- stderr.
local function run_script(code, command)
  local path = helpers.write_script(code)
  local status, out, err = helpers.run((command or "%s %s"):format(helpers.runner, path))
  os.remove(path)
  return status, out, err
end

local function collect(iterator, ...)
  local got = {}
  for v in iterator, ... do got[#got + 1] = v end
  return got
end

describe("Pool inputs", function()
  local pool
  setup(function() pool = lmp.Pool(2) end)
  teardown(function()
    pool:close()
    assert.is_true(pool:join(30))
    assert.is_true(helpers.no_children())
  end)

  it("imap gives every item read before its input raised, then raises that error from the loop", function()
    for _, chunksize in ipairs{false, 1, 3} do
      local got = {}
      local ok, err = pcall(function()
        for v in pool:imap(square, failing_input(10), chunksize or nil) do got[#got + 1] = v end
      end)
      assert.is_false(ok)
      assert.matches("input broke at 11", tostring(err))
      assert.same({1, 4, 9, 16, 25, 36, 49, 64, 81, 100}, got)
    end
    -- the pool is unharmed: later calls work, close and join too (teardown)
    assert.same({1, 4, 9, n = 3}, pool:map(square, {1, 2, 3}))
  end)

  it("imap_unordered gives every item read before its input raised, then raises", function()
    local got = {}
    local ok, err = pcall(function()
      for v in pool:imap_unordered(square, failing_input(50)) do got[#got + 1] = v end
    end)
    assert.is_false(ok)
    assert.matches("input broke at 51", tostring(err))
    table.sort(got)
    assert.equal(50, #got)
    for i = 1, 50 do assert.equal(i * i, got[i]) end
    assert.same({4, n = 1}, pool:map(square, {2}))
  end)

  it("map, starmap and map_async over an input that raises raise from the call", function()
    assert.error_matches(function() pool:map(square, failing_input(5)) end, "input broke at 6")
    assert.error_matches(function() pool:map_async(square, failing_input(0)) end, "input broke at 1")
    local t = {}
    assert.error_matches(function()
      pool:starmap(function(a) return a end, function() return t.missing.field end)
    end, "attempt to index")
    assert.same({1, 4, n = 2}, pool:map(square, {1, 2}))
  end)

  it("map, starmap, imap and map_async take a generic for's triplet: pairs gives values", function()
    local t = {a = 2, b = 3, c = 4}
    local r = pool:map(square, pairs(t))
    table.sort(r)
    assert.same({4, 9, 16}, {r[1], r[2], r[3]})
    assert.equal(3, r.n)
    -- ipairs keeps input order
    assert.same({25, 36, n = 2}, pool:map(square, ipairs{5, 6}))
    assert.same({25, 36}, collect(pool:imap(square, ipairs{5, 6})))
    local u = collect(pool:imap_unordered(square, pairs(t)))
    table.sort(u)
    assert.same({4, 9, 16}, u)
    assert.same({49, n = 1}, pool:map_async(square, ipairs{7}):get(30))
    -- starmap takes every value of a step as the arguments: (key, value)
    local s = pool:starmap(function(k, v) return k .. "=" .. v end, pairs(t))
    table.sort(s)
    assert.same({"a=2", "b=3", "c=4"}, {s[1], s[2], s[3]})
    -- one value per step (string.gmatch): that value is the item
    assert.same({"A", "BC", n = 2}, pool:map(string.upper, ("a bc"):gmatch("%a+")))
    -- io.lines gives four values; the last is the file, closed by the for
    local path = os.tmpname()
    local f = assert(io.open(path, "w")); f:write("3\n4\n"); f:close()
    assert.same({9, 16, n = 2}, pool:map(function(l) return tonumber(l) ^ 2 // 1 end, io.lines(path)))
    os.remove(path)
  end)

  it("an iterator function followed by one value takes it as the chunksize or options", function()
    local i = 0
    local gen = function() i = i + 1; if i <= 4 then return i end end
    assert.same({1, 4, 9, 16, n = 4}, pool:map(square, gen, 2))
    i = 0
    assert.same({1, 4, 9, 16, n = 4}, pool:map(square, gen, {chunksize = 3}))
  end)

  it("a table with no items at 1..n, or a non-iterable, is refused", function()
    assert.has_error(function() pool:map(square, {a = 1, b = 2}) end,
      "bad argument #2 to 'map' (array expected, got a table with no items at 1..n;"
      .. " for its values use pairs(t))")
    assert.error_matches(function() pool:imap(square, {x = 1}) end, "bad argument #2 to 'imap'")
    assert.error_matches(function() pool:starmap(square, {x = {1}}) end, "bad argument #2 to 'starmap'")
    assert.has_error(function() pool:map(square, "abc") end,
      "bad argument #2 to 'map' (iterable expected, got string)")
    -- an empty table and {n = 0} are empty inputs, not refused
    assert.same({n = 0}, pool:map(square, {}))
    assert.same({n = 0}, pool:map(square, {n = 0}))
  end)
end)

describe("Pool chunking", function()
  local pool
  setup(function() pool = lmp.Pool(2) end)
  teardown(function()
    pool:close()
    assert.is_true(pool:join(30))
    assert.is_true(helpers.no_children())
  end)

  local function work(seconds)
    local deadline = os.clock() + seconds
    while os.clock() < deadline do end
    return seconds
  end

  -- Mixes of item costs (count, seconds each) chosen against the adaptive
  -- chunk size: long runs of free items grow the chunks; costly ones then
  -- shrink the window while a big chunk is still being read.
  local MIXES = {
    {{100, 1e-3}, {20000, 0}, {100, 1e-3}},
    {{10000, 0}, {40, 2e-3}, {10000, 0}, {40, 2e-3}, {10000, 0}},
    {{12000, 5e-6}, {3000, 1e-4}},
    {{20000, 0}, {150, 1e-3}},
  }
  local function mix_input(mix)
    local part, left = 1, mix[1][1]
    return function()
      while left == 0 do
        part = part + 1
        if not mix[part] then return nil end
        left = mix[part][1]
      end
      left = left - 1
      return mix[part][2]
    end
  end
  local function mix_total(mix)
    local n = 0
    for _, part in ipairs(mix) do n = n + part[1] end
    return n
  end

  for m, mix in ipairs(MIXES) do
    for _, method in ipairs{"imap", "imap_unordered"} do
      it(("no chunk size it picks stalls %s (mix %d, generator and array)"):format(method, m), function()
        -- Twice: whether a stall shows depends on how answers interleave.
        for _ = 1, 2 do
          local n = 0
          for _ in pool[method](pool, work, mix_input(mix)) do n = n + 1 end
          assert.equal(mix_total(mix), n)
        end
        local array, read = {}, mix_input(mix)
        for v in read do array[#array + 1] = v end
        local n = 0
        for _ in pool[method](pool, work, array) do n = n + 1 end
        assert.equal(#array, n)
      end)
    end
  end
end)

describe("Pool imap iterators at join", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  local function endless()
    local i = 0
    return function() i = i + 1; return i end
  end

  it("join lets go of an imap iterator that was dropped unfinished", function()
    local pool = lmp.Pool(2)
    local it = pool:imap(square, endless())
    assert.equal(1, it())
    local unordered = pool:imap_unordered(square, endless())
    assert.is_number(unordered())
    it, unordered = nil, nil -- luacheck: ignore
    pool:close()
    assert.is_true(pool:join(30))
  end)

  it("join runs the rest of the input of an iterator still held; its results stay readable", function()
    local pool = lmp.Pool(2)
    local input = {}
    for i = 1, 500 do input[i] = i end
    local it = pool:imap(square, input, 1)
    assert.equal(1, it())
    pool:close()
    assert.is_true(pool:join(30))
    local n = 1
    for v, i in it do
      n = n + 1
      assert.equal(i * i, v)
    end
    assert.equal(500, n)
  end)

  it("<close> does not raise with an unread imap iterator in the same scope", function()
    local status, out, err = run_script([[
      local lmp = require "lmp"
      do
        local pool <close> = lmp.Pool(2)
        local it = pool:imap(function(x) return x + 1 end, coroutine.wrap(function()
          for i = 1, 300 do coroutine.yield(i) end
        end))
        assert(it() == 2)
      end
      print("done")
    ]])
    assert.equal(0, status, err)
    assert.equal("done\n", out)
  end)
end)

describe("options", function()
  local pool
  setup(function() pool = lmp.Pool(1) end)
  teardown(function()
    pool:close()
    assert.is_true(pool:join(30))
    assert.is_true(helpers.no_children())
  end)

  it("an unknown option key raises bad argument naming it and the nearest known one", function()
    assert.has_error(function() pool:apply_async(square, {1}, {calback = print}) end,
      "bad argument #3 to 'apply_async' (unknown option 'calback': did you mean 'callback'?)")
    assert.has_error(function() lmp.Pool{procesess = 1} end,
      "bad argument #1 to 'Pool' (unknown option 'procesess': did you mean 'processes'?)")
    assert.has_error(function() pool:map(square, {1}, {chunk_size = 2}) end,
      "bad argument #3 to 'map' (unknown option 'chunk_size': did you mean 'chunksize'?)")
    assert.error_matches(function() pool:map_async(square, {1}, {error_calback = print}) end,
      "bad argument #3 to 'map_async' %(unknown option 'error_calback': did you mean 'error_callback'%?%)")
    assert.error_matches(function() pool:starmap(square, {{1}}, {timout = 1}) end,
      "bad argument #3 to 'starmap' %(unknown option 'timout': did you mean 'timeout'%?%)")
    assert.error_matches(function() pool:imap(square, {1}, {progess = true}) end,
      "bad argument #3 to 'imap' %(unknown option 'progess': did you mean 'progress'%?%)")
    assert.error_matches(function() pool:imap_unordered(square, {1}, {zzz = 1}) end,
      "bad argument #3 to 'imap_unordered' %(unknown option 'zzz' %(known: chunksize, timeout, progress%)%)")
    -- options of the _async forms are not options of the blocking ones
    assert.error_matches(function() pool:map(square, {1}, {callback = print}) end,
      "bad argument #3 to 'map' %(unknown option 'callback'")
    assert.error_matches(function() pool:apply_async(square, {1}, {chunksize = 2}) end,
      "bad argument #3 to 'apply_async' %(unknown option 'chunksize'")
    assert.error_matches(function() lmp.ProcessPoolExecutor{max_worker = 1} end,
      "bad argument #1 to 'ProcessPoolExecutor' %(unknown option 'max_worker': did you mean 'max_workers'%?%)")
    assert.error_matches(function() lmp.Process{target = print, deamon = true} end,
      "bad argument #1 to 'Process' %(unknown option 'deamon': did you mean 'daemon'%?%)")
    assert.error_matches(function() lmp.shared_memory.SharedMemory{name = "x", sise = 1} end,
      "bad argument #1 to 'SharedMemory' %(unknown option 'sise': did you mean 'size'%?%)")
    assert.error_matches(function() lmp.Value("i", 0, {locks = false}) end,
      "bad argument #3 to 'Value' %(unknown option 'locks': did you mean 'lock'%?%)")
    assert.error_matches(function() lmp.loads(lmp.dumps(1), {function_ = false}) end,
      "bad argument #2 to 'loads' %(unknown option 'function_': did you mean 'functions'%?%)")
    assert.error_matches(function() lmp.wait({}, {return_whn = "FIRST_COMPLETED"}) end,
      "bad argument #2 to 'wait' %(unknown option 'return_whn': did you mean 'return_when'%?%)")
    -- nothing was queued by the refused calls
    assert.same({1, n = 1}, pool:map(square, {1}))
  end)

  it("the executor refuses unknown options of map and shutdown, and map takes a triplet", function()
    local ex <close> = lmp.ProcessPoolExecutor(1)
    assert.error_matches(function() ex:map(square, {1}, {chunksise = 1}) end,
      "bad argument #3 to 'map' %(unknown option 'chunksise': did you mean 'chunksize'%?%)")
    assert.error_matches(function() ex:map(square, {1}, {2}, {timeuot = 1}) end,
      "bad argument #4 to 'map' %(unknown option 'timeuot': did you mean 'timeout'%?%)")
    assert.error_matches(function() ex:shutdown{cancel_future = true} end,
      "bad argument #1 to 'shutdown' %(unknown option 'cancel_future': did you mean 'cancel_futures'%?%)")
    local got = {}
    for v in ex:map(function(a, b) return a + b end, {1, 2, 3}, ipairs{10, 20}) do got[#got + 1] = v end
    assert.same({11, 22}, got)
    got = {}
    for v in ex:map(square, pairs{x = 3}) do got[#got + 1] = v end
    assert.same({9}, got)
  end)

  it("ex:map draws a progress bar when asked", function()
    -- script(1) gives the runner a pseudo-terminal, where bars are drawn.
    local status, out = run_script([[
      local lmp = require "lmp"
      local ex <close> = lmp.ProcessPoolExecutor(2)
      local items = {}
      for i = 1, 20 do items[i] = i end
      for _ in ex:map(function(x) return x end, items, {progress = true}) do end
      io.stdout:write("finished\n")
    ]], "script -qec '%s %s' /dev/null")
    assert.equal(0, status)
    -- the total is unknown (inputs are read lazily): a count and a rate
    assert.matches("\rmap: 20 %[%d%d:%d%d, [%d.]+it/s%]", out)
    assert.matches("finished", out)
  end)
end)

describe("timeouts", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  local NAN = 0 / 0

  it("NaN and negative timeouts raise bad argument wherever a timeout is taken", function()
    assert.has_error(function() lmp.sleep(NAN) end,
      "bad argument #1 to 'sleep' (duration must be a non-negative number of seconds, got NaN)")
    assert.error_matches(function() lmp.sleep(-1) end, "bad argument #1 to 'sleep'")
    local pool <close> = lmp.Pool(1)
    local r = pool:apply_async(square, {3})
    assert.has_error(function() r:get(NAN) end,
      "bad argument #1 to 'get' (timeout must be a non-negative number of seconds, got NaN)")
    assert.error_matches(function() r:wait(NAN) end, "bad argument #1 to 'wait'")
    assert.error_matches(function() r:get(-0.5) end, "bad argument #1 to 'get'")
    assert.equal(9, r:get(30))
    assert.has_error(function() pool:map(square, {1}, {timeout = NAN}) end,
      "bad argument #3 to 'map' (timeout must be a positive number of seconds, got NaN)")
    assert.error_matches(function() pool:imap(square, {1}, {timeout = NAN}) end, "bad argument #3 to 'imap'")
    assert.error_matches(function() pool:apply_async(square, {1}, {timeout = NAN}) end,
      "bad argument #3 to 'apply_async'")
    assert.error_matches(function() lmp.Pool{processes = 1, task_timeout = NAN} end,
      "bad argument #1 to 'Pool' %(task_timeout must be")
    local event = lmp.Event()
    assert.error_matches(function() event:wait(NAN) end, "bad argument #1 to 'wait'")
    local q = lmp.Queue()
    assert.error_matches(function() q:get(true, NAN) end, "bad argument #2 to 'get'")
    assert.error_matches(function() q:put(1, true, NAN) end, "bad argument #2 to 'put'")
    local lock = lmp.Lock()
    assert.error_matches(function() lock:acquire(true, NAN) end, "bad argument #2 to 'acquire'")
    local a = lmp.Pipe()
    assert.error_matches(function() a:poll(NAN) end, "bad argument #1 to 'poll'")
    local ex <close> = lmp.ProcessPoolExecutor(1)
    local future = ex:submit(square, 4)
    assert.error_matches(function() future:result(NAN) end, "bad argument #1 to 'result'")
    assert.error_matches(function() lmp.as_completed({future}, NAN) end, "bad argument #2 to 'as_completed'")
    assert.error_matches(function() lmp.wait({future}, {timeout = NAN}) end, "bad argument #2 to 'wait'")
    assert.equal(16, future:result(30))
    pool:close()
    assert.error_matches(function() pool:join(NAN) end, "bad argument #1 to 'join'")
    -- 0 still means "do not wait", and math.huge "wait as long as it takes"
    lmp.sleep(0)
    assert.is_true(pool:join(math.huge))
  end)
end)

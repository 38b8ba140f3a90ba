-- The path of a map: its function travels once per call, encoded once
-- whatever the number of workers it goes to (docs/protocol.md, the
-- "function" frame), and once per worker that lacks it (each encoding is
-- counted where it happens, in the main process: a value in the
-- function's upvalues whose __lmp_serialize counts its calls); its last
-- tasks are cut finer once the time of its items is known.
-- busted runs a spec under an environment of its own; functions sent to
-- workers should see the real globals, as they do in a script.
local describe, it, setup, teardown, assert, pcall =
  describe, it, setup, teardown, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"

local function register_counted()
  require("lmp").register("map_spec.counted", function(data) return data end)
end

local encodings = 0
local counted = setmetatable({factor = 3}, {__lmp_serialize = function(t)
  encodings = encodings + 1
  return "map_spec.counted", {factor = rawget(t, "factor")}
end})

describe("a map's function", function()
  local pool
  setup(function() pool = lmp.Pool{processes = 3, initializer = register_counted} end)
  teardown(function()
    pool:close()
    pool:join()
    assert.is_true(helpers.no_children())
  end)

  it("is encoded once per call, not once per worker", function()
    local items = {1, 2, 3, 4, 5, 6, 7, 8, 9}
    for call = 1, 3 do
      encodings = 0
      -- A new closure each call, as spectral-norm makes them; chunks of
      -- one item give every worker a task of it.
      local r = pool:map(function(x) return x * counted.factor + call end, items, 1)
      assert.equal(1, encodings, "call " .. call)
      for i = 1, #items do assert.equal(i * 3 + call, r[i]) end
    end
  end)

  it("the workers keep: a function they have is not encoded again", function()
    local function f(x) return x * counted.factor end
    encodings = 0
    assert.same({3, 6, 9, n = 3}, pool:map(f, {1, 2, 3}, 1))
    assert.equal(1, encodings)
    -- Every worker may not have had a task of the first call: at most one
    -- more encoding, for those that lack it.
    assert.same({3, 6, 9, 12, 15, 18, n = 6}, pool:map(f, {1, 2, 3, 4, 5, 6}, 1))
    local after_second = encodings
    assert.is_true(after_second <= 2, "encodings: " .. after_second)
    assert.same({3, 6, 9, 12, 15, 18, n = 6}, pool:map(f, {1, 2, 3, 4, 5, 6}, 1))
    assert.equal(after_second, encodings)
  end)

  it("reaches workers that replace others with one encoding per call", function()
    local p = lmp.Pool{processes = 2, maxtasksperchild = 1, initializer = register_counted}
    local function f(x) return x * counted.factor end
    encodings = 0
    assert.same({3, 6, 9, 12, n = 4}, p:map(f, {1, 2, 3, 4}, 1))
    assert.equal(1, encodings)
    -- Known to the pool, in no worker now: encoded once, at the first need.
    encodings = 0
    assert.same({3, 6, 9, 12, n = 4}, p:map(f, {1, 2, 3, 4}, 1))
    assert.equal(1, encodings)
    p:close()
    p:join()
  end)

  it("that cannot be sent fails the call naming where, and nothing runs", function()
    local marker = os.tmpname()
    local file = io.tmpfile()
    local function mark(x)
      local f = io.open(marker, "a")
      f:write(x, " ")
      f:close()
      return file and x
    end
    local ok, err = pcall(pool.map, pool, mark, {1, 2, 3, 4, 5, 6}, 1)
    file:close()
    assert.is_false(ok)
    assert.equal("serialize", err.kind)
    assert.matches("cannot send userdata %(FILE%*%) at function%(upvalue 'file'%)", err.message)
    lmp.sleep(0.1)
    local f = io.open(marker)
    local ran = f:read("a")
    f:close()
    os.remove(marker)
    assert.equal("", ran)
    -- The pool goes on.
    assert.same({3, 6, n = 2}, pool:map(function(x) return x * counted.factor end, {1, 2}))
  end)

  it("whose worker lacks a name it holds fails every item of that worker, and the pool goes on",
     function()
    -- A pool without the constructor: each worker receives the function
    -- with a name it does not know.
    local p = lmp.Pool(2)
    local ok, err = pcall(p.map, p, function(x) return x * counted.factor end, {1, 2, 3, 4}, 1)
    assert.is_false(ok)
    assert.equal("serialize", err.kind)
    assert.matches("map_spec.counted", err.message)
    assert.same({1, 4, n = 2}, p:map(function(x) return x * x end, {1, 2}))
    p:close()
    p:join()
  end)
end)

-- The number of tasks a pool's workers were sent so far.
local function tasks_sent(pool)
  local n = 0
  for _, w in ipairs(pool.workers) do n = n + w.sent end
  return n
end

-- A worker busy for `seconds` of its own time, then `x`.
local function spin(x, seconds)
  local t0 = os.clock()
  repeat until os.clock() - t0 >= seconds
  return x
end

describe("the tail of a map", function()
  local chunking = require "lmp.chunking"
  local pool
  setup(function() pool = lmp.Pool(2) end)
  teardown(function()
    pool:close()
    pool:join()
    assert.is_true(helpers.no_children())
  end)

  local function items_of(n, make)
    local items = {}
    for i = 1, n do items[i] = make and make(i) or i end
    return items
  end

  it("is cut finer than the plan once its items are known to be slow", function()
    -- 200 items of 1 ms: the plan's last chunks hold 4 items each (4 ms);
    -- measured, they are cut down to one item at the end.
    local items = items_of(200)
    local before = tasks_sent(pool)
    local r = pool:map(function(x) return spin(x, 0.001) end, items)
    local tasks = tasks_sent(pool) - before
    local planned = #chunking.chunk_plan(200, 2)
    for i = 1, 200 do assert.equal(i, r[i]) end
    assert.equal(200, r.n)
    assert.is_true(tasks > planned, ("%d tasks, %d planned"):format(tasks, planned))
  end)

  it("of numbers is cut out of its encoding; other plain items are encoded again", function()
    local core = require "lmp.core"
    local encode_list, encodings = core.encode_list, 0
    core.encode_list = function(...)
      encodings = encodings + 1
      return encode_list(...)
    end
    local ok, err = pcall(function()
      local planned = #chunking.chunk_plan(200, 2)
      for _, case in ipairs{{"numbers", items_of(200)}, {"strings", items_of(200, tostring)}} do
        local name, items = case[1], case[2]
        encodings = 0
        local before = tasks_sent(pool)
        local r = pool:map(function(x) return spin(x, 0.001) end, items)
        local tasks = tasks_sent(pool) - before
        for i = 1, 200 do assert.equal(items[i], r[i]) end
        assert.is_true(tasks > planned, ("%s: %d tasks, %d planned"):format(name, tasks, planned))
        if name == "numbers" then
          assert.equal(planned, encodings, name)
        else
          assert.is_true(encodings > planned, ("%s: %d encodings"):format(name, encodings))
        end
      end
    end)
    core.encode_list = encode_list
    assert(ok, err)
  end)

  it("is cut from the items as they were when the call was made", function()
    local items = items_of(200)
    local async = pool:map_async(function(x) return spin(x, 0.001) end, items)
    for i = 1, 200 do items[i] = -i end
    local r = async:get()
    for i = 1, 200 do assert.equal(i, r[i]) end
  end)

  it("keeps the plan for quick items, a given chunksize, and items that are not plain",
     function()
    local planned = #chunking.chunk_plan(2000, 2)
    local before = tasks_sent(pool)
    local r = pool:map(function(x) return x end, items_of(2000))
    assert.equal(2000, r[2000])
    -- Items of a microsecond or so: the time limit is more than the
    -- floor, so the plan stands (a worker preempted for many milliseconds
    -- on a loaded machine can make them look slower: some slack; not
    -- under valgrind, where they take far longer).
    local tasks = tasks_sent(pool) - before
    if not helpers.instrumented then
      assert.is_true(tasks <= planned + 10, ("%d tasks, %d planned"):format(tasks, planned))
    end
    before = tasks_sent(pool)
    r = pool:map(function(x) return spin(x, 0.001) end, items_of(40), 8)
    assert.equal(40, r[40])
    assert.equal(5, tasks_sent(pool) - before)
    before = tasks_sent(pool)
    r = pool:map(function(t) return spin(t[1], 0.001) end, items_of(200, function(i) return {i} end))
    assert.equal(200, r[200])
    assert.equal(#chunking.chunk_plan(200, 2), tasks_sent(pool) - before)
  end)
end)

describe("a map's answers", function()
  it("a worker with nothing left gets its next task before its answer is loaded", function()
    -- The result's loading, in this process, takes 0.2 s (a registered
    -- constructor); the worker's second task starts during it.
    local loaded_at = {}
    lmp.register("map_spec.slow_to_load", function(data)
      helpers.busy(0.2)
      loaded_at[#loaded_at + 1] = require("lmp.core").hrtime()
      return data
    end)
    local own <close> = lmp.Pool(1)
    local r = own:map(function(x)
      local started = require("lmp.core").hrtime()
      return setmetatable({x = x, started = started}, {__lmp_serialize = function(t)
        return "map_spec.slow_to_load", {x = t.x, started = t.started}
      end})
    end, {1, 2}, 1)
    assert.equal(1, r[1].x)
    assert.equal(2, r[2].x)
    assert.is_true(r[2].started < loaded_at[1],
      ("second task started %.3f s after the first answer was loaded"):format(
        r[2].started - loaded_at[1]))
  end)
end)

-- Number arrays are read from Lua's array part in place where the mirror
-- of its table layout passed its check (runtime/table_peek.c):
-- core.table_peek counts the tables so read, in each process.
describe("number arrays on the way to workers and back", function()
  for _, method in ipairs {"fork", "spawn"} do
    it(("are read in place: a map's upvalue, an apply's argument, a %s worker's result")
         :format(method), function()
      local core = require "lmp.core"
      local own <close> = lmp.Pool{processes = 1, start_method = method}
      local big = {}
      for i = 1, 100000 do big[i] = i + 0.5 end
      local _, before = core.table_peek()
      local r = own:map(function(i) return big[i] end, {1, 50000, 100000})
      assert.same({1.5, 50000.5, 100000.5}, {r[1], r[2], r[3]})
      local _, after_map = core.table_peek()
      assert.equal(before + 1, after_map)
      assert.equal(100000.5, own:apply(function(t) return t[#t] end, {big}))
      assert.equal(after_map + 1, select(2, core.table_peek()))
      -- The worker checked the mirror itself (spawn) or inherited the
      -- check (fork), and reads its own result in place.
      local function worker_peek() return require("lmp.core").table_peek() end
      local on, worker_before = own:apply(worker_peek)
      assert.is_true(on)
      local back = own:apply(function(n)
        local t = {}
        for i = 1, n do t[i] = i * 3 end
        return t
      end, {100000})
      assert.equal(300000, back[100000])
      assert.equal(100000, #back)
      assert.equal(worker_before + 1, select(2, own:apply(worker_peek)))
    end)
  end
end)

-- A chunk of numbers goes to its worker, and its answer comes back, as a
-- number array (docs/protocol.md): each value keeps its subtype and bits,
-- whatever the width of the block, and an apply's arguments and results
-- that make such a list are still counted by their n.
describe("numbers through a pool", function()
  local pool
  setup(function() pool = lmp.Pool(2) end)
  teardown(function()
    pool:close()
    pool:join()
  end)

  local function same_numbers(want, got, what)
    assert.equal(#want, got.n, what)
    for i = 1, #want do
      local where = ("%s item %d"):format(what, i)
      assert.equal(math.type(want[i]), math.type(got[i]), where)
      if want[i] ~= want[i] then
        assert.is_true(got[i] ~= got[i], where)
      else
        assert.equal(want[i], got[i], where)
        assert.equal(1 / want[i], 1 / got[i], where) -- -0.0 stays -0.0
      end
    end
  end

  it("a map keeps every integer width, every float's bits, and lists of both", function()
    local cases = {
      bytes = {}, shorts = {}, words = {}, wide = {}, floats = {}, both = {},
    }
    for i = 1, 3000 do
      cases.bytes[i] = i % 256 - 128
      cases.shorts[i] = i * 11 - 16000
      cases.words[i] = i * 700001 - (1 << 31)
      cases.wide[i] = i % 2 == 0 and math.maxinteger - i or math.mininteger + i
      cases.floats[i] = ({0.5, -0.0, 1 / 0, -1 / 0, 0 / 0, 3.0, 1e300, -2.5e-310})[i % 8 + 1]
      cases.both[i] = i % 3 == 0 and i + 0.0 or i
    end
    local function identity(x) return x end
    -- The main process reads a chunk's items from the array part in place
    -- (runtime/table_peek.c), or through the C API when that is off: the
    -- same numbers either way.
    local core = require "lmp.core"
    local was_on = core.table_peek()
    for _, in_place in ipairs{true, false} do
      core.table_peek(in_place and was_on)
      local _, before = core.table_peek()
      for name, items in pairs(cases) do
        same_numbers(items, pool:map(identity, items), name)
        same_numbers(items, pool:map(identity, items, 7), name .. " in chunks of 7")
      end
      local _, after = core.table_peek()
      if in_place and was_on then
        -- each chunk of numbers read in place, and its answer written so
        assert.is_true(after - before >= 2 * 5 * (3000 // 7), "chunks read and written in place")
      else
        assert.equal(before, after)
      end
    end
    core.table_peek(was_on)
    -- Items the array part does not hold alone: a hash part, a string
    -- among the numbers, a float among integers, keys past the array part.
    local hashed = {n = 3000}
    for i = 1, 3000 do hashed[i] = i end
    same_numbers(cases.words, pool:map(identity, cases.words, 1000), "words again")
    local odd = {}
    for i = 1, 3000 do odd[i] = i end
    odd[1500] = "x"
    odd[2000] = 2000.0
    local r = pool:map(identity, odd, 1000)
    for i = 1, 3000 do assert.equal(odd[i], r[i]); assert.equal(math.type(odd[i]), math.type(r[i])) end
    r = pool:map(identity, hashed, 600)
    for i = 1, 3000 do assert.equal(i, r[i]) end
    local sparse = {}
    for i = 1, 64 do sparse[i] = i end
    for i = 65, 200 do sparse[i] = i * 2 end -- some past the array part, in the hash
    r = pool:map(identity, sparse, 50)
    for i = 1, 200 do assert.equal(sparse[i], r[i]) end
    -- Answers of the other subtype than the items.
    local halves = pool:map(function(x) return x / 2 end, cases.bytes)
    for i = 1, #cases.bytes do assert.equal(cases.bytes[i] / 2, halves[i]) end
  end)

  it("an imap reads its chunks of numbers from their bytes: widths, bits, order, n", function()
    local core = require "lmp.core"
    local function identity(x) return x end
    local function halve(x) return x / 2 end
    local mixed = {}
    for i = 1, 3000 do
      mixed[i] = ({i % 256 - 128, i * 11 - 16000, i * 700001 - (1 << 31),
        math.maxinteger - i, ({0.5, -0.0, 1 / 0, 0 / 0, 1e300, -2.5e-310})[i % 6 + 1]})[i % 5 + 1]
    end
    local cases = {bytes = {}, words = {}, wide = {}, floats = {}}
    for i = 1, 3000 do
      cases.bytes[i] = i % 256 - 128
      cases.words[i] = i * 700001 - (1 << 31)
      cases.wide[i] = i % 2 == 0 and math.maxinteger - i or math.mininteger + i
      cases.floats[i] = ({0.5, -0.0, 1 / 0, -1 / 0, 0 / 0, 3.0, 1e300, -2.5e-310})[i % 8 + 1]
    end
    cases.mixed = mixed -- both subtypes: tables, not number arrays
    local before = core.cursor_counts()
    for _, name in ipairs{"bytes", "words", "wide", "floats", "mixed"} do
      for _, chunksize in ipairs{false, 1, 7, 500} do
        -- (Chunks of one item are not lists of numbers: a few will do.)
        local want = chunksize == 1 and {table.unpack(cases[name], 1, 40)} or cases[name]
        local what = ("%s, chunksize %s"):format(name, chunksize)
        local opts = chunksize and {chunksize = chunksize} or nil
        local got, n = {n = #want}, 0
        for v, i in pool:imap(identity, want, opts) do
          n = n + 1
          assert.equal(n, i, what)
          got[i] = v
        end
        same_numbers(want, got, what .. " imap")
        got = {n = #want}
        for v, i in pool:imap_unordered(identity, want, opts) do
          assert.is_nil(got[i], what)
          got[i] = v
        end
        same_numbers(want, got, what .. " imap_unordered")
      end
    end
    assert.is_true(core.cursor_counts() - before >= 20, "chunks read from their bytes")
    -- Answers of the other subtype; a progress bar; a chunk with an error.
    local got = {n = 3000}
    for v, i in pool:imap(halve, cases.bytes) do got[i] = v end
    local want = {}
    for i = 1, 3000 do want[i] = cases.bytes[i] / 2 end
    same_numbers(want, got, "halves")
    local ex <close> = lmp.ProcessPoolExecutor(2)
    got = {n = 3000}
    local i = 0
    for v in ex:map(identity, cases.words, {chunksize = 50}) do i = i + 1; got[i] = v end
    same_numbers(cases.words, got, "ex:map")
    local counting = {}
    for k = 1, 3000 do counting[k] = k end
    got = {}
    local ok, err = pcall(function()
      local function fail_2900(x)
        if x == 2900 then error("no") end
        return x
      end
      for v, k in pool:imap(fail_2900, counting, {chunksize = 100}) do got[k] = v end
    end)
    assert.is_false(ok)
    assert.equal("task", err.kind)
    assert.equal(2900, err.index)
    for k = 1, 2899 do assert.equal(k, got[k]) end
  end)

  it("an imap's cursor takes only the bytes of a whole list of numbers of its count", function()
    local core = require "lmp.core"
    local step, cursor = core.imap_cursor(function() return nil end, lmp.null)
    local bytes = lmp.dumps({10, 20, 30, -40, 50})
    core.cursor_load(step, bytes, 5, 100, true)
    assert.same({10, 101}, {step()})
    for _ = 2, 4 do step() end
    assert.same({50, 105}, {step()})
    assert.equal(5, core.cursor_position(cursor))
    assert.same({}, {step()}) -- used up: the slow function's answer
    local floats = lmp.dumps({0.5, -0.0, 2.5, 1e300})
    core.cursor_load(step, floats, 4, 0, true)
    assert.equal(0.5, step())
    assert.equal(-math.huge, 1 / step())
    assert.error_matches(function() core.cursor_load(step, bytes, 4, 0, true) end, "count")
    assert.error_matches(function() core.cursor_load(step, bytes, 5, 0, false) end, "fast")
    assert.error_matches(function() core.cursor_load(step, bytes:sub(1, -2), 5, 0, true) end,
      "not a list of numbers")
    assert.error_matches(function() core.cursor_load(step, bytes .. "x", 5, 0, true) end,
      "not a list of numbers")
    assert.error_matches(function() core.cursor_load(step, lmp.dumps({1, "a", 3, 4}), 4, 0, true) end,
      "not a list of numbers")
    local wide = bytes:sub(1, 6) .. "\3" .. bytes:sub(8) -- a width of 3 bytes
    assert.error_matches(function() core.cursor_load(step, wide, 5, 0, true) end,
      "not a list of numbers")
  end)

  it("a chunk of numbers is run from C (core.map_numbers), not by the Lua task loop", function()
    local callers = pool:map(function()
      return debug.getinfo(2, "S").what == "C" and 1 or 0
    end, {1, 2, 3, 4, 5, 6, 7, 8}, 4)
    assert.same({1, 1, 1, 1, 1, 1, 1, 1, n = 8}, callers)
  end)

  it("a chunk of numbers whose results change kind keeps each, nils and n included", function()
    local items = {}
    for i = 1, 3000 do items[i] = i end
    local r = pool:map(function(x)
      if x % 1000 == 7 then return nil end
      if x > 2500 then return tostring(x) end
      if x > 2000 then return x + 0.5 end
      return x * 2
    end, items, 3000)
    assert.equal(3000, r.n)
    for i = 1, 3000 do
      local want
      if i % 1000 == 7 then want = nil
      elseif i > 2500 then want = tostring(i)
      elseif i > 2000 then want = i + 0.5
      else want = i * 2 end
      assert.equal(want, r[i], "item " .. i)
      assert.equal(math.type(want), math.type(r[i]), "item " .. i)
    end
    -- Nothing but nil; floats from the first.
    local none = pool:map(function() end, items, 3000)
    assert.equal(3000, none.n)
    for key in pairs(none) do assert.equal("n", key) end
    local quarters = {}
    for i = 1, 3000 do quarters[i] = i / 4 end
    same_numbers(quarters, pool:map(function(x) return x / 4 end, items, 1000), "quarters")
  end)

  it("an item of a chunk of numbers that raises fails alone: the items after it run", function()
    local items = {}
    for i = 1, 40 do items[i] = i end
    local got, failures = {}, {}
    local it = pool:imap(function(x)
      if x == 5 or x == 12 then error("boom " .. x) end
      if x > 30 then return "text " .. x end
      return x * 2
    end, items, 40)
    for k = 1, 40 do
      local ok, v = pcall(it)
      if ok then got[k] = v else failures[#failures + 1] = v end
    end
    assert.equal(2, #failures)
    assert.equal(5, failures[1].index)
    assert.matches("boom 5", tostring(failures[1].message), 1, true)
    assert.equal(12, failures[2].index)
    assert.matches("boom 12", tostring(failures[2].message), 1, true)
    for k = 1, 40 do
      if k ~= 5 and k ~= 12 then
        assert.equal(k > 30 and "text " .. k or k * 2, got[k], "item " .. k)
      end
    end
  end)

  it("an apply's numbers, as arguments and as results, are counted by their n", function()
    local function all(...) return select("#", ...), ... end
    for _, count in ipairs{4, 8, 9, 20} do
      local args = {}
      for i = 1, count do args[i] = i * 1000 end
      local got = table.pack(pool:apply(all, args))
      assert.equal(count + 1, got.n)
      assert.equal(count, got[1])
      for i = 1, count do assert.equal(args[i], got[i + 1]) end
      got = table.pack(pool:apply_async(function(...) return ... end, args):get(30))
      assert.equal(count, got.n)
      for i = 1, count do assert.equal(args[i], got[i]) end
    end
  end)
end)

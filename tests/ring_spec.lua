-- The shared-memory ring beside a worker's socket (Pool option `ring`):
-- frames go through it both ways, what does not fit or carries
-- descriptors goes on the socket in order with them, and a death on
-- either side is seen as it is without a ring.
local describe, it, after_each, assert, pcall =
  describe, it, after_each, assert, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"

local function counts(pool)
  local out, back = 0, 0
  for _, w in ipairs(pool.workers) do
    local sent, received = w.handle:ring_counts()
    if sent == nil then return nil end
    out, back = out + sent, back + received
  end
  return out, back
end

describe("a pool with a ring", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  for _, method in ipairs{"spawn", "fork", "forkserver"} do
    it(method .. " workers: tasks and answers go through the ring", function()
      local pool <close> = lmp.Pool{processes = 2, start_method = method, ring = true}
      for i = 1, 50 do assert.equal(i, pool:apply(function(x) return x end, {i})) end
      local out, back = counts(pool)
      assert.is_true(out >= 50, "frames to the workers through the ring: " .. tostring(out))
      assert.is_true(back >= 50, "frames from the workers through the ring: " .. tostring(back))
      if method == "forkserver" then core.forkserver_stop() end
    end)
  end

  it("is on by default, off with ring = false or LMP_RING=0, and the option is checked", function()
    local default <close> = lmp.Pool{processes = 1}
    assert.equal(1, default:apply(function() return 1 end))
    assert.is_true(counts(default) >= 1)
    local off <close> = lmp.Pool{processes = 1, ring = false}
    assert.equal(1, off:apply(function() return 1 end))
    assert.is_nil(counts(off))
    local out = helpers.run_lua_ok([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool{processes = 1}
      assert(pool:apply(function() return 2 end) == 2)
      print(pool.workers[1].handle:ring_counts() == nil and "no ring" or "ring")
    ]], "LMP_RING=0 " .. helpers.runner)
    assert.equal("no ring\n", out)
    local ok, err = pcall(lmp.Pool, {processes = 1, ring = "yes"})
    assert.is_false(ok)
    assert.matches("ring must be a boolean", tostring(err))
  end)

  it("frames too big for the ring go on the socket, in order with the small ones", function()
    local pool <close> = lmp.Pool{processes = 1, ring = true}
    local items = {}
    for i = 1, 40 do
      -- Every third item is far bigger than the ring (256 kB each way).
      items[i] = i % 3 == 0 and string.rep(string.char(64 + i % 26), 300000 + i) or ("s" .. i)
    end
    local got = pool:map(function(s) return s .. "!" end, items, 1)
    for i = 1, 40 do assert.equal(items[i] .. "!", got[i]) end
    local many = {}
    for i = 1, 2000 do many[i] = i end
    local doubled = pool:map(function(x) return 2 * x end, many, 1)
    for i = 1, 2000 do assert.equal(2 * i, doubled[i]) end
    local out, back = counts(pool)
    assert.is_true(out > 2000 and back > 2000)
  end)

  it("descriptors still pass, on the socket, in order with ring frames", function()
    local pool <close> = lmp.Pool{processes = 1, ring = true}
    for round = 1, 5 do
      local mine, theirs = lmp.Pipe()
      local r = pool:map_async(function(x)
        if type(x) == "table" then x[1]:send("round " .. x[2]); return "sent" end
        return x
      end, {1, 2, {theirs, round}, 4, 5}, 1)
      assert.same({1, 2, "sent", 4, 5, n = 5}, r:get(30))
      assert.equal("round " .. round, mine:recv())
      mine:close(); theirs:close()
    end
    local q = lmp.Queue()
    assert.equal(7, pool:apply(function(queue) queue:put("from the worker"); return 7 end, {q}))
    assert.equal("from the worker", q:get(30))
    q:close()
  end)

  it("a worker killed -9 at random moments: each task gets its result or worker_lost, once; "
     .. "the pool keeps its size", function()
    local pool <close> = lmp.Pool{processes = 2, ring = true}
    math.randomseed(os.time())
    for _ = 1, 4 do
      local handles = {}
      for i = 1, 200 do
        handles[i] = pool:apply_async(function(x)
          local t = os.clock()
          while os.clock() - t < 0.0005 do end
          return x
        end, {i})
      end
      lmp.sleep(math.random() * 0.05)
      -- From another process, while this one's loop does not turn.
      local victim = pool.workers[math.random(#pool.workers)].pid
      assert(os.execute(("kill -9 %d"):format(victim)))
      local lost = 0
      for i = 1, 200 do
        local ok, v = pcall(handles[i].get, handles[i], 60)
        if ok then assert.equal(i, v) else
          assert.equal("worker_lost", v.kind)
          lost = lost + 1
        end
      end
      assert.is_true(lost <= 200)
      assert.equal(5, pool:apply(function() return 5 end, {}))
      assert.is_true(helpers.wait_for(function() return #pool.workers == 2 end, 30))
    end
  end)

  it("on one CPU a worker yields to its main process before it sleeps: round trips of apply "
     .. "take no futex sleep", function()
    if not os.execute("command -v taskset >/dev/null 2>&1") then return end
    -- A sleep in the kernel is a voluntary context switch; a yield that
    -- lets the main process run is not. Before the yield, about 3 in 4
    -- round trips slept; after it, next to none.
    local out = helpers.run_lua_ok([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool{processes = 1, ring = true}
      local function f(x) return x end
      for i = 1, 100 do pool:apply(f, {i}) end
      local pid = pool.workers[1].pid
      local function sleeps()
        local file = assert(io.open("/proc/" .. pid .. "/status"))
        local text = file:read("a")
        file:close()
        return tonumber(text:match("\nvoluntary_ctxt_switches:%s*(%d+)"))
      end
      local before = sleeps()
      for i = 1, 1000 do assert(pool:apply(f, {i}) == i) end
      print(sleeps() - before)
    ]], "taskset -c 0 " .. helpers.runner)
    local sleeps = tonumber(out)
    assert.is_true(sleeps < 400, "the worker slept in " .. out .. " of 1000 round trips")
  end)

  it("a worker killed while idle (asleep on its ring) is not sent the next task", function()
    local pool <close> = lmp.Pool{processes = 1, ring = true}
    local pid = pool:apply(function() return require("lmp.core").getpid() end)
    lmp.sleep(0.05) -- the worker stops watching its ring and sleeps
    assert(os.execute(("kill -9 %d"):format(pid)))
    assert.is_true(helpers.wait_for(function() return not helpers.alive(pid) end, 10))
    helpers.busy(0.02) -- the loop does not turn: the death is not known yet
    assert.equal(3, pool:apply(function() return 3 end))
  end)

  it("a worker that scribbles on its ring while the main process reads it is lost as worker_lost; "
     .. "every task is answered once and the pool keeps working", function()
    -- The main process reads each frame once, from a copy, and checks
    -- every length: under ASan this test would see a read out of bounds.
    helpers.build_crash_module()
    local pool <close> = lmp.Pool{processes = 1, ring = true}
    for round = 1, 3 do
      local victim = pool.workers[1].pid
      pcall(pool.apply, pool, function() require("crash").ring_scribble(0.05) end)
      local handles = {}
      -- Tasks of 0.2 ms: answers flow while the scribbler writes.
      for i = 1, 300 do
        handles[i] = pool:apply_async(function(x)
          local t = os.clock()
          while os.clock() - t < 0.0002 do end
          return x
        end, {i})
      end
      for i = 1, 300 do
        -- A value the scribbler changed may arrive; no error but worker_lost.
        local ok, v = pcall(handles[i].get, handles[i], 60)
        if not ok then assert.equal("worker_lost", v.kind, tostring(v)) end
      end
      lmp.sleep(0.1) -- the scribbler is done: its tail is garbage
      pcall(pool.apply, pool, function() return 0 end)
      assert.is_true(helpers.wait_for(function() return not helpers.alive(victim) end, 30),
        "round " .. round .. ": the scribbling worker still runs")
      for i = 1, 20 do assert.equal(i, pool:apply(function(x) return x end, {i})) end
      assert.equal(1, #pool.workers)
    end
  end)

  it("a main process killed -9: its ring workers end on their own", function()
    local status, out = helpers.run_lua([[
      local lmp = require "lmp"
      local pool = lmp.Pool{processes = 2, ring = true}
      pool:apply(function() return 1 end)
      for _, w in ipairs(pool.workers) do io.write(w.pid, " ") end
      io.write("\n")
      io.stdout:flush()
      os.execute("kill -9 " .. require("lmp.core").getpid())
    ]], helpers.runner)
    assert.equal(137, status)
    local pids = {}
    for pid in out:gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
    assert.equal(2, #pids)
    for _, pid in ipairs(pids) do
      assert.is_true(helpers.wait_for(function() return not helpers.alive(pid) end, 20),
        "worker " .. pid .. " still runs")
    end
  end)
end)

-- Lock, RLock, Semaphore and Event, shared with lmp.Process children.
local describe, it, assert, after_each, pcall = describe, it, assert, after_each, pcall
local _ENV = _G
local lmp = require "lmp"
local helpers = require "helpers"

describe("synchronization", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("a Lock gives one process at a time the critical section", function()
    local lock, path = lmp.Lock(), os.tmpname()
    local procs = {}
    for i = 1, 3 do
      procs[i] = lmp.Process{target = function(l, file, id)
        for _ = 1, 5 do
          l:acquire()
          local f = io.open(file, "a"); f:write("start ", id, "\n"); f:close()
          local t = os.clock() while os.clock() - t < 0.002 do end
          f = io.open(file, "a"); f:write("end ", id, "\n"); f:close()
          l:release()
        end
      end, args = {lock, path, i}}
      procs[i]:start()
    end
    for _, p in ipairs(procs) do p:join(); assert.equal(0, p.exitcode) end
    local inside, lines = nil, 0
    for line in io.lines(path) do
      local what, id = line:match("^(%a+) (%d)$")
      if what == "start" then
        assert.is_nil(inside, "two processes inside at once")
        inside = id
      else
        assert.equal(inside, id)
        inside = nil
      end
      lines = lines + 1
    end
    assert.equal(30, lines)
    os.remove(path)
  end)

  it("acquire with block = false or a timeout gives up; misuse raises", function()
    local lock = lmp.Lock()
    local holder = lmp.Process{target = function(l, q)
      l:acquire(); q:put("held")
      local t = os.clock() while os.clock() - t < 0.5 do end
      l:release()
    end, args = {lock, lmp.Queue()}}
    local q = holder.args[2]
    holder:start()
    assert.equal("held", q:get())
    assert.is_true(lock:locked())
    assert.is_false(lock:acquire(false))
    assert.is_false(lock:acquire(true, 0.05))
    assert.is_true(lock:acquire(true, 10))
    lock:release()
    holder:join()
    assert.has_error(function() lock:release() end)
    lock:acquire()
    assert.has_error(function() lock:acquire() end)
    lock:release()
  end)

  it("acquire(false) on a Lock this process holds returns false (the try-lock idiom)", function()
    local lock = lmp.Lock()
    assert.is_true(lock:acquire(false))
    assert.is_false(lock:acquire(false))
    assert.is_false(lock:acquire(true, 0.05))
    -- Another coroutine of this process releases it while one waits.
    local got
    lmp.spawn(function() got = lock:acquire(true, 10) end)
    lmp.spawn(function() lmp.sleep(0.05); lock:release() end)
    lmp.run()
    assert.is_true(got)
    assert.is_true(lock:locked())
    lock:release()
    assert.is_false(lock:locked())
    assert.is_true(lock:acquire(false))
    lock:release()
  end)

  it("an RLock is re-entrant in its process", function()
    local r = lmp.RLock()
    assert.is_true(r:acquire())
    assert.is_true(r:acquire())
    r:release()
    assert.is_true(r:locked())
    r:release()
    assert.is_false(r:locked())
  end)

  it("a Semaphore counts", function()
    local s = lmp.Semaphore(2)
    assert.is_true(s:acquire())
    assert.is_true(s:acquire())
    assert.is_false(s:acquire(false))
    assert.equal(0, s:get_value())
    local p = lmp.Process{target = function(sem) sem:release() end, args = {s}}
    p:start(); p:join()
    assert.is_true(s:acquire(true, 5))
    assert.error_matches(function() lmp.Semaphore(-1) end, "bad argument #1 to 'Semaphore'")
  end)

  it("an Event set in one process wakes a waiter in another", function()
    local ev, q = lmp.Event(), lmp.Queue()
    local p = lmp.Process{target = function(e, out) out:put(e:wait(10)) end, args = {ev, q}}
    p:start()
    assert.is_false(ev:wait(0.05))
    ev:set()
    assert.is_true(ev:is_set())
    assert.is_true(q:get())
    p:join()
    ev:clear()
    assert.is_false(ev:is_set())
  end)
end)

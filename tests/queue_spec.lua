-- lmp.Queue's closing, lmp.JoinableQueue and lmp.SimpleQueue
-- (docs/reference.md, "Processes"), with several processes.
local describe, it, assert, after_each, pcall = describe, it, assert, after_each, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"

describe("Queue closing", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("after close, put, get and qsize raise kind closed; a second close does nothing", function()
    local q = lmp.Queue()
    q:put(1)
    q:close()
    for _, call in ipairs{{q.put, 2}, {q.get}, {q.qsize}, {q.get_nowait}} do
      local ok, err = pcall(call[1], q, call[2])
      assert.is_false(ok)
      assert.equal("closed", err.kind)
    end
    q:close()
  end)

  it("a child that closed its copy leaves the parent's queue working", function()
    local q = lmp.Queue()
    local p = lmp.Process{target = function(q) q:put("from child"); q:close(); q:join_thread() end,
                          args = {q}}
    p:start()
    assert.equal("from child", q:get(true, 60))
    p:join()
    assert.equal(0, p.exitcode)
    q:put("still open"); assert.equal("still open", q:get(true, 10))
    q:close()
  end)
end)

describe("JoinableQueue", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("task_done called more times than values were put raises kind value", function()
    local q = lmp.JoinableQueue()
    q:put("a")
    assert.equal("a", q:get())
    q:task_done()
    local ok, err = pcall(q.task_done, q)
    assert.is_false(ok)
    assert.equal("value", err.kind)
    assert.is_true(q:join(0)) -- the count stayed at 0
    q:close()
  end)

  it("join waits until every value put was task_done'd, across three processes", function()
    local q, done = lmp.JoinableQueue(), lmp.Queue()
    local procs = {}
    for i = 1, 2 do
      procs[i] = lmp.Process{target = function(q, done)
        while true do
          local item = q:get()
          if item == "stop" then q:task_done(); return end
          os.execute("sleep 0.01") -- slow work: join must really wait for it
          done:put(item)
          q:task_done()
        end
      end, args = {q, done}}
      procs[i]:start()
    end
    for i = 1, 20 do q:put(i) end
    assert.is_false(q:join(0)) -- not done yet: the timeout form gives up
    assert.is_true(q:join())
    -- Every item was handled before join returned.
    local seen = 0
    while not done:empty() do done:get(); seen = seen + 1 end
    assert.equal(20, seen)
    q:put("stop"); q:put("stop")
    assert.is_true(q:join(60))
    for _, p in ipairs(procs) do p:join(); assert.equal(0, p.exitcode) end
    q:close(); done:close()
  end)

  it("a put that fails is not counted", function()
    local q = lmp.JoinableQueue(1)
    q:put(1)
    local ok, err = pcall(q.put, q, 2, false)
    assert.equal("full", err.kind)
    ok, err = pcall(q.put, q, {io.tmpfile()})
    assert.is_false(ok)
    assert.equal("serialize", err.kind)
    q:get(); q:task_done()
    assert.is_true(q:join(0))
    q:close()
  end)

  it("join in a spawned coroutine yields to the loop", function()
    local q = lmp.JoinableQueue()
    q:put("x")
    local log = {}
    lmp.spawn(function() q:join(); log[#log + 1] = "joined" end)
    log[#log + 1] = "main goes on"
    lmp.spawn(function() lmp.sleep(0.05); q:get(); q:task_done() end)
    lmp.run()
    assert.same({"main goes on", "joined"}, log)
    q:close()
  end)
end)

describe("SimpleQueue", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("put, get and empty between processes; close", function()
    local q, back = lmp.SimpleQueue(), lmp.SimpleQueue()
    assert.is_true(q:empty())
    local p = lmp.Process{target = function(q, back)
      for _ = 1, 3 do back:put(q:get() * 2) end
    end, args = {q, back}}
    p:start()
    for i = 1, 3 do q:put(i) end
    local got = {back:get(), back:get(), back:get()}
    assert.same({2, 4, 6}, got)
    p:join()
    assert.equal(0, p.exitcode)
    assert.is_true(back:empty())
    q:put({t = 1})
    assert.is_false(q:empty())
    assert.same({t = 1}, q:get())
    local ok, err = pcall(q.put, q, {io.tmpfile()})
    assert.equal("serialize", err.kind)
    assert.is_true(q:empty())
    q:close(); back:close()
    ok, err = pcall(q.get, q)
    assert.equal("closed", err.kind)
  end)

  it("several writers' values never mix", function()
    local q = lmp.SimpleQueue()
    local procs = {}
    for w = 1, 3 do
      procs[w] = lmp.Process{target = function(q, w)
        for i = 1, 30 do q:put({w, i, string.rep("v", 100000)}) end
      end, args = {q, w}}
      procs[w]:start()
    end
    local next_of = {1, 1, 1}
    for _ = 1, 90 do
      local v = q:get()
      assert.equal(next_of[v[1]], v[2])
      assert.equal(100000, #v[3])
      next_of[v[1]] = v[2] + 1
    end
    for _, p in ipairs(procs) do p:join(); assert.equal(0, p.exitcode) end
    q:close()
  end)
end)

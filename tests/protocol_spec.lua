-- lmp.protocol: the messages between the main process and a worker
-- (docs/protocol.md), built and read in one module; the C fast path of
-- the task message; a worker given a message it does not know.
local describe, it, assert = describe, it, assert
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local protocol = require "lmp.protocol"
local helpers = require "helpers"

describe("protocol", function()
  it("the worker reads back every field of the messages the main process builds", function()
    local fn = function() end
    local task = protocol.task(7, 3, fn, "star", true, {x = 1})
    assert.equal("task", protocol.tag(task))
    local id, function_id, got_fn, mode, reset, globals = protocol.read_task(task)
    assert.same({7, 3, "star", true, {x = 1}}, {id, function_id, mode, reset, globals})
    assert.equal(fn, got_fn)
    -- A function the worker has, nothing to reset, no globals: false.
    assert.same({"task", 8, 3, false, "map", false, false}, protocol.task(8, 3, nil, "map"))
    local init = protocol.init({path = "p"})
    assert.equal("init", protocol.tag(init))
    assert.same({path = "p"}, protocol.read_init(init))
    local process = protocol.process(fn, {n = 1, 2}, {g = 1})
    assert.equal("process", protocol.tag(process))
    local target, args, process_globals = protocol.read_process(process)
    assert.equal(fn, target)
    assert.same({n = 1, 2}, args)
    assert.same({g = 1}, process_globals)
    assert.is_nil(protocol.tag(5))
    assert.is_nil(protocol.tag({5}))
  end)

  it("the main process reads every message a worker builds, and nothing else", function()
    -- A quick task's answer is its bare id; a longer one's says how long
    -- it ran, so that the main process measures the work, not the wait.
    assert.equal(5, protocol.answer(5, nil, 0))
    assert.same({"answer", 5, nil, 0}, {protocol.read(protocol.answer(5, nil, 0))})
    assert.same({"answer", 5, nil, 0.25}, {protocol.read(protocol.answer(5, nil, 0.25))})
    local errs = {[2] = {message = "boom", kind = "task"}}
    local kind, id, got, ran = protocol.read(protocol.answer(5, errs, 0))
    assert.same({"answer", 5, errs, 0}, {kind, id, got, ran})
    assert.is_true(protocol.valid_errors(errs, 2))
    assert.is_false(protocol.valid_errors(errs, 1)) -- an index past the task's items
    assert.is_false(protocol.valid_errors({{message = 1}}, 1))
    assert.is_false(protocol.valid_errors({{message = "m", kind = 2}}, 1))
    assert.equal("ready", protocol.read(protocol.ready()))
    local info = {message = "init failed", traceback = "tb"}
    assert.same({"init_error", info}, {protocol.read(protocol.init_error(info))})
    for _, message in ipairs{"x", 1.5, true, {}, {"nonsense"}, {"init_error", {message = 7}},
        {"init_error"}, {"task", 1, 1, false, "map", false, false},
        -- an answer without a run time, or with one that is no time
        {"done", 1, false}, {"done", 1, false, -1}, {"done", 1, false, 0 / 0},
        {"done", 1, false, math.huge}, {"done", 1, false, "1"}} do
      assert.equal("unknown", protocol.read(message))
    end
  end)

  it("a forged message with metamethods runs none of them in the main process", function()
    local ran = false
    local trap = function() ran = true; error("ran") end
    local forged = {
      setmetatable({}, {__index = trap, __len = trap, __pairs = trap}),
      setmetatable({"done", 1}, {__index = trap}),
      setmetatable({"init_error"}, {__index = trap}),
      {"init_error", setmetatable({}, {__index = trap})},
      {"done", 1, setmetatable({}, {__index = trap, __pairs = trap})},
    }
    for _, message in ipairs(forged) do
      local kind, _, errs = protocol.read(message)
      if kind == "answer" and errs then protocol.valid_errors(errs, 1) end
      protocol.describe(message)
    end
    assert.is_false(ran)
  end)

  -- A stand-in for a worker that sends back every frame it is given (cat
  -- on its channel): what the main process reads is what it wrote.
  it("the C fast path writes the message protocol.task builds", function()
    local echoed = {}
    local exited = false
    local handle = core.spawn("/bin/sh", {"/bin/sh", "-c", "exec cat <&3 >&3"},
      function(message, payload)
        echoed[#echoed + 1] = {message = message, values = payload and core.payload_value(payload)}
      end,
      function() exited = true end)
    local payload = core.encode_list({10, "twenty", {30}}, 1, 3)
    handle:send_task(41, 6, "star", payload)
    handle:send(protocol.task(41, 6, false, "star", false, false), payload)
    local deadline = core.hrtime() + 30
    while #echoed < 2 and core.hrtime() < deadline do core.run_once(true) end
    handle:close_input()
    while not exited and core.hrtime() < deadline do core.run_once(true) end
    assert.equal(2, #echoed)
    assert.same(echoed[2].message, echoed[1].message)
    assert.same({protocol.read_task(echoed[2].message)}, {protocol.read_task(echoed[1].message)})
    assert.same({10, "twenty", {30}, n = 3}, echoed[1].values)
    assert.same(echoed[2].values, echoed[1].values)
    assert.is_true(exited)
    assert.is_true(helpers.no_children())
  end)

  -- A map's chunk of numbers, and its answer, is one number array (a
  -- typed block, docs/protocol.md): a list that comes back as a list,
  -- with its n, each value of its own subtype and bits.
  it("a list of numbers travels as one number array and arrives as a list", function()
    local ints, floats, mixed = {}, {}, {}
    for i = 1, 1000 do ints[i] = i * 7 - 3500 end
    for i = 1, 6 do floats[i] = ({0.5, -0.0, 1 / 0, -1 / 0, 0 / 0, 3.0})[i] end
    for i = 1, 1000 do mixed[i] = i % 2 == 0 and i + 0.0 or i end
    local wide = {1, -1, math.maxinteger, math.mininteger, 1 << 31, -(1 << 31) - 1}
    local lists = {ints, floats, mixed, wide}
    -- A tag per value would take at least 2 bytes each; a block of 2-byte
    -- integers, 2 and a few.
    assert.is_true(#core.encode_list(ints, 1, 1000) < 2 * 1000 + 16)
    assert.equal(1 + 5 + 6 * 8, #core.encode_list(floats, 1, 6))
    assert.equal(1 + 6 + 6 * 8, #core.encode_list(wide, 1, 6))
    local echoed, placed = {}, {}
    local exited = false
    local handle = core.spawn("/bin/sh", {"/bin/sh", "-c", "exec cat <&3 >&3"},
      function(_, payload)
        local k = #echoed + 1
        echoed[k] = core.payload_value(payload)
        placed[k] = {"before"}
        core.payload_into(payload, placed[k], 2, echoed[k].n)
      end,
      function() exited = true end)
    for _, list in ipairs(lists) do
      handle:send(protocol.task(1, 1, false, "map", false, false), core.encode_list(list, 1, #list))
    end
    local deadline = core.hrtime() + 30
    while #echoed < #lists and core.hrtime() < deadline do core.run_once(true) end
    handle:close_input()
    while not exited and core.hrtime() < deadline do core.run_once(true) end
    assert.equal(#lists, #echoed)
    for k, list in ipairs(lists) do
      assert.equal(#list, echoed[k].n)
      assert.equal("before", placed[k][1])
      for i = 1, #list do
        for _, got in ipairs{echoed[k][i], placed[k][i + 1]} do
          assert.equal(math.type(list[i]), math.type(got), ("list %d item %d"):format(k, i))
          if list[i] ~= list[i] then
            assert.is_true(got ~= got)
          else
            assert.equal(list[i], got)
            assert.equal(1 / list[i], 1 / got) -- -0.0 stays -0.0
          end
        end
      end
    end
    assert.is_true(helpers.no_children())
  end)

  -- The bare string "task" is what the worker's channel_recv gives in
  -- place of a usual task's message, with the task's fields after it: sent
  -- as a message of its own, it is still one the worker does not know.
  for _, case in ipairs{{[[{"no such message"}]], "no such message"}, {[["task"]], "string"}} do
    it("a worker given a message it does not know (" .. case[1] .. ") says so and exits; "
       .. "the pool replaces it", function()
      local status, out, err = helpers.run_lua(([[
        local lmp = require "lmp"
        local pool <close> = lmp.Pool(1)
        local w = pool.workers[1]
        local first = pool:apply_async(function() return "first" end, {})
        -- Queued on the channel behind the task: read once it is answered.
        w.handle:send(%s)
        print(first:get(30))
        local deadline = require("lmp.core").hrtime() + 30
        while (#pool.workers == 0 or pool.workers[1] == w) and require("lmp.core").hrtime() < deadline do
          lmp.sleep(0.01)
        end
        print(pool:apply(function() return "after" end, {}))
      ]]):format(case[1]), helpers.runner)
      assert.equal(0, status, err)
      assert.equal("first\nafter\n", out)
      assert.matches("a message it does not know (" .. case[2] .. ")", err, 1, true)
    end)
  end
end)

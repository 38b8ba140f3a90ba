-- Every example in examples/ runs with the runner, exits 0, writes nothing
-- to stderr, prints what it promises (exactly, where the output is
-- deterministic), and leaves no worker behind.
local helpers = require "helpers"
local core = require "lmp.core"

local root = helpers.root

-- Worker processes started by the process `pid`: their command line is
-- {worker, worker_flag, pid}.
local function workers_of(pid)
  local found = {}
  for entry in require("lfs").dir("/proc") do
    if entry:match("^%d+$") then
      local cmdline = helpers.read_file("/proc/" .. entry .. "/cmdline") or ""
      local args = {}
      for a in cmdline:gmatch("[^%z]+") do args[#args + 1] = a end
      if args[2] == core.worker_flag and args[3] == tostring(pid) then
        found[#found + 1] = tonumber(entry)
      end
    end
  end
  return found
end

-- Seconds an example may take before it counts as hung (status 124).
local TIME_LIMIT = 60

-- Runs examples/<name> with the runner; returns status, stdout, stderr and
-- the workers of that run still alive a second after it ended (docs/reference.md:
-- none may outlive the main process by more than a second).
local function run_example(name, time_limit)
  local pidfile = os.tmpname()
  local status, out, err = helpers.run(("timeout %d sh -c 'echo $$ >%s; exec %s %s/examples/%s'")
    :format(time_limit or TIME_LIMIT, pidfile, helpers.runner, root, name))
  local pid = tonumber(helpers.read_file(pidfile))
  os.remove(pidfile)
  local left = workers_of(pid)
  local deadline = os.time() + 1
  while #left > 0 and os.time() <= deadline do
    os.execute("sleep 0.05")
    left = workers_of(pid)
  end
  return status, out, err, left
end

-- Runs an example and checks what every example must do; returns stdout.
local function check(name, time_limit)
  local status, out, err, left = run_example(name, time_limit)
  assert.are_not.equal(124, status, name .. " hung")
  assert.are.equal("", err)
  assert.are.equal(0, status)
  assert.are.same({}, left)
  return out
end

local function lines(s)
  local t = {}
  for line in s:gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end

local function is_permutation_of_1_to(n, list)
  if #list ~= n then return false end
  local seen = {}
  for _, v in ipairs(list) do
    if v < 1 or v > n or seen[v] then return false end
    seen[v] = true
  end
  return true
end

describe("examples", function()
  it("count_primes.lua counts the primes below 40,000 in four ranges", function()
    assert.are.equal(table.concat({
      "Primes in [0, 10000): 1229",
      "Primes in [10000, 20000): 1033",
      "Primes in [20000, 30000): 983",
      "Primes in [30000, 40000): 958",
      "Total primes found: 4203",
    }, "\n") .. "\n", check("count_primes.lua"))
  end)

  it("count_primes_ranges.lua counts the primes below 50,000 in five ranges", function()
    assert.are.equal("Total primes: 5133\n", check("count_primes_ranges.lua"))
  end)

  it("squares.lua maps square over 1..10", function()
    assert.are.equal("1 4 9 16 25 36 49 64 81 100\n", check("squares.lua"))
  end)

  it("starmap_add.lua adds pairs: 3, 7, 11", function()
    assert.are.equal("3\n7\n11\n", check("starmap_add.lua"))
  end)

  it("power.lua raises pairs with starmap: 8, 9, 100", function()
    assert.are.equal("2 ^ 3 = 8\n3 ^ 2 = 9\n10 ^ 2 = 100\n", check("power.lua"))
  end)

  it("imap_slow.lua yields slow results in input order with their index", function()
    local expected = {}
    for i = 1, 8 do expected[i] = ("result %d: %d"):format(i, i * i) end
    assert.are.equal(table.concat(expected, "\n") .. "\n", check("imap_slow.lua"))
  end)

  it("imap_endless.lua stops an endless input early and still closes", function()
    assert.are.equal("2 3 5 7 11 13 17 19 23 29\n", check("imap_endless.lua", 10))
  end)

  it("imap_unordered.lua: imap keeps input order, imap_unordered a permutation", function()
    local out = lines(check("imap_unordered.lua"))
    assert.are.equal(2, #out)
    assert.are.equal("imap:           1 2 3 4 5 6 7 8", out[1])
    local ids = {}
    for id in out[2]:match("^imap_unordered: (.*)$"):gmatch("%d+") do ids[#ids + 1] = tonumber(id) end
    assert.is_true(is_permutation_of_1_to(8, ids))
  end)

  it("apply.lua computes the cube of 5 in a worker", function()
    assert.are.equal("The cube of 5 is 125\n", check("apply.lua"))
  end)

  it("apply_async.lua calls callback seven times and error_callback once", function()
    local out = lines(check("apply_async.lua"))
    assert.are.equal(9, #out)
    assert.are.equal("done", out[9])
    local results, errors = {}, {}
    for i = 1, 8 do
      local value = out[i]:match("^result: (%d+)$")
      if value then
        results[#results + 1] = tonumber(value)
      else
        errors[#errors + 1] = out[i]
      end
    end
    table.sort(results)
    assert.are.same({0, 1, 4, 9, 16, 36, 49}, results)
    assert.are.equal(1, #errors)
    assert.matches("^error: .*boom$", errors[1])
  end)

  it("initializer.lua gives each worker its multiplier: 10, 20, 30", function()
    assert.are.equal("10\n20\n30\n", check("initializer.lua"))
  end)

  it("is_prime.lua checks four large numbers", function()
    assert.are.equal(table.concat({
      "10000019 is prime: true",
      "10000079 is prime: true",
      "10000091 is prime: false",
      "10000099 is prime: false",
    }, "\n") .. "\n", check("is_prime.lua"))
  end)

  it("speedup.lua prints both times and the speedup", function()
    local out = lines(check("speedup.lua"))
    assert.are.equal(3, #out)
    assert.matches("^sequential: %d+%.%d+ s$", out[1])
    assert.matches("^parallel:   %d+%.%d+ s on %d+ processes$", out[2])
    local speedup = tonumber(out[3]:match("^speedup:    (%d+%.%d+)x$"))
    assert.is_truthy(speedup)
    assert.is_true(speedup > 0)
  end)

  it("executor_primes.lua counts primes with ProcessPoolExecutor.map", function()
    assert.are.equal("Total primes found: 4203\n", check("executor_primes.lua"))
  end)

  it("executor_submit.lua waits on three futures", function()
    assert.are.equal("future 1: 8\nfuture 2: 27\nfuture 3: 64\n", check("executor_submit.lua"))
  end)

  it("executor_as_completed.lua prints in completion order", function()
    assert.are.equal(table.concat({
      "fast finished (0.05 s)",
      "medium finished (0.30 s)",
      "slow finished (0.60 s)",
    }, "\n") .. "\n", check("executor_as_completed.lua"))
  end)

  it("every example is covered by this spec", function()
    local covered = {}
    local source = helpers.read_file(root .. "/tests/examples_spec.lua")
    for name in source:gmatch('check%("([%w_]+%.lua)"[,)]') do covered[name] = true end
    for entry in require("lfs").dir(root .. "/examples") do
      if entry:match("%.lua$") then
        assert.is_true(covered[entry] ~= nil, entry .. " has no test in examples_spec.lua")
      end
    end
  end)

  it("leaves no child process behind", function()
    assert.is_true(helpers.no_children())
  end)
end)

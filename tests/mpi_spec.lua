-- The MPI transport: the same scripts under `mpiexec -n 4 lmp`, rank 0
-- running the script and ranks 1 to 3 serving as pool workers. Needs a
-- build with MPI=1 ($LMP_MPI_BUILD, made by `make test` where Open MPI is
-- installed) and mpiexec; skipped with a message otherwise.
local helpers = require "helpers"

-- In CI (LMP_SETUP_MPI=1, which installs Open MPI; LMP_SETUP_MPICH=1,
-- MPICH) a skipped test would hide that the transport went untested: there
-- a skip is a failure.
local function strict(variable)
  return (os.getenv(variable) or "") ~= ""
end
local function skip(message, required_by)
  if required_by and strict(required_by) then
    error(message .. " (" .. required_by .. " is set: this test must run)", 2)
  end
  print("\n" .. message)
end

local function succeeds(command)
  return os.execute(command .. " >/dev/null 2>&1") == true
end

-- The MPI implementations to run under: a build made with each one's
-- pkg-config flags (`make test` makes them) and that one's launcher, by the
-- name Debian gives it beside the other's.
local function launcher(names, version_mark)
  for _, name in ipairs(names) do
    if succeeds(("%s --version | grep -q %q"):format(name, version_mark)) then return name end
  end
end
local implementations = {}
local function add(name, build, exec, options, required_by, install)
  local runner = build and build .. "/bin/lmp"
  if not (runner and io.open(runner) and exec) then
    implementations[#implementations + 1] = {name = name, missing = ("mpi_spec: %s skipped (no"
      .. " build in $%s or no launcher; %s)"):format(name, install.variable, install.hint),
      required_by = required_by}
    return
  end
  implementations[#implementations + 1] = {name = name, runner = runner,
    -- Open MPI refuses to run as root unless told twice; CI runs as root.
    environment = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      .. "OMPI_MCA_rmaps_base_oversubscribe=1 ",
    launch = exec .. " -n 4 " .. options .. " "}
end
add("Open MPI", os.getenv("LMP_MPI_BUILD"), launcher({"mpiexec.openmpi", "mpiexec"}, "OpenRTE"),
  "--oversubscribe", "LMP_SETUP_MPI", {variable = "LMP_MPI_BUILD",
  hint = "install openmpi-bin and libopenmpi-dev: LMP_SETUP_MPI=1 make setup"})
-- MPICH's Hydra oversubscribes without being asked.
add("MPICH", os.getenv("LMP_MPICH_BUILD"), launcher({"mpiexec.mpich", "mpiexec.hydra"}, "HYDRA"),
  "", "LMP_SETUP_MPICH", {variable = "LMP_MPICH_BUILD",
  hint = "install mpich and libmpich-dev: LMP_SETUP_MPICH=1 make setup"})

local plain_runs = {} -- example name -> status, stdout, stderr without MPI
for _, implementation in ipairs(implementations) do
  if implementation.missing then
    describe("mpi (" .. implementation.name .. ")", function()
      it("needs an MPI build and its launcher", function()
        skip(implementation.missing, implementation.required_by)
      end)
    end)
  else
    local runner = implementation.runner
    local MPIEXEC = implementation.environment .. "timeout 120 " .. implementation.launch
    local openmpi = implementation.name == "Open MPI"

    local function mpi_run(code)
      local base = os.tmpname()
      local path = base .. ".lua"
      local f = assert(io.open(path, "w"))
      f:write(code)
      f:close()
      local status, out, err = helpers.run(MPIEXEC .. runner .. " " .. path)
      os.remove(path)
      os.remove(base)
      return status, out, err
    end

    describe("mpi (" .. implementation.name .. ")", function()
      it("runs map, imap, apply_async and an executor on the worker ranks", function()
        local status, out, err = mpi_run([[
          local lmp = require "lmp"
          print(lmp.get_start_method())
          local pool <close> = lmp.Pool()
          print(pool)
          print(table.concat(pool:map(function(x) return x * x end, {1, 2, 3, 4, 5, 6}), " "))
          local t = {}
          for v in pool:imap(function(x) return x + 1 end, {1, 2, 3}) do t[#t + 1] = v end
          print(table.concat(t, " "))
          local me = lmp.current_process()
          local ranks = pool:map(function() local p = require("lmp").current_process()
            return p.rank .. (p.host == me.host and "" or "?") end, {1, 2, 3}, 1)
          table.sort(ranks)
          print(me.rank, table.concat(ranks, " "))
          local got
          pool:apply_async(function(a, b) return a .. b end, {"x", "y"}, {callback = function(v) got = v end})
          pool:close(); pool:join()
          print(got)
          local ex <close> = lmp.ProcessPoolExecutor{max_workers = 2}
          print(ex:submit(function(s) return #s end, "hello"):result())
          local here <close> = lmp.Pool{processes = 2, start_method = "spawn"}
          print(here:apply(function() return "local" end))
          -- A forked copy of rank 0 that exits through os.exit is no rank.
          local forked <close> = lmp.Pool{processes = 1, start_method = "fork"}
          print(pcall(forked.apply, forked, function() os.exit(4) end))
        ]])
        assert.equal("", err)
        assert.equal(0, status)
        assert.equal("mpi\nlmp.Pool(3 processes, running)\n1 4 9 16 25 36\n2 3 4\n0\t1 2 3\nxy\n5\nlocal\n", (out:gsub("false\t[^\n]*\n$", "")))
        assert.truthy(out:find("\nfalse\tlmp worker_lost error[^\n]*exited with status 4\n$"), out)
      end)

      it("fails only the task whose worker dies on a remote rank; the job goes on", function()
        local status, out, err = mpi_run([[
          local lmp = require "lmp"
          local pool <close> = lmp.Pool()
          local ok, e = pcall(pool.map, pool, function(x)
            if x == 2 then os.execute("kill -SEGV " .. require("lmp.core").getpid()) end
            return x
          end, {1, 2, 3}, 1)
          print(ok, e.kind, e.signal)
          ok, e = pcall(pool.apply, pool, function() os.exit(7) end)
          print(ok, e.kind, e.exitcode)
          print(table.concat(pool:map(function(x) return -x end, {1, 2, 3, 4}), " "))
        ]])
        assert.equal("", err)
        assert.equal(0, status)
        assert.equal("false\tworker_lost\t11\nfalse\tworker_lost\t7\n-1 -2 -3 -4\n", out)
      end)

      it("names a remote worker by its rank; a task sees its process's own pid", function()
        local status, out, err = mpi_run([[
          local lmp = require "lmp"
          local pool <close> = lmp.Pool()
          local _, e = pcall(pool.apply, pool, function() os.exit(5) end)
          print(math.type(e.pid), e.pid >= 1 and e.pid <= 3,
                e.message:find("worker process " .. e.pid .. " died", 1, true) ~= nil)
          local me = pool:apply(function()
            local p = require("lmp").current_process()
            return {p.pid, p.rank, require("lmp.core").getpid(), require("lmp.core").getppid()}
          end)
          -- The worker is a child of its rank's process, on the rank's host.
          print(me[1] == me[3], me[2] >= 1 and me[2] <= 3, me[1] ~= me[2], me[4] ~= me[1])
        ]])
        assert.equal("", err)
        assert.equal(0, status)
        assert.equal("integer\ttrue\ttrue\ntrue\ttrue\ttrue\ttrue\n", out)
      end)

      it("ends the job with the script's error and a non-zero status", function()
        local status, _, err = mpi_run([[
          local lmp = require "lmp"
          local pool <close> = lmp.Pool()
          pool:map(function(x) return x end, {1})
          error("the script failed")
        ]])
        assert.are_not.equal(0, status)
        assert.are_not.equal(124, status)
        assert.truthy(err:find("the script failed", 1, true))
      end)

      it("keeps every rank under 2% CPU while the pool is idle", function()
        local status, out, err = mpi_run([[
          local lmp = require "lmp"
          local core = require "lmp.core"
          local pool <close> = lmp.Pool()
          pool:map(function(x) return x end, {1, 2, 3})
          local function stat(pid)
            local f = io.open("/proc/" .. pid .. "/stat")
            if not f then return nil end
            local s = f:read("a"); f:close()
            local fields = {}
            for w in s:gsub("^.*%) ", ""):gmatch("%S+") do fields[#fields + 1] = w end
            return tonumber(fields[12]) + tonumber(fields[13]), fields[2]
          end
          -- The ranks on this machine are rank 0's siblings (mpiexec's children).
          local me = core.getpid()
          local _, parent = stat(me)
          local pids = {me}
          for entry in io.popen("ls /proc"):lines() do
            local pid = tonumber(entry)
            if pid and pid ~= me and select(2, stat(pid)) == parent then pids[#pids + 1] = pid end
          end
          os.execute("sleep 1")
          -- 3 s: a clock tick (10 ms) is then a third of a percent. On a
          -- loaded machine a tick may be charged to a process that woke
          -- just then: a second window is measured when the first reached
          -- 1%, and each rank's lower figure counts (noise only adds).
          local lowest = {}
          for _ = 1, 2 do
            local before = {}
            for i, pid in ipairs(pids) do before[i] = stat(pid) end
            os.execute("sleep 3")
            local high = false
            for i, pid in ipairs(pids) do
              -- A sibling that ended since it was listed (not a rank: the
              -- ranks live until the pool closes) reads nil and drops out.
              local now = stat(pid)
              if before[i] and now then
                local percent = (now - before[i]) / 3  -- 100 ticks a second
                lowest[i] = math.min(lowest[i] or math.huge, percent)
                high = high or lowest[i] >= 1
              else
                lowest[i] = false
              end
            end
            if not high then break end
          end
          local percents = {}
          for i = 1, #pids do
            if lowest[i] then percents[#percents + 1] = ("%.2f"):format(lowest[i]) end
          end
          print(#percents, table.concat(percents, " "))
        ]])
        assert.equal("", err)
        assert.equal(0, status)
        print("\nmpi idle CPU % over 3 s (rank 0 first): " .. out:gsub("^%d+\t", ""):gsub("\n", ""))
        local n = tonumber(out:match("^(%d+)"))
        assert.equal(4, n)
        -- Instrumented (make asan-mpi) every wake-up of the relay's poll
        -- costs several times more: 1% there is a few ticks in 3 s, still
        -- far from a rank that spins (100%).
        -- Uninstrumented, 2%: six ticks in 3 s in both windows, which a
        -- busy machine's misplaced ticks have reached (three did, once),
        -- still fifty times below a rank that spins.
        local bound = os.getenv("LMP_SANITIZED") and 3 or 2
        for p in out:match("\t(.*)\n"):gmatch("%S+") do assert.is_true(tonumber(p) < bound, out) end
      end)

      it("carries the contract corpus of values to a worker rank and back", function()
        local status, out, err = mpi_run(([[
          package.path = %q .. "/tests/?.lua;" .. package.path
          local lmp = require "lmp"
          local contract = require "contract"
          local pool <close> = lmp.Pool()
          local n = 0
          for _, case in ipairs(contract.cases()) do
            local args = case.args()
            local bytes = contract.pack(args)
            local back = table.pack(pool:apply(contract.echo_case,
              table.pack("mpi apply", case.name, bytes, table.unpack(args, 1, args.n))))
            contract.verify(case.name, bytes, back, "mpi apply, as it came back")
            n = n + 1
          end
          print(n > 0 and "all " .. n .. " cases" or "no case")
        ]]):format(helpers.root))
        assert.equal("", err)
        assert.equal(0, status)
        assert.truthy(out:match("^all %d+ cases\n$"), out)
      end)

      -- A signal from another process to mpiexec, as a user's Ctrl-C (SIGINT
      -- to the foreground job) or a batch system's SIGTERM sends it, while every
      -- worker is busy: mpiexec, its helpers, every rank and every rank's
      -- worker end. The job's processes are found before (mpiexec's
      -- descendants) and after (pgrep for the ranks' command line).
      for _, signal in ipairs {"TERM", "INT"} do
        it("ends every rank and worker, with no orphan, when mpiexec gets SIG" .. signal, function()
          local pidfile = os.tmpname()
          local base = os.tmpname()
          local path = base .. ".lua"
          local f = assert(io.open(path, "w"))
          f:write(([[
            local lmp = require "lmp"
            local pool <close> = lmp.Pool()
            -- Each worker writes its pid, then every worker is busy for a long time.
            local pids = pool:map(function() return require("lmp.core").getpid() end, {1, 2, 3}, 1)
            local out = io.open(%q, "w")
            out:write(require("lmp.core").getpid(), " ", table.concat(pids, " "), "\n")
            out:close()
            pool:map(function() local t = os.time() while os.time() < t + 60 do end end, {1, 2, 3}, 1)
          ]]):format(pidfile))
          f:close()
          -- mpiexec runs in the background under timeout (whose pid goes to
          -- base.pid); a background command ignores SIGINT unless told not to.
          assert(os.execute(("%stimeout 120 env --default-signal=INT %s %s %s >/dev/null 2>&1 &"
            .. " echo $! > %s.pid"):format(implementation.environment, implementation.launch,
            runner, path, base)))
          local function read_pids()
            local text = helpers.read_file(pidfile) or ""
            local pids = {}
            for pid in text:gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
            return pids
          end
          local function job_ranks()
            local _, out = helpers.run(("pgrep -f '^%s %s'"):format(runner, path))
            local pids = {}
            for pid in out:gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
            return pids
          end
          local started = helpers.wait_for(function() return #read_pids() == 4 end, 60)
          local mpiexec_pid = helpers.children(tonumber(helpers.read_file(base .. ".pid")))[1]
          -- Everything mpiexec started: its helpers, the ranks, their workers.
          local job, ranks = {}, job_ranks()
          local function descend(pid)
            for _, child in ipairs(helpers.children(pid)) do
              job[#job + 1] = child
              descend(child)
            end
          end
          if mpiexec_pid then descend(mpiexec_pid) end
          for _, pid in ipairs(read_pids()) do job[#job + 1] = pid end
          os.execute(("kill -%s %d"):format(signal, mpiexec_pid or 0))
          local gone = helpers.wait_for(function()
            for _, pid in ipairs(job) do if helpers.alive(pid) then return false end end
            return #job_ranks() == 0 and not helpers.alive(mpiexec_pid)
          end, 30)
          local left = {}
          for _, pid in ipairs(job) do
            if helpers.alive(pid) then
              left[#left + 1] = pid .. " " .. (helpers.read_file("/proc/" .. pid .. "/cmdline") or "")
                :gsub("%z", " ")
            end
          end
          for _, pid in ipairs(job) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
          os.remove(pidfile); os.remove(path); os.remove(base); os.remove(base .. ".pid")
          assert.is_true(started, "the workers never reported")
          assert.equal(4, #ranks)
          assert.is_true(gone, "left after SIG" .. signal .. ": " .. table.concat(left, "; "))
        end)
      end

      -- What must hold of an example's output whichever process ran which
      -- task: timings vary (numbers with a fraction become #), callbacks and
      -- unordered results come in the order tasks finish (the lines are
      -- compared sorted, and so are the items of an "imap_unordered:" line).
      local function what_must_hold(text)
        local lines = {}
        for line in text:gmatch("[^\n]+") do
          line = line:gsub("%d+%.%d+", "#")
          local head, items = line:match("^(imap_unordered:%s*)(.*)$")
          if head then
            local t = {}
            for item in items:gmatch("%S+") do t[#t + 1] = item end
            table.sort(t)
            line = head .. table.concat(t, " ")
          end
          lines[#lines + 1] = line
        end
        table.sort(lines)
        return lines
      end

      it("runs every example unchanged, printing what plain lmp prints", function()
        local names = {}
        for entry in require("lfs").dir(helpers.root .. "/examples") do
          if entry:match("%.lua$") then names[#names + 1] = entry end
        end
        table.sort(names)
        assert.is_true(#names >= 10)
        for _, name in ipairs(names) do
          local path = helpers.root .. "/examples/" .. name
          -- The plain run, once for every implementation.
          plain_runs[name] = plain_runs[name] or table.pack(helpers.run(runner .. " " .. path))
          local s1, plain, e1 = table.unpack(plain_runs[name], 1, 3)
          local s2, over_mpi, e2 = helpers.run(MPIEXEC .. runner .. " " .. path)
          assert.equal(0, s1, name .. e1)
          assert.equal(0, s2, name .. e2)
          assert.same(what_must_hold(plain), what_must_hold(over_mpi), name)
        end
      end)

      it("replaces workers with maxtasksperchild while every rank is busy", function()
        local status, out, err = mpi_run([==[
          local lmp = require "lmp"
          local pool <close> = lmp.Pool{maxtasksperchild = 1}
          local items = {}
          for i = 1, 12 do items[i] = i end
          local results = pool:map(function(x)
            local me = require("lmp").current_process()
            return {x * 2, me.pid, me.rank}
          end, items, 1)
          local pids, ranks, n = {}, {}, 0
          for i, r in ipairs(results) do
            assert(r[1] == 2 * i)
            if not pids[r[2]] then pids[r[2]], n = true, n + 1 end
            ranks[#ranks + 1] = r[3]
          end
          table.sort(ranks)
          print(pool.processes, results.n, n, ranks[1], ranks[#ranks])
        ]==])
        assert.equal("", err)
        assert.equal(0, status)
        -- One worker per task, every one of them on a worker rank.
        assert.equal("3\t12\t12\t1\t3\n", out)
      end)

      -- Two hosts on one machine: two network namespaces joined by a veth
      -- pair, Open MPI's TCP transport (and its out-of-band channel) only on
      -- their private addresses, its ssh launcher replaced by a script that
      -- enters the namespace of the host it is asked for. Needs root and
      -- `ip netns`; the namespaces are removed afterwards, even on failure.
      if openmpi then
        it("runs a pool on ranks of two hosts (network namespaces) over TCP", function()
          local id = "lmp" .. require("lmp.core").getpid() % 100000
          local ns1, ns2 = id .. "a", id .. "b"
          if not os.execute(("ip netns add %s 2>/dev/null"):format(ns1)) then
            skip("mpi_spec: two-host test skipped (ip netns add needs root)", "LMP_SETUP_MPI")
            return
          end
          local dir = select(2, helpers.run("mktemp -d")):gsub("%s+$", "")
          local ok, status, out, err = pcall(function()
            local setup = table.concat({
              "ip netns add " .. ns2,
              ("ip link add %sx netns %s type veth peer name %sy netns %s"):format(id, ns1, id, ns2),
              ("ip -n %s addr add 10.77.0.1/24 dev %sx"):format(ns1, id),
              ("ip -n %s addr add 10.77.0.2/24 dev %sy"):format(ns2, id),
              ("ip -n %s link set %sx up && ip -n %s link set lo up"):format(ns1, id, ns1),
              ("ip -n %s link set %sy up && ip -n %s link set lo up"):format(ns2, id, ns2)}, " && ")
            assert(os.execute(setup), "could not make the namespaces")
            local agent = assert(io.open(dir .. "/agent", "w"))
            agent:write("#!/bin/sh\n",
              "host=$1; shift\n",
              "case $host in 10.77.0.1) ns=", ns1, " ;; 10.77.0.2) ns=", ns2, " ;;",
              " *) echo \"no host $host\" >&2; exit 1 ;; esac\n",
              "exec ip netns exec \"$ns\" sh -c \"$*\"\n")
            agent:close()
            local hosts = assert(io.open(dir .. "/hosts", "w"))
            hosts:write("10.77.0.1 slots=2\n10.77.0.2 slots=2\n")
            hosts:close()
            local script = assert(io.open(dir .. "/script.lua", "w"))
            script:write(("local crashed = %q\n"):format(dir .. "/crashed"), [[
              local lmp = require "lmp"
              local pool <close> = lmp.Pool()
              local function address()
                local f = io.popen("ip -o -4 addr show scope global")
                local text = f:read("a")
                f:close()
                return text:match("inet (10%.77%.0%.%d)")
              end
              local where = pool:map(function() return address() end, {1, 2, 3}, 1)
              table.sort(where)
              print(address(), table.concat(where, " "))
              local ok, e = pcall(pool.map, pool, function(x)
                -- The first task to run on the second host ends its worker.
                if address() == "10.77.0.2" and os.execute("mkdir " .. crashed .. " 2>/dev/null") then
                  os.exit(5)
                end
                return x
              end, {1, 2, 3, 4, 5, 6}, 1)
              print(ok or e.kind)
              print(table.concat(pool:map(function(x) return x * 10 end, {1, 2, 3}), " "))
            ]])
            script:close()
            return helpers.run(("chmod +x %s/agent && OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
              .. " timeout 120 ip netns exec %s mpiexec -n 4 --hostfile %s/hosts"
              .. " --mca plm_rsh_agent %s/agent --mca btl tcp,self"
              .. " --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24"
              .. " %s %s/script.lua"):format(dir, ns1, dir, dir, runner, dir))
          end)
          os.execute(("ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null; rm -rf %s")
            :format(ns1, ns2, dir))
          assert(ok, status)
          assert.equal("", err)
          assert.equal(0, status)
          -- Rank 0 and rank 1 on the first host, ranks 2 and 3 on the second.
          assert.equal("10.77.0.1\t10.77.0.1 10.77.0.2 10.77.0.2\n", out:match("^[^\n]*\n"))
          assert.equal("worker_lost", out:match("\n([^\n]*)\n"))
          assert.truthy(out:find("\n10 20 30\n$"), out)
        end)
      end
    end)
  end
end

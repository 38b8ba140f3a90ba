-- The killer of the outside soak: a process of its own that, for `seconds`,
-- sends SIGKILL or SIGSEGV to a random child of process `main` at random
-- moments (on average every `interval` seconds), whatever that child is
-- doing and whatever the main process is doing. It does not use lmp.
-- It spares a worker in its first 0.1 s, while it starts: a pool gives up
-- when workers keep dying before they are ready (3 in a row), which is a
-- rule of its own, not what this soak is about.
-- When done it writes "kills N" to `report` and exits.
-- Usage: lua5.4 tests/soak/killer.lua main seconds interval report
local main, seconds, interval, report = tonumber(arg[1]), tonumber(arg[2]),
  tonumber(arg[3]), arg[4]
assert(main and seconds and interval and report, "usage: killer.lua main seconds interval report")

math.randomseed(os.time(), main)

-- The children of the main process's main thread: its workers.
local function children()
  local f = io.open(("/proc/%d/task/%d/children"):format(main, main))
  if not f then return nil end
  local pids = {}
  for pid in f:read("a"):gmatch("%d+") do pids[#pids + 1] = pid end
  f:close()
  return pids
end

local ticks = tonumber(io.popen("getconf CLK_TCK"):read("l")) or 100

-- Seconds since process `pid` started, or nil if it is gone.
local function age(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  local stat = f and f:read("a")
  if f then f:close() end
  local uptime_file = io.open("/proc/uptime")
  local uptime = tonumber(uptime_file:read("a"):match("^[%d.]+"))
  uptime_file:close()
  -- The 22nd field (start time, in clock ticks); the 2nd may hold spaces.
  local after_name = stat and stat:match("%) (.*)$")
  if not after_name then return nil end
  local fields = {}
  for field in after_name:gmatch("%S+") do fields[#fields + 1] = field end
  return uptime - tonumber(fields[20]) / ticks
end

local kills, started = 0, os.time()
while os.time() - started < seconds do
  -- A random pause of 0 to 2 x interval; `sleep` is a process of its own,
  -- so this one uses no CPU while it waits.
  os.execute(("sleep %.3f"):format(math.random() * 2 * interval))
  local pids = children()
  if pids == nil then break end -- the main process is gone
  local grown = {}
  for _, pid in ipairs(pids) do
    local a = age(pid)
    if a and a >= 0.1 then grown[#grown + 1] = pid end
  end
  if #grown > 0 then
    local pid = grown[math.random(#grown)]
    local signal = math.random(2) == 1 and "KILL" or "SEGV"
    if os.execute(("kill -s %s %s 2>/dev/null"):format(signal, pid)) then kills = kills + 1 end
  end
end
local f = assert(io.open(report .. ".part", "w"))
f:write("kills ", kills, "\n")
f:close()
-- Renamed once complete, so that the main process never reads half of it.
assert(os.rename(report .. ".part", report))

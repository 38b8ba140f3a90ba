-- The killer of the outside soak: a process of its own that, for `seconds`,
-- sends SIGKILL or SIGSEGV to a random child of process `main` at random
-- moments (on average every `interval` seconds), whatever that child is
-- doing and whatever the main process is doing. It does not use lmp.
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

local kills, started = 0, os.time()
while os.time() - started < seconds do
  -- A random pause of 0 to 2 x interval; `sleep` is a process of its own,
  -- so this one uses no CPU while it waits.
  os.execute(("sleep %.3f"):format(math.random() * 2 * interval))
  local pids = children()
  if pids == nil then break end -- the main process is gone
  if #pids > 0 then
    local pid = pids[math.random(#pids)]
    local signal = math.random(2) == 1 and "KILL" or "SEGV"
    if os.execute(("kill -s %s %s 2>/dev/null"):format(signal, pid)) then kills = kills + 1 end
  end
end
local f = assert(io.open(report .. ".part", "w"))
f:write("kills ", kills, "\n")
f:close()
-- Renamed once complete, so that the main process never reads half of it.
assert(os.rename(report .. ".part", report))

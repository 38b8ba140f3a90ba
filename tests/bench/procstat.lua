-- CPU time of a process from /proc/PID/stat, for the benchmarks that
-- report what a wait or a pool costs in CPU rather than in wall-clock.
local procstat = {}

-- utime + stime of process `pid` ("self" for this one, all its threads),
-- in seconds (clock ticks of 1/100 s); 0 for a process that has ended.
function procstat.cpu_seconds(pid)
  local f = io.open(("/proc/%s/stat"):format(pid))
  if not f then return 0 end
  local stat = f:read("a")
  f:close()
  local fields = {}
  -- After the command's closing parenthesis, which may itself hold spaces:
  -- utime and stime are fields 14 and 15 of the line.
  for field in stat:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = field end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

return procstat

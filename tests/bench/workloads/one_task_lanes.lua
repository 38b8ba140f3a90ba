-- The whole-program start-up figure, LuaLanes' side of one_task.lua: two
-- lanes fed from a linda, one task, and the end.
local lanes = require("lanes").configure()
local linda = lanes.linda()
local worker = lanes.gen("*", function(queue)
  while true do
    local _, job = queue:receive("jobs")
    if job == "stop" then return end
    queue:send("results", job.f(job.x))
  end
end)
local running = {worker(linda), worker(linda)}
linda:send("jobs", {f = math.abs, x = -1})
local _, answer = linda:receive("results")
assert(answer == 1)
for _ = 1, 2 do linda:send("jobs", "stop") end
for _, lane in ipairs(running) do lane:join() end

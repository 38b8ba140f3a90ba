-- imap against imap_unordered over tasks with random delays: imap gives
-- results in input order, imap_unordered in the order they finish.
-- Run: lmp examples/imap_unordered.lua
local lmp = require "lmp"

-- Busy-waits for `delay` seconds of CPU time, then returns its item.
local function work(item)
  local deadline = os.clock() + item.delay
  while os.clock() < deadline do end
  return item.id
end

local items = {}
for id = 1, 8 do
  items[id] = {id = id, delay = math.random(1, 10) / 100}
end

local pool <close> = lmp.Pool(4)
local ordered, unordered = {}, {}
for id in pool:imap(work, items, 1) do ordered[#ordered + 1] = id end
for id in pool:imap_unordered(work, items, 1) do unordered[#unordered + 1] = id end
print("imap:           " .. table.concat(ordered, " "))
print("imap_unordered: " .. table.concat(unordered, " "))

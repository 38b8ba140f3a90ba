-- The script's own globals, for workers. A function defined in the main
-- script often calls other global functions of that script, or reads a
-- global table: in Python the spawn start method re-imports the main
-- module so they exist in workers. lmp sends the main process's
-- user-defined globals along with a new function instead, once per worker
-- and again only when they changed (by identity: a global table's
-- contents changing in place is not noticed). Values that cannot be sent
-- (open files, pools, coroutines), and any over globals.LIMIT bytes, are
-- left out. In a worker, the names the pool's initializer set or changed
-- are the worker's own: the script's values never replace them.
local core = require "lmp.core"

local globals = {}

-- A global whose encoding is larger than this stays behind: pass big data
-- as an argument, or load it in the pool's initializer.
globals.LIMIT = 16 * 1024 * 1024

-- What a fresh Lua 5.4 state with lmp has in _G: never sent.
local STANDARD = {}
for name in ([[_G _VERSION arg assert collectgarbage coroutine debug dofile error
  getmetatable io ipairs load loadfile math next os package pairs pcall print
  rawequal rawget rawlen rawset require select setmetatable string table
  tonumber tostring type utf8 warn xpcall]]):gmatch("%S+") do
  STANDARD[name] = true
end

-- The user-defined globals that can be sent, as a table name -> value.
-- `last` is what was sent before (or nil): returns nil when nothing
-- changed since.
function globals.snapshot(last)
  local snapshot, changed, count = {}, last == nil, 0
  for name, value in pairs(_G) do
    if type(name) == "string" and not STANDARD[name] then
      local kind = type(value)
      if kind ~= "userdata" and kind ~= "thread" then
        if last == nil or not rawequal(last[name], value) then
          changed = true
        end
        snapshot[name] = value
        count = count + 1
      end
    end
  end
  if last then
    for name in pairs(last) do
      if snapshot[name] == nil then changed = true end
    end
  end
  if not changed then return nil end
  -- Leave out what cannot cross (a function holding an open file...) and
  -- data too big to copy to every worker unasked.
  for name, value in pairs(snapshot) do
    if type(value) == "table" or type(value) == "function" or type(value) == "string" then
      local ok, bytes = pcall(require("lmp.connection").dumps_checking, value)
      if not ok or #bytes > globals.LIMIT then snapshot[name] = nil end
    end
  end
  return snapshot
end

-- In a worker: make them globals, except the names in `owned` (those
-- the pool's initializer set or changed, which stay as it left them).
function globals.install(snapshot, owned)
  for name, value in pairs(snapshot) do
    if not (owned and owned[name]) then rawset(_G, name, value) end
  end
end

return globals

-- Error objects: what every failure reaches the caller as (docs/reference.md, "Errors").
-- A table with kind, message and, where known, traceback, pid, index and
-- value (the original error value); tostring gives one readable line.
local core = require "lmp.core"

local errors = {}

local Error = core.Error -- the metatable the C side gives its errors too
Error.__name = "lmp.Error"

function Error.__tostring(e)
  local where = {}
  if e.index then where[#where + 1] = "item " .. tostring(e.index) end
  if e.pid then where[#where + 1] = "process " .. tostring(e.pid) end
  local head = "lmp " .. tostring(e.kind) .. " error"
  if #where > 0 then head = head .. " (" .. table.concat(where, ", ") .. ")" end
  return head .. ": " .. tostring(e.message)
end

-- errors.new(kind, message [, fields]) -> error object
function errors.new(kind, message, fields)
  local e = core.error(kind, message)
  if fields then
    for k, v in pairs(fields) do e[k] = v end
  end
  return e
end

-- The stack level of the first function outside lmp's own Lua modules, so
-- that a misuse error points at the user's line.
local function user_level()
  local level = 3
  while true do
    local info = debug.getinfo(level, "S")
    if not info then return 1 end
    if not info.source:find("lmp/[%w_]+%.lua$") and info.what ~= "C" then
      return level - 1
    end
    level = level + 1
  end
end

-- Raises "bad argument #n to 'fname' (message)" at the user's call.
function errors.argument(n, fname, message)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, message), user_level())
end

-- Raises an error object at the user's call.
function errors.raise(e)
  error(e, user_level())
end

-- Stands for a nil result where a nil would end a generic for (imap).
errors.null = setmetatable({}, {__name = "lmp.null", __tostring = function() return "lmp.null" end})

return errors

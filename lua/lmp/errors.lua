-- Error objects: what every failure reaches the caller as (docs/reference.md, "Errors").
-- A table with kind, message and, where known, traceback, pid, index and
-- value (the original error value); tostring gives one readable line.
local core = require "lmp.core"

local errors = {}

-- core.Error is the metatable the C side gives every error object, with
-- the one __tostring: "lmp KIND error (item I, process P): MESSAGE".

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

-- Raises "bad argument" unless timeout is nil or a number of seconds: NaN
-- (which compares false with everything, so a wait on it never ends) and
-- negative numbers are refused; `positive` refuses 0 as well, for limits
-- on running tasks, where 0 would kill every one at once.
function errors.check_timeout(timeout, n, fname, positive, name)
  if timeout == nil then return timeout end
  name = name or "timeout"
  if type(timeout) ~= "number" then
    errors.argument(n, fname, ("%s must be a number of seconds, got %s"):format(name, type(timeout)))
  end
  if timeout ~= timeout or timeout < 0 or (positive and timeout == 0) then
    errors.argument(n, fname, ("%s must be a %s number of seconds, got %s")
      :format(name, positive and "positive" or "non-negative",
              timeout ~= timeout and "NaN" or tostring(timeout)))
  end
  return timeout
end

-- The number of single-character edits that turn a into b (Levenshtein),
-- to suggest the option a misspelled key was meant to be.
local function edit_distance(a, b)
  local previous = {}
  for j = 0, #b do previous[j] = j end
  for i = 1, #a do
    local current = {[0] = i}
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      current[j] = math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
    end
    previous = current
  end
  return previous[#b]
end

-- Raises "bad argument" naming the first key of the options table `opts`
-- that is not in `known` (an array of names), with the nearest known name
-- when one is close: a misspelled option would otherwise be ignored
-- without a word.
function errors.check_options(opts, known, n, fname)
  local set = known.set
  if not set then
    set = {}
    for _, name in ipairs(known) do set[name] = true end
    known.set = set
  end
  for key in pairs(opts) do
    if not set[key] then
      local message
      if type(key) ~= "string" then
        message = ("unexpected %s key %s in the options"):format(type(key), tostring(key))
      else
        message = ("unknown option '%s'"):format(key)
        local best, best_distance
        for _, name in ipairs(known) do
          local d = edit_distance(key:lower(), name)
          if not best_distance or d < best_distance then best, best_distance = name, d end
        end
        if best and best_distance <= math.max(2, #key // 3) then
          message = message .. (": did you mean '%s'?"):format(best)
        else
          message = message .. " (known: " .. table.concat(known, ", ") .. ")"
        end
      end
      errors.argument(n, fname, message)
    end
  end
  return opts
end

-- Raises an error object at the user's call.
function errors.raise(e)
  error(e, user_level())
end

-- Stands for a nil result where a nil would end a generic for (imap).
errors.null = setmetatable({}, {__name = "lmp.null", __tostring = function() return "lmp.null" end})

return errors

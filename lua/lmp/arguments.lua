-- The arguments of the pool's calls: the iterables map and imap take,
-- their options, and the function they run. Each check raises an argument
-- error naming the call and the argument, from the caller's line.
local errors = require "lmp.errors"

local argument_error = errors.argument

-- An iterable is an array (with an optional n), an iterator function
-- called until it returns nil, or the three values a generic for takes
-- (iterator, state, control: pairs(t), ipairs(t), string.gmatch, ...).
-- Returns a reader giving (true, item) until the end, and the count if
-- known. A step of a triplet that gives several values (k, v) has the
-- second as its item, as the body of `for _, v in pairs(t)` sees it;
-- with `star`, the item is all the values of the step, as arguments.
local function reader_of(iterable, argn, fname, triplet, state, control, star)
  local kind = type(iterable)
  if kind == "table" then
    local n = iterable.n or #iterable
    if n == 0 and iterable.n == nil and next(iterable) ~= nil then
      -- A table with only keys outside 1..n would map over nothing.
      argument_error(argn, fname, "array expected, got a table with no items at 1..n;"
        .. " for its values use pairs(t)")
    end
    local i = 0
    return function()
      if i < n then i = i + 1; return true, iterable[i] end
    end, n
  elseif kind == "function" and triplet then
    local stopped = false
    local function step(first, ...)
      if first == nil then stopped = true; return nil end
      control = first
      if star then return true, table.pack(first, ...) end
      if select("#", ...) == 0 then return true, first end
      return true, (...)
    end
    return function()
      if stopped then return nil end
      return step(iterable(state, control))
    end, nil
  elseif kind == "function" then
    return function()
      local v = iterable()
      if v ~= nil then return true, v end
    end, nil
  end
  argument_error(argn, fname, "iterable expected, got " .. kind)
end

-- The arguments after the function of map, imap, starmap and the _async
-- forms: (iterable [, opts]) or a generic for's (iterator, state, control
-- [, closing]), which Lua passes whole only as the last arguments, so
-- that no options can follow it. Two or more values after an iterator
-- function make a triplet. Returns reader, count, array, opts.
local function iterable_of(fname, star, ...)
  local iterable, opts = ...
  if type(iterable) == "function" and select("#", ...) >= 3 then
    local _, state, control = ...
    return reader_of(iterable, 2, fname, true, state, control, star), nil, nil, nil
  end
  local read, total = reader_of(iterable, 2, fname)
  return read, total, type(iterable) == "table" and iterable or nil, opts
end

local NO_OPTIONS = setmetatable({}, {__newindex = function() error("lmp: NO_OPTIONS is shared") end})

-- The options each call takes.
local MAP_OPTIONS = {"chunksize", "timeout", "progress"}
local MAP_ASYNC_OPTIONS = {"chunksize", "timeout", "progress", "callback", "error_callback"}
local APPLY_ASYNC_OPTIONS = {"timeout", "callback", "error_callback"}
local POOL_OPTIONS = {"processes", "initializer", "initargs", "maxtasksperchild",
  "max_tasks_per_child", "task_timeout", "progress", "start_method", "start_options",
  "kill_orphans", "context", "ring"}

local function options_of(opts, argn, fname, known)
  if opts == nil then return NO_OPTIONS end
  if math.type(opts) == "integer" then
    if opts < 1 then argument_error(argn, fname, "chunksize must be at least 1") end
    return {chunksize = opts}
  end
  if type(opts) ~= "table" then
    argument_error(argn, fname, "chunksize or options table expected, got " .. type(opts))
  end
  errors.check_options(opts, known or MAP_OPTIONS, argn, fname)
  if opts.chunksize ~= nil and (math.type(opts.chunksize) ~= "integer" or opts.chunksize < 1) then
    argument_error(argn, fname, "chunksize must be a positive integer")
  end
  errors.check_timeout(opts.timeout, argn, fname, true)
  if opts.progress ~= nil and type(opts.progress) ~= "boolean" then
    argument_error(argn, fname, "progress must be a boolean")
  end
  for _, name in ipairs{"callback", "error_callback"} do
    if opts[name] ~= nil and type(opts[name]) ~= "function" then
      argument_error(argn, fname, name .. " must be a function")
    end
  end
  return opts
end

local function check_function(f, fname)
  if type(f) ~= "function" then
    argument_error(1, fname, "function expected, got " .. type(f))
  end
end

return {reader_of = reader_of, iterable_of = iterable_of, options_of = options_of,
        check_function = check_function, MAP_OPTIONS = MAP_OPTIONS,
        MAP_ASYNC_OPTIONS = MAP_ASYNC_OPTIONS, APPLY_ASYNC_OPTIONS = APPLY_ASYNC_OPTIONS,
        POOL_OPTIONS = POOL_OPTIONS}

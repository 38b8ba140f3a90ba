-- The objects a manager serves, as plain single-process state in the
-- manager's process: each type is new(...) -> state and methods(state,
-- ...), run by lmp.manager_server in a request's coroutine. A method that
-- must wait parks on a list of the object (S.wait) and is resumed by the
-- method that changes the state (S.wake); S.fail(kind, message) raises an
-- error the client gets with that kind. Values clients store (dict, list,
-- queue and namespace items) are the bytes they encoded, kept as they are.
local core = require "lmp.core"

local managed = {}

function managed.types(S)
  local fail, wait, wake = S.fail, S.wait, S.wake
  local types = {}

  local function check_timeout(timeout, fname)
    if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout or timeout < 0) then
      fail("task", fname .. ": timeout must be a non-negative number of seconds")
    end
    return timeout
  end

  -- Waits on list until ready() holds; false once timeout seconds passed.
  local function await(list, ready, timeout)
    local deadline = timeout and core.hrtime() + timeout
    while not ready() do
      local left = deadline and deadline - core.hrtime()
      if left and left <= 0 then return false end
      wait(list, left)
    end
    return true
  end

  -- block = false waits not at all; otherwise timeout (nil: for ever).
  local function patience(block, timeout, fname)
    check_timeout(timeout, fname)
    if block == false then return 0 end
    return timeout
  end

  local function bytes(v, fname)
    if type(v) ~= "string" then fail("task", fname .. ": a stored value arrives encoded") end
    return v
  end

  local function key(k, fname)
    local t = type(k)
    if t ~= "string" and t ~= "number" and t ~= "boolean" or k ~= k then
      fail("task", fname .. ": a key must be a string, a number or a boolean, got " .. t)
    end
    return k
  end

  -- ---- locks ---------------------------------------------------------------
  -- A lock is held by a client (one connection); the holder's connection
  -- closing (its process died or ended) releases it, and the next acquire
  -- returns true, "owner_died" so that the new holder knows the state the
  -- lock guarded may be half changed.
  local function new_lock(recursive)
    return {recursive = recursive, count = 0, owner = nil, waiters = {}, owner_died = false}
  end

  local function lock_acquire(l, block, timeout)
    local me = S.client()
    timeout = patience(block, timeout, "acquire")
    if l.recursive and l.count > 0 and l.owner == me then
      l.count = l.count + 1
      return true
    end
    if not await(l.waiters, function() return l.count == 0 end, timeout) then return false end
    l.owner, l.count = me, 1
    if l.owner_died then
      l.owner_died = false
      return true, "owner_died"
    end
    return true
  end

  local function lock_release(l)
    if l.count == 0 then fail("closed", "release: the lock is not held") end
    if l.recursive then
      if l.owner ~= S.client() then fail("closed", "release: the lock is held by another process") end
      l.count = l.count - 1
      if l.count > 0 then return end
    end
    l.count, l.owner = 0, nil
    wake(l.waiters, 1)
  end

  local function lock_gone(l, client)
    if l.count > 0 and l.owner == client then
      l.count, l.owner, l.owner_died = 0, nil, true
      wake(l.waiters, 1)
    end
  end

  local lock_methods = {
    acquire = lock_acquire,
    release = lock_release,
    locked = function(l) return l.count > 0 end,
  }
  types.Lock = {new = function() return new_lock(false) end, methods = lock_methods,
                client_gone = lock_gone}
  types.RLock = {new = function() return new_lock(true) end, methods = lock_methods,
                 client_gone = lock_gone}

  -- ---- semaphores ------------------------------------------------------------
  local function new_semaphore(bounded)
    return function(value)
      if value == nil then value = 1 end
      if math.type(value) ~= "integer" or value < 0 then
        fail("task", "Semaphore: the value must be a non-negative integer")
      end
      return {value = value, bound = bounded and value or nil, waiters = {}}
    end
  end
  local semaphore_methods = {
    acquire = function(s, block, timeout)
      timeout = patience(block, timeout, "acquire")
      if not await(s.waiters, function() return s.value > 0 end, timeout) then return false end
      s.value = s.value - 1
      return true
    end,
    release = function(s, n)
      if n == nil then n = 1 end
      if math.type(n) ~= "integer" or n < 1 then fail("task", "release: n must be a positive integer") end
      if s.bound and s.value + n > s.bound then
        fail("value", "release: a BoundedSemaphore released too many times")
      end
      s.value = s.value + n
      wake(s.waiters, n)
    end,
    get_value = function(s) return s.value end,
  }
  types.Semaphore = {new = new_semaphore(false), methods = semaphore_methods}
  types.BoundedSemaphore = {new = new_semaphore(true), methods = semaphore_methods}

  -- ---- Event -----------------------------------------------------------------
  types.Event = {
    new = function() return {flag = false, waiters = {}} end,
    methods = {
      set = function(e) e.flag = true; wake(e.waiters) end,
      clear = function(e) e.flag = false end,
      is_set = function(e) return e.flag end,
      wait = function(e, timeout)
        check_timeout(timeout, "wait")
        return await(e.waiters, function() return e.flag end, timeout)
      end,
    },
  }

  -- ---- Condition ---------------------------------------------------------------
  local function owns(c)
    local l = c.lock
    if l.count == 0 or l.owner ~= S.client() then
      fail("closed", "the condition's lock is not held by this process")
    end
  end
  types.Condition = {
    -- Condition([lock]): the id of a managed Lock or RLock, or its own RLock.
    new = function(lock_id)
      local lock = lock_id ~= nil and (S.object(lock_id, "Lock") or S.object(lock_id, "RLock"))
      if lock_id ~= nil and not lock then fail("task", "Condition: lock must be a managed Lock or RLock") end
      return {lock = lock or new_lock(true), waiters = {}}
    end,
    methods = {
      acquire = function(c, block, timeout) return lock_acquire(c.lock, block, timeout) end,
      release = function(c) return lock_release(c.lock) end,
      wait = function(c, timeout)
        check_timeout(timeout, "wait")
        owns(c)
        local l, me = c.lock, S.client()
        local count = l.count
        l.count, l.owner = 0, nil
        wake(l.waiters, 1)
        local notified = wait(c.waiters, timeout)
        await(l.waiters, function() return l.count == 0 end)
        l.count, l.owner = count, me
        return notified
      end,
      notify = function(c, n)
        if n == nil then n = 1 end
        if math.type(n) ~= "integer" or n < 0 then fail("task", "notify: n must be a non-negative integer") end
        owns(c)
        wake(c.waiters, n)
      end,
      notify_all = function(c)
        owns(c)
        wake(c.waiters)
      end,
    },
    client_gone = function(c, client) lock_gone(c.lock, client) end,
  }

  -- ---- Barrier -------------------------------------------------------------------
  local function break_barrier(b)
    b.broken = true
    b.count = 0
    b.acting = nil
    wake(b.waiters)
  end
  -- A round: parties arrive (count), the last one completes it. With an
  -- action, the last one is answered with the action's bytes and runs it
  -- (acting: its client and round) before it tells release, which lets
  -- the round go; meanwhile the parties, and any newcomer, wait.
  types.Barrier = {
    new = function(parties, action, timeout)
      if math.type(parties) ~= "integer" or parties < 1 then
        fail("task", "Barrier: parties must be a positive integer")
      end
      if action ~= nil and type(action) ~= "string" then
        fail("task", "Barrier: an action arrives encoded")
      end
      check_timeout(timeout, "Barrier")
      return {parties = parties, action = action, timeout = timeout, count = 0, generation = 0,
              broken = false, waiters = {}, acting = nil}
    end,
    methods = {
      wait = function(b, timeout)
        timeout = check_timeout(timeout, "wait") or b.timeout
        local deadline = timeout and core.hrtime() + timeout
        -- A round whose action runs takes no newcomer until it is released.
        if not await(b.waiters, function() return not b.acting or b.broken end, timeout) then
          fail("broken_barrier", "wait: the barrier is busy with its action past the timeout")
        end
        if b.broken then fail("broken_barrier", "wait: the barrier is broken") end
        local index = b.count
        b.count = b.count + 1
        local generation = b.generation
        if b.count == b.parties then
          if b.action then
            b.acting = {client = S.client(), generation = generation}
            return index, b.action, generation
          end
          b.count = 0
          b.generation = b.generation + 1
          wake(b.waiters)
          return index
        end
        local left = deadline and math.max(0, deadline - core.hrtime())
        local passed = await(b.waiters, function() return b.generation ~= generation or b.broken end,
                             left)
        if b.generation ~= generation then return index end
        if not passed then
          break_barrier(b)
          fail("broken_barrier", "wait: the barrier broke (this wait timed out)")
        end
        fail("broken_barrier", "wait: the barrier broke while this party waited")
      end,
      -- From the party that ran the action: ok, the round goes; not ok
      -- (the action raised), the barrier breaks.
      release = function(b, generation, ok)
        local acting = b.acting
        if not acting or acting.generation ~= generation then
          fail("broken_barrier", "wait: the barrier broke while its action ran")
        end
        b.acting = nil
        if not ok then
          break_barrier(b)
          return
        end
        b.count = 0
        b.generation = b.generation + 1
        wake(b.waiters)
      end,
      reset = function(b)
        if b.count > 0 then break_barrier(b) end
        b.broken, b.count = false, 0
      end,
      abort = function(b) break_barrier(b) end,
      parties = function(b) return b.parties end,
      n_waiting = function(b) return (b.broken or b.acting) and 0 or b.count end,
      broken = function(b) return b.broken end,
    },
    -- A party that dies while it waits would never arrive, and one that
    -- dies running the action never releases the round: the barrier breaks.
    client_gone = function(b, client, list)
      if list == b.waiters or (b.acting and b.acting.client == client) then break_barrier(b) end
    end,
  }

  -- ---- Queue ---------------------------------------------------------------------
  local function new_queue(maxsize)
    if maxsize == nil then maxsize = 0 end
    if math.type(maxsize) ~= "integer" or maxsize < 0 then
      fail("task", "Queue: maxsize must be a non-negative integer")
    end
    return {items = {}, head = 1, tail = 0, maxsize = maxsize, getters = {}, putters = {},
            unfinished = 0, joiners = {}}
  end
  local function size(q) return q.tail - q.head + 1 end
  local queue_methods = {
    put = function(q, item, block, timeout)
      bytes(item, "put")
      timeout = patience(block, timeout, "put")
      if q.maxsize > 0 and not await(q.putters, function() return size(q) < q.maxsize end, timeout) then
        fail("full", "put: the queue is full")
      end
      q.tail = q.tail + 1
      q.items[q.tail] = item
      q.unfinished = q.unfinished + 1
      wake(q.getters, 1)
    end,
    get = function(q, block, timeout)
      timeout = patience(block, timeout, "get")
      if not await(q.getters, function() return size(q) > 0 end, timeout) then
        fail("empty", "get: the queue is empty")
      end
      local item = q.items[q.head]
      q.items[q.head] = nil
      q.head = q.head + 1
      wake(q.putters, 1)
      return item
    end,
    qsize = size,
    empty = function(q) return size(q) == 0 end,
    full = function(q) return q.maxsize > 0 and size(q) >= q.maxsize end,
    task_done = function(q)
      if q.unfinished <= 0 then fail("value", "task_done: called more times than items were put") end
      q.unfinished = q.unfinished - 1
      if q.unfinished == 0 then wake(q.joiners) end
    end,
    join = function(q)
      await(q.joiners, function() return q.unfinished == 0 end)
    end,
  }
  types.Queue = {new = new_queue, methods = queue_methods}
  types.JoinableQueue = {new = new_queue, methods = queue_methods}

  -- ---- dict --------------------------------------------------------------------
  -- In the order keys were first set, as Python's dicts.
  local function dict_set(d, k, v)
    if d.values[k] == nil then d.order[#d.order + 1] = k end
    d.values[k] = v
  end
  local function dict_delete(d, k)
    local v = d.values[k]
    if v == nil then return nil end
    d.values[k] = nil
    for i = #d.order, 1, -1 do
      if d.order[i] == k then table.remove(d.order, i); break end
    end
    return v
  end
  local function dict_update(d, t)
    if type(t) ~= "table" then fail("task", "update: a table expected") end
    for k, v in pairs(t) do key(k, "update"); bytes(v, "update") end
    for k, v in pairs(t) do dict_set(d, k, v) end
  end
  types.dict = {
    new = function(init)
      local d = {values = {}, order = {}}
      if init ~= nil then dict_update(d, init) end
      return d
    end,
    methods = {
      get = function(d, k) return d.values[key(k, "get")] end,
      set = function(d, k, v)
        key(k, "set")
        if v == nil then dict_delete(d, k) else dict_set(d, k, bytes(v, "set")) end
      end,
      pop = function(d, k) return dict_delete(d, key(k, "pop")) end,
      popitem = function(d)
        local k = d.order[#d.order]
        if k == nil then return nil end
        return k, dict_delete(d, k)
      end,
      setdefault = function(d, k, v)
        key(k, "setdefault")
        if d.values[k] == nil then dict_set(d, k, bytes(v, "setdefault")) end
        return d.values[k]
      end,
      keys = function(d) return table.move(d.order, 1, #d.order, 1, {}) end,
      values = function(d)
        local r = {}
        for i, k in ipairs(d.order) do r[i] = d.values[k] end
        return r
      end,
      items = function(d)
        local r = {}
        for i, k in ipairs(d.order) do r[i] = {k, d.values[k]} end
        return r
      end,
      len = function(d) return #d.order end,
      contains = function(d, k) return d.values[key(k, "contains")] ~= nil end,
      update = dict_update,
      clear = function(d) d.values, d.order = {}, {} end,
      copy = function(d)
        local r = {}
        for k, v in pairs(d.values) do r[k] = v end
        return r
      end,
      -- add(k, delta): adds to a number in one step; returns the sum. The
      -- only method that reads a stored value, as plain data.
      add = function(d, k, delta)
        key(k, "add")
        if type(delta) ~= "number" then fail("task", "add: a number expected") end
        local ok, old = true, 0
        if d.values[k] ~= nil then ok, old = pcall(core.loads, d.values[k], false, false) end
        if not ok or type(old) ~= "number" then fail("task", "add: the value is not a number") end
        local sum = old + delta
        dict_set(d, k, core.dumps(sum))
        return sum
      end,
    },
  }

  -- ---- list --------------------------------------------------------------------
  -- Indices count from 1; negative ones from the end (-1 is the last).
  local function position(l, i, fname, soft)
    if math.type(i) ~= "integer" then
      if soft then return nil end
      fail("task", fname .. ": an integer index expected")
    end
    if i < 0 then i = l.n + 1 + i end
    if i < 1 or i > l.n then
      if soft then return nil end
      fail("index", fname .. ": index out of range")
    end
    return i
  end
  -- Bounds of a slice, as string.sub reads them.
  local function span(l, i, j)
    i, j = i or 1, j or l.n
    if math.type(i) ~= "integer" or math.type(j) ~= "integer" then fail("task", "a slice takes integers") end
    if i < 0 then i = math.max(l.n + 1 + i, 1) elseif i == 0 then i = 1 end
    if j < 0 then j = l.n + 1 + j elseif j > l.n then j = l.n end
    return i, j
  end
  local function list_of(t, fname)
    if type(t) ~= "table" or math.type(t.n) ~= "integer" then fail("task", fname .. ": a list expected") end
    for i = 1, t.n do bytes(t[i], fname) end
    return t
  end
  local function find(l, v, from, to)
    for i = from or 1, to or l.n do
      if l.items[i] == v then return i end
    end
  end
  -- Plain values for sort: the stored bytes read as data.
  local function sort_keys(l)
    local plain, kind = {}, nil
    for i = 1, l.n do
      local ok, v = pcall(core.loads, l.items[i], false, false)
      local t = ok and type(v)
      if t ~= "number" and t ~= "string" or (kind and kind ~= t) then
        fail("task", "sort: the items must be all numbers or all strings")
      end
      kind, plain[i] = t, v
    end
    return plain
  end
  types.list = {
    new = function(init)
      local l = {items = {}, n = 0}
      if init ~= nil then
        list_of(init, "list")
        table.move(init, 1, init.n, 1, l.items)
        l.n = init.n
      end
      return l
    end,
    methods = {
      len = function(l) return l.n end,
      get = function(l, i, soft)
        i = position(l, i, "get", soft)
        return i and l.items[i]
      end,
      set = function(l, i, v) l.items[position(l, i, "set")] = bytes(v, "set") end,
      append = function(l, v)
        l.n = l.n + 1
        l.items[l.n] = bytes(v, "append")
      end,
      extend = function(l, t)
        list_of(t, "extend")
        table.move(t, 1, t.n, l.n + 1, l.items)
        l.n = l.n + t.n
      end,
      insert = function(l, i, v)
        bytes(v, "insert")
        if math.type(i) ~= "integer" then fail("task", "insert: an integer index expected") end
        if i < 0 then i = l.n + 1 + i end
        i = math.min(math.max(i, 1), l.n + 1)
        table.insert(l.items, i, v)
        l.n = l.n + 1
      end,
      pop = function(l, i)
        if l.n == 0 then fail("index", "pop: the list is empty") end
        i = position(l, i or l.n, "pop")
        local v = table.remove(l.items, i)
        l.n = l.n - 1
        return v
      end,
      remove = function(l, v)
        local i = find(l, bytes(v, "remove"))
        if not i then fail("value", "remove: the value is not in the list") end
        table.remove(l.items, i)
        l.n = l.n - 1
      end,
      index = function(l, v, i, j)
        i, j = span(l, i, j)
        local at = find(l, bytes(v, "index"), i, j)
        if not at then fail("value", "index: the value is not in the list") end
        return at
      end,
      count = function(l, v)
        bytes(v, "count")
        local n = 0
        for i = 1, l.n do if l.items[i] == v then n = n + 1 end end
        return n
      end,
      contains = function(l, v) return find(l, bytes(v, "contains")) ~= nil end,
      reverse = function(l)
        local t, n = l.items, l.n
        for i = 1, n // 2 do t[i], t[n + 1 - i] = t[n + 1 - i], t[i] end
      end,
      sort = function(l, reverse)
        local plain, order = sort_keys(l), {}
        for i = 1, l.n do order[i] = i end
        -- Stable, as Python's: equal items keep their order.
        table.sort(order, function(a, b)
          local x, y = plain[a], plain[b]
          if x == y then return a < b end
          if reverse then return x > y end
          return x < y
        end)
        local sorted = {}
        for i = 1, l.n do sorted[i] = l.items[order[i]] end
        l.items = sorted
      end,
      slice = function(l, i, j)
        i, j = span(l, i, j)
        local r = {n = math.max(j - i + 1, 0)}
        table.move(l.items, i, j, 1, r)
        return r
      end,
      -- set_slice(i, j, values): items i..j replaced by values (any count).
      set_slice = function(l, i, j, t)
        i, j = span(l, i, j)
        list_of(t, "set_slice")
        local items = table.move(l.items, 1, i - 1, 1, {})
        table.move(t, 1, t.n, i, items)
        table.move(l.items, math.max(j + 1, i), l.n, i + t.n, items)
        l.items, l.n = items, (i - 1) + t.n + (l.n - math.max(j, i - 1))
      end,
      clear = function(l) l.items, l.n = {}, 0 end,
      copy = function(l) return table.move(l.items, 1, l.n, 1, {n = l.n}) end,
    },
  }

  -- ---- Value and Array ---------------------------------------------------------
  local RANGES = {b = {-128, 127}, B = {0, 255}, h = {-32768, 32767}, H = {0, 65535},
                  i = {-2147483648, 2147483647}, I = {0, 4294967295}, l = {math.mininteger, math.maxinteger},
                  L = {0, math.maxinteger}, q = {math.mininteger, math.maxinteger},
                  Q = {0, math.maxinteger}}
  local function check_code(code, fname)
    if code ~= "f" and code ~= "d" and not RANGES[code] then
      fail("task", fname .. ": type code expected (b B h H i I l L q Q f d), got " .. tostring(code))
    end
    return code
  end
  local function item(code, v, fname)
    local range = RANGES[code]
    if range then
      local n = math.tointeger(v)
      if not n or n < range[1] or n > range[2] then
        fail("value", ("%s: %s does not fit type code %s"):format(fname, tostring(v), code))
      end
      return n
    end
    if type(v) ~= "number" then fail("value", fname .. ": a number expected, got " .. type(v)) end
    return v + 0.0
  end
  types.Value = {
    new = function(code, v)
      check_code(code, "Value")
      return {code = code, value = item(code, v == nil and 0 or v, "Value")}
    end,
    methods = {
      get = function(v) return v.value end,
      set = function(v, x) v.value = item(v.code, x, "set") end,
      typecode = function(v) return v.code end,
    },
  }
  types.Array = {
    new = function(code, init)
      check_code(code, "Array")
      local a = {code = code, items = {}, n = 0}
      if math.type(init) == "integer" and init >= 0 then
        for i = 1, init do a.items[i] = item(code, 0, "Array") end
        a.n = init
      elseif type(init) == "table" then
        local n = math.type(init.n) == "integer" and init.n or #init
        for i = 1, n do a.items[i] = item(code, init[i], "Array") end
        a.n = n
      else
        fail("task", "Array: a size or a table of numbers expected")
      end
      return a
    end,
    methods = {
      len = function(a) return a.n end,
      get = function(a, i, soft)
        i = position(a, i, "get", soft)
        return i and a.items[i]
      end,
      set = function(a, i, v) a.items[position(a, i, "set")] = item(a.code, v, "set") end,
      tolist = function(a) return table.move(a.items, 1, a.n, 1, {n = a.n}) end,
      slice = function(a, i, j)
        i, j = span(a, i, j)
        local r = {n = math.max(j - i + 1, 0)}
        table.move(a.items, i, j, 1, r)
        return r
      end,
      typecode = function(a) return a.code end,
    },
  }

  -- ---- Namespace -----------------------------------------------------------------
  types.Namespace = {
    new = function(init)
      local ns = {}
      if init ~= nil then
        if type(init) ~= "table" then fail("task", "Namespace: a table expected") end
        for k, v in pairs(init) do
          if type(k) ~= "string" then fail("task", "Namespace: attribute names are strings") end
          ns[k] = bytes(v, "Namespace")
        end
      end
      return {attributes = ns}
    end,
    methods = {
      get = function(ns, name) return ns.attributes[name] end,
      set = function(ns, name, v)
        if type(name) ~= "string" then fail("task", "an attribute name is a string") end
        ns.attributes[name] = v ~= nil and bytes(v, "set") or nil
      end,
      items = function(ns)
        local r = {}
        for k, v in pairs(ns.attributes) do r[k] = v end
        return r
      end,
    },
  }

  return types
end

-- A type given to register: constructor(...) makes the object, and every
-- public method (a function under a name not starting with "_", the
-- object's own or its metatable's __index) is served as Python serves a
-- registered class's. Arguments arrive as plain data; results go back in
-- the value format.
function managed.user_type(S, constructor)
  local methods = setmetatable({}, {__index = function(_, name)
    if type(name) ~= "string" or name:sub(1, 1) == "_" then return nil end
    return function(object, ...)
      local f = object[name]
      if type(f) ~= "function" then S.fail("task", "no method " .. name) end
      return f(object, ...)
    end
  end})
  return {
    new = function(...)
      local object = constructor(...)
      if type(object) ~= "table" and type(object) ~= "userdata" then
        S.fail("task", "a registered constructor must return a table, got " .. type(object))
      end
      return object
    end,
    methods = methods,
    user = true,
  }
end

return managed

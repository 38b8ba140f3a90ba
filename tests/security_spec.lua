-- Security: the digest that proves keys, the Manager's socket (private
-- directory, key, plain-data requests), the resource tracker that removes
-- what a dead process left, random names, and what loads may run.
local describe, it, pending, assert, after_each, pcall = describe, it, pending, assert, after_each, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local shared = require "lmp.shared"
local helpers = require "helpers"
local lfs = require "lfs"

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end
local function unhex(s)
  return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

local function exists(path) return lfs.attributes(path) ~= nil end

-- Waits up to `seconds` for fn() to be true.
local function eventually(fn, seconds)
  local deadline = os.time() + (seconds or 5)
  repeat
    if fn() then return true end
    os.execute("sleep 0.05")
  until os.time() > deadline
  return fn()
end

local alive = helpers.alive

describe("SHA-256 and HMAC-SHA256", function()
  it("match the FIPS 180-4 examples", function()
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", hex(core.sha256("abc")))
    assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", hex(core.sha256("")))
    assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      hex(core.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")))
    assert.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
      hex(core.sha256(("a"):rep(1000000))))
  end)

  it("agree with sha256sum at every padding boundary", function()
    for _, n in ipairs({1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000}) do
      local data = ("lmp"):rep(n):sub(1, n)
      local path = os.tmpname()
      local f = assert(io.open(path, "wb"))
      f:write(data)
      f:close()
      local _, out = helpers.run("sha256sum " .. path)
      os.remove(path)
      assert.equal(out:match("^%x+"), hex(core.sha256(data)), n .. " bytes")
    end
  end)

  it("match the RFC 4231 test vectors", function()
    local cases = {
      {("\x0b"):rep(20), "Hi There",
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {"Jefe", "what do ya want for nothing?",
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {("\xaa"):rep(20), ("\xdd"):rep(50),
       "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
      {unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"), ("\xcd"):rep(50),
       "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
      {("\x0c"):rep(20), "Test With Truncation", "a3b6167473100ee06e0c796c2955552b"},
      {("\xaa"):rep(131), "Test Using Larger Than Block-Size Key - Hash Key First",
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      {("\xaa"):rep(131), "This is a test using a larger than block-size key and a larger "
         .. "than block-size data. The key needs to be hashed before being used by the HMAC "
         .. "algorithm.",
       "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
    }
    for i, case in ipairs(cases) do
      local mac = hex(core.hmac_sha256(case[1], case[2]))
      assert.equal(case[3], mac:sub(1, #case[3]), "test case " .. i)
    end
  end)

  it("random_bytes gives fresh bytes; compare_digest compares whole strings", function()
    local a, b = core.random_bytes(32), core.random_bytes(32)
    assert.equal(32, #a)
    assert.are_not.equal(a, b)
    assert.is_true(core.compare_digest(a, a .. ""))
    assert.is_false(core.compare_digest(a, b))
    assert.is_false(core.compare_digest(a, a:sub(1, 31)))
  end)
end)

-- A raw client, run in a pool worker (another process, while the main
-- process turns its loop and so serves): connects with luv, not lmp, sends
-- `bytes` once the server's greeting arrived, and returns all the server
-- sent until it closed, and the error that ended it if any.
local function raw_client(path, bytes)
  local uv = require "luv"
  local pipe, timer = uv.new_pipe(false), uv.new_timer()
  local got, err, sent = "", nil, false
  local function finish(e)
    err = err or e
    if not pipe:is_closing() then pipe:close() end
    if not timer:is_closing() then timer:close() end
  end
  timer:start(20000, 0, function() finish("timeout") end)
  pipe:connect(path, function(e)
    if e then return finish(e) end
    pipe:read_start(function(e2, chunk)
      if e2 then return finish(e2) end
      if not chunk then return finish() end
      got = got .. chunk
      if not sent and #got >= 40 then
        sent = true
        pipe:write(bytes)
      end
    end)
  end)
  uv.run()
  return got, err
end

-- A request as lmp frames it (8-byte length, 4-byte message length).
local function frame(value)
  local message = lmp.dumps(value)
  return string.pack("<I8<I4", #message + 4, #message) .. message
end

describe("Manager security", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("its socket is 0600 in a 0700 directory of a random name, whatever the umask", function()
    local m1 <close> = lmp.Manager()
    local m2 <close> = lmp.Manager()
    assert.equal("rwx------", lfs.attributes(m1.dir).permissions)
    assert.equal("rw-------", lfs.attributes(m1.path).permissions)
    assert.equal("socket", lfs.attributes(m1.path).mode)
    assert.matches("^/tmp/lmp%-%w%w%w%w%w%w$", m1.dir)
    assert.are_not.equal(m1.dir, m2.dir)
    local status, out = helpers.run("umask 000; lua5.4 -e '"
      .. "local m = require(\"lmp\").Manager(); local lfs = require \"lfs\"; "
      .. "print(lfs.attributes(m.dir).permissions, lfs.attributes(m.path).permissions)'")
    assert.equal(0, status)
    assert.equal("rwx------\trw-------\n", out)
  end)

  it("refuses a connection that does not prove the key: garbage, a request, a wrong key", function()
    local m <close> = lmp.Manager()
    local d = m:dict({x = 1})
    local pool <close> = lmp.Pool(1)
    -- Garbage in place of the answer.
    local got, err = pool:apply(raw_client, {m.path, ("\0garbage"):rep(4)})
    assert.is_nil(err ~= "timeout" and nil or err)
    assert.equal("LMPAUTH1", got:sub(1, 8))
    assert.equal(40, #got:sub(1, 40))
    assert.equal("FAILURE!", got:sub(41, 48))
    -- A well-formed request with no handshake: never read as a request.
    got, err = pool:apply(raw_client, {m.path, frame({id = d._id, op = "set",
                                                      args = {n = 2, "x", lmp.dumps("forged")}})})
    assert.are_not.equal("timeout", err)
    assert.equal("LMPAUTH1", got:sub(1, 8))
    assert.equal(1, d:get("x"))
    assert.equal(1, d:len())
    -- lmp's own client with the wrong key.
    local ok, message = pool:apply(function(path)
      local fd, why = require("lmp.core").connect_socket("unix", path, "not the key")
      return fd ~= nil, why
    end, {m.path})
    assert.is_false(ok)
    assert.equal("authentication failed: the server refused this key", message)
    -- A proxy whose key is wrong is refused the same way.
    local bad = setmetatable({_typeid = d._typeid, _address = d._address, _id = d._id,
                              _authkey = "wrong"},
                             getmetatable(d))
    local ok2, err2 = pcall(pool.apply, pool, function(p) return p:get("x") end, {bad})
    assert.is_false(ok2)
    assert.matches("authentication failed", tostring(err2))
    -- And with the key, a worker gets in.
    assert.equal(1, pool:apply(function(p) return p:get("x") end, {d}))
  end)

  it("a key given by the user is the one proxies prove", function()
    local m <close> = lmp.Manager{authkey = "a key the user chose"}
    local d = m:dict()
    local pool <close> = lmp.Pool(1)
    pool:apply(function(p) p:set("k", "v") end, {d})
    assert.equal("v", d:get("k"))
    local fd = pool:apply(function(path)
      local c = require("lmp.core")
      local fd = c.connect_socket("unix", path, "a key the user chose")
      if fd then c.fd_close(fd) end
      return fd ~= nil
    end, {m.path})
    assert.is_true(fd)
    assert.has_error(function() lmp.Manager{authkey = ""} end)
    assert.has_error(function() lmp.Manager{authkey = 5} end)
  end)

  it("a client refuses a server that does not know the key", function()
    local dir = assert(core.private_dir())
    local path = dir .. "/fake"
    local pool <close> = lmp.Pool(1)
    -- A server that welcomes anyone and answers challenges with zeros.
    local r = pool:apply_async(function(p)
      local uv = require "luv"
      local server = uv.new_pipe(false)
      assert(server:bind(p))
      local seen = 0
      server:listen(1, function()
        local c = uv.new_pipe(false)
        server:accept(c)
        c:write("LMPAUTH1" .. ("\1"):rep(32))
        c:read_start(function(_, chunk)
          if not chunk then c:close(); server:close(); return end
          seen = seen + #chunk
          if seen == 32 then c:write("WELCOME!") elseif seen == 64 then c:write(("\0"):rep(32)) end
        end)
      end)
      uv.run()
      return seen
    end, {path})
    assert.is_true(eventually(function() return exists(path) end))
    local fd, why = core.connect_socket("unix", path, "the key")
    assert.is_nil(fd)
    assert.equal("authentication failed: the server does not know this key", why)
    assert.equal(64, r:get(20))
    os.remove(path)
    os.remove(dir)
  end)

  it("a manager client facing a Unix socket that accepts and says nothing gives up after handshake_timeout",
     function()
    local dir = assert(core.private_dir())
    local path = dir .. "/silent"
    -- Another process accepts every connection and never writes a byte.
    local server = lmp.Process{target = function(at)
      local c = require "lmp.core"
      local sock = assert(c.listen_socket("unix", at))
      local held = {}
      while true do
        local fd = c.accept_socket(sock)
        if fd then held[#held + 1] = fd else require("lmp").sleep(0.02) end
      end
    end, args = {path}}
    server:start()
    assert.is_true(eventually(function() return exists(path) end))
    -- The client runs in a process of its own under a hard limit, so that
    -- a client that waits for ever fails this test rather than hanging it.
    local status, out, err = helpers.run_lua(([[
      local lmp = require "lmp"
      local t0 = require("lmp.core").hrtime()
      local m = lmp.BaseManager{address = %q, authkey = "k", handshake_timeout = 0.5}
      local ok, e = pcall(m.connect, m)
      print(ok, type(e) == "table" and e.kind, require("lmp.core").hrtime() - t0 < 20)
      print(tostring(e))
    ]]):format(path), "timeout 60 lua5.4")
    server:kill()
    server:join()
    os.remove(path)
    os.remove(dir)
    assert.equal(0, status, err)
    -- Kind "auth", as lmp.connection.Client says of a silent server.
    assert.matches("^false\tauth\ttrue\n", out)
    assert.matches("cannot reach the manager at .*silent: the server said nothing within the handshake.s time limit", out)
  end)

  it("a connection the server has no memory for is closed, and the next ones are served", function()
    if os.getenv("LMP_SANITIZED") then return end -- the sanitizer owns calloc there
    local status, out, err = helpers.make(helpers.build .. "/test/no_client_memory.so")
    assert.equal(0, status, out .. err)
    -- A server whose first four client records cannot be allocated; it
    -- ends when an authenticated client goes. The hard limit turns a
    -- server that stopped accepting into a failure rather than a hang.
    -- It sleeps before it serves, so that the first three connections
    -- wait together: the second arrives while the first one's refusal
    -- still closes, and is taken when that is done.
    local script = helpers.write_script([[
      local core = require "lmp.core"
      local dir = assert(core.private_dir())
      local path = dir .. "/server"
      local srv = core.listen(path, function(request) return request end, "key", function()
        os.remove(path)
        os.remove(dir)
        print("served")
        os.exit(0)
      end)
      srv:keep_loop_alive()
      print(path)
      io.stdout:flush()
      os.execute("sleep 0.5")
      while true do core.run_once(true) end
    ]])
    local server = io.popen(("LD_PRELOAD=%s/test/no_client_memory.so LMP_NO_CLIENT_MEMORY=4 timeout 60 lua5.4 %s")
      :format(helpers.build, script))
    local path = server:read("l")
    local answers = {}
    -- Three connections at once (no handshake: connect returns at once),
    -- then one at a time: each of the first four must see its end, not
    -- wait; the fifth is served.
    local waiting = {}
    for i = 1, 3 do waiting[i] = core.connection(assert(core.connect_socket("unix", path))) end
    for i = 1, 3 do
      answers[i] = waiting[i]:poll(10) and not pcall(waiting[i].recv_bytes, waiting[i]) and "closed"
      waiting[i]:close()
    end
    for i = 4, 5 do
      local fd, why = core.connect_socket("unix", path, "key", 5)
      answers[i] = fd and "welcome" or why
      if fd then core.fd_close(fd) end
    end
    local rest = server:read("a")
    local _, _, code = server:close()
    os.remove(script)
    assert.same({"closed", "closed", "closed", "the server closed the connection before its challenge",
                 "welcome"}, answers)
    assert.equal("served\n", rest)
    assert.equal(0, code)
  end)

  it("the forkserver forks only for a request of one descriptor; anything else is refused and closed", function()
    -- A peer in python3 holds the forkserver's socket, as the process that
    -- started it does, and sends requests lmp never sends: no descriptor,
    -- two, forty, a wrong byte. Each must be answered -EINVAL with no
    -- worker made and no descriptor kept; one descriptor makes a worker.
    local script = helpers.write_script([==[
import os, socket, struct, subprocess, sys, time
exe = sys.argv[1]
ours, theirs = socket.socketpair()
server = subprocess.Popen([exe, "--lmp-worker", str(os.getpid()), "forkserver"],
                          preexec_fn=lambda: os.dup2(theirs.fileno(), 3), close_fds=False)
theirs.close()

def fds_of(pid):
    return len(os.listdir("/proc/%d/fd" % pid))

def ask(byte, fds):
    socket.send_fds(ours, [byte], fds)
    got = b""
    while len(got) < 4:
        chunk = ours.recv(4 - len(got))
        if not chunk:
            return "gone"
        got += chunk
    return struct.unpack("=i", got)[0]

def pipes(n):
    ends = []
    for _ in range(n):
        r, w = os.pipe()
        ends += [r, w]
    return ends[:n]

time.sleep(0.2)
held = fds_of(server.pid)
for name, byte, n in [("none", b"F", 0), ("two", b"F", 2), ("forty", b"F", 40),
                      ("wrong byte", b"X", 1)]:
    ends = pipes(n)
    answer = ask(byte, ends)
    for fd in ends:
        os.close(fd)
    print(name, answer, fds_of(server.pid) - held)
# One descriptor, as lmp sends: a worker on it, our child.
channel, worker_end = socket.socketpair()
answer = ask(b"F", [worker_end.fileno()])
worker_end.close()
print("one", answer > 0, fds_of(server.pid) - held)
channel.close()
if answer > 0:
    os.waitpid(answer, 0)
ours.close()
print("exit", server.wait())
]==])
    local status, out, err = helpers.run(("env -u LD_PRELOAD timeout -s KILL 60 python3 %s %s/bin/lmp-worker")
      :format(script, helpers.build))
    os.remove(script)
    assert.equal(0, status, err)
    assert.equal("none -22 0\ntwo -22 0\nforty -22 0\nwrong byte -22 0\none True 0\nexit 0\n", out)
  end)

  it("a forged request runs nothing: no metamethod, no function, no module required", function()
    local marker = os.tmpname()
    os.remove(marker)
    -- A module the forged request names: requiring it would make the marker.
    local module_file = os.tmpname()
    local f = assert(io.open(module_file, "w"))
    f:write(("if ... == 'lmp_forged_module' then io.open(%q, 'w'):close() end return {}")
      :format(marker))
    f:close()
    local saved_path = package.path
    -- A template without "?" matches every name: other names load it too,
    -- and it marks only for its own.
    package.path = package.path .. ";" .. module_file
    local m <close> = lmp.Manager()
    local d = m:dict({x = 1})
    local pool <close> = lmp.Pool(1)
    local replies = pool:apply(function(proxy, mark, main_pid)
      local c = require "lmp.core"
      -- Leaves a mark if it runs in the main process (the forged tables
      -- are collected here in the worker too, which runs their __gc).
      local touch = function()
        if require("lmp.core").getpid() == main_pid then io.open(mark, "w"):close() end
      end
      local forged = {
        setmetatable({id = proxy._id, op = "get", args = {n = 1, "x"}},
                     {__index = touch, __gc = touch}),
        {id = proxy._id, op = "set", args = {n = 2, "x", touch}},
        {id = proxy._id, op = "set", args = {n = 2, setmetatable({}, {__eq = touch, __gc = touch}),
                                                 c.dumps(1)}},
        {id = proxy._id, op = "get", args = {n = 1, (function()
          package.loaded.lmp_forged_module = {}
          return package.loaded.lmp_forged_module
        end)()}},
        {id = proxy._id, op = "get", args = {n = 1, _G}},
      }
      local fd, why = c.connect_socket("unix", proxy._address, proxy._authkey)
      if not fd then error(why) end
      local conn = c.connection(fd)
      local out = {}
      for i, request in ipairs(forged) do
        conn:send(request)
        out[i] = conn:recv()
      end
      conn:close()
      return out
    end, {d, marker, core.getpid()})
    collectgarbage()
    collectgarbage()
    for i = 1, 5 do
      assert.is_false(replies[i][1], "request " .. i)
      assert.matches("^request refused: lmp.loads: ", replies[i][2])
    end
    assert.matches("a metatable", replies[1][2])
    assert.matches("a function", replies[2][2])
    assert.matches("a value sent by name", replies[4][2])
    assert.matches("the globals table", replies[5][2])
    package.path = saved_path
    assert.is_nil(package.loaded.lmp_forged_module)
    assert.is_false(exists(marker), "forged code ran")
    assert.equal(1, d:get("x"))
    -- The bait was real: requiring the module does make the marker.
    package.path = module_file
    require "lmp_forged_module"
    package.path = saved_path
    package.loaded.lmp_forged_module = nil
    os.remove(module_file)
    assert.is_true(exists(marker))
    os.remove(marker)
  end)

  it("stores values as bytes: functions and metatables round-trip through proxies", function()
    local m <close> = lmp.Manager()
    local d, l = m:dict(), m:list()
    local pool <close> = lmp.Pool(1)
    local point = setmetatable({x = 1}, {__index = {kind = "point"}})
    pool:apply(function(dp, lp, p)
      dp:set("f", function(a) return a * 2 end)
      dp:set("p", p)
      dp:update({n = 5})
      lp:append(p)
      lp:extend({1, 2})
      dp:add("n", 2)
    end, {d, l, point})
    assert.equal(42, d:get("f")(21))
    assert.equal("point", d:get("p").kind)
    assert.equal(7, d:get("n"))
    assert.equal("point", l:get(1).kind)
    assert.equal(3, l:len())
    assert.equal(2, l:pop())
    local ok, err = pcall(d.add, d, "p", 1)
    assert.is_false(ok)
    assert.matches("not a number", tostring(err))
  end)

  local root = helpers.run("(test $(id -u) -eq 0 && command -v useradd && command -v runuser)") == 0
  local another_user = "another local user cannot reach the socket, even under umask 000"
  if not root then
    pending(another_user .. " (skipped: creating a user needs root)")
  else
    it(another_user, function()
      -- The manager's process runs with umask 000: every file it makes
      -- would be open to all unless lmp sets the modes itself.
      local script = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write('local lmp = require "lmp" local m = lmp.Manager() '
        .. 'print(require("lmp.core").getpid(), m.path) io.stdout:flush() lmp.sleep(60)')
      f:close()
      local p = assert(io.popen("umask 000; exec lua5.4 " .. script))
      local pid, path = p:read("l"):match("^(%d+)%s+(%S+)")
      os.remove(script)
      local user = "lmpsec" .. core.getpid()
      local ok, err = pcall(function()
        assert.equal(0, (helpers.run("useradd -M -N -s /usr/sbin/nologin " .. user)))
        local client = "local uv = require 'luv'; local p = uv.new_pipe(false); "
          .. "p:connect(PATH, function(e) print(e or 'connected'); p:close() end); uv.run()"
        local status, out, stderr = helpers.run(("runuser -u %s -- lua5.4 -e \"%s\""):format(
          user, client:gsub("PATH", ("'%s'"):format(path))))
        assert.equal(0, status, stderr)
        assert.matches("^EACCES", out)
        status = helpers.run(("runuser -u %s -- ls %s"):format(user, path:match("^(.*)/")))
        assert.are_not.equal(0, status)
      end)
      helpers.run("userdel " .. user)
      os.execute("kill -KILL " .. pid)
      p:read("a")
      p:close()
      assert(ok, err)
    end)
  end

  -- A manager on TCP, and a process started from the shell that speaks
  -- to it with a raw socket (LuaSocket): what it sends, what it gets.
  local RAW_PEER = [[
    local socket = require "socket"
    local core = require "lmp.core"
    local lmp = require "lmp"
    local port, key, proxy_hex, mode, seed = ...
    port = math.tointeger(tonumber(port))
    local function unhex(s) return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)) end
    local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
    key = unhex(key)
    local d = lmp.loads(unhex(proxy_hex))
    local function connect()
      local c = assert(socket.tcp())
      c:settimeout(20)
      assert(c:connect("127.0.0.1", port))
      local greeting = assert(c:receive(40))
      assert(greeting:sub(1, 8) == "LMPAUTH1", "no greeting")
      return c, greeting:sub(9)
    end
    -- What the server sends until it closes (or "timeout").
    local function rest(c)
      local got, err, partial = c:receive("*a")
      c:close()
      return (got or partial) .. (err and err ~= "closed" and "<" .. err .. ">" or "")
    end
    local function frame(message, length)
      return string.pack("<I8<I4", length or #message + 4, #message) .. message
    end
    if mode == "silent" then
      -- Says nothing after the greeting: closed by the server after its
      -- handshake limit; a client with the key is served still.
      local c = connect()
      c:settimeout(30)
      local started = socket.gettime()
      local got, err, partial = c:receive("*a")
      c:close()
      print(err or "closed", got or partial, d:get("x"), socket.gettime() - started < 25)
      return
    end
    if mode == "refused" then
      -- Garbage, a wrong key's answer, a request with no handshake: each
      -- hears FAILURE! and the end, nothing more.
      local c = connect()
      c:send(("\0garbage"):rep(4))
      print("garbage", rest(c))
      local challenge
      c, challenge = connect()
      c:send(core.hmac_sha256("a wrong key", "lmp client" .. challenge))
      print("wrong key", rest(c))
      c = connect()
      c:send(frame(lmp.dumps({id = d._id, op = "set", args = {n = 2, "x", lmp.dumps("forged")}})))
      print("no handshake", rest(c))
      c, challenge = connect()
      c:send(core.hmac_sha256(key, "lmp client" .. challenge))
      print("the key", (c:receive(8)))
      c:close()
      return
    end
    -- mode "fuzz": with the key, then hostile frames; after each
    -- connection the manager must still answer a proxy.
    math.randomseed(math.tointeger(tonumber(seed)))
    local function authenticated()
      local c, challenge = connect()
      c:send(core.hmac_sha256(key, "lmp client" .. challenge))
      assert(c:receive(8) == "WELCOME!", "the key was refused")
      c:send(core.random_bytes(32))
      assert(#assert(c:receive(32)) == 32)
      return c
    end
    local function random_bytes(n)
      local t = {}
      for i = 1, n do t[i] = string.char(math.random(0, 255)) end
      return table.concat(t)
    end
    local request = lmp.dumps({id = d._id, op = "get", args = {n = 1, "x"}})
    local cases = {
      truncated = function(c) c:send(frame(request):sub(1, math.random(1, #request + 11))) end,
      huge_length = function(c) c:send(string.pack("<I8", (1 << 40) + math.random(1, 1000)) .. random_bytes(64)) end,
      large_length = function(c) c:send(string.pack("<I8", 1 << 39) .. random_bytes(64)) end,
      bad_message_length = function(c) c:send(frame(request, #request + 4):sub(1, 8)
        .. string.pack("<I4", #request + 100) .. request) end,
      invalid_value = function(c)
        for _ = 1, 20 do c:send(frame(random_bytes(math.random(1, 64)))) end
      end,
      mutated = function(c)
        for _ = 1, 20 do
          local bytes = frame(request)
          local at = math.random(9, #bytes)
          bytes = bytes:sub(1, at - 1) .. string.char(math.random(0, 255)) .. bytes:sub(at + 1)
          c:send(bytes)
        end
      end,
      random_stream = function(c) c:send(random_bytes(math.random(1, 4096))) end,
    }
    local names = {}
    for name in pairs(cases) do names[#names + 1] = name end
    table.sort(names)
    local replies = 0
    for round = 1, 3 do
      for _, name in ipairs(names) do
        local c = authenticated()
        cases[name](c)
        -- Replies, if any, are frames: read what comes for a moment. A
        -- header no lmp peer writes ends the connection.
        c:settimeout(name == "huge_length" and 20 or 0.05)
        local got, err, partial = c:receive("*a")
        assert(name ~= "huge_length" or err == "closed", "a garbage header left the connection open")
        got = got or partial
        replies = replies + ((got and #got > 0) and 1 or 0)
        c:close()
        assert(d:get("x") == 1, "the manager stopped answering after " .. name)
      end
    end
    print("survived", replies > 0)
  ]]

  local function hex_of(s) return hex(s) end

  it("on TCP, a raw peer from another process without the key gets FAILURE! and nothing else",
     function()
    local m <close> = lmp.Manager{address = {"127.0.0.1", 0}, authkey = "tcp secret"}
    local d = m:dict({x = 1})
    local status, out, err = helpers.run_lua(RAW_PEER, "timeout 60 lua5.4",
      ("%d %s %s refused"):format(m.address[2], hex_of("tcp secret"), hex_of(lmp.dumps(d))))
    assert.equal(0, status, err)
    assert.equal("garbage\tFAILURE!\nwrong key\tFAILURE!\nno handshake\tFAILURE!\nthe key\tWELCOME!\n",
                 out)
    assert.equal(1, d:get("x"))
    assert.equal(1, d:len())
  end)

  it("a peer that never answers the challenge is closed after handshake_timeout", function()
    local m <close> = lmp.Manager{address = {"127.0.0.1", 0}, authkey = "tcp secret",
                                  handshake_timeout = 0.5}
    local d = m:dict({x = 1})
    local status, out, err = helpers.run_lua(RAW_PEER, "timeout 60 lua5.4",
      ("%d %s %s silent"):format(m.address[2], hex_of("tcp secret"), hex_of(lmp.dumps(d))))
    assert.equal(0, status, err)
    assert.equal("closed\t\t1\ttrue\n", out)
    assert.has_error(function() lmp.Manager{handshake_timeout = 0} end)
  end)

  it("hostile frames from a peer with the key (truncated, huge lengths, invalid values) neither crash nor hang it",
     function()
    local m <close> = lmp.Manager{address = {"127.0.0.1", 0}, authkey = "tcp secret"}
    local d = m:dict({x = 1})
    local seed = os.time()
    local status, out, err = helpers.run_lua(RAW_PEER, "timeout 120 lua5.4",
      ("%d %s %s fuzz %d"):format(m.address[2], hex_of("tcp secret"), hex_of(lmp.dumps(d)), seed))
    assert.equal(0, status, ("seed %d: %s"):format(seed, err))
    -- Invalid values are answered (refused), not dropped in silence.
    assert.equal("survived\ttrue\n", out, "seed " .. seed)
    assert.is_true(helpers.alive(m.pid))
    assert.equal(1, d:get("x"))
  end)

  it("a reply the manager has no memory for is answered with an error of kind memory", function()
    local m <close> = lmp.Manager()
    local d = m:dict()
    d:set("a", ("a"):rep(40 << 20))
    d:set("b", ("b"):rep(40 << 20))
    collectgarbage()
    -- The manager's process may grow by 32 MB from now: the reply to
    -- copy() (80 MB, more than any block it keeps for reuse) cannot be
    -- made. The limit is set from outside, as an operator would.
    local vm = math.tointeger(helpers.read_file("/proc/" .. m.pid .. "/status"):match("VmSize:%s*(%d+)"))
    assert.equal(0, (helpers.run(("prlimit --pid %d --as=%d"):format(m.pid, (vm + 32 * 1024) * 1024))))
    local ok, e = pcall(d.copy, d)
    assert.is_false(ok)
    assert.equal("memory", e.kind, tostring(e))
    -- The manager goes on serving.
    d:set("small", 1)
    assert.equal(1, d:get("small"))
    assert.equal(3, d:len())
  end)
end)

-- Starts a Lua script in the background (our child, through popen); it
-- prints one line first. Returns the handle and that line's fields.
local function start_script(code)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  -- SIGINT has its default action in the script even where this suite
  -- runs with it ignored (a background job of a shell).
  local p = assert(io.popen("exec env --default-signal=INT lua5.4 " .. path .. " 2>&1"))
  local line = p:read("l") or ""
  os.remove(path)
  local fields = {}
  for word in line:gmatch("%S+") do fields[#fields + 1] = word end
  return p, fields, line
end

local MAKE_RESOURCES = [[
local lmp = require "lmp"
local core = require "lmp.core"
%s
local s = lmp.shared_memory.SharedMemory{create = true, size = 64 << 20}
local m = lmp.Manager()
local d = m:dict({a = 1})
print(core.getpid(), s.name, m.dir, m.path, core.tracker_pid())
io.stdout:flush()
%s
]]

describe("resource tracker", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  local function check_removed(fields)
    local _, name, dir, path, tracker = table.unpack(fields)
    assert.is_true(eventually(function()
      return not exists("/dev/shm/" .. name) and not exists(path) and not exists(dir)
    end), "left behind: " .. table.concat(fields, " "))
    assert.is_true(eventually(function() return not alive(tracker) end), "tracker still runs")
  end

  it("removes shared memory and the manager's socket of a creator killed by SIGKILL", function()
    local p, fields, line = start_script(MAKE_RESOURCES:format("", "while true do end"))
    assert.equal(5, #fields, line)
    assert.is_true(exists("/dev/shm/" .. fields[2]))
    assert.is_true(exists(fields[4]))
    -- The tracker is nobody's child here: not the script's, not ours.
    assert.is_false(helpers.children(tonumber(fields[1]))[1] == tonumber(fields[5]))
    os.execute("kill -KILL " .. fields[1])
    p:read("a")
    p:close()
    check_removed(fields)
  end)

  it("removes them when the script ends by Ctrl-C (SIGINT), with or without a pool", function()
    for _, setup in ipairs({"", "local pool = lmp.Pool(1)"}) do
      local p, fields, line = start_script(MAKE_RESOURCES:format(setup, "lmp.sleep(60)"))
      assert.equal(5, #fields, line)
      assert.is_true(exists(fields[4]))
      os.execute("kill -INT " .. fields[1])
      p:read("a")
      local _, _, status = p:close()
      assert.equal(130, status)
      check_removed(fields)
    end
  end)

  it("removes them when the script ends by os.exit", function()
    local p, fields, line = start_script(MAKE_RESOURCES:format("", "os.exit(3)"))
    assert.equal(5, #fields, line)
    p:read("a")
    local _, _, status = p:close()
    assert.equal(3, status)
    check_removed(fields)
  end)

  it("a tracker killed is replaced, and the new one removes what the old one held", function()
    local p, fields, line = start_script([[
      local lmp = require "lmp"
      local core = require "lmp.core"
      local first = lmp.shared_memory.SharedMemory{create = true, size = 4096}
      local old = core.tracker_pid()
      os.execute("kill -KILL " .. old)
      repeat
        local f = io.open("/proc/" .. old .. "/stat")
        local stat = f and f:read("a") or ""
        if f then f:close() end
      until not stat:match("^%d+ %b() [^Z]")
      local m = lmp.Manager()
      print(core.getpid(), first.name, m.dir, m.path, core.tracker_pid(), old)
      io.stdout:flush()
      while true do end
    ]])
    assert.equal(6, #fields, line)
    assert.are_not.equal(fields[5], fields[6])
    assert.is_true(exists("/dev/shm/" .. fields[2]))
    os.execute("kill -KILL " .. fields[1])
    p:read("a")
    p:close()
    check_removed(fields)
  end)

  it("is not a child of ours, and forgets what was removed by its owner", function()
    local s = lmp.shared_memory.SharedMemory{create = true, size = 16}
    local tracker = core.tracker_pid()
    assert.is_number(tracker)
    for _, child in ipairs(helpers.children()) do assert.are_not.equal(tracker, child) end
    s:unlink()
    assert.is_false(exists("/dev/shm/" .. s.name))
  end)
end)

describe("generated names", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("names made before us in /dev/shm and /tmp do not break creation", function()
    local pid = core.getpid()
    local taken = {}
    for i = 1, 3 do
      taken[#taken + 1] = ("/dev/shm/lmp_%d_%d"):format(pid, i)
      taken[#taken + 1] = ("/tmp/lmp-manager-%d-%d.sock"):format(pid, i)
    end
    for _, path in ipairs(taken) do io.open(path, "w"):close() end
    local ok, err = pcall(function()
      local s = lmp.shared_memory.SharedMemory{create = true, size = 16}
      s:write(0, "ok")
      assert.equal("ok", s:read(0, 2))
      s:unlink()
      local m <close> = lmp.Manager()
      assert.equal(2, m:dict({a = 1, b = 2}):len())
    end)
    for _, path in ipairs(taken) do os.remove(path) end
    assert(ok, err)
  end)

  it("a random name that exists is passed over for another", function()
    local taken, calls = {}, 0
    for i = 1, 3 do
      taken[i] = ("/lmp_taken_%d_%d"):format(core.getpid(), i)
      io.open("/dev/shm" .. taken[i], "w"):close()
    end
    local random_name = shared.random_name
    shared.random_name = function()
      calls = calls + 1
      return taken[calls] or random_name()
    end
    local ok, s = pcall(lmp.shared_memory.SharedMemory, {create = true, size = 16})
    shared.random_name = random_name
    for i = 1, 3 do os.remove("/dev/shm" .. taken[i]) end
    assert(ok, s)
    assert.equal(4, calls)
    assert.matches("^lmp_%x+$", s.name)
    s:unlink()
    -- A name the user chose is not replaced: it exists, so creating fails.
    io.open("/dev/shm" .. taken[1], "w"):close()
    local created, err = pcall(lmp.shared_memory.SharedMemory,
                               {name = taken[1], create = true, size = 16})
    os.remove("/dev/shm" .. taken[1])
    assert.is_false(created)
    assert.matches("File exists", tostring(err))
  end)
end)

describe("loads with {functions = false}", function()
  it("requires nothing: a module named in the data is not loaded", function()
    local flag = "lmp_probe_loaded_" .. core.getpid()
    local module_file = os.tmpname()
    local f = assert(io.open(module_file, "w"))
    f:write(("_G[%q] = true return {}"):format(flag))
    f:close()
    package.loaded.lmp_probe_module = {}
    local bytes = lmp.dumps({package.loaded.lmp_probe_module})
    package.loaded.lmp_probe_module = nil
    local saved_path = package.path
    package.path = module_file .. ";" .. package.path
    local ok, err = pcall(lmp.loads, bytes, {functions = false})
    assert.is_false(ok)
    assert.matches("a value sent by name", err)
    assert.is_nil(package.loaded.lmp_probe_module)
    assert.is_nil(_G[flag])
    -- The default does require it: the data above does name a module.
    lmp.loads(bytes)
    package.path = saved_path
    os.remove(module_file)
    assert.is_true(_G[flag])
    package.loaded.lmp_probe_module, _G[flag] = nil, nil
  end)

  it("sets no metatable holding a function, and calls no constructor", function()
    local ran = 0
    local original = setmetatable({}, {__gc = function() ran = ran + 1 end})
    local with_gc = lmp.dumps(original)
    assert.has_error(function() lmp.loads(with_gc, {functions = false}) end)
    collectgarbage()
    collectgarbage()
    assert.equal(0, ran)
    original = nil
    collectgarbage()
    collectgarbage()
    assert.equal(1, ran) -- the one that was set, only
    -- A metatable of plain data is data: nothing in it can be called.
    local back = lmp.loads(lmp.dumps(setmetatable({}, {__index = {k = 1}, __name = "T"})),
                           {functions = false})
    local function no_function(t, seen)
      seen = seen or {}
      if seen[t] then return true end
      seen[t] = true
      for k, v in pairs(t) do
        if type(k) == "function" or type(v) == "function" then return false end
        if type(v) == "table" and not no_function(v, seen) then return false end
      end
      local mt = getmetatable(t)
      return mt == nil or no_function(mt, seen)
    end
    assert.equal(1, back.k)
    assert.is_true(no_function(back))
    -- The globals table is full of functions: refused.
    assert.has_error(function()
      lmp.loads(lmp.dumps({function() return print end}), {functions = false})
    end)
    -- A registered constructor is code: refused, not called.
    local called = false
    local u = io.tmpfile()
    u:close()
    debug.setmetatable(u, {__lmp_serialize = function() return "lmp_probe_ctor", 1 end})
    lmp.register("lmp_probe_ctor", function() called = true; return {} end)
    local bytes = lmp.dumps(u)
    local ok, err = pcall(lmp.loads, bytes, {functions = false})
    assert.is_false(ok)
    assert.matches("registered constructor", err)
    assert.is_false(called)
    -- metatables = false refuses even a metatable of data.
    ok, err = pcall(lmp.loads, lmp.dumps(setmetatable({}, {__name = "T"})),
                    {functions = false, metatables = false})
    assert.is_false(ok)
    assert.matches("a metatable at byte %d+, and metatables are refused", err)
  end)
end)

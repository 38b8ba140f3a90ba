-- lmp.connection.Listener and Client (docs/reference.md, "Processes"):
-- over Unix sockets and TCP on 127.0.0.1, with the key handshake; raw
-- peers in python3 that send garbage, a wrong answer or nothing.
local describe, it, assert, after_each, pcall = describe, it, assert, after_each, pcall
local _ENV = _G
local lmp = require "lmp"
local core = require "lmp.core"
local helpers = require "helpers"

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return os.rename(path, path) ~= nil
end

-- A raw peer in python3 that connects to the Listener, runs `act` (Python
-- with `s`, the socket), then prints the hex of all it received until the
-- listener closed the connection. Started in the background: read it
-- with :read("a") once the listener is done with it.
local function raw_peer(address, act)
  local connect = type(address) == "string"
    and ("s = socket.socket(socket.AF_UNIX); s.connect(%q)"):format(address)
    or ("s = socket.create_connection((%q, %d))"):format(address[1], address[2])
  local script = table.concat({
    "import socket, sys, time",
    connect,
    "s.settimeout(30)",
    act,
    'got = b""',
    "while True:",
    "    try:",
    "        b = s.recv(65536)",
    "    except OSError:",
    "        break",
    "    if not b: break",
    "    got += b",
    "print(got.hex())",
  }, "\n")
  return assert(io.popen("timeout -s KILL 60 python3 -c '" .. script .. "'", "r"))
end

describe("Listener and Client", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  for _, family in ipairs{"unix", "tcp"} do
    it("a Client in another process, with the key, talks with the Listener (" .. family .. ")", function()
      local l = lmp.connection.Listener{family = family, authkey = "secret key"}
      assert.equal(family, l.family)
      local p = lmp.Process{target = function(address)
        local c = lmp.connection.Client(address, {authkey = "secret key"})
        c:send({hello = "from the client"})
        c:send_bytes(c:recv_bytes() .. "!")
        c:close()
      end, args = {l.address}}
      p:start()
      local conn = l:accept(60)
      assert.same({hello = "from the client"}, conn:recv())
      conn:send_bytes("bytes")
      assert.equal("bytes!", conn:recv_bytes())
      if family == "tcp" then
        assert.equal("127.0.0.1", l.last_accepted[1])
        assert.equal("integer", math.type(l.last_accepted[2]))
      end
      p:join()
      assert.equal(0, p.exitcode)
      conn:close()
      local path = l.address
      l:close()
      if family == "unix" then assert.is_false(exists(path)) end -- removed, with its directory
      l:close()
    end)
  end

  it("a Client with the wrong key raises kind auth; accept raises kind auth and goes on listening", function()
    local l <close> = lmp.connection.Listener{address = {"127.0.0.1", 0}, authkey = "right"}
    local p = lmp.Process{target = function(address)
      local ok, err = pcall(lmp.connection.Client, address, {authkey = "wrong"})
      assert(not ok and err.kind == "auth", tostring(err))
      local c = lmp.connection.Client(address, {authkey = "right"})
      c:send("second peer")
      c:close()
    end, args = {l.address}}
    p:start()
    local ok, err = pcall(l.accept, l, 60)
    assert.is_false(ok)
    assert.equal("auth", err.kind)
    local conn = l:accept(60)
    assert.equal("second peer", conn:recv())
    p:join()
    assert.equal(0, p.exitcode)
    conn:close()
  end)

  it("raw peers without the key get the challenge and a refusal, nothing else", function()
    local l <close> = lmp.connection.Listener{authkey = "k", handshake_timeout = 0.5}
    local greeting = ("LMPAUTH1"):gsub(".", function(c) return ("%02x"):format(c:byte()) end)
    local failure = ("FAILURE!"):gsub(".", function(c) return ("%02x"):format(c:byte()) end)
    local peers = {
      -- a wrong answer: 32 bytes that are not the HMAC
      {"s.recv(40); s.sendall(b\"x\" * 32)", "^" .. failure .. "\n$"},
      -- garbage, then a frame of the value format that must never be decoded
      {"s.sendall(bytes(range(256)) * 64)", "^" .. greeting .. ("%x"):rep(64) .. failure .. "\n$"},
      -- nothing at all: the handshake's time limit ends it
      {"time.sleep(3)", ""},
      -- gone at once
      {"s.close(); sys.exit(0)", nil},
    }
    for _, peer in ipairs(peers) do
      local proc = raw_peer(l.address, peer[1])
      local t0 = core.hrtime()
      local ok, err = pcall(l.accept, l, 60)
      assert.is_false(ok)
      assert.equal("auth", err.kind)
      assert.is_true(core.hrtime() - t0 < 10) -- a silent peer does not hold accept
      local out = proc:read("a")
      proc:close()
      -- The challenge (a tag and 32 random bytes), then the refusal.
      if peer[2] then assert.matches(peer[2], out) end
    end
    -- The listener still serves a peer with the key.
    local p = lmp.Process{target = function(address)
      lmp.connection.Client(address, {authkey = "k"}):send("fine")
    end, args = {l.address}}
    p:start()
    assert.equal("fine", l:accept(60):recv())
    p:join()
  end)

  it("a Client facing a server that never speaks gives up after handshake_timeout", function()
    -- A listener without a key says nothing, and nobody accepts yet: the
    -- system completes the connection, no challenge ever comes.
    local l <close> = lmp.connection.Listener{address = {"127.0.0.1", 0}}
    local port = l.address[2]
    local t0 = core.hrtime()
    local ok, err = pcall(lmp.connection.Client, {"127.0.0.1", port}, {authkey = "k", handshake_timeout = 0.3})
    assert.is_false(ok)
    assert.equal("auth", err.kind)
    assert.is_true(core.hrtime() - t0 < 10)
    l:accept(5):close()
  end)

  it("a Client on a Unix socket gives up after handshake_timeout too: a silent server, a full backlog", function()
    -- Nobody accepts: the first connections wait in the listener's backlog
    -- (the system completes them, no challenge ever comes); once the
    -- backlog is full, connecting itself waits.
    local l <close> = lmp.connection.Listener{}
    local t0 = core.hrtime()
    local ok, err = pcall(lmp.connection.Client, l.address, {authkey = "k", handshake_timeout = 0.3})
    assert.is_false(ok)
    assert.equal("auth", err.kind)
    assert.matches("said nothing within the handshake's time limit", err.message)
    assert.is_true(core.hrtime() - t0 < 10)
    local held, refused = {}, nil
    for _ = 1, 200 do
      local got, e = pcall(lmp.connection.Client, l.address, {handshake_timeout = 0.3})
      if not got then refused = e break end
      held[#held + 1] = e
    end
    for _, conn in ipairs(held) do conn:close() end
    assert.is_table(refused)
    assert.equal("os", refused.kind)
    assert.matches("cannot connect: Connection timed out", refused.message)
    assert.is_true(#held >= 1)
  end)

  it("without an authkey, no handshake: values go at once", function()
    local l <close> = lmp.connection.Listener{}
    local c = lmp.connection.Client(l.address)
    local s = l:accept(5)
    c:send({1, 2, 3})
    assert.same({1, 2, 3}, s:recv())
    s:close(); c:close()
  end)

  it("accept times out with kind timeout; wait sees a Listener with a peer", function()
    local l <close> = lmp.connection.Listener{address = {"127.0.0.1", 0}}
    local ok, err = pcall(l.accept, l, 0.1)
    assert.equal("timeout", err.kind)
    assert.same({}, lmp.connection.wait({l}, 0.05))
    local c = lmp.connection.Client(l.address)
    assert.same({l}, lmp.connection.wait({l}, 10))
    l:accept():close(); c:close()
  end)

  it("misuse and nothing listening raise", function()
    assert.error_matches(function() lmp.connection.Listener{family = "udp"} end, "bad argument #1 to 'Listener'")
    assert.error_matches(function() lmp.connection.Listener{adress = "x"} end, "did you mean 'address'")
    assert.error_matches(function() lmp.connection.Listener{address = 5} end, "bad argument #1 to 'Listener'")
    assert.error_matches(function() lmp.connection.Listener{authkey = ""} end, "authkey")
    local ok, err = pcall(lmp.connection.Client, "/nonexistent/lmp-socket")
    assert.is_false(ok)
    assert.equal("os", err.kind)
  end)
end)

-- lmp.connection.Listener and Client: connections between processes that
-- did not start each other, over a Unix socket or TCP, as Python's
-- multiprocessing.connection. With an authkey both sides prove they hold
-- it (an HMAC challenge each way, runtime/listener.c) before anything else
-- is read: a peer without it gets nothing, and nothing it sent reaches the
-- value decoder. What an accepted connection carries is framed as a
-- Pipe's (send, recv, send_bytes, recv_bytes).
local core = require "lmp.core"
local loop = require "lmp.loop"
local errors = require "lmp.errors"

local listener = {}

local Listener = {}
Listener.__index = Listener
Listener.__name = "lmp.Listener"
Listener.__lmp_nosend = "a Listener belongs to the process that made it"
listener.Listener = Listener

local HANDSHAKE_SECONDS = 20

local function family_of(address, family, n, fname)
  if family ~= nil and family ~= "unix" and family ~= "tcp" then
    errors.argument(n, fname, "family must be \"unix\" or \"tcp\", got " .. tostring(family))
  end
  if address == nil then return family or "unix" end
  local implied = type(address) == "string" and "unix" or type(address) == "table" and "tcp"
  if not implied then
    errors.argument(n, fname, "address must be a path (unix) or {host, port} (tcp), got "
      .. type(address))
  end
  if family and family ~= implied then
    errors.argument(n, fname, ("family %q does not match the address (a %s address)")
      :format(family, implied))
  end
  if implied == "tcp" and (type(address[1]) ~= "string" or math.type(address[2]) ~= "integer"
      or address[2] < 0 or address[2] > 65535) then
    errors.argument(n, fname, "a tcp address is {host, port}: a host name or number and a port 0-65535")
  end
  return implied
end

local function check_key(key, n, fname)
  if key ~= nil and (type(key) ~= "string" or key == "") then
    errors.argument(n, fname, "authkey must be a non-empty string")
  end
end

local function check_seconds(seconds, n, fname)
  errors.check_timeout(seconds, n, fname, true, "handshake_timeout")
  return seconds or HANDSHAKE_SECONDS
end

local function raise(message, kind)
  errors.raise(errors.new(kind or "os", message))
end

local LISTENER_OPTIONS = {"address", "family", "authkey", "handshake_timeout"}

-- lmp.connection.Listener{address =, family =, authkey =,
-- handshake_timeout =}: listens on a Unix path (a string address; none:
-- a fresh path in a private directory) or TCP ({host, port}; port 0: one
-- the system chooses, l.address says which).
function listener.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then errors.argument(1, "Listener", "options table expected, got " .. type(opts)) end
  errors.check_options(opts, LISTENER_OPTIONS, 1, "Listener")
  local family = family_of(opts.address, opts.family, 1, "Listener")
  check_key(opts.authkey, 1, "Listener")
  local seconds = check_seconds(opts.handshake_timeout, 1, "Listener")
  local address, dir = opts.address, nil
  if address == nil and family == "unix" then
    local why
    dir, why = core.private_dir()
    if not dir then raise(why) end
    address = dir .. "/listener"
  elseif address == nil then
    address = {"127.0.0.1", 0}
  end
  local sock, port, kind
  if family == "unix" then
    sock, port, kind = core.listen_socket("unix", address)
  else
    sock, port, kind = core.listen_socket("tcp", address[1], address[2])
  end
  if not sock then
    if dir then os.remove(dir) end
    raise(("Listener: %s (%s)"):format(port, family == "unix" and address
      or address[1] .. ":" .. address[2]), kind)
  end
  if family == "tcp" then address = {address[1], port} end
  return setmetatable({address = address, family = family, _socket = sock, _key = opts.authkey,
                       _seconds = seconds, _dir = dir, _path = family == "unix" and address,
                       _owner = core.getpid()},
                      Listener)
end

function Listener:fileno()
  if not self._socket then raise("the listener is closed", "closed") end
  return self._socket:fileno()
end

-- l:accept([timeout]) -> a Connection to the next peer, once it proved
-- the key (with an authkey). A peer that fails the handshake (a wrong or
-- no answer within handshake_timeout) is closed and accept raises kind
-- "auth" (Python's AuthenticationError); the listener goes on. Raises
-- kind "timeout" when no peer came within timeout seconds (Python's
-- accept has none). In the main process waiting turns the loop.
function Listener:accept(timeout)
  errors.check_timeout(timeout, 1, "accept")
  local fd = self:fileno()
  local deadline = timeout and core.hrtime() + timeout
  while true do
    local conn, peer, kind = core.accept_socket(self._socket, self._key, self._seconds)
    if conn then
      self.last_accepted = self.family == "tcp" and {peer:match("^(.*):(%d+)$")} or peer
      if self.family == "tcp" then self.last_accepted[2] = math.tointeger(self.last_accepted[2]) end
      return core.connection(conn)
    end
    if peer ~= "wait" then raise("accept: " .. peer, kind) end
    local remaining = deadline and deadline - core.hrtime()
    if remaining and remaining <= 0 then
      raise("accept: no peer came within the timeout", "timeout")
    end
    require("lmp.wait").wait({fd}, remaining)
  end
end

-- l:close(): stops listening (connections accepted stay open); a Unix
-- socket's path is removed, as Python does. A second close does nothing.
function Listener:close()
  local sock = self._socket
  if not sock then return end
  self._socket = nil
  sock:close()
  -- A forked copy of this process does not own the path.
  if self._owner ~= core.getpid() then return end
  if self._path then os.remove(self._path) end
  if self._dir then os.remove(self._dir) end
end

Listener.__close = Listener.close
Listener.__gc = Listener.close

function Listener:__tostring()
  local address = self.family == "tcp" and self.address[1] .. ":" .. self.address[2] or self.address
  return ("lmp.Listener(%s %s%s)"):format(self.family, address, self._socket and "" or ", closed")
end

local CLIENT_OPTIONS = {"family", "authkey", "handshake_timeout"}

-- lmp.connection.Client(address [, {family =, authkey =,
-- handshake_timeout =}]) -> a Connection to the Listener at address.
-- Raises kind "auth" when the listener refuses the key (or does not prove
-- it holds the same), kind "os" when nothing listens there.
function listener.client(address, opts)
  opts = opts or {}
  if type(opts) ~= "table" then errors.argument(2, "Client", "options table expected, got " .. type(opts)) end
  errors.check_options(opts, CLIENT_OPTIONS, 2, "Client")
  if address == nil then errors.argument(1, "Client", "an address expected") end
  local family = family_of(address, opts.family, 1, "Client")
  check_key(opts.authkey, 2, "Client")
  local seconds = check_seconds(opts.handshake_timeout, 2, "Client")
  local fd, why, kind
  if family == "unix" then
    fd, why, kind = core.connect_socket("unix", address, opts.authkey, seconds)
  else
    fd, why, kind = core.connect_socket("tcp", address[1], address[2], opts.authkey, seconds)
  end
  if not fd then raise("Client: " .. why, kind) end
  return core.connection(fd)
end

return listener

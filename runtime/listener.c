/* The sockets of lmp.connection.Listener and Client: listening on a Unix
 * path or a TCP address, accepting, connecting, and the key handshake of
 * transport.h on a blocking descriptor, both sides, under a time limit so
 * that a peer that says nothing cannot hold accept or connect forever.
 * A peer that fails the handshake is closed before anything else it sent
 * is read: nothing of it reaches the value decoder. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "transport.h"

#define SOCKET_META "lmp.ListenSocket"

typedef struct listen_socket {
  int fd; /* -1 once closed */
} listen_socket;

static int socket_close(lua_State *L) {
  listen_socket *s = luaL_checkudata(L, 1, SOCKET_META);
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
  return 0;
}

static int socket_fileno(lua_State *L) {
  listen_socket *s = luaL_checkudata(L, 1, SOCKET_META);
  if (s->fd < 0) return luaL_error(L, "lmp: the listener is closed");
  lua_pushinteger(L, s->fd);
  return 1;
}

/* Pushes nil, message, kind and returns 3: how these functions fail. */
static int fail(lua_State *L, const char *kind, const char *message) {
  lua_pushnil(L);
  lua_pushstring(L, message);
  lua_pushstring(L, kind);
  return 3;
}

static int fail_errno(lua_State *L, const char *what, int e) {
  lua_pushfstring(L, "%s: %s", what, strerror(e));
  return fail(L, "os", lua_tostring(L, -1));
}

/* Fills addr for the Unix path; 0 or -1 when the path does not fit. */
static int unix_address(const char *path, struct sockaddr_un *addr) {
  if (strlen(path) >= sizeof addr->sun_path || path[0] == '\0') return -1;
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  strcpy(addr->sun_path, path);
  return 0;
}

/* Resolves host and port (numbers or names) for TCP; a list to free with
 * freeaddrinfo, or NULL with the message in why. */
static struct addrinfo *tcp_addresses(const char *host, lua_Integer port, int passive,
                                      const char **why) {
  struct addrinfo hints, *list = NULL;
  char service[16];
  int r;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  snprintf(service, sizeof service, "%d", (int)port);
  if ((r = getaddrinfo(host, service, &hints, &list)) != 0) {
    *why = gai_strerror(r);
    return NULL;
  }
  return list;
}

/* core.listen_socket("unix", path) or ("tcp", host, port) -> a listening
 * socket (:fileno(), :close()), non-blocking (accept waits for it first) and, for TCP, the port it is bound to (the
 * one the system chose for port 0); or nil, message, "os". */
static int core_listen_socket(lua_State *L) {
  static const char *const families[] = {"unix", "tcp", NULL};
  int family = luaL_checkoption(L, 1, NULL, families), one = 1, e;
  listen_socket *s;
  if (family == 0) luaL_checkstring(L, 2);
  else luaL_checkstring(L, 2), luaL_checkinteger(L, 3);
  s = lua_newuserdatauv(L, sizeof *s, 0);
  s->fd = -1;
  luaL_setmetatable(L, SOCKET_META);
  if (family == 0) {
    struct sockaddr_un addr;
    if (unix_address(lua_tostring(L, 2), &addr) != 0)
      return fail(L, "os", "the socket path is empty or too long");
    if ((s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0 ||
        bind(s->fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(s->fd, 64) != 0) {
      /* Closed here: socket_close would check argument 1, the family. */
      e = errno;
      if (s->fd >= 0) close(s->fd);
      s->fd = -1;
      return fail_errno(L, "cannot listen", e);
    }
    return 1;
  } else {
    const char *why = NULL;
    struct addrinfo *list = tcp_addresses(lua_tostring(L, 2), lua_tointeger(L, 3), 1, &why);
    struct sockaddr_storage bound;
    socklen_t len = sizeof bound;
    int port;
    if (list == NULL) return fail(L, "os", why);
    s->fd = socket(list->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    e = errno;
    if (s->fd >= 0) {
      setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (bind(s->fd, list->ai_addr, list->ai_addrlen) != 0 || listen(s->fd, 64) != 0 ||
          getsockname(s->fd, (struct sockaddr *)&bound, &len) != 0)
        e = errno, close(s->fd), s->fd = -1;
    }
    freeaddrinfo(list);
    if (s->fd < 0) return fail_errno(L, "cannot listen", e);
    port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    lua_pushinteger(L, port);
    return 2;
  }
}

/* Bounds every read and write on fd to `seconds` (0: no bound). */
static void set_time_limit(int fd, double seconds) {
  struct timeval tv;
  tv.tv_sec = (time_t)seconds;
  tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* The server's side of the handshake (transport.h) on a blocking
 * descriptor: 0 once both sides proved the key, or -1 with why. */
static int auth_server(int fd, const char *key, size_t key_len, const char **why) {
  unsigned char greeting[LMP_AUTH_TAG_SIZE + LMP_AUTH_CHALLENGE_SIZE];
  unsigned char answer[LMP_SHA256_SIZE], expected[LMP_SHA256_SIZE];
  unsigned char challenge[LMP_AUTH_CHALLENGE_SIZE];
  memcpy(greeting, LMP_AUTH_GREETING, LMP_AUTH_TAG_SIZE);
  if (lmp__random_bytes(greeting + LMP_AUTH_TAG_SIZE, LMP_AUTH_CHALLENGE_SIZE) != 0) {
    *why = "no random bytes for the challenge";
    return -1;
  }
  if (lmp__send_all(fd, greeting, sizeof greeting) != 0 ||
      lmp__read_exactly(fd, answer, sizeof answer) != 0) {
    *why = "the peer did not answer the challenge (closed, or silent past the time limit)";
    return -1;
  }
  lmp__auth_answer(key, key_len, "lmp client", greeting + LMP_AUTH_TAG_SIZE, expected);
  if (!lmp__compare_digest(answer, expected, sizeof answer)) {
    lmp__send_all(fd, LMP_AUTH_FAILURE, LMP_AUTH_TAG_SIZE);
    *why = "the peer's answer to the challenge is wrong (it does not know the key)";
    return -1;
  }
  if (lmp__send_all(fd, LMP_AUTH_WELCOME, LMP_AUTH_TAG_SIZE) != 0 ||
      lmp__read_exactly(fd, challenge, sizeof challenge) != 0) {
    *why = "the peer left during the handshake";
    return -1;
  }
  lmp__auth_answer(key, key_len, "lmp server", challenge, answer);
  if (lmp__send_all(fd, answer, sizeof answer) != 0) {
    *why = "the peer left during the handshake";
    return -1;
  }
  return 0;
}

/* Runs one side of the handshake (auth_server or lmp__auth_client) on fd
 * under a limit of `seconds` for each read and write, then lifts the
 * limit: 0 once both sides proved the key; otherwise fd is closed and -1
 * returned with why. */
static int authenticate(int fd, int (*side)(int, const char *, size_t, const char **),
                        const char *key, size_t key_len, double seconds, const char **why) {
  set_time_limit(fd, seconds);
  if (side(fd, key, key_len, why) != 0) {
    close(fd);
    return -1;
  }
  set_time_limit(fd, 0);
  return 0;
}

/* core.accept_socket(listener [, key [, seconds]]) -> fd of a blocking
 * connection (close-on-exec) and the peer's address ("host:port" for TCP,
 * "" for Unix); with a key, the peer proved it within seconds. Nil, "wait"
 * when no peer is waiting; nil, message, "auth" when the peer failed the
 * handshake (it is closed then); nil, message, "os". */
static int core_accept_socket(lua_State *L) {
  listen_socket *s = luaL_checkudata(L, 1, SOCKET_META);
  size_t key_len = 0;
  const char *key = luaL_optlstring(L, 2, NULL, &key_len), *why;
  double seconds = luaL_optnumber(L, 3, 20);
  struct sockaddr_storage peer;
  socklen_t len = sizeof peer;
  char host[INET6_ADDRSTRLEN] = "";
  int fd, port = 0;
  if (s->fd < 0) return luaL_error(L, "lmp: the listener is closed");
  do {
    fd = accept4(s->fd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
  } while (fd < 0 && (errno == EINTR || errno == ECONNABORTED));
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      lua_pushnil(L);
      lua_pushliteral(L, "wait");
      return 2;
    }
    return fail_errno(L, "cannot accept", errno);
  }
  if (peer.ss_family == AF_INET)
    inet_ntop(AF_INET, &((struct sockaddr_in *)&peer)->sin_addr, host, sizeof host),
        port = ntohs(((struct sockaddr_in *)&peer)->sin_port);
  else if (peer.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&peer)->sin6_addr, host, sizeof host),
        port = ntohs(((struct sockaddr_in6 *)&peer)->sin6_port);
  if (key != NULL && authenticate(fd, auth_server, key, key_len, seconds, &why) != 0)
    return fail(L, "auth", why);
  lua_pushinteger(L, fd);
  if (host[0]) lua_pushfstring(L, "%s:%d", host, port);
  else lua_pushliteral(L, "");
  return 2;
}

/* core.connect_socket("unix", path) or ("tcp", host, port), then key and
 * seconds (default 20; 0: no limit) -> fd of a blocking connection
 * (close-on-exec) on which, with a key, both sides proved it within
 * seconds; or nil, message, kind ("os", "auth"). A Unix connect waits at
 * most seconds for the listener to have room for it. */
static int core_connect_socket(lua_State *L) {
  static const char *const families[] = {"unix", "tcp", NULL};
  int family = luaL_checkoption(L, 1, NULL, families), fd = -1, e = 0;
  int at = family == 0 ? 3 : 4;
  size_t key_len = 0;
  const char *key, *why = NULL;
  double seconds;
  luaL_checkstring(L, 2);
  if (family == 1) luaL_checkinteger(L, 3);
  key = luaL_optlstring(L, at, NULL, &key_len);
  seconds = luaL_optnumber(L, at + 1, 20);
  if (family == 0) {
    struct sockaddr_un addr;
    if (unix_address(lua_tostring(L, 2), &addr) != 0)
      return fail(L, "os", "the socket path is empty or too long");
    /* A Unix connect waits for room in the listener's backlog, for ever
     * if nobody accepts: the send limit bounds that wait too. */
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
      e = errno;
    } else {
      set_time_limit(fd, seconds);
      if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        e = errno == EAGAIN ? ETIMEDOUT : errno;
      else
        set_time_limit(fd, 0);
    }
  } else {
    struct addrinfo *list = tcp_addresses(lua_tostring(L, 2), lua_tointeger(L, 3), 0, &why), *a;
    if (list == NULL) return fail(L, "os", why);
    e = ECONNREFUSED;
    for (a = list; a; a = a->ai_next) {
      if ((fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        e = errno;
        continue;
      }
      if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        e = 0;
        break;
      }
      e = errno;
      close(fd);
      fd = -1;
    }
    freeaddrinfo(list);
  }
  if (e != 0) {
    if (fd >= 0) close(fd);
    return fail_errno(L, "cannot connect", e);
  }
  /* Each message is one write and the peer answers it: Nagle's delay
   * would hold small ones back. Failing to say so costs speed only. */
  if (family == 1) {
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  if (key != NULL && authenticate(fd, lmp__auth_client, key, key_len, seconds, &why) != 0)
    return fail(L, "auth", why);
  lua_pushinteger(L, fd);
  return 1;
}

static const luaL_Reg socket_methods[] = {{"fileno", socket_fileno}, {"close", socket_close},
                                          {NULL, NULL}};
static const luaL_Reg listener_functions[] = {{"listen_socket", core_listen_socket},
                                              {"accept_socket", core_accept_socket},
                                              {"connect_socket", core_connect_socket},
                                              {NULL, NULL}};

void lmp__open_listener(lua_State *L) {
  if (luaL_newmetatable(L, SOCKET_META)) {
    luaL_newlib(L, socket_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, socket_close);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "a listener belongs to the process that made it");
    lua_setfield(L, -2, "__lmp_nosend");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, listener_functions, 0);
}

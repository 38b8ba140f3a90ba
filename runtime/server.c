/* A request server on a Unix socket or a TCP address, run on a process's
 * loop: each frame a client sends is a request, handed to a Lua function with the client's
 * number; what it returns goes back as the reply, and when it returns
 * nothing, the reply comes later through server:reply(client, value) (a
 * request that waits for a lock or a queue's item must not hold up the
 * other clients). lmp.Manager's process keeps its objects behind one; any
 * process reaches it by the socket's path or, served on TCP, by host and
 * port (core.connect_socket, in listener.c, under a handshake time limit).
 *
 * The socket lives in a private directory (core.private_dir: mode 0700,
 * a random name) and is itself mode 0600, so no other user reaches it.
 * Every connection proves the server's key before anything it sends is
 * read as a frame (the handshake in transport.h, both ways), and
 * requests are decoded as plain data: no function, no value by name (which
 * may require a module), no metatable, so a request cannot run code here. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "channel.h"
#include "server.h"
#include "transport.h"

#define SERVER_META "lmp.Server"

static void drop_client(client *c);

static void free_server(server *srv) {
  if (srv->key) {
    memset(srv->key, 0, srv->key_len);
    free(srv->key);
  }
  lmp__buffer_free(&srv->no_memory);
  free(srv);
}

static void server_handle_closed(uv_handle_t *handle) {
  server *srv = handle->data;
  if (--srv->open_handles == 0) free_server(srv);
}

static void client_closed(uv_handle_t *handle) {
  client *c = handle->data;
  server *srv = c->srv;
  client **p;
  for (p = &srv->clients; *p; p = &(*p)->next) {
    if (*p == c) { *p = c->next; break; }
  }
  lmp__inbox_free(&c->inbox);
  free(c);
  if (--srv->open_handles == 0) free_server(srv);
}

/* In protected mode: decodes a request's message as plain data. */
static int decode_request(lua_State *L) {
  const char *body = lua_touserdata(L, 1);
  size_t n = (size_t)lua_tointeger(L, 2);
  size_t message = lmp__frame_message(L, body, n);
  if (n - 4 - message > 0) return luaL_error(L, "a request carries no payload");
  lmp__decode_with(L, body + 4, message, LMP_DECODE_DATA | LMP_DECODE_NO_METATABLES);
  return 1;
}

/* In protected mode: decode the request, call the handler, encode its
 * reply into the buffer passed as light userdata (nothing when the handler
 * returned nothing: its reply comes later). A request that is not plain
 * data is answered {false, why}, and the handler never sees it. */
static int handle_request(lua_State *L) {
  lmp_buffer *out = lua_touserdata(L, 3);
  lua_rawgeti(L, LUA_REGISTRYINDEX, (int)lua_tointeger(L, 4));
  lua_pushcfunction(L, decode_request);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  if (lua_pcall(L, 2, 1, 0) == LUA_OK) {
    lua_pushvalue(L, 5);
    lua_call(L, 2, 1);
    if (lua_isnil(L, -1)) return 0;
  } else {
    lua_createtable(L, 2, 0);
    lua_pushboolean(L, 0);
    lua_rawseti(L, -2, 1);
    lua_pushfstring(L, "request refused: %s", luaL_tolstring(L, -2, NULL));
    lua_rawseti(L, -3, 2);
    lua_pop(L, 1);
  }
  if (lmp__encode(L, lua_gettop(L), out, "reply") != 0) return lua_error(L);
  lua_pushboolean(L, 1);
  return 1;
}

static void deliver_request(void *ctx, const char *body, size_t n) {
  client *c = ctx;
  server *srv = c->srv;
  lua_State *L = srv->L;
  lmp_buffer out = {NULL, 0, 0};
  int replied, status;
  if (L == NULL || uv_is_closing(&c->conn.handle)) return;
  if (lmp__buffer_reserve(&out, LMP_FRAME_PREFIX) != 0) {
    if (lmp__server_write_no_memory(c) != 0) drop_client(c);
    return;
  }
  out.len = LMP_FRAME_PREFIX;
  lua_pushcfunction(L, handle_request);
  lua_pushlightuserdata(L, (void *)body);
  lua_pushinteger(L, (lua_Integer)n);
  lua_pushlightuserdata(L, &out);
  lua_pushinteger(L, srv->handler_ref);
  lua_pushinteger(L, c->number);
  if ((status = lua_pcall(L, 5, 1, 0)) != LUA_OK) {
    /* The handler's reply could not be encoded (no memory for it, most
     * likely): what the request did stands; the client hears why. */
    lmp__buffer_free(&out);
    if (uv_is_closing(&c->conn.handle)) lua_pop(L, 1);
    else if (lmp__server_write_failure(c, status) != 0) drop_client(c);
    return;
  }
  replied = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (!replied || uv_is_closing(&c->conn.handle)) {
    lmp__buffer_free(&out);
    return;
  }
  if (lmp__server_write_reply(c, out) != 0) drop_client(c);
}

/* Writes a handshake message; the socket's buffer is empty at each step
 * (the peer waits for it before it sends more), so it goes at once or the
 * connection is no good. A peer gone already must not raise SIGPIPE. */
static int handshake_write(client *c, const void *data, size_t n) {
  uv_os_fd_t fd;
  ssize_t put;
  if (uv_fileno(&c->conn.handle, &fd) != 0) return -1;
  do {
    put = send(fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (put < 0 && errno == EINTR);
  return put == (ssize_t)n ? 0 : -1;
}

/* Closes a client's connection; the Lua side hears of an authenticated
 * one going (its waits are cancelled, the locks it held released). */
static void drop_client(client *c) {
  server *srv = c->srv;
  lua_State *L = srv->L;
  if (uv_is_closing(&c->conn.handle)) return;
  uv_close(&c->conn.handle, client_closed);
  if (L != NULL && c->stage == AUTHENTICATED && srv->on_close_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, srv->on_close_ref);
    lua_pushinteger(L, c->number);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      fprintf(stderr, "lmp: manager client cleanup failed: %s\n", luaL_tolstring(L, -1, NULL));
      lua_pop(L, 2);
    }
  }
}

/* A whole handshake message from the client is in c->got. */
static void handshake_step(client *c) {
  server *srv = c->srv;
  unsigned char expected[LMP_SHA256_SIZE];
  c->got_len = 0;
  if (c->stage == AWAIT_ANSWER) {
    lmp__auth_answer(srv->key, srv->key_len, "lmp client", c->challenge, expected);
    if (!lmp__compare_digest(c->got, expected, sizeof expected)) {
      handshake_write(c, LMP_AUTH_FAILURE, LMP_AUTH_TAG_SIZE);
      drop_client(c);
      return;
    }
    if (handshake_write(c, LMP_AUTH_WELCOME, LMP_AUTH_TAG_SIZE) != 0) {
      drop_client(c);
      return;
    }
    c->stage = AWAIT_CHALLENGE;
  } else {
    lmp__auth_answer(srv->key, srv->key_len, "lmp server", c->got, expected);
    if (handshake_write(c, expected, sizeof expected) != 0) {
      drop_client(c);
      return;
    }
    c->stage = AUTHENTICATED;
  }
}

static void client_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  client *c = handle->data;
  (void)suggested;
  /* Until the peer proved the key, nothing it sends is read as a frame:
   * only the 32 bytes of the handshake's next message, no more. */
  if (c->stage != AUTHENTICATED) {
    *buf = uv_buf_init((char *)c->got + c->got_len, (unsigned int)(sizeof c->got - c->got_len));
    return;
  }
  lmp__inbox_alloc(&c->inbox, buf);
}

static void client_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  client *c = stream->data;
  (void)buf;
  if (nread > 0 && c->stage != AUTHENTICATED) {
    c->got_len += (size_t)nread;
    if (c->got_len == sizeof c->got) handshake_step(c);
  } else if (nread > 0) {
    c->inbox.bytes.len += (size_t)nread;
    /* A header no lmp peer writes (a length past LMP_FRAME_MAX): the
     * stream carries garbage, and reading on would only keep it. */
    if (lmp__inbox_frames(&c->inbox, deliver_request, c) != 0) drop_client(c);
  } else if (nread < 0) {
    drop_client(c);
  }
}

static void refuse(server *srv);

static void refuser_closed(uv_handle_t *handle) {
  server *srv = handle->data;
  srv->refusing = 0;
  if (srv->refuse_waiting && srv->L != NULL) {
    srv->refuse_waiting = 0;
    refuse(srv);
  }
  if (--srv->open_handles == 0) free_server(srv);
}

/* Takes the connection waiting on the listener into the server's own
 * handle, which needs no memory, and closes it: the peer sees its end at
 * once. Left waiting, it would stop the listener for good, since libuv
 * accepts nothing more until the waiting connection is taken. While the
 * handle still closes from the last refusal, the connection waits and is
 * taken in the close callback. */
static void refuse(server *srv) {
  uv_loop_t *loop = srv->listener.handle.loop;
  if (srv->refusing) {
    srv->refuse_waiting = 1;
    return;
  }
  /* Neither init allocates nor fails on Unix; libuv says either may. */
  if ((srv->tcp ? uv_tcp_init(loop, &srv->refuser.tcp)
                : uv_pipe_init(loop, &srv->refuser.pipe, 0)) != 0)
    return;
  srv->refuser.handle.data = srv;
  srv->refusing = 1;
  srv->open_handles++;
  (void)uv_accept(&srv->listener.stream, &srv->refuser.stream);
  uv_close(&srv->refuser.handle, refuser_closed);
}

static void on_connection(uv_stream_t *listener, int status) {
  server *srv = listener->data;
  unsigned char greeting[LMP_AUTH_TAG_SIZE + LMP_AUTH_CHALLENGE_SIZE];
  client *c;
  if (status != 0 || srv->L == NULL) return;
  c = calloc(1, sizeof *c);
  if (c == NULL) {
    refuse(srv);
    return;
  }
  if ((srv->tcp ? uv_tcp_init(listener->loop, &c->conn.tcp)
                : uv_pipe_init(listener->loop, &c->conn.pipe, 0)) != 0) {
    free(c);
    refuse(srv);
    return;
  }
  c->conn.handle.data = c;
  c->srv = srv;
  c->number = ++srv->next_number;
  c->stage = AWAIT_ANSWER;
  c->arrived = uv_now(listener->loop);
  srv->open_handles++;
  c->next = srv->clients;
  srv->clients = c;
  if (uv_accept(listener, &c->conn.stream) != 0 ||
      lmp__random_bytes(c->challenge, sizeof c->challenge) != 0) {
    drop_client(c);
    return;
  }
  /* A request and its reply are one write each: Nagle's delay would only
   * hold them back. Failing to say so costs speed, nothing else. */
  if (srv->tcp) (void)uv_tcp_nodelay(&c->conn.tcp, 1);
  memcpy(greeting, LMP_AUTH_GREETING, LMP_AUTH_TAG_SIZE);
  memcpy(greeting + LMP_AUTH_TAG_SIZE, c->challenge, sizeof c->challenge);
  if (handshake_write(c, greeting, sizeof greeting) != 0) {
    drop_client(c);
    return;
  }
  /* Requests are served while the loop turns; they never keep it turning. */
  uv_unref(&c->conn.handle);
  if (uv_read_start(&c->conn.stream, client_alloc, client_read) != 0) drop_client(c);
}

/* In protected mode: encodes the value at 1 into the buffer at 2. */
static int encode_reply(lua_State *L) {
  lmp_buffer *out = lua_touserdata(L, 2);
  lua_settop(L, 1);
  if (lmp__encode(L, 1, out, "reply") != 0) return lua_error(L);
  return 0;
}

/* server:reply(client, value) -> whether it went: the reply to a request
 * whose handler returned nothing. A client gone meanwhile gets nothing. A
 * value that cannot be encoded raises, and the client gets nothing. */
static int server_reply(lua_State *L) {
  server **box = luaL_checkudata(L, 1, SERVER_META);
  lua_Integer number = luaL_checkinteger(L, 2);
  lmp_buffer out = {NULL, 0, 0};
  client *c;
  luaL_checkany(L, 3);
  if (*box == NULL) return luaL_error(L, "lmp: the server is closed");
  for (c = (*box)->clients; c; c = c->next) {
    if (c->number == number) break;
  }
  if (c == NULL || c->stage != AUTHENTICATED || uv_is_closing(&c->conn.handle)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (lmp__buffer_reserve(&out, LMP_FRAME_PREFIX) != 0) return luaL_error(L, "lmp: not enough memory");
  out.len = LMP_FRAME_PREFIX;
  lua_pushcfunction(L, encode_reply);
  lua_pushvalue(L, 3);
  lua_pushlightuserdata(L, &out);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    lmp__buffer_free(&out);
    return lua_error(L);
  }
  if (lmp__server_write_reply(c, out) != 0) drop_client(c);
  lua_pushboolean(L, 1);
  return 1;
}

/* server:connected(client) -> whether the client is still there. A client
 * whose request waits sends nothing until it has the reply, so anything
 * readable on its socket is its end: asked before a waiting request is
 * given what it waited for (a queue's item), so that the item goes to a
 * live client rather than to one whose end the loop has not read yet. */
static int server_connected(lua_State *L) {
  server **box = luaL_checkudata(L, 1, SERVER_META);
  lua_Integer number = luaL_checkinteger(L, 2);
  client *c = NULL;
  uv_os_fd_t fd;
  char byte;
  ssize_t got;
  if (*box != NULL) {
    for (c = (*box)->clients; c; c = c->next) {
      if (c->number == number) break;
    }
  }
  if (c == NULL || uv_is_closing(&c->conn.handle) ||
      uv_fileno(&c->conn.handle, &fd) != 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  do {
    got = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  } while (got < 0 && errno == EINTR);
  lua_pushboolean(L, got > 0 || (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)));
  return 1;
}

/* server:keep_loop_alive(): the listener keeps the loop turning, for a
 * process whose only work is serving (a manager's). */
static int server_keep_loop_alive(lua_State *L) {
  server **box = luaL_checkudata(L, 1, SERVER_META);
  if (*box != NULL) uv_ref(&(*box)->listener.handle);
  return 0;
}

/* Every so often: the connections still in the handshake past the limit
 * are closed (they were never told anything but the challenge). */
static void sweep(uv_timer_t *timer) {
  server *srv = timer->data;
  uint64_t now = uv_now(timer->loop);
  client *c;
  for (c = srv->clients; c; c = c->next) {
    if (c->stage != AUTHENTICATED && !uv_is_closing(&c->conn.handle) &&
        now - c->arrived >= srv->handshake_ms)
      drop_client(c); /* unlinked later, in its close callback */
  }
}

static int server_close(lua_State *L) {
  server **box = luaL_checkudata(L, 1, SERVER_META);
  server *srv = *box;
  client *c;
  if (srv == NULL) return 0;
  *box = NULL;
  if (lmp__parents_handle(&srv->listener.handle)) return 0; /* the parent's, in a copy */
  luaL_unref(L, LUA_REGISTRYINDEX, srv->handler_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, srv->on_close_ref);
  srv->L = NULL;
  for (c = srv->clients; c; c = c->next) drop_client(c);
  if (srv->sweeping) uv_close((uv_handle_t *)&srv->sweeper, server_handle_closed);
  uv_close(&srv->listener.handle, server_handle_closed);
  return 0;
}

/* Binds and listens on the Unix path or the TCP host and port; 0 or a
 * libuv error code. For TCP, *port is the port bound (the system's choice
 * for port 0). */
static int bind_and_listen(server *srv, uv_loop_t *loop, const char *path, const char *host,
                           lua_Integer *port, const char **why) {
  int r;
  if (host == NULL) {
    if ((r = uv_pipe_init(loop, &srv->listener.pipe, 0)) != 0) return r;
  } else if ((r = uv_tcp_init(loop, &srv->listener.tcp)) != 0) {
    return r;
  }
  srv->listener.handle.data = srv;
  srv->open_handles = 1;
  if (host == NULL) {
    /* The directory keeps others out already; 0600 says the same of the
     * socket, whatever the umask made it. */
    if ((r = uv_pipe_bind(&srv->listener.pipe, path)) != 0) return r;
    if (chmod(path, 0600) != 0) return uv_translate_sys_error(errno);
  } else {
    struct addrinfo hints, *list = NULL;
    struct sockaddr_storage bound;
    int len = (int)sizeof bound;
    char service[16];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    snprintf(service, sizeof service, "%d", (int)*port);
    if ((r = getaddrinfo(host, service, &hints, &list)) != 0) {
      *why = gai_strerror(r);
      return UV_EINVAL;
    }
    r = uv_tcp_bind(&srv->listener.tcp, list->ai_addr, 0);
    freeaddrinfo(list);
    if (r != 0) return r;
    if ((r = uv_tcp_getsockname(&srv->listener.tcp, (struct sockaddr *)&bound, &len)) != 0)
      return r;
    *port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&bound)->sin_port);
  }
  return uv_listen(&srv->listener.stream, 64, on_connection);
}

/* Starts the sweeper for a handshake limit of `seconds` (0: none); 0 or a
 * libuv error code. */
static int start_sweeper(server *srv, uv_loop_t *loop, double seconds) {
  uint64_t every;
  int r;
  if (!(seconds > 0)) return 0;
  srv->handshake_ms = (uint64_t)(seconds * 1000 + 0.5);
  if ((r = uv_timer_init(loop, &srv->sweeper)) != 0) return r;
  srv->sweeper.data = srv;
  srv->sweeping = 1;
  srv->open_handles++;
  /* A peer is dropped between the limit and a quarter of it later. */
  every = srv->handshake_ms / 4;
  if (every < 50) every = 50;
  if (every > 5000) every = 5000;
  if ((r = uv_timer_start(&srv->sweeper, sweep, every, every)) != 0) return r;
  uv_unref((uv_handle_t *)&srv->sweeper);
  return 0;
}

/* core.listen(address, handler, key [, on_close [, handshake_seconds]])
 * -> server [, port];
 * address is a Unix socket's path, or {host, port} for TCP (port 0: one
 * the system chooses; the port bound is returned then).
 * handler(request, client) -> reply, or nothing to reply later with
 * server:reply; on_close(client) when an authenticated client goes. A
 * Unix socket is made mode 0600; clients must prove key, on either, within
 * handshake_seconds of connecting (default 20; 0: no limit), or they are
 * closed. */
static int core_listen(lua_State *L) {
  const char *path = NULL, *host = NULL, *why = NULL;
  lua_Integer port = 0;
  size_t key_len;
  const char *key = luaL_checklstring(L, 3, &key_len);
  lmp_buffer no_memory = {NULL, 0, 0};
  double handshake_seconds;
  server **box, *srv;
  uv_loop_t *loop;
  int r;
  if (lua_istable(L, 1)) {
    lua_rawgeti(L, 1, 1);
    lua_rawgeti(L, 1, 2);
    host = lua_tostring(L, -2);
    port = lua_tointeger(L, -1);
    luaL_argcheck(L, host != NULL && lua_isinteger(L, -1) && port >= 0 && port <= 65535, 1,
                  "a TCP address is {host, port}");
    lua_pop(L, 2); /* host stays reachable through the table at 1 */
  } else {
    path = luaL_checkstring(L, 1);
  }
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_argcheck(L, key_len > 0, 3, "key must not be empty");
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TFUNCTION);
  handshake_seconds = luaL_optnumber(L, 5, 20);
  luaL_argcheck(L, handshake_seconds >= 0 && handshake_seconds < 1e9, 5,
                "handshake_seconds must be a number of seconds");
  loop = lmp__loop(L); /* may refuse: before anything is allocated */
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, SERVER_META);
  lua_pushcfunction(L, lmp__server_encode_no_memory);
  lua_pushlightuserdata(L, &no_memory);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lmp__buffer_free(&no_memory);
    return lua_error(L);
  }
  srv = calloc(1, sizeof *srv);
  if (srv == NULL) {
    lmp__buffer_free(&no_memory);
    return luaL_error(L, "lmp: not enough memory");
  }
  srv->no_memory = no_memory;
  srv->tcp = host != NULL;
  srv->key = malloc(key_len);
  if (srv->key == NULL) {
    free_server(srv);
    return luaL_error(L, "lmp: not enough memory");
  }
  memcpy(srv->key, key, key_len);
  srv->key_len = key_len;
  if ((r = bind_and_listen(srv, loop, path, host, &port, &why)) != 0 ||
      (r = start_sweeper(srv, loop, handshake_seconds)) != 0) {
    if (srv->open_handles == 0) {
      free_server(srv);
    } else {
      if (srv->sweeping) uv_close((uv_handle_t *)&srv->sweeper, server_handle_closed);
      uv_close(&srv->listener.handle, server_handle_closed);
    }
    if (host != NULL)
      return luaL_error(L, "lmp: cannot listen on %s:%d: %s", host, (int)port,
                        why ? why : uv_strerror(r));
    return luaL_error(L, "lmp: cannot listen on %s: %s", path, uv_strerror(r));
  }
  uv_unref(&srv->listener.handle);
  srv->L = lmp__main_thread(L);
  lua_pushvalue(L, 2);
  srv->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  srv->on_close_ref = LUA_NOREF;
  if (lua_isfunction(L, 4)) {
    lua_pushvalue(L, 4);
    srv->on_close_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  *box = srv;
  if (host == NULL) return 1;
  lua_pushinteger(L, port);
  return 2;
}

/* core.private_dir() -> path of a new directory only this user can enter
 * (mode 0700, a random name made with O_EXCL semantics by mkdtemp) in
 * $TMPDIR or /tmp; or nil, message. */
static int core_private_dir(lua_State *L) {
  const char *tmp = getenv("TMPDIR");
  char path[128];
  /* A socket path must fit in sun_path (108 bytes) with its name. */
  if (tmp == NULL || tmp[0] != '/' || strlen(tmp) > 64) tmp = "/tmp";
  snprintf(path, sizeof path, "%s/lmp-XXXXXX", tmp);
  if (mkdtemp(path) == NULL || chmod(path, 0700) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot make a private directory in %s: %s", tmp, strerror(errno));
    return 2;
  }
  lua_pushstring(L, path);
  return 1;
}

static const luaL_Reg server_methods[] = {
    {"close", server_close}, {"reply", server_reply}, {"connected", server_connected},
    {"keep_loop_alive", server_keep_loop_alive}, {NULL, NULL}};
static const luaL_Reg server_functions[] = {
    {"listen", core_listen}, {"private_dir", core_private_dir}, {NULL, NULL}};

void lmp__open_server(lua_State *L) {
  if (luaL_newmetatable(L, SERVER_META)) {
    luaL_newlib(L, server_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, server_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, server_functions, 0);
}

/* A request server on a Unix socket, run on a process's loop: each frame a
 * client sends is a request, handed to a Lua function with the client's
 * number; what it returns goes back as the reply, and when it returns
 * nothing, the reply comes later through server:reply(client, value) (a
 * request that waits for a lock or a queue's item must not hold up the
 * other clients). lmp.Manager's process keeps its objects behind one; any
 * process reaches it by the socket's path (core.unix_connect).
 *
 * The socket lives in a private directory (core.private_dir: mode 0700,
 * a random name) and is itself mode 0600, so no other user reaches it.
 * Every connection proves the server's key before anything it sends is
 * read as a frame (the handshake in transport.h, both ways), and
 * requests are decoded as plain data: no function, no value by name (which
 * may require a module), no metatable, so a request cannot run code here. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "channel.h"
#include "transport.h"

#define SERVER_META "lmp.Server"

typedef struct server {
  uv_pipe_t listener;
  lua_State *L;       /* NULL once closed */
  int handler_ref;
  int on_close_ref;   /* LUA_NOREF, or called with a client's number when it goes */
  lua_Integer next_number;
  int open_handles;   /* listener + clients; freed at zero */
  struct client *clients;
  char *key;          /* the authentication key, wiped and freed with it */
  size_t key_len;
} server;

/* Where a connection is in the handshake. */
enum { AWAIT_ANSWER, AWAIT_CHALLENGE, AUTHENTICATED };

typedef struct client {
  uv_pipe_t pipe;
  lmp_inbox inbox;
  server *srv;
  struct client *next;
  lua_Integer number; /* how the Lua side names this client */
  int stage;
  unsigned char challenge[LMP_AUTH_CHALLENGE_SIZE]; /* the one we sent */
  unsigned char got[LMP_SHA256_SIZE]; /* the handshake message being read */
  size_t got_len;
} client;

typedef struct reply_write {
  uv_write_t req;
  lmp_buffer bytes; /* the reply's frame, freed once written */
} reply_write;

static void free_server(server *srv) {
  if (srv->key) {
    memset(srv->key, 0, srv->key_len);
    free(srv->key);
  }
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

static void on_reply_written(uv_write_t *req, int status) {
  reply_write *w = (reply_write *)req;
  (void)status;
  lmp__shield_sigpipe(-1); /* a client that went away is no reason to die */
  lmp__buffer_free(&w->bytes);
  free(w);
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

static void drop_client(client *c);

/* Frames the reply encoded in out and writes it to c; takes out. */
static void write_reply(client *c, lmp_buffer out) {
  reply_write *w;
  uv_buf_t buf;
  lmp__frame_set_length(out.data, out.len - LMP_FRAME_HEADER);
  lmp__set_u32_at(out.data + LMP_FRAME_HEADER, (uint32_t)(out.len - LMP_FRAME_PREFIX));
  w = malloc(sizeof *w);
  if (w == NULL) {
    lmp__buffer_free(&out);
    return;
  }
  w->bytes = out;
  buf = uv_buf_init(out.data, (unsigned int)out.len);
  lmp__shield_sigpipe(1);
  if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_reply_written) != 0) {
    lmp__shield_sigpipe(-1);
    lmp__buffer_free(&w->bytes);
    free(w);
  }
}

static void deliver_request(void *ctx, const char *body, size_t n) {
  client *c = ctx;
  server *srv = c->srv;
  lua_State *L = srv->L;
  lmp_buffer out = {NULL, 0, 0};
  int replied;
  if (L == NULL || uv_is_closing((uv_handle_t *)&c->pipe)) return;
  if (lmp__buffer_reserve(&out, LMP_FRAME_PREFIX) != 0) return;
  out.len = LMP_FRAME_PREFIX;
  lua_pushcfunction(L, handle_request);
  lua_pushlightuserdata(L, (void *)body);
  lua_pushinteger(L, (lua_Integer)n);
  lua_pushlightuserdata(L, &out);
  lua_pushinteger(L, srv->handler_ref);
  lua_pushinteger(L, c->number);
  if (lua_pcall(L, 5, 1, 0) != LUA_OK) {
    fprintf(stderr, "lmp: manager request failed: %s\n", luaL_tolstring(L, -1, NULL));
    lua_pop(L, 2);
    lmp__buffer_free(&out);
    drop_client(c);
    return;
  }
  replied = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (!replied || uv_is_closing((uv_handle_t *)&c->pipe)) {
    lmp__buffer_free(&out);
    return;
  }
  write_reply(c, out);
}

/* Writes a handshake message; the socket's buffer is empty at each step
 * (the peer waits for it before it sends more), so it goes at once or the
 * connection is no good. A peer gone already must not raise SIGPIPE. */
static int handshake_write(client *c, const void *data, size_t n) {
  uv_os_fd_t fd;
  ssize_t put;
  if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0) return -1;
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
  if (uv_is_closing((uv_handle_t *)&c->pipe)) return;
  uv_close((uv_handle_t *)&c->pipe, client_closed);
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
    lmp__inbox_frames(&c->inbox, deliver_request, c);
  } else if (nread < 0) {
    drop_client(c);
  }
}

static void on_connection(uv_stream_t *listener, int status) {
  server *srv = listener->data;
  unsigned char greeting[LMP_AUTH_TAG_SIZE + LMP_AUTH_CHALLENGE_SIZE];
  client *c;
  if (status != 0 || srv->L == NULL) return;
  c = calloc(1, sizeof *c);
  if (c == NULL) return;
  if (uv_pipe_init(listener->loop, &c->pipe, 0) != 0) {
    free(c);
    return;
  }
  c->pipe.data = c;
  c->srv = srv;
  c->number = ++srv->next_number;
  c->stage = AWAIT_ANSWER;
  srv->open_handles++;
  c->next = srv->clients;
  srv->clients = c;
  if (uv_accept(listener, (uv_stream_t *)&c->pipe) != 0 ||
      lmp__random_bytes(c->challenge, sizeof c->challenge) != 0) {
    drop_client(c);
    return;
  }
  memcpy(greeting, LMP_AUTH_GREETING, LMP_AUTH_TAG_SIZE);
  memcpy(greeting + LMP_AUTH_TAG_SIZE, c->challenge, sizeof c->challenge);
  if (handshake_write(c, greeting, sizeof greeting) != 0) {
    drop_client(c);
    return;
  }
  /* Requests are served while the loop turns; they never keep it turning. */
  uv_unref((uv_handle_t *)&c->pipe);
  if (uv_read_start((uv_stream_t *)&c->pipe, client_alloc, client_read) != 0) drop_client(c);
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
  if (c == NULL || c->stage != AUTHENTICATED || uv_is_closing((uv_handle_t *)&c->pipe)) {
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
  write_reply(c, out);
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
  if (c == NULL || uv_is_closing((uv_handle_t *)&c->pipe) ||
      uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0) {
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
  if (*box != NULL) uv_ref((uv_handle_t *)&(*box)->listener);
  return 0;
}

static int server_close(lua_State *L) {
  server **box = luaL_checkudata(L, 1, SERVER_META);
  server *srv = *box;
  client *c;
  if (srv == NULL) return 0;
  *box = NULL;
  if (lmp__forked_worker()) return 0; /* the parent's server, in a copy */
  luaL_unref(L, LUA_REGISTRYINDEX, srv->handler_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, srv->on_close_ref);
  srv->L = NULL;
  for (c = srv->clients; c; c = c->next) drop_client(c);
  uv_close((uv_handle_t *)&srv->listener, server_handle_closed);
  return 0;
}

/* core.listen(path, handler, key [, on_close]) -> server;
 * handler(request, client) -> reply, or nothing to reply later with
 * server:reply; on_close(client) when an authenticated client goes. The
 * socket is made mode 0600; clients must prove key. */
static int core_listen(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t key_len;
  const char *key = luaL_checklstring(L, 3, &key_len);
  server **box, *srv;
  uv_loop_t *loop;
  int r;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_argcheck(L, key_len > 0, 3, "key must not be empty");
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TFUNCTION);
  loop = lmp__loop(L); /* may refuse: before anything is allocated */
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, SERVER_META);
  srv = calloc(1, sizeof *srv);
  if (srv == NULL) return luaL_error(L, "lmp: not enough memory");
  srv->key = malloc(key_len);
  if (srv->key == NULL) {
    free(srv);
    return luaL_error(L, "lmp: not enough memory");
  }
  memcpy(srv->key, key, key_len);
  srv->key_len = key_len;
  if ((r = uv_pipe_init(loop, &srv->listener, 0)) != 0) {
    free_server(srv);
    return luaL_error(L, "lmp: cannot listen on %s: %s", path, uv_strerror(r));
  }
  srv->listener.data = srv;
  srv->open_handles = 1;
  /* The directory keeps others out already; 0600 says the same of the
   * socket, whatever the umask made it. */
  if ((r = uv_pipe_bind(&srv->listener, path)) != 0 ||
      (r = chmod(path, 0600) != 0 ? uv_translate_sys_error(errno) : 0) != 0 ||
      (r = uv_listen((uv_stream_t *)&srv->listener, 64, on_connection)) != 0) {
    uv_close((uv_handle_t *)&srv->listener, server_handle_closed);
    return luaL_error(L, "lmp: cannot listen on %s: %s", path, uv_strerror(r));
  }
  uv_unref((uv_handle_t *)&srv->listener);
  srv->L = lmp__main_thread(L);
  lua_pushvalue(L, 2);
  srv->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  srv->on_close_ref = LUA_NOREF;
  if (lua_isfunction(L, 4)) {
    lua_pushvalue(L, 4);
    srv->on_close_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  *box = srv;
  return 1;
}

/* core.unix_connect(path [, key]) -> fd of a blocking connection, or nil,
 * message. With a key, the handshake is done: both sides proved it. */
static int core_unix_connect(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t key_len = 0;
  const char *key = luaL_optlstring(L, 2, NULL, &key_len);
  struct sockaddr_un addr;
  const char *why;
  int fd;
  if (strlen(path) >= sizeof addr.sun_path) return luaL_argerror(L, 1, "path too long");
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  strcpy(addr.sun_path, path);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    lua_pushnil(L);
    lua_pushstring(L, strerror(e));
    return 2;
  }
  if (key && lmp__auth_client(fd, key, key_len, &why) != 0) {
    close(fd);
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  lua_pushinteger(L, fd);
  return 1;
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
    {"listen", core_listen}, {"unix_connect", core_unix_connect},
    {"private_dir", core_private_dir}, {NULL, NULL}};

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

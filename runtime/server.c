/* A request server on a Unix socket, run on the main process's loop: each
 * frame a client sends is a request, handed to a Lua function whose return
 * value goes back as the reply. lmp.Manager keeps its objects behind one;
 * any process reaches it by the socket's path with a blocking connection
 * (core.unix_connect). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "channel.h"
#include "inbox.h"
#include "lmp_internal.h"

#define SERVER_META "lmp.Server"

typedef struct server {
  uv_pipe_t listener;
  lua_State *L;       /* NULL once closed */
  int handler_ref;
  int open_handles;   /* listener + clients; freed at zero */
  struct client *clients;
} server;

typedef struct client {
  uv_pipe_t pipe;
  lmp_inbox inbox;
  server *srv;
  struct client *next;
} client;

typedef struct reply_write {
  uv_write_t req;
  lmp_buffer bytes; /* the reply's frame, freed once written */
} reply_write;

static void server_handle_closed(uv_handle_t *handle) {
  server *srv = handle->data;
  if (--srv->open_handles == 0) free(srv);
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
  if (--srv->open_handles == 0) free(srv);
}

static void on_reply_written(uv_write_t *req, int status) {
  reply_write *w = (reply_write *)req;
  (void)status;
  lmp__shield_sigpipe(-1); /* a client that went away is no reason to die */
  lmp__buffer_free(&w->bytes);
  free(w);
}

/* In protected mode: decode the request, call the handler, encode its
 * reply into the buffer passed as light userdata. */
static int handle_request(lua_State *L) {
  const char *body = lua_touserdata(L, 1);
  size_t n = (size_t)lua_tointeger(L, 2);
  lmp_buffer *out = lua_touserdata(L, 3);
  lua_rawgeti(L, LUA_REGISTRYINDEX, (int)lua_tointeger(L, 4));
  lmp__decode_frame(L, body, n);
  lua_pop(L, 1); /* no payload in requests */
  lua_call(L, 1, 1);
  if (lmp__encode(L, lua_gettop(L), out, "reply") != 0) return lua_error(L);
  return 0;
}

static void deliver_request(void *ctx, const char *body, size_t n) {
  client *c = ctx;
  server *srv = c->srv;
  lua_State *L = srv->L;
  lmp_buffer out = {NULL, 0, 0};
  reply_write *w;
  uv_buf_t buf;
  if (L == NULL) return;
  if (lmp__buffer_reserve(&out, LMP_FRAME_PREFIX) != 0) return;
  out.len = LMP_FRAME_PREFIX;
  lua_pushcfunction(L, handle_request);
  lua_pushlightuserdata(L, (void *)body);
  lua_pushinteger(L, (lua_Integer)n);
  lua_pushlightuserdata(L, &out);
  lua_pushinteger(L, srv->handler_ref);
  if (lua_pcall(L, 4, 0, 0) != LUA_OK) {
    fprintf(stderr, "lmp: manager request failed: %s\n", luaL_tolstring(L, -1, NULL));
    lua_pop(L, 2);
    lmp__buffer_free(&out);
    uv_close((uv_handle_t *)&c->pipe, client_closed);
    return;
  }
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

static void client_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  lmp__inbox_alloc(&((client *)handle->data)->inbox, buf);
}

static void client_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  client *c = stream->data;
  (void)buf;
  if (nread > 0) {
    c->inbox.bytes.len += (size_t)nread;
    lmp__inbox_frames(&c->inbox, deliver_request, c);
  } else if (nread < 0 && !uv_is_closing((uv_handle_t *)stream)) {
    uv_close((uv_handle_t *)stream, client_closed);
  }
}

static void on_connection(uv_stream_t *listener, int status) {
  server *srv = listener->data;
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
  srv->open_handles++;
  if (uv_accept(listener, (uv_stream_t *)&c->pipe) != 0) {
    uv_close((uv_handle_t *)&c->pipe, client_closed);
    return;
  }
  c->next = srv->clients;
  srv->clients = c;
  /* Requests are served while the loop turns; they never keep it turning. */
  uv_unref((uv_handle_t *)&c->pipe);
  if (uv_read_start((uv_stream_t *)&c->pipe, client_alloc, client_read) != 0)
    uv_close((uv_handle_t *)&c->pipe, client_closed);
}

static int server_close(lua_State *L) {
  server **box = luaL_checkudata(L, 1, SERVER_META);
  server *srv = *box;
  client *c;
  if (srv == NULL) return 0;
  *box = NULL;
  if (lmp__forked_worker()) return 0; /* the parent's server, in a copy */
  luaL_unref(L, LUA_REGISTRYINDEX, srv->handler_ref);
  srv->L = NULL;
  for (c = srv->clients; c; c = c->next)
    if (!uv_is_closing((uv_handle_t *)&c->pipe)) uv_close((uv_handle_t *)&c->pipe, client_closed);
  uv_close((uv_handle_t *)&srv->listener, server_handle_closed);
  return 0;
}

/* core.listen(path, handler) -> server; handler(request) -> reply. */
static int core_listen(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  server **box, *srv;
  uv_loop_t *loop;
  int r;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  loop = lmp__loop(L); /* may refuse: before anything is allocated */
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, SERVER_META);
  srv = calloc(1, sizeof *srv);
  if (srv == NULL || (r = uv_pipe_init(loop, &srv->listener, 0)) != 0) {
    free(srv);
    return luaL_error(L, "lmp: cannot listen on %s", path);
  }
  srv->listener.data = srv;
  srv->open_handles = 1;
  if ((r = uv_pipe_bind(&srv->listener, path)) != 0 ||
      (r = uv_listen((uv_stream_t *)&srv->listener, 64, on_connection)) != 0) {
    uv_close((uv_handle_t *)&srv->listener, server_handle_closed);
    return luaL_error(L, "lmp: cannot listen on %s: %s", path, uv_strerror(r));
  }
  uv_unref((uv_handle_t *)&srv->listener);
  srv->L = lmp__main_thread(L);
  lua_pushvalue(L, 2);
  srv->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  *box = srv;
  return 1;
}

/* core.unix_connect(path) -> fd of a blocking connection, or nil, message. */
static int core_unix_connect(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct sockaddr_un addr;
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
  lua_pushinteger(L, fd);
  return 1;
}

static const luaL_Reg server_methods[] = {{"close", server_close}, {NULL, NULL}};
static const luaL_Reg server_functions[] = {
    {"listen", core_listen}, {"unix_connect", core_unix_connect}, {NULL, NULL}};

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

/* The manager server's replies (server.c): framing and writing them, and
 * never leaving a request without one. A reply that cannot be made (its
 * value cannot be encoded, or there is no memory for it) is answered with
 * an error the client raises; with no memory at all, with the frame made
 * in advance when the server started, written with the write request each
 * client keeps for it. Each function returns 0, or -1 when the client
 * cannot be told: the caller then closes its connection, which the client
 * hears as the manager gone, never as silence. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "server.h"

static void on_reply_written(uv_write_t *req, int status) {
  reply_write *w = (reply_write *)req;
  (void)status;
  lmp__shield_sigpipe(-1); /* a client that went away is no reason to die */
  lmp__buffer_free(&w->bytes);
  free(w);
}

static void on_no_memory_written(uv_write_t *req, int status) {
  client *c = req->data;
  (void)status;
  lmp__shield_sigpipe(-1);
  c->no_memory_busy = 0;
}

int lmp__server_write_no_memory(client *c) {
  server *srv = c->srv;
  uv_buf_t buf;
  if (c->no_memory_busy || srv->no_memory.data == NULL) return -1;
  buf = uv_buf_init(srv->no_memory.data, (unsigned int)srv->no_memory.len);
  c->no_memory_write.data = c;
  lmp__shield_sigpipe(1);
  if (uv_write(&c->no_memory_write, &c->conn.stream, &buf, 1, on_no_memory_written) != 0) {
    lmp__shield_sigpipe(-1);
    return -1;
  }
  c->no_memory_busy = 1;
  return 0;
}

/* Sets the frame header and message length of a reply encoded after
 * LMP_FRAME_PREFIX bytes. */
static void frame_reply(lmp_buffer *out) {
  lmp__frame_set_length(out->data, out->len - LMP_FRAME_HEADER);
  lmp__set_u32_at(out->data + LMP_FRAME_HEADER, (uint32_t)(out->len - LMP_FRAME_PREFIX));
}

int lmp__server_write_reply(client *c, lmp_buffer out) {
  reply_write *w;
  uv_buf_t buf;
  frame_reply(&out);
  w = malloc(sizeof *w);
  if (w == NULL) {
    lmp__buffer_free(&out);
    return lmp__server_write_no_memory(c);
  }
  w->bytes = out;
  buf = uv_buf_init(out.data, (unsigned int)out.len);
  lmp__shield_sigpipe(1);
  if (uv_write(&w->req, &c->conn.stream, &buf, 1, on_reply_written) != 0) {
    /* The connection is failing (the peer went): its end is read next. */
    lmp__shield_sigpipe(-1);
    lmp__buffer_free(&w->bytes);
    free(w);
  }
  return 0;
}

/* In protected mode: encodes {false, why, kind} after the frame's prefix
 * in the buffer at 3, for the error value at 1 of a request whose reply
 * failed with the status at 2. Encoding refusals are error objects; an
 * allocation that failed says so in its message. */
static int encode_failure(lua_State *L) {
  lmp_buffer *out = lua_touserdata(L, 3);
  const char *why = luaL_tolstring(L, 1, NULL);
  const char *kind = strstr(why, "not enough memory") != NULL ? "memory" : "serialize";
  lua_createtable(L, 3, 0);
  lua_pushboolean(L, 0);
  lua_rawseti(L, -2, 1);
  lua_pushfstring(L, "the manager cannot send its reply: %s", why);
  lua_rawseti(L, -2, 2);
  lua_pushstring(L, kind);
  lua_rawseti(L, -2, 3);
  if (lmp__encode(L, lua_gettop(L), out, "reply") != 0) return lua_error(L);
  return 0;
}

int lmp__server_write_failure(client *c, int status) {
  lua_State *L = c->srv->L;
  lmp_buffer out = {NULL, 0, 0};
  if (status == LUA_ERRMEM || lmp__buffer_reserve(&out, LMP_FRAME_PREFIX) != 0) {
    lua_pop(L, 1);
    return lmp__server_write_no_memory(c);
  }
  out.len = LMP_FRAME_PREFIX;
  lua_pushcfunction(L, encode_failure);
  lua_insert(L, -2);
  lua_pushinteger(L, status);
  lua_pushlightuserdata(L, &out);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    lmp__buffer_free(&out);
    return lmp__server_write_no_memory(c);
  }
  return lmp__server_write_reply(c, out);
}

int lmp__server_encode_no_memory(lua_State *L) {
  lmp_buffer *out = lua_touserdata(L, 1);
  lua_createtable(L, 3, 0);
  lua_pushboolean(L, 0);
  lua_rawseti(L, -2, 1);
  lua_pushliteral(L, "the manager has no memory for the reply to this request");
  lua_rawseti(L, -2, 2);
  lua_pushliteral(L, "memory");
  lua_rawseti(L, -2, 3);
  if (lmp__buffer_reserve(out, LMP_FRAME_PREFIX) != 0) return luaL_error(L, "lmp: not enough memory");
  out->len = LMP_FRAME_PREFIX;
  if (lmp__encode(L, lua_gettop(L), out, "reply") != 0) return lua_error(L);
  frame_reply(out);
  return 0;
}

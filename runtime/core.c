/* lmp.core: the C half of the module. This file binds the value format
 * and gathers the other bindings (loop, process) into one table. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmp.h"
#include "lmp_internal.h"

#define ENCODE_BOX_META "lmp.EncodeBuffer"

/* The encode buffer lives in a userdata so that a Lua error while encoding
 * (out of memory, an erring __lmp_serialize) cannot leak it. */
static int encode_box_gc(lua_State *L) {
  lmp__buffer_free(luaL_checkudata(L, 1, ENCODE_BOX_META));
  return 0;
}

lmp_buffer *lmp__new_encode_box(lua_State *L) {
  lmp_buffer *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, ENCODE_BOX_META)) {
    lua_pushcfunction(L, encode_box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}

/* core.dumps(value [, root]) -> string. Long strings in the value are not
 * copied into the buffer: the result is joined from the buffer's pieces and
 * the strings themselves, so each byte of them is copied once. */
static int core_dumps(lua_State *L) {
  const char *root;
  lmp_buffer *b;
  lua_Integer n, i;
  size_t from = 0;
  luaL_checkany(L, 1);
  root = luaL_optstring(L, 2, "");
  lua_settop(L, 2);
  lua_newtable(L); /* 3: the long strings left out */
  b = lmp__new_encode_box(L);
  if (lmp__encode_pieces(L, 1, b, root, 3) != 0) return lua_error(L);
  n = (lua_Integer)lua_rawlen(L, 3);
  luaL_checkstack(L, (int)(n + 4), "lmp: too many long strings");
  for (i = 1; i <= n; i += 2) {
    size_t at;
    lua_rawgeti(L, 3, i);
    at = (size_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_pushlstring(L, b->data + from, at - from);
    lua_rawgeti(L, 3, i + 1);
    from = at;
  }
  lua_pushlstring(L, b->data + from, b->len - from);
  lua_concat(L, (int)n + 1);
  lmp__buffer_free(b);
  return 1;
}

/* core.loads(bytes [, allow_functions = true]) */
/* ---- payloads: values encoded once, sent as they are ------------------ */

#define PAYLOAD_META "lmp.Payload"

/* The bytes are shared by the Lua object and by writes in flight, and
 * freed by the last of them, so no write ever touches Lua. */
void lmp__payload_release(lmp_payload *payload) {
  if (--payload->refs == 0) {
    lmp__buffer_free(&payload->bytes);
    free(payload->pieces);
    free(payload);
  }
}

lmp_payload *lmp__check_payload(lua_State *L, int idx) {
  lmp_payload **box = luaL_checkudata(L, idx, PAYLOAD_META);
  if (*box == NULL) luaL_argerror(L, idx, "payload already released");
  return *box;
}

size_t lmp__payload_bufs(const lmp_payload *payload, uv_buf_t *bufs) {
  size_t i, n = 0, from = 0;
  for (i = 0; i < payload->piece_count; i++) {
    const lmp_piece *piece = &payload->pieces[i];
    if (piece->at > from) bufs[n++] = uv_buf_init(payload->bytes.data + from, (unsigned)(piece->at - from));
    bufs[n++] = uv_buf_init((char *)piece->data, (unsigned)piece->len);
    from = piece->at;
  }
  if (payload->bytes.len > from)
    bufs[n++] = uv_buf_init(payload->bytes.data + from, (unsigned)(payload->bytes.len - from));
  return n;
}

static int payload_gc(lua_State *L) {
  lmp_payload **box = luaL_checkudata(L, 1, PAYLOAD_META);
  if (*box) lmp__payload_release(*box);
  *box = NULL;
  return 0;
}

static int payload_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lmp__check_payload(L, 1)->length);
  return 1;
}

/* Records where the long strings in the pieces table at `idx` (offset,
 * string, ...) go; the table becomes the user value of the payload object
 * at `object`, which keeps the strings alive. */
static void take_pieces(lua_State *L, lmp_payload *payload, int idx, int object) {
  size_t count = lua_rawlen(L, idx) / 2, i;
  if (count == 0) return;
  payload->pieces = calloc(count, sizeof *payload->pieces);
  if (payload->pieces == NULL) luaL_error(L, "lmp: not enough memory");
  for (i = 0; i < count; i++) {
    lmp_piece *piece = &payload->pieces[i];
    lua_rawgeti(L, idx, (lua_Integer)(2 * i + 1));
    piece->at = (size_t)lua_tointeger(L, -1);
    lua_rawgeti(L, idx, (lua_Integer)(2 * i + 2));
    piece->data = lua_tolstring(L, -1, &piece->len);
    payload->length += piece->len;
    lua_pop(L, 2);
  }
  payload->piece_count = count;
  lua_pushvalue(L, idx);
  lua_setiuservalue(L, object, 1);
}

/* core.encode(value [, root]) -> payload; refusals raise as dumps does. */
static int core_encode(lua_State *L) {
  const char *root;
  lmp_payload **box;
  lmp_buffer *b;
  luaL_checkany(L, 1);
  root = luaL_optstring(L, 2, "");
  lua_settop(L, 2);
  lua_newtable(L); /* 3: the long strings, written from where they are */
  box = lua_newuserdatauv(L, sizeof *box, 1);
  *box = NULL;
  if (luaL_newmetatable(L, PAYLOAD_META)) {
    lua_pushcfunction(L, payload_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, payload_len);
    lua_setfield(L, -2, "__len");
  }
  lua_setmetatable(L, -2);
  b = lmp__new_encode_box(L);
  if (lmp__encode_pieces(L, 1, b, root, 3) != 0) return lua_error(L);
  *box = calloc(1, sizeof **box);
  if (*box == NULL) return luaL_error(L, "lmp: not enough memory");
  (*box)->refs = 1;
  (*box)->bytes = *b;
  (*box)->length = b->len;
  memset(b, 0, sizeof *b);
  take_pieces(L, *box, 3, 4);
  lua_pop(L, 1);
  return 1;
}

static int core_loads(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int data_only = !lua_isnoneornil(L, 2) && !lua_toboolean(L, 2);
  lua_settop(L, 1);
  lmp__decode_with(L, s, len, data_only);
  return 1;
}

static int core_register(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  luaL_checkany(L, 2);
  if (lua_isnil(L, 2)) luaL_argerror(L, 2, "value expected, got nil");
  lmp__names_register(L, name, 2);
  return 0;
}

static int core_error(lua_State *L) {
  lmp__push_error(L, luaL_checkstring(L, 1), luaL_checkstring(L, 2));
  return 1;
}

static int core_cpu_count(lua_State *L) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? n : 1);
  return 1;
}

static int core_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

static int core_getpid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

static const luaL_Reg core_functions[] = {
    {"dumps", core_dumps},         {"loads", core_loads},
    {"encode", core_encode},
    {"register", core_register},   {"error", core_error},
    {"cpu_count", core_cpu_count}, {"getpid", core_getpid},
    {"isatty", core_isatty},
    {NULL, NULL}};

/* A worker that dies while the main process writes to it must show up as
 * its exit, not kill the main process with SIGPIPE (libuv leaves this to
 * the program; Python ignores SIGPIPE the same way). */
static void ignore_sigpipe(void) {
  struct sigaction current;
  if (sigaction(SIGPIPE, NULL, &current) == 0 && current.sa_handler == SIG_DFL)
    signal(SIGPIPE, SIG_IGN);
}

int luaopen_lmp_core(lua_State *L) {
  ignore_sigpipe();
  luaL_newlib(L, core_functions);
  lmp__push_error_meta(L);
  lua_setfield(L, -2, "Error");
  lua_pushinteger(L, LMP_FORMAT_VERSION);
  lua_setfield(L, -2, "format_version");
  lmp__open_loop(L);
  lmp__open_process(L);
  lmp__open_worker(L);
  lmp__open_interrupt(L);
  lmp__open_shared(L);
  lmp__open_server(L);
  return 1;
}

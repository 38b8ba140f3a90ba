/* The cursor an imap iterator reads its results through.
 *
 * A generic for calls its iterator once per item. Written in Lua, that call
 * and the bookkeeping in it cost more than everything else an imap does per
 * item (measured with callgrind: about 870 machine instructions of a
 * 1,400-instruction item went to the Lua iterator), so the usual step, the
 * next value of the chunk being read, is taken here: a C function called
 * by the generic for. Whatever else a step may have to do (the chunk used
 * up, an item that failed, a progress bar to advance) is the Lua `slow`
 * function's, which the cursor calls instead.
 *
 * core.imap_cursor(slow, null) -> iterator, cursor
 * core.cursor_load(iterator, values, count, base, fast): the chunk to
 *   read, values[1 .. count], which are items base + 1 onwards of the
 *   input; its position goes back to 0; `fast` says whether the iterator
 *   may take items without `slow`. `values` may instead be a chunk's
 *   answer that is a list of numbers, as it came (core.payload_chunk):
 *   the numbers are read from its bytes, with no table made or written
 *   per chunk (only with `fast`, whose items need nothing but the step).
 * (The cursor does not refer to its iterator: what refers to the cursor
 * alone, the imap's window count, does not keep the iterator, and with it
 * the imap's closer, alive.)
 * core.cursor_position(cursor) -> items taken from the chunk
 * core.cursor_take(cursor) -> the position after one more item taken.
 * core.cursor_counts() -> the chunks this process has read from the bytes
 *   of a list of numbers (for the tests: a fast path is seen taken). */
#include "value.h"

#define CURSOR_META "lmp.ImapCursor"

typedef struct cursor {
  lua_Integer position, count, base;
  int fast;
  /* The chunk's numbers when it is a list of numbers (numbers.data not
   * NULL): they lie in the string that is the iterator's upvalue 4, which
   * keeps them alive and in place (Lua does not move strings). */
  lmp_number_list numbers;
} cursor;

static lua_Integer number_chunks;

static cursor *check_cursor(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, CURSOR_META);
}

static int after_slow(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return lua_gettop(L);
}

/* The iterator: upvalues are the cursor, `slow`, the null value and the
 * chunk's values (an upvalue rather than the cursor's user value: one API
 * call fewer a result). The generic for's state and control arguments are
 * not used. A value handed out is taken out of the chunk, so that the
 * caller's copy is its only one (as with Python's iterator). */
#define VALUES lua_upvalueindex(4)
static int cursor_step(lua_State *L) {
  cursor *c = lua_touserdata(L, lua_upvalueindex(1));
  if (c->fast && c->position < c->count) {
    lua_Integer p = ++c->position;
    if (c->numbers.data != NULL) {
      lmp__push_list_number(L, &c->numbers, (uint32_t)(p - 1));
      lua_pushinteger(L, c->base + p);
      return 2;
    }
    if (lua_rawgeti(L, VALUES, p) == LUA_TNIL) {
      lua_pushvalue(L, lua_upvalueindex(3));
    } else {
      lua_pushnil(L);
      lua_rawseti(L, VALUES, p);
    }
    lua_pushinteger(L, c->base + p);
    return 2;
  }
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(2));
  /* `slow` may wait for the next chunk, and a wait inside a coroutine of
   * lmp.spawn yields: hence the continuation. */
  lua_callk(L, 0, LUA_MULTRET, 0, after_slow);
  return lua_gettop(L);
}

static int core_imap_cursor(lua_State *L) {
  cursor *c;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  c = lua_newuserdatauv(L, sizeof *c, 0); /* 3 */
  c->position = c->count = c->base = 0;
  c->fast = 0;
  c->numbers.data = NULL;
  luaL_setmetatable(L, CURSOR_META);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushnil(L);
  lua_pushcclosure(L, cursor_step, 4); /* 4 */
  lua_insert(L, 3);
  return 2;
}

static int core_cursor_load(lua_State *L) {
  cursor *c;
  lua_Integer count = luaL_checkinteger(L, 3), base = luaL_checkinteger(L, 4);
  lmp_number_list numbers = {NULL, 0, 0, 0};
  if (lua_type(L, 2) == LUA_TSTRING) {
    size_t n;
    const char *p = lua_tolstring(L, 2, &n);
    if (!lmp__open_number_list(p, n, &numbers)) return luaL_argerror(L, 2, "not a list of numbers");
    if ((lua_Integer)numbers.count != count)
      return luaL_argerror(L, 3, "not the count of the list of numbers");
    if (!lua_toboolean(L, 5)) return luaL_argerror(L, 5, "a list of numbers is read fast only");
  } else if (!lua_isnil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
  }
  if (count < 0) return luaL_argerror(L, 3, "count must not be negative");
  if (count > 0 && lua_isnil(L, 2)) return luaL_argerror(L, 2, "values expected");
  if (lua_tocfunction(L, 1) != cursor_step) return luaL_argerror(L, 1, "an imap iterator expected");
  lua_settop(L, 5);
  lua_getupvalue(L, 1, 1);
  c = check_cursor(L, -1);
  c->numbers = numbers;
  if (numbers.data != NULL) number_chunks++;
  c->fast = lua_toboolean(L, 5);
  c->position = 0;
  c->count = count;
  c->base = base;
  lua_pushvalue(L, 2);
  lua_setupvalue(L, 1, 4);
  return 0;
}

static int core_cursor_position(lua_State *L) {
  lua_pushinteger(L, check_cursor(L, 1)->position);
  return 1;
}

static int core_cursor_take(lua_State *L) {
  cursor *c = check_cursor(L, 1);
  if (c->position >= c->count) return luaL_error(L, "lmp: the imap cursor's chunk is used up");
  lua_pushinteger(L, ++c->position);
  return 1;
}

static int core_cursor_counts(lua_State *L) {
  lua_pushinteger(L, number_chunks);
  return 1;
}

static const luaL_Reg cursor_functions[] = {{"imap_cursor", core_imap_cursor},
                                            {"cursor_load", core_cursor_load},
                                            {"cursor_position", core_cursor_position},
                                            {"cursor_take", core_cursor_take},
                                            {"cursor_counts", core_cursor_counts},
                                            {NULL, NULL}};

void lmp__open_cursor(lua_State *L) {
  luaL_newmetatable(L, CURSOR_META);
  lua_pop(L, 1);
  luaL_setfuncs(L, cursor_functions, 0);
}

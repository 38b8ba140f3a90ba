/* Error objects: every failure lmp reports is a table with a `kind`, a
 * `message` and, where they are known, `traceback`, `pid`, `index` and
 * `value`. The Lua layer adds fields; the C side only needs to make them. */
#include <stdarg.h>
#include <stdlib.h>

#include "value.h"

/* tostring(err): "lmp KIND error (item I, process P): MESSAGE", the
 * parenthesis only with what is known. The one format, for errors made in
 * C or in Lua alike. */
static int error_tostring(lua_State *L) {
  luaL_Buffer b;
  int where = 0;
  const char *fields[2] = {"index", "pid"}, *labels[2] = {"item ", "process "};
  int i;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "lmp ");
  lua_getfield(L, 1, "kind");
  luaL_addstring(&b, luaL_tolstring(L, -1, NULL));
  lua_pop(L, 2);
  luaL_addstring(&b, " error");
  for (i = 0; i < 2; i++) {
    if (lua_getfield(L, 1, fields[i]) != LUA_TNIL) {
      luaL_addstring(&b, where++ ? ", " : " (");
      luaL_addstring(&b, labels[i]);
      luaL_addstring(&b, luaL_tolstring(L, -1, NULL));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (where) luaL_addstring(&b, ")");
  luaL_addstring(&b, ": ");
  lua_getfield(L, 1, "message");
  luaL_addstring(&b, luaL_tolstring(L, -1, NULL));
  lua_pop(L, 2);
  luaL_pushresult(&b);
  return 1;
}

void lmp__push_error_meta(lua_State *L) {
  if (luaL_newmetatable(L, LMP_ERROR_META)) { /* sets __name too */
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
}

void lmp__push_error(lua_State *L, const char *kind, const char *message) {
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, message);
  lua_setfield(L, -2, "message");
  lmp__push_error_meta(L);
  lua_setmetatable(L, -2);
}

void lmp__raisef(lua_State *L, const char *format, ...) {
  va_list args;
  va_start(args, format);
  lua_pushvfstring(L, format, args);
  va_end(args);
  lua_error(L);
  abort(); /* not reached: lua_error does not return */
}

/* core.error(kind, message) -> an error object, made and not raised. */
static int error_new(lua_State *L) {
  lmp__push_error(L, luaL_checkstring(L, 1), luaL_checkstring(L, 2));
  return 1;
}

void lmp__open_error(lua_State *L) {
  lmp__push_error_meta(L);
  lua_setfield(L, -2, "Error");
  lua_pushcfunction(L, error_new);
  lua_setfield(L, -2, "error");
}

/* Values that travel by name: C functions, module tables and whatever
 * lmp.register named. The sender looks a value up in a reverse map built
 * from package.loaded; the receiver looks the name up in its own process,
 * requiring the module when it is not loaded yet.
 *
 * A name record is a string: "R" .. registered_name, or
 * "M" .. module .. "\0" .. field (field empty for the module itself). */
#include <stdlib.h>
#include <string.h>

#include "lmp_internal.h"

static const char names_map_key = 'm';   /* registry: value -> record */
static const char registered_key = 'r';  /* registry: name -> value */

static void push_registered_table(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &registered_key) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &registered_key);
  }
}

static int is_object(int type) {
  return type == LUA_TTABLE || type == LUA_TFUNCTION || type == LUA_TUSERDATA;
}

static void set_if_absent(lua_State *L, int map, int value, const char *module,
                          size_t module_len, const char *field, size_t field_len) {
  luaL_Buffer b;
  lua_pushvalue(L, value);
  if (lua_rawget(L, map) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, value);
  luaL_buffinit(L, &b);
  luaL_addchar(&b, 'M');
  luaL_addlstring(&b, module, module_len);
  luaL_addchar(&b, '\0');
  luaL_addlstring(&b, field, field_len);
  luaL_pushresult(&b);
  lua_rawset(L, map);
}

static void build_map(lua_State *L, int loaded) {
  int map;
  luaL_checkstack(L, 8, "lmp names");
  lua_newtable(L);
  map = lua_gettop(L);
  push_registered_table(L);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pushvalue(L, -1);
    lua_pushfstring(L, "R%s", lua_tostring(L, -3));
    lua_rawset(L, map);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  /* Modules before their fields, so a module table gets its own name. */
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    if (lua_type(L, -2) == LUA_TSTRING && is_object(lua_type(L, -1))) {
      size_t len;
      const char *module = lua_tolstring(L, -2, &len);
      set_if_absent(L, map, lua_gettop(L), module, len, "", 0);
    }
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
      size_t len;
      const char *module = lua_tolstring(L, -2, &len);
      /* The globals table holds the script's own functions and data: only
       * its C functions (print, pairs, ...) go by name. */
      int is_globals = strcmp(module, "_G") == 0;
      int mod = lua_gettop(L);
      lua_pushnil(L);
      while (lua_next(L, mod)) {
        int type = lua_type(L, -1);
        if (lua_type(L, -2) == LUA_TSTRING && is_object(type) &&
            (!is_globals || lua_iscfunction(L, -1))) {
          size_t field_len;
          const char *field = lua_tolstring(L, -2, &field_len);
          set_if_absent(L, map, lua_gettop(L), module, len, field, field_len);
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
}

static const char names_gen_key = 'g';   /* registry: package.loaded generation */
static const char map_gen_key = 'G';     /* registry: generation the map was built at */

/* package.loaded[k] = v for a new k (require, luaL_requiref) bumps the
 * generation, so the map is rebuilt only after a module was added. */
static int loaded_newindex(lua_State *L) {
  lua_Integer g;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &names_gen_key);
  g = lua_tointeger(L, -1) + 1;
  lua_pop(L, 1);
  lua_pushinteger(L, g);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &names_gen_key);
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 0;
}

void lmp__names_push_map(lua_State *L, int rebuild) {
  int loaded;
  lua_Integer gen;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  loaded = lua_gettop(L);
  if (!lua_getmetatable(L, loaded)) {
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, loaded_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_setmetatable(L, loaded);
    rebuild = 1;
  } else lua_pop(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &names_gen_key);
  gen = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (!rebuild && lua_rawgetp(L, LUA_REGISTRYINDEX, &map_gen_key) == LUA_TNUMBER &&
      lua_tointeger(L, -1) == gen) {
    lua_pop(L, 1);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &names_map_key) == LUA_TTABLE) {
      lua_remove(L, loaded);
      return;
    }
  }
  lua_settop(L, loaded);
  build_map(L, loaded);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &names_map_key);
  lua_pushinteger(L, gen);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &map_gen_key);
  lua_remove(L, loaded);
}

void lmp__names_register(lua_State *L, const char *name, int idx) {
  idx = lua_absindex(L, idx);
  push_registered_table(L);
  lua_pushvalue(L, idx);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
  /* Forget the map: the next send rebuilds it with this name in it. */
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &map_gen_key);
}

void lmp__names_push_registered(lua_State *L, const char *name) {
  push_registered_table(L);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
}


void lmp__names_resolve(lua_State *L, const char *record, size_t len) {
  const char *module, *field, *sep;
  int base = lua_gettop(L);
  if (len >= 1 && record[0] == 'R') {
    lua_pushlstring(L, record + 1, len - 1);
    lmp__names_push_registered(L, lua_tostring(L, -1));
    if (lua_isnil(L, -1))
      lmp__raisef(L, "lmp: no value is registered as '%s' in this process "
                       "(call lmp.register in it, for example in the pool's "
                       "initializer)", lua_tostring(L, -2));
    lua_remove(L, -2);
    return;
  }
  sep = len >= 1 ? memchr(record, '\0', len) : NULL;
  if (len < 1 || record[0] != 'M' || sep == NULL)
    lmp__raisef(L, "lmp.loads: malformed data (bad name record)");
  lua_pushlstring(L, record + 1, (size_t)(sep - record - 1));
  module = lua_tostring(L, -1);
  lua_pushlstring(L, sep + 1, len - (size_t)(sep - record) - 1);
  field = lua_tostring(L, -1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, module) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
      lmp__raisef(L, "lmp: cannot find module '%s' here, needed for a value "
                       "sent by name: %s", module, luaL_tolstring(L, -1, NULL));
  }
  if (*field) {
    if (lua_type(L, -1) != LUA_TTABLE)
      lmp__raisef(L, "lmp: '%s.%s' is not defined in this process", module, field);
    if (lua_getfield(L, -1, field) == LUA_TNIL)
      lmp__raisef(L, "lmp: '%s.%s' is not defined in this process", module, field);
  }
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
}

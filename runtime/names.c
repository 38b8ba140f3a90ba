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
static const char names_sig_key = 's';   /* registry: package.loaded signature */
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

/* A cheap fingerprint of package.loaded, so the map is rebuilt when a
 * module was required since it was made. */
static lua_Integer loaded_signature(lua_State *L, int loaded) {
  lua_Unsigned sig = 1469598103934665603u;
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    sig = (sig ^ (lua_Unsigned)(size_t)lua_topointer(L, -1)) * 1099511628211u;
    lua_pop(L, 1);
  }
  return (lua_Integer)sig;
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

void lmp__names_push_map(lua_State *L, int rebuild) {
  lua_Integer sig;
  int loaded;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  loaded = lua_gettop(L);
  sig = loaded_signature(L, loaded);
  if (!rebuild && lua_rawgetp(L, LUA_REGISTRYINDEX, &names_sig_key) == LUA_TNUMBER &&
      lua_tointeger(L, -1) == sig) {
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
  lua_pushinteger(L, sig);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &names_sig_key);
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
  lua_rawsetp(L, LUA_REGISTRYINDEX, &names_sig_key);
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

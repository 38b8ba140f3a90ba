/* Values that travel by name: C functions, module tables and whatever
 * lmp.register named. The sender looks a value up in a reverse map built
 * from package.loaded; the receiver looks the name up in its own process,
 * requiring the module when it is not loaded yet.
 *
 * A name record is a string: "R" .. registered_name, or
 * "M" .. module .. "\0" .. field (field empty for the module itself). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "value.h"

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

/* Set by the loop layer before it watches package.loaded for luv. */
static void (*luv_loaded_hook)(lua_State *L);

void lmp__names_on_luv_loaded(void (*hook)(lua_State *L)) {
  luv_loaded_hook = hook;
}

static const char names_gen_key = 'g';   /* registry: package.loaded generation */
static const char map_gen_key = 'G';     /* registry: generation the map was built at */

/* package.loaded[k] = v for a new k (require, luaL_requiref) bumps the
 * generation, so the map is rebuilt only after a module was added; and
 * luv arriving after lmp made its loop is joined to it (the loop layer's
 * hook). */
static int loaded_newindex(lua_State *L) {
  lua_Integer g;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &names_gen_key);
  g = lua_tointeger(L, -1) + 1;
  lua_pop(L, 1);
  lua_pushinteger(L, g);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &names_gen_key);
  lua_settop(L, 3);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, 1);
  if (luv_loaded_hook && lua_type(L, 2) == LUA_TSTRING &&
      strcmp(lua_tostring(L, 2), "luv") == 0)
    luv_loaded_hook(L);
  return 0;
}

/* Gives package.loaded the metatable above; returns whether it was not
 * there before. */
static int watch_loaded(lua_State *L, int loaded) {
  if (lua_getmetatable(L, loaded)) {
    lua_pop(L, 1);
    return 0;
  }
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, loaded_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_setmetatable(L, loaded);
  return 1;
}

void lmp__names_watch_loaded(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  watch_loaded(L, lua_gettop(L));
  lua_pop(L, 1);
}

void lmp__names_push_map(lua_State *L, int rebuild) {
  int loaded;
  lua_Integer gen;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  loaded = lua_gettop(L);
  if (watch_loaded(L, loaded)) rebuild = 1;
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


/* ---- names this process does not know ----------------------------------
 *
 * A worker that cannot resolve a name in a task must fail that task, not
 * die: while the worker reads its channel, names are "lenient". A name
 * that cannot be resolved then decodes as a placeholder (a table with
 * metatable lmp.MissingName holding the reason in `message`), and the
 * reason is kept in a list that lmp__names_take_missing hands over (with
 * the frame, in core.channel_recv), so the worker can find which part of
 * the message holds it. */

static const char lenient_key = 'n';  /* registry: true while lenient */
static const char missing_key = 'x';  /* registry: array of reasons */

static int missing_name_index(lua_State *L) {
  lua_getfield(L, 1, "message");
  return lua_error(L);
}

static int is_lenient(lua_State *L) {
  int lenient = lua_rawgetp(L, LUA_REGISTRYINDEX, &lenient_key) == LUA_TBOOLEAN &&
                lua_toboolean(L, -1);
  lua_pop(L, 1);
  return lenient;
}

/* Given the reason on top of the stack: raises it, or, when lenient,
 * replaces it with a placeholder and records it. */
static void missing(lua_State *L) {
  int reason = lua_gettop(L);
  if (!is_lenient(L)) lua_error(L);
  luaL_checkstack(L, 4, "lmp names");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &missing_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &missing_key);
  }
  lua_pushvalue(L, reason);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, reason);
  lua_setfield(L, -2, "message");
  /* Used by mistake, it says why it is there. */
  if (luaL_newmetatable(L, LMP_MISSING_NAME_META)) {
    lua_pushcfunction(L, missing_name_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, missing_name_index);
    lua_setfield(L, -2, "__call");
  }
  lua_setmetatable(L, -2);
  lua_replace(L, reason);
}

/* Pushes the reason a name record cannot be resolved, formatted. */
static void push_reason(lua_State *L, const char *format, ...) {
  va_list args;
  va_start(args, format);
  lua_pushvfstring(L, format, args);
  va_end(args);
}

void lmp__names_resolve(lua_State *L, const char *record, size_t len) {
  const char *module, *field, *sep;
  int base = lua_gettop(L);
  if (len >= 1 && record[0] == 'R') {
    lua_pushlstring(L, record + 1, len - 1);
    lmp__names_push_registered(L, lua_tostring(L, -1));
    if (lua_isnil(L, -1)) {
      push_reason(L, "lmp: no value is registered as '%s' in this process (call "
                     "lmp.register('%s', value) in it too, for a pool in its "
                     "initializer)", lua_tostring(L, -2), lua_tostring(L, -2));
      goto unresolved;
    }
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
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      push_reason(L, "lmp: cannot find module '%s' here, needed for a value "
                     "sent by name: %s", module, luaL_tolstring(L, -1, NULL));
      goto unresolved;
    }
  }
  if (*field) {
    if (lua_type(L, -1) != LUA_TTABLE || lua_getfield(L, -1, field) == LUA_TNIL) {
      push_reason(L, "lmp: '%s.%s' is not defined in this process", module, field);
      goto unresolved;
    }
  }
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
  return;
unresolved:
  missing(L);
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
}

static int missing_constructor(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  missing(L);
  return 1;
}

void lmp__names_push_constructor(lua_State *L, const char *name) {
  lmp__names_push_registered(L, name);
  if (!lua_isnil(L, -1)) return;
  lua_pop(L, 1);
  push_reason(L, "lmp.loads: no constructor is registered as '%s' in this process "
                 "(call lmp.register('%s', constructor) in it too, for a pool in "
                 "its initializer)", name, name);
  if (!is_lenient(L)) lua_error(L);
  lua_pushcclosure(L, missing_constructor, 1);
}

void lmp__names_set_lenient(lua_State *L, int on) {
  lua_pushboolean(L, on);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &lenient_key);
}

void lmp__names_take_missing(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &missing_key) != LUA_TTABLE) return;
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &missing_key);
}

static int names_register(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  luaL_checkany(L, 2);
  if (lua_isnil(L, 2)) luaL_argerror(L, 2, "value expected, got nil");
  lmp__names_register(L, name, 2);
  return 0;
}

static const luaL_Reg names_functions[] = {
    {"register", names_register},
    {NULL, NULL}};

void lmp__open_names(lua_State *L) {
  luaL_setfuncs(L, names_functions, 0);
}

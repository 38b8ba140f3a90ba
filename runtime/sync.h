/* Between the two binding files of futex.c's cells: sync.c (the cells,
 * their methods, the fast lock methods) and waiter.c (how the main
 * process waits without stopping its event loop). Internal. */
#ifndef LMP_SYNC_H
#define LMP_SYNC_H

#include <stdlib.h>
#include <sys/mman.h>

#include "transport.h"

#define CELL_META "lmp.SyncCell"

/* How long a waiter sleeps before it checks that a lock's holder still
 * lives (a holder that dies wakes nobody): the only timed wake-up, and it
 * decides nothing but that. */
#define LIVENESS_NS 500000000

/* A child watches the cell this long before it sleeps (when the machine
 * has a CPU to spare): a lock held for a few instructions is released
 * sooner than a sleep and a wake-up take, and a longer spin only steals
 * the CPU from the process that would make the change. */
#define SHORT_SPIN_NS 3000

/* A cell's mapping in this process, shared by its Lua object and the
 * helper thread sleeping on it, and unmapped when the last lets go. */
typedef struct cell_map {
  lmp_sync_cell *cell;
  int refs; /* atomic */
} cell_map;

typedef struct cell_box {
  cell_map *map; /* NULL once closed */
} cell_box;

static inline void lmp__map_unref(cell_map *m) {
  if (__atomic_sub_fetch(&m->refs, 1, __ATOMIC_SEQ_CST) == 0) {
    munmap(m->cell, sizeof *m->cell);
    free(m);
  }
}

/* Makes the metatable name (methods with the metatable as upvalue 1, gc
 * as __gc and __close), unless it exists. */
static inline void lmp__sync_meta(lua_State *L, const char *name, const luaL_Reg *methods,
                                  lua_CFunction gc) {
  if (luaL_newmetatable(L, name)) {
    if (methods) {
      lua_newtable(L);
      lua_pushvalue(L, -2);
      luaL_setfuncs(L, methods, 1);
      lua_setfield(L, -2, "__index");
    }
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__close");
    lua_pushstring(L, "a lock's mapping belongs to its process: send the lock");
    lua_setfield(L, -2, "__lmp_nosend");
  }
  lua_pop(L, 1);
}

/* waiter.c: cell:waiter() (a helper thread sleeps for a coroutine's wait
 * and wakes the loop) and cell:sleep_beside_loop(seen [, seconds]) (the
 * main thread sleeps on the cell, a watcher thread on the loop). */
int lmp__cell_waiter(lua_State *L);
int lmp__cell_sleep_beside_loop(lua_State *L);
void lmp__open_waiter(lua_State *L);

#endif

/* lmp.core: the C half of the module, the top of the runtime's layers.
 * This file only makes the lmp.core table: each layer's binding adds its
 * functions to it, in layer order. */
#include <errno.h>
#include <string.h>

#include "lmp.h"
#include "channel.h"
#include "table_peek.h"
#include "worker.h"

int luaopen_lmp_core(lua_State *L) {
  /* A worker that dies while the main process writes to it must show up
   * as its exit, not kill the main process with SIGPIPE (libuv leaves
   * this to the program). */
  if (lmp__guard_sigpipe() != 0)
    return luaL_error(L, "lmp: cannot guard against SIGPIPE: %s", strerror(errno));
  lua_newtable(L);
  lua_pushinteger(L, LMP_FORMAT_VERSION);
  lua_setfield(L, -2, "format_version");
  lmp__open_error(L);
  lmp__open_names(L);
  lmp__open_table_peek(L);
  lmp__open_payload(L);
  lmp__open_cursor(L);
  lmp__open_descriptors(L);
  lmp__open_loop(L);
  lmp__open_timer(L);
  lmp__open_stop_signals(L);
  lmp__open_digest(L);
  lmp__open_tracker(L);
  lmp__open_terminal(L);
  lmp__open_shared(L);
  lmp__open_sync(L);
  lmp__open_feeder(L);
  lmp__open_channel(L);
  lmp__open_process(L);
  lmp__open_spawn(L);
  lmp__open_forkserver(L);
  lmp__open_server(L);
  lmp__open_watch(L);
  lmp__open_listener(L);
#ifdef LMP_MPI
  lmp__open_relay_mpi(L);
#endif
  lmp__open_worker(L);
  lmp__open_map_numbers(L);
  lmp__open_interrupt(L);
  return 1;
}

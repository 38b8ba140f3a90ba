/* A worker that another transport relays (an MPI rank, see mpi.c): the
 * same handle as a local worker's (process.c), whose channel is a socket
 * the relay copies frames through, and whose exit is reported by the
 * relay on a second socket instead of being watched by the kernel. So the
 * pool reads, writes, corks and loses a remote worker exactly as a local
 * one. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "process.h"

static void free_unstarted(uv_handle_t *handle) {
  free(handle->data);
}

int lmp__relay_worker(lua_State *L, int id, int channel_fd, int report_fd, int on_message) {
  worker_handle **box, *c;
  uv_loop_t *loop = lmp__loop(L);
  int r;
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, HANDLE_META);
  c = calloc(1, sizeof *c);
  if (c == NULL) {
    close(channel_fd);
    close(report_fd);
    return luaL_error(L, "lmp: not enough memory");
  }
  c->channel.data = c;
  if ((r = uv_pipe_init(loop, &c->channel, 0)) != 0) {
    free(c);
  } else if ((r = uv_pipe_open(&c->channel, channel_fd)) != 0) {
    uv_close((uv_handle_t *)&c->channel, free_unstarted);
  }
  if (r != 0) {
    close(channel_fd);
    close(report_fd);
    return luaL_error(L, "lmp: cannot make a relayed channel: %s", uv_strerror(r));
  }
  c->handles_open = 1;
  c->lua_owned = 1;
  c->owner = (long)getpid();
  c->relayed = 1;
  c->by_pidfd = 1;
  c->pid = id;
  c->pidfd = -1;
  *box = c; /* the box's finalizer closes the channel from here on */
  c->exited = c->eof = c->reported = 1; /* till the report is watched */
  if ((r = uv_poll_init(loop, &c->exit_watch, report_fd)) != 0) {
    close(report_fd);
    lmp__handle_signal(c, SIGKILL);
    return luaL_error(L, "lmp: cannot watch a relayed worker: %s", uv_strerror(r));
  }
  c->exit_watch.data = c;
  c->pidfd = report_fd;
  c->handles_open++;
  if ((r = uv_poll_start(&c->exit_watch, UV_READABLE, lmp__handle_on_pidfd)) != 0) {
    lmp__handle_signal(c, SIGKILL);
    return luaL_error(L, "lmp: cannot watch a relayed worker: %s", uv_strerror(r));
  }
  c->exited = c->eof = c->reported = 0;
  return lmp__handle_started(L, c, box, on_message);
}

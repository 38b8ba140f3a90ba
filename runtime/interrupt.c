/* Ctrl-C. SIGINT reaches the whole process group; workers ignore it, and
 * the main process stops them all, says so once, and exits with 130, the
 * shell's code for death by SIGINT. It acts at once when the main process
 * waits in the loop (a uv_async woken from the handler) and at the next
 * Lua instruction when it runs Lua code (a hook, as lua.c does it). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "worker.h"

static uv_async_t interrupt_async;
static lua_State *interrupted_state;
static struct sigaction previous_action; /* the host's, given back at close */
static volatile sig_atomic_t installed;

static void LMP_NORETURN stop_everything(void) {
  int n = lmp__kill_all_workers();
  lmp__cancel_feeders(); /* exit waits for no reader */
  fflush(stdout);
  if (n > 0)
    fprintf(stderr, "\nlmp: interrupted (Ctrl-C); stopped %d worker process%s\n", n,
            n == 1 ? "" : "es");
  else
    fprintf(stderr, "\nlmp: interrupted (Ctrl-C)\n");
  exit(130);
}

static void on_interrupt_async(uv_async_t *handle) {
  (void)handle;
  stop_everything();
}

static void on_interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  stop_everything();
}

static void on_sigint(int sig) {
  (void)sig;
  /* Both calls are async-signal-safe. */
  uv_async_send(&interrupt_async);
  if (interrupted_state)
    lua_sethook(interrupted_state, on_interrupt_hook,
                LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* Called when the lua_State closes: the handler must not touch it after. */
static void close_interrupt(void) {
  if (!installed) return;
  /* The handler must not outlive the state it touches: if the host's
   * action cannot be given back, the default is the one left. */
  if (sigaction(SIGINT, &previous_action, NULL) != 0) signal(SIGINT, SIG_DFL);
  interrupted_state = NULL;
  uv_close((uv_handle_t *)&interrupt_async, NULL);
  installed = 0;
}

/* core.handle_interrupts(): installed when the first pool starts. */
static int core_handle_interrupts(lua_State *L) {
  struct sigaction action;
  if (installed) return 0;
  if (uv_async_init(lmp__loop(L), &interrupt_async, on_interrupt_async) != 0)
    return luaL_error(L, "lmp: cannot watch for Ctrl-C");
  /* The watcher must not keep lmp.run() or the loop alive by itself. */
  uv_unref((uv_handle_t *)&interrupt_async);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  interrupted_state = lua_tothread(L, -1);
  lua_pop(L, 1);
  memset(&action, 0, sizeof action);
  action.sa_handler = on_sigint;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGINT, &action, &previous_action) != 0) {
    int err = errno;
    interrupted_state = NULL;
    uv_close((uv_handle_t *)&interrupt_async, NULL);
    return luaL_error(L, "lmp: cannot watch for Ctrl-C: %s", strerror(err));
  }
  installed = 1;
  lmp__loop_at_close(close_interrupt);
  return 0;
}

static const luaL_Reg interrupt_functions[] = {
    {"handle_interrupts", core_handle_interrupts}, {NULL, NULL}};

void lmp__open_interrupt(lua_State *L) {
  luaL_setfuncs(L, interrupt_functions, 0);
}

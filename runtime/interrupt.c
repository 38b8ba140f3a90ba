/* Ctrl-C. SIGINT reaches the whole process group; workers ignore it, and
 * the main process stops them all, says so once, and exits with 130, the
 * shell's code for death by SIGINT. It acts at once when the main process
 * waits in the loop (a uv_async woken from the handler) and at the next
 * Lua instruction when it runs Lua code (a hook, as lua.c does it). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "lmp_internal.h"

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
  sigaction(SIGINT, &action, &previous_action);
  installed = 1;
  return 0;
}

/* Called when the lua_State closes: the handler must not touch it after. */
void lmp__close_interrupt(void) {
  if (!installed) return;
  sigaction(SIGINT, &previous_action, NULL);
  interrupted_state = NULL;
  uv_close((uv_handle_t *)&interrupt_async, NULL);
  installed = 0;
}

/* SIGPIPE. Python ignores it for the whole process, and can, since every
 * failed write raises there; Lua's print ignores a failed write, so a
 * script whose reader went away (`lmp script.lua | head`) would print for
 * ever, and the programs it starts would inherit the ignored signal. So
 * the default stays, and only the writes lmp makes on its channels are
 * shielded: a worker that died must show up as its exit, not kill the
 * main process. A handler, unlike SIG_IGN, is reset to the default in a
 * program the script executes. */
static volatile sig_atomic_t sigpipe_shield;

static void on_sigpipe(int sig) {
  struct sigaction action;
  if (sigpipe_shield > 0) return; /* lmp's write: it fails with EPIPE */
  /* Someone else's write: what the default does. The signal is blocked
   * while this runs and arrives again when it returns. */
  memset(&action, 0, sizeof action);
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  sigaction(sig, &action, NULL);
  raise(sig);
}

void lmp__guard_sigpipe(void) {
  struct sigaction current, action;
  if (sigaction(SIGPIPE, NULL, &current) != 0 || (current.sa_flags & SA_SIGINFO) ||
      current.sa_handler != SIG_DFL)
    return; /* ignored or handled by the host already: its choice */
  memset(&action, 0, sizeof action);
  action.sa_handler = on_sigpipe;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGPIPE, &action, NULL);
}

void lmp__shield_sigpipe(int delta) {
  sigpipe_shield += delta;
}

static const luaL_Reg interrupt_functions[] = {
    {"handle_interrupts", core_handle_interrupts}, {NULL, NULL}};

void lmp__open_interrupt(lua_State *L) {
  luaL_setfuncs(L, interrupt_functions, 0);
}

/* SIGPIPE: the default stays for the script and the programs it starts;
 * only lmp's own writes on its channels are shielded from it. */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "transport.h"

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
  /* Should the default not come back, raising would only bring the signal
   * here again: end as the default would have. */
  if (sigaction(sig, &action, NULL) != 0) _exit(128 + sig);
  raise(sig);
}

int lmp__guard_sigpipe(void) {
  struct sigaction current, action;
  if (sigaction(SIGPIPE, NULL, &current) != 0) return -1;
  if ((current.sa_flags & SA_SIGINFO) || current.sa_handler != SIG_DFL)
    return 0; /* ignored or handled by the host already: its choice */
  memset(&action, 0, sizeof action);
  action.sa_handler = on_sigpipe;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  return sigaction(SIGPIPE, &action, NULL) == 0 ? 0 : -1;
}

void lmp__shield_sigpipe(int delta) {
  sigpipe_shield += delta;
}

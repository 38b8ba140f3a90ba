/* The futex primitives of runtime/futex.c alone, without Lua or a loop:
 * processes made by fork share a MAP_SHARED page. Prints one line per
 * check and "futex_test: N failed" at the end; exits 1 if any failed.
 * Built and run by tests/sync_spec.lua. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "transport.h"

static int failed;

static void check(int ok, const char *what) {
  printf("%s %s\n", ok ? "ok" : "FAILED", what);
  if (!ok) failed++;
}

/* Blocks until the lock is taken, sleeping on the cell meanwhile, counted
 * among its waiters (a release wakes only those). The holders keep the
 * lock a few instructions: a sleep that lasts 10 s is a lost wake-up, and
 * the process exits 5. */
static void lock_or_exit(lmp_sync_cell *c, int32_t pid) {
  lmp__lock_waiting(c, 1);
  for (;;) {
    uint32_t seen = lmp__sync_seq(c);
    if (lmp__lock_try(c, pid, 0, 0) != 0) break;
    if (lmp__sync_sleep(c, seen, 10000000000LL, 0)) _exit(5);
  }
  lmp__lock_waiting(c, -1);
}

static int wait_child(pid_t pid) {
  int status;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(void) {
  enum { ROUNDS = 100000 };
  char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  lmp_sync_cell *c = (lmp_sync_cell *)page;
  long *counter = (long *)(page + 2048);
  pid_t kids[2];
  int i, k;
  if (page == MAP_FAILED) return 2;

  /* Two processes raise one counter under the lock: no increment lost. */
  lmp__sync_init(c);
  *counter = 0;
  for (k = 0; k < 2; k++) {
    if ((kids[k] = fork()) == 0) {
      int32_t me = (int32_t)getpid();
      for (i = 0; i < ROUNDS; i++) {
        lock_or_exit(c, me);
        ++*(volatile long *)counter;
        if (lmp__lock_release(c, me, 0) != 0) _exit(3);
      }
      _exit(0);
    }
  }
  check(wait_child(kids[0]) == 0 && wait_child(kids[1]) == 0, "two processes under one lock exit 0");
  check(*counter == 2L * ROUNDS, "no increment is lost under the lock");
  check(__atomic_load_n(&c->sleepers, __ATOMIC_SEQ_CST) == 0, "nobody is left counted asleep");
  check(__atomic_load_n(&c->waiting, __ATOMIC_SEQ_CST) == 0, "nobody is left counted waiting");
  check(lmp__lock_release(c, 1, 0) == -EPERM, "releasing a free lock is refused");

  /* An event set by one process wakes another asleep on it. */
  lmp__sync_init(c);
  if ((kids[0] = fork()) == 0) {
    for (;;) {
      uint32_t seen = lmp__sync_seq(c);
      if (__atomic_load_n(&c->value, __ATOMIC_SEQ_CST)) _exit(0);
      if (lmp__sync_sleep(c, seen, 10000000000LL, 0)) _exit(4); /* 10 s: lost */
    }
  }
  usleep(50000);
  lmp__event_set(c);
  check(wait_child(kids[0]) == 0, "an event set in one process wakes another");

  /* A holder that dies: the next try that checks gets the lock and is told. */
  lmp__sync_init(c);
  if ((kids[0] = fork()) == 0) {
    lmp__lock_try(c, (int32_t)getpid(), 1, 0);
    pause(); /* killed holding it */
    _exit(0);
  }
  while (__atomic_load_n(&c->owner, __ATOMIC_SEQ_CST) != kids[0]) usleep(1000);
  check(lmp__lock_try(c, (int32_t)getpid(), 1, 1) == 0, "a live holder keeps the lock");
  kill(kids[0], SIGKILL);
  usleep(100000); /* a zombie now, not yet reaped: holds nothing */
  check(lmp__lock_try(c, (int32_t)getpid(), 1, 0) == 0, "without the check the lock stays taken");
  check(lmp__lock_try(c, (int32_t)getpid(), 1, 1) == LMP_SYNC_OWNER_DIED,
        "with the check the lock passes on, saying its holder died");
  check(c->depth == 1 && lmp__lock_release(c, (int32_t)getpid(), 1) == 0 && c->owner == 0,
        "the new holder holds it once and releases it");
  wait_child(kids[0]);

  /* A bounded semaphore refuses to pass its ceiling. */
  lmp__sync_init(c);
  c->value = 1;
  c->maximum = 1;
  check(lmp__semaphore_release(c) == -ERANGE, "a bounded semaphore refuses a release at its ceiling");
  check(lmp__semaphore_try(c) == 1 && lmp__semaphore_try(c) == 0, "a semaphore counts down to 0");
  check(lmp__semaphore_release(c) == 0 && c->value == 1, "and up again");

  /* A counter stays within 0 and its ceiling, and a change wakes a
   * process asleep on it. */
  lmp__sync_init(c);
  c->maximum = 2;
  {
    int32_t after = -1;
    uint32_t seen;
    check(lmp__counter_add(c, -1, NULL) == -ERANGE && c->value == 0, "a counter refuses to go below 0");
    check(lmp__counter_add(c, 2, &after) == 0 && after == 2, "a counter adds up to its ceiling");
    check(lmp__counter_add(c, 1, NULL) == -ERANGE && c->value == 2, "and refuses to pass it");
    seen = lmp__sync_seq(c);
    if ((kids[0] = fork()) == 0) {
      while (c->value == 2) lmp__sync_sleep(c, seen, -1, 0);
      _exit(c->value == 1 ? 0 : 1);
    }
    usleep(100000);
    check(lmp__counter_add(c, -1, &after) == 0 && after == 1, "a counter counts down");
    check(wait_child(kids[0]) == 0, "and wakes the process asleep on it");
  }

  /* A condition's tickets go to waiters registered before the notify. */
  lmp__sync_init(c);
  check(lmp__condition_notify(c, 5) == 0, "notify with nobody waiting gives no ticket");
  lmp__condition_register(c);
  lmp__condition_register(c);
  check(lmp__condition_notify(c, 1) == 1 && lmp__condition_tickets(c) == 1, "notify(1) gives one");
  check(lmp__condition_take(c) == 1 && lmp__condition_take(c) == 0, "one waiter takes it");
  check(lmp__condition_leave(c) == 0, "the other, timing out, leaves without one");
  lmp__condition_register(c);
  check(lmp__condition_notify(c, 9) == 1 && lmp__condition_leave(c) == 1,
        "a waiter notified as it times out keeps the notification");

  /* A sleep with nothing changing ends at its timeout and says so. */
  check(lmp__sync_sleep(c, lmp__sync_seq(c), 10000000, 0) == 1, "a sleep times out quietly");
  check(lmp__sync_sleep(c, lmp__sync_seq(c) + 1, 10000000, 0) == 0, "a stale seq does not sleep");

  munmap(page, 4096);
  printf("futex_test: %d failed\n", failed);
  return failed ? 1 : 0;
}

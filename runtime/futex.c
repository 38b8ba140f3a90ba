/* Locks, semaphores, events and condition variables in memory shared by
 * processes (a MAP_SHARED file), on Linux futexes. Pure C: no Lua, no
 * loop; sync.c binds it. Every object is an lmp_sync_cell whose first
 * word, seq, is the futex word: whoever changes the state bumps it and
 * wakes the processes asleep on it, and a waiter sleeps only while seq
 * still holds the value it read before finding the state unfit. So a
 * waiter sleeps in the kernel and wakes when the state changes, whatever
 * the object, and one sleeping primitive serves them all. The shared
 * futex ops (not the _PRIVATE ones) are used: the word lives in a file
 * that several processes map. */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "transport.h"

#define SC __ATOMIC_SEQ_CST
#define RELAXED __ATOMIC_RELAXED

int lmp__futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns) {
  struct timespec ts, *tp = NULL;
  if (timeout_ns >= 0) {
    ts.tv_sec = (time_t)(timeout_ns / 1000000000);
    ts.tv_nsec = (long)(timeout_ns % 1000000000);
    tp = &ts;
  }
  /* FUTEX_WAIT's timeout is relative and measured on CLOCK_MONOTONIC. */
  if (syscall(SYS_futex, word, FUTEX_WAIT, expected, tp, NULL, 0) == 0) return 0;
  if (errno == EAGAIN) return 0; /* the word had changed already */
  return -errno;
}

int lmp__futex_wake(uint32_t *word, int n) {
  long r = syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
  return r < 0 ? -errno : (int)r;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

void lmp__sync_init(lmp_sync_cell *c) {
  memset(c, 0, sizeof *c);
  c->maximum = -1;
}

uint32_t lmp__sync_seq(lmp_sync_cell *c) { return __atomic_load_n(&c->seq, SC); }

/* The state changed: bump seq, then wake whoever sleeps on it. A sleeper
 * counts itself before it sleeps and the futex compares seq as it goes to
 * sleep, so (all of it sequentially consistent) either we see the sleeper
 * or the sleeper sees the new seq: no wake-up is lost, and a change nobody
 * waits for costs no system call. */
static void changed(lmp_sync_cell *c) {
  __atomic_add_fetch(&c->seq, 1, SC);
  if (__atomic_load_n(&c->sleepers, SC) > 0) lmp__futex_wake(&c->seq, INT_MAX);
}

int lmp__sync_sleep(lmp_sync_cell *c, uint32_t seen, int64_t timeout_ns, uint64_t spin_ns) {
  int r;
  if (spin_ns > 0) {
    /* A change that comes within the spin is taken without a sleep and
     * wake-up, which cost more than the spin on a machine with a CPU to
     * spare (lmp__spin_ns is 0 on one CPU). */
    uint64_t end = now_ns() + spin_ns;
    unsigned i = 0;
    while (__atomic_load_n(&c->seq, SC) == seen) {
      cpu_relax();
      if ((++i & 63) == 0 && now_ns() >= end) break;
    }
    if (__atomic_load_n(&c->seq, SC) != seen) return 0;
  }
  __atomic_add_fetch(&c->sleepers, 1, SC);
  r = lmp__futex_wait(&c->seq, seen, timeout_ns);
  __atomic_sub_fetch(&c->sleepers, 1, SC);
  return r == -ETIMEDOUT ? 1 : 0;
}

int lmp__process_alive(int32_t pid) {
  char path[64], stat[256], *end;
  FILE *f;
  size_t n;
  if (pid <= 0) return 0;
  if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) return 0;
  /* A zombie has not been reaped yet but holds nothing any more. */
  snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
  if ((f = fopen(path, "r")) == NULL) return 1;
  n = fread(stat, 1, sizeof stat - 1, f);
  fclose(f);
  stat[n] = '\0';
  /* "pid (comm) S ...": the state follows the last ')'. */
  end = strrchr(stat, ')');
  return !(end && end[1] == ' ' && (end[2] == 'Z' || end[2] == 'X'));
}

/* ---- locks ----------------------------------------------------------------- */

int lmp__lock_try(lmp_sync_cell *c, int32_t pid, int recursive, int check_owner) {
  int32_t owner = 0;
  if (__atomic_compare_exchange_n(&c->owner, &owner, pid, 0, SC, SC)) {
    __atomic_store_n(&c->depth, 1, RELAXED);
    return LMP_SYNC_ACQUIRED;
  }
  if (owner == pid) {
    if (!recursive) return 0;
    /* Only the holder changes depth: no atomic read-modify-write (a
     * locked instruction, the dearest part of an uncontended RLock). */
    __atomic_store_n(&c->depth, __atomic_load_n(&c->depth, RELAXED) + 1, RELAXED);
    return LMP_SYNC_ACQUIRED;
  }
  if (check_owner && !lmp__process_alive(owner) &&
      __atomic_compare_exchange_n(&c->owner, &owner, pid, 0, SC, SC)) {
    __atomic_store_n(&c->depth, 1, RELAXED);
    return LMP_SYNC_OWNER_DIED;
  }
  return 0;
}

/* A release bumps seq only when some waiter counted itself: the waiter
 * counts itself, then tries; the release frees the lock, then reads the
 * count (all sequentially consistent). So either the release sees the
 * waiter and wakes it, or the waiter's try comes after the release and
 * finds the lock free (or taken by another, whose own release, later
 * still, sees the waiter). An uncontended release is one locked
 * instruction. */
int lmp__lock_release(lmp_sync_cell *c, int32_t pid, int recursive) {
  if (recursive) {
    uint32_t depth;
    if (__atomic_load_n(&c->owner, SC) != pid) return -EPERM;
    depth = __atomic_load_n(&c->depth, RELAXED) - 1;
    __atomic_store_n(&c->depth, depth, RELAXED);
    if (depth > 0) return 0;
    __atomic_store_n(&c->owner, 0, SC);
  } else if (__atomic_exchange_n(&c->owner, 0, SC) == 0) {
    return -EPERM; /* not locked: any process may release, but only once */
  }
  if (__atomic_load_n(&c->waiting, SC) > 0) changed(c);
  return 0;
}

void lmp__lock_waiting(lmp_sync_cell *c, int delta) {
  if (delta > 0) {
    __atomic_add_fetch(&c->waiting, 1, SC);
  } else {
    /* Never below 0, whatever a caller does. */
    uint32_t n = __atomic_load_n(&c->waiting, SC);
    while (n > 0 && !__atomic_compare_exchange_n(&c->waiting, &n, n - 1, 0, SC, SC)) {
    }
  }
}

/* ---- semaphores and events ------------------------------------------------- */

int lmp__semaphore_try(lmp_sync_cell *c) {
  int32_t v = __atomic_load_n(&c->value, SC);
  while (v > 0)
    if (__atomic_compare_exchange_n(&c->value, &v, v - 1, 0, SC, SC)) return 1;
  return 0;
}

int lmp__semaphore_release(lmp_sync_cell *c) {
  int32_t v = __atomic_load_n(&c->value, SC), ceiling = c->maximum;
  do {
    if ((ceiling >= 0 && v >= ceiling) || v == INT32_MAX) return -ERANGE;
  } while (!__atomic_compare_exchange_n(&c->value, &v, v + 1, 0, SC, SC));
  changed(c);
  return 0;
}

void lmp__event_set(lmp_sync_cell *c) {
  if (__atomic_exchange_n(&c->value, 1, SC) == 0) changed(c);
}

void lmp__event_clear(lmp_sync_cell *c) { __atomic_store_n(&c->value, 0, SC); }

/* ---- counters ------------------------------------------------------------------ */

int lmp__counter_add(lmp_sync_cell *c, int32_t delta, int32_t *after) {
  int32_t v = __atomic_load_n(&c->value, SC), ceiling = c->maximum, w;
  do {
    int64_t n = (int64_t)v + delta;
    if (n < 0 || n > INT32_MAX || (delta > 0 && ceiling >= 0 && n > ceiling)) return -ERANGE;
    w = (int32_t)n;
  } while (!__atomic_compare_exchange_n(&c->value, &v, w, 0, SC, SC));
  if (after) *after = w;
  changed(c);
  return 0;
}

/* ---- condition variables ------------------------------------------------------
 * notices packs two counts in one word, changed together: the waiters
 * registered and not yet notified (high half), and the notifications
 * given and not yet taken (low half). A waiter registers while it holds
 * the condition's lock, so notify(n), also made under the lock, gives
 * tickets to waiters that were there before it. */
#define WAITING(x) ((uint32_t)((x) >> 32))
#define TICKETS(x) ((uint32_t)(x))
#define NOTICES(w, t) (((uint64_t)(w) << 32) | (uint64_t)(t))

void lmp__condition_register(lmp_sync_cell *c) {
  __atomic_add_fetch(&c->notices, NOTICES(1, 0), SC);
}

/* Taking a ticket is a change too: the notifier waits until they are all
 * taken (lmp__condition_tickets). */
int lmp__condition_take(lmp_sync_cell *c) {
  uint64_t x = __atomic_load_n(&c->notices, SC);
  while (TICKETS(x) > 0)
    if (__atomic_compare_exchange_n(&c->notices, &x, x - 1, 0, SC, SC)) {
      changed(c);
      return 1;
    }
  return 0;
}

uint32_t lmp__condition_tickets(lmp_sync_cell *c) {
  return TICKETS(__atomic_load_n(&c->notices, SC));
}

int lmp__condition_leave(lmp_sync_cell *c) {
  uint64_t x = __atomic_load_n(&c->notices, SC);
  for (;;) {
    if (TICKETS(x) > 0) {
      if (__atomic_compare_exchange_n(&c->notices, &x, x - 1, 0, SC, SC)) {
        changed(c);
        return 1;
      }
    } else if (WAITING(x) > 0) {
      if (__atomic_compare_exchange_n(&c->notices, &x, x - NOTICES(1, 0), 0, SC, SC)) return 0;
    } else {
      return 0; /* counts of a waiter that died; nothing to give back */
    }
  }
}

uint32_t lmp__condition_notify(lmp_sync_cell *c, uint32_t n) {
  uint64_t x = __atomic_load_n(&c->notices, SC);
  uint32_t k;
  do {
    k = WAITING(x) < n ? WAITING(x) : n;
    if (k == 0) return 0;
  } while (!__atomic_compare_exchange_n(&c->notices, &x,
                                        NOTICES(WAITING(x) - k, TICKETS(x) + k), 0, SC, SC));
  changed(c);
  return k;
}

/* ---- barriers ------------------------------------------------------------------
 * Python's barrier (threading.Barrier) made lock-free: its state and the
 * count of parties inside share one word (notices), changed by
 * compare-and-swap, each change a change of seq that wakes the sleepers. */
#define B_STATE(x) ((int32_t)(uint32_t)((x) >> 32))
#define B_COUNT(x) ((uint32_t)(x))
#define B_WORD(state, count) (((uint64_t)(uint32_t)(state) << 32) | (uint64_t)(count))

int lmp__barrier_enter(lmp_sync_cell *c, uint32_t parties, uint32_t *index) {
  uint64_t x = __atomic_load_n(&c->notices, SC);
  for (;;) {
    if (B_STATE(x) == LMP_BARRIER_BROKEN) return -1;
    /* Draining, resetting, or full while the last party runs the action:
     * the next round has not begun. */
    if (B_STATE(x) != LMP_BARRIER_FILLING || B_COUNT(x) >= parties) return 0;
    if (__atomic_compare_exchange_n(&c->notices, &x, x + 1, 0, SC, SC)) {
      *index = B_COUNT(x);
      changed(c);
      return 1;
    }
  }
}

static void barrier_change(lmp_sync_cell *c, int what) {
  uint64_t x = __atomic_load_n(&c->notices, SC), y;
  do {
    int32_t state = B_STATE(x);
    uint32_t count = B_COUNT(x);
    switch (what) {
      case 'd': state = LMP_BARRIER_DRAINING; break;
      case 'b': state = LMP_BARRIER_BROKEN; break;
      case 'x': /* a party leaves; the last one out opens the next round */
        if (count > 0) count--;
        if (count == 0 && (state == LMP_BARRIER_RESETTING || state == LMP_BARRIER_DRAINING))
          state = LMP_BARRIER_FILLING;
        break;
      default: /* 'r': reset */
        if (count == 0)
          state = LMP_BARRIER_FILLING;
        else if (state == LMP_BARRIER_FILLING || state == LMP_BARRIER_BROKEN)
          state = LMP_BARRIER_RESETTING;
        break;
    }
    y = B_WORD(state, count);
  } while (!__atomic_compare_exchange_n(&c->notices, &x, y, 0, SC, SC));
  changed(c);
}

void lmp__barrier_drain(lmp_sync_cell *c) { barrier_change(c, 'd'); }
void lmp__barrier_break(lmp_sync_cell *c) { barrier_change(c, 'b'); }
void lmp__barrier_leave(lmp_sync_cell *c) { barrier_change(c, 'x'); }
void lmp__barrier_reset(lmp_sync_cell *c) { barrier_change(c, 'r'); }

int32_t lmp__barrier_state(lmp_sync_cell *c, uint32_t *count) {
  uint64_t x = __atomic_load_n(&c->notices, SC);
  if (count) *count = B_COUNT(x);
  return B_STATE(x);
}

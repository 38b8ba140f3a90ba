/* The resource tracker: what lmp makes that has a name outside the
 * process (a POSIX shared memory object, a Manager's socket and its
 * directory) is registered with a small process that removes whatever is
 * still registered once the processes that registered it are gone, however
 * they ended (SIGKILL, Ctrl-C, os.exit).
 *
 * The tracker is made on first need by a double fork, so that it is nobody's
 * child (it never shows up among a script's children, and nobody must reap
 * it), and it leaves the session, so that Ctrl-C at the terminal does not
 * reach it. It holds one end of a socket pair; the process that made it
 * holds the other, close-on-exec, and sends "+" or "-" records. When every
 * copy of that end is closed (the process and any child it forked are
 * gone), the tracker reads the end of the stream, removes what is left, in
 * the reverse order of registration (files before their directory), and
 * exits.
 *
 * The tracker runs in a fork of a process that may have threads (libuv's
 * pool), so it calls nothing but system calls: no malloc, no stdio. Each
 * process that registers has its own tracker (a forked worker starts with
 * its descriptors closed and makes its own): what a process made lives as
 * long as that process, as the objects' finalizers already promise. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "transport.h"

/* Longest path a record holds: a shared memory name is a "/" and at most
 * NAME_MAX bytes, socket paths at most 107 bytes. */
#define TRACK_PATH_MAX (1 + 255)

typedef struct entry {
  char kind; /* 's' shared memory name, 'f' file, 'd' directory */
  char path[TRACK_PATH_MAX + 1];
} entry;

static int tracker_fd = -1;     /* our end, or -1 */
static long tracker_owner;      /* the process whose tracker and registrations these are */
static long tracker_pid;        /* the tracker's pid */

/* ---- the tracker process -------------------------------------------------- */

static void remove_entry(const entry *e) {
  if (e->kind == 's') {
    /* shm_unlink(name) is unlink("/dev/shm" name) on Linux. */
    char path[sizeof "/dev/shm" + TRACK_PATH_MAX + 1];
    size_t n = strlen(e->path);
    memcpy(path, "/dev/shm", 8);
    memcpy(path + 8, e->path, n + 1);
    unlink(path);
  } else if (e->kind == 'f') {
    unlink(e->path);
  } else if (e->kind == 'd') {
    rmdir(e->path);
  }
}

static LMP_NORETURN void run_tracker(int fd) {
  entry *entries = NULL;
  size_t count = 0, capacity = 0;
  char record[2 + TRACK_PATH_MAX + 1], ready[32];
  sigset_t all;
  int devnull, n;
  long pid = (long)getpid();
  /* Nothing but SIGKILL and the end of the stream ends the tracker: a
   * signal meant for the script (Ctrl-C, a terminal hang-up, a TERM to the
   * process group) must not take the clean-up with it. Blocking them all
   * also keeps the handlers the parent installed from running here. */
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
  /* Only a name for ps: the tracker works without it. */
  (void)prctl(PR_SET_NAME, "lmp-tracker", 0, 0, 0);
  if (chdir("/") != 0) _exit(1);
  /* Only the socket stays open: a descriptor of the parent's held here
   * (a worker's channel, a pipe a shell waits on) would keep its peer
   * from ever seeing its end. */
  fd = fcntl(fd, F_DUPFD, 3);
  devnull = open("/dev/null", O_RDWR);
  if (fd < 0 || devnull < 0) _exit(1);
  if (dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(devnull, 2) < 0) _exit(1);
  if (fd != 3) {
    if (dup2(fd, 3) < 0) _exit(1);
    fd = 3;
  }
  lmp__close_from(4);
  n = snprintf(ready, sizeof ready, "R%ld", pid);
  if (send(fd, ready, (size_t)n, MSG_NOSIGNAL) != n) _exit(1);
  for (;;) {
    ssize_t got = recv(fd, record, sizeof record - 1, 0);
    size_t i;
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    if (got < 3) continue;
    record[got] = '\0';
    if (record[0] == '+') {
      if (count == capacity) {
        size_t more = capacity ? capacity * 2 : 64;
        void *p = entries ? mremap(entries, capacity * sizeof *entries, more * sizeof *entries,
                                   MREMAP_MAYMOVE)
                          : mmap(NULL, more * sizeof *entries, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) continue;
        entries = p;
        capacity = more;
      }
      entries[count].kind = record[1];
      memcpy(entries[count].path, record + 2, (size_t)got - 1);
      count++;
    } else if (record[0] == '-') {
      /* The latest registration of that name goes. */
      for (i = count; i-- > 0;) {
        if (entries[i].kind == record[1] && strcmp(entries[i].path, record + 2) == 0) {
          memmove(entries + i, entries + i + 1, (count - i - 1) * sizeof *entries);
          count--;
          break;
        }
      }
    }
  }
  while (count > 0) remove_entry(&entries[--count]);
  _exit(0);
}

/* ---- the registering side ------------------------------------------------- */

/* What this process has registered, in order: a tracker made after the
 * last one was killed is told all of it again. */
static char **kept;
static size_t kept_count, kept_capacity;

static int keep(const char *record, size_t n) {
  char *copy;
  if (kept_count == kept_capacity) {
    size_t more = kept_capacity ? kept_capacity * 2 : 16;
    char **p = realloc(kept, more * sizeof *kept);
    if (p == NULL) return -ENOMEM;
    kept = p;
    kept_capacity = more;
  }
  copy = malloc(n + 1);
  if (copy == NULL) return -ENOMEM;
  memcpy(copy, record, n);
  copy[n] = '\0';
  kept[kept_count++] = copy;
  return 0;
}

/* Drops the latest registration matching record (kind and path). */
static void forget(const char *record) {
  size_t i;
  for (i = kept_count; i-- > 0;) {
    if (strcmp(kept[i] + 1, record + 1) == 0) {
      free(kept[i]);
      memmove(kept + i, kept + i + 1, (kept_count - i - 1) * sizeof *kept);
      kept_count--;
      return;
    }
  }
}

static void forget_all(void) {
  while (kept_count > 0) free(kept[--kept_count]);
}

/* Makes this process's tracker. Returns 0 or -errno. */
static int start_tracker(void) {
  int fds[2], status, e;
  char ready[32];
  ssize_t got;
  pid_t pid;
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) return -errno;
  pid = fork();
  if (pid < 0) {
    e = errno;
    close(fds[0]);
    close(fds[1]);
    return -e;
  }
  if (pid == 0) {
    /* The intermediate child: leaves the session and the tracker behind. */
    pid_t t;
    close(fds[1]);
    setsid();
    t = fork();
    if (t == 0) run_tracker(fds[0]);
    _exit(t < 0 ? 1 : 0);
  }
  close(fds[0]);
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  /* The tracker says it runs, with its pid; the end of the stream instead
   * means it could not be made. */
  do {
    got = recv(fds[1], ready, sizeof ready - 1, 0);
  } while (got < 0 && errno == EINTR);
  if (got < 2 || ready[0] != 'R') {
    e = got < 0 ? errno : EAGAIN;
    close(fds[1]);
    return -e;
  }
  ready[got] = '\0';
  tracker_fd = fds[1];
  tracker_owner = (long)getpid();
  tracker_pid = strtol(ready + 1, NULL, 10);
  return 0;
}

static int send_record(const char *record, size_t n) {
  ssize_t put;
  do {
    put = send(tracker_fd, record, n, MSG_NOSIGNAL);
  } while (put < 0 && errno == EINTR);
  return put == (ssize_t)n ? 0 : -errno;
}

/* Makes a new tracker and tells it everything kept. */
static int restart_tracker(void) {
  size_t i;
  int r;
  if (tracker_fd >= 0) close(tracker_fd);
  tracker_fd = -1;
  if ((r = start_tracker()) != 0) return r;
  for (i = 0; i < kept_count; i++)
    if ((r = send_record(kept[i], strlen(kept[i]))) != 0) return r;
  return 0;
}

int lmp__track(int add, char kind, const char *path) {
  char record[2 + TRACK_PATH_MAX + 1];
  size_t n = strlen(path);
  int r;
  if (n == 0 || n > TRACK_PATH_MAX || strchr(path, '\n')) return -ENAMETOOLONG;
  /* A descriptor inherited through fork is the parent's tracker, and what
   * is kept is the parent's registrations: neither is ours. */
  if (tracker_owner != (long)getpid()) {
    tracker_fd = -1;
    forget_all();
    tracker_owner = (long)getpid();
  }
  record[0] = add ? '+' : '-';
  record[1] = kind;
  memcpy(record + 2, path, n);
  record[n + 2] = '\0';
  if (!add) {
    forget(record);
    /* A tracker gone since holds nothing of ours to forget. */
    if (tracker_fd >= 0) send_record(record, n + 2);
    return 0;
  }
  if ((r = keep(record, n + 2)) != 0) return r;
  if (tracker_fd >= 0 && send_record(record, n + 2) == 0) return 0;
  /* No tracker yet, or it was killed (nothing else ends it while we hold
   * our end): a new one takes over all that this process registered. */
  if ((r = restart_tracker()) != 0) forget(record);
  return r;
}

static char check_kind(lua_State *L) {
  static const char *const kinds[] = {"shm", "file", "dir", NULL};
  static const char codes[] = {'s', 'f', 'd'};
  return codes[luaL_checkoption(L, 1, NULL, kinds)];
}

/* core.track(kind, path) -> true, or nil and a message. kind is "shm" (a
 * shared memory name), "file" or "dir". */
static int core_track(lua_State *L) {
  char kind = check_kind(L);
  int r = lmp__track(1, kind, luaL_checkstring(L, 2));
  if (r == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushfstring(L, "cannot start lmp's resource tracker: %s", strerror(-r));
  return 2;
}

/* core.untrack(kind, path): the caller removed it itself. */
static int core_untrack(lua_State *L) {
  char kind = check_kind(L);
  lmp__track(0, kind, luaL_checkstring(L, 2));
  return 0;
}

/* core.tracker_pid() -> pid of this process's tracker, or nil. */
static int core_tracker_pid(lua_State *L) {
  if (tracker_fd < 0 || tracker_owner != (long)getpid()) return 0;
  lua_pushinteger(L, tracker_pid);
  return 1;
}

static const luaL_Reg tracker_functions[] = {{"track", core_track},
                                             {"untrack", core_untrack},
                                             {"tracker_pid", core_tracker_pid},
                                             {NULL, NULL}};

void lmp__open_tracker(lua_State *L) {
  luaL_setfuncs(L, tracker_functions, 0);
}

/* The feeder of an lmp.Queue, as Python's feeder thread: put encodes the
 * value and returns at once; the frame goes onto the queue's socket when
 * the socket takes it, written whole under the queue's write lock (an
 * fcntl lock on byte 0 of its lock file) so that the frames of several
 * processes never mix. A frame the socket takes at once is written by the
 * caller; the rest wait, in order, for a thread of the feeder's own, which
 * blocks in write() where the caller must not.
 *
 * At exit (exit(), the end of main, or a forked worker's end) the process
 * waits until every feeder has written what it holds, as Python joins its
 * feeder threads, unless cancel_join_thread was called: what was put
 * reaches a reader, if one reads. Each feeder belongs to the process that
 * made it; a forked child that inherits one makes its own. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "inbox.h"
#include "transport.h"

#define FEEDER_META "lmp.QueueFeeder"
#define WRITE_LOCK_BYTE 0

typedef struct frame {
  struct frame *next;
  size_t len, sent; /* sent: bytes already on the socket */
  int locked;       /* this process holds the write lock for it */
  char data[];
} frame;

typedef struct feeder {
  struct feeder *next_live; /* the registry of this process's feeders */
  int writer_fd, lock_fd;
  int adopted_writer, adopted_lock; /* closed by the feeder when it ends */
  long owner;
  pthread_mutex_t mutex;
  pthread_cond_t wake, idle; /* frames to write; nothing left to write */
  frame *head, *tail;
  int busy;      /* the thread writes the head frame */
  int thread_started, closing, cancelled, broken;
  int broken_errno;
} feeder;

/* The registry: this process's feeders, for exit and for connections that
 * close a descriptor a feeder still writes to. */
static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static feeder *live_feeders;
static int exiting, at_exit_registered;

static void feeder_free(feeder *f) {
  frame *fr = f->head;
  while (fr) {
    frame *next = fr->next;
    free(fr);
    fr = next;
  }
  pthread_mutex_destroy(&f->mutex);
  pthread_cond_destroy(&f->wake);
  pthread_cond_destroy(&f->idle);
  free(f);
}

static int write_lock(int fd, int type, int wait) {
  struct flock lock;
  int r;
  memset(&lock, 0, sizeof lock);
  lock.l_type = (short)type;
  lock.l_whence = SEEK_SET;
  lock.l_start = WRITE_LOCK_BYTE;
  lock.l_len = 1;
  do {
    r = fcntl(fd, wait ? F_SETLKW : F_SETLK, &lock);
  } while (r < 0 && errno == EINTR);
  return r;
}

/* Writes what is left of fr. Blocking: waits for room (the socket may be
 * non-blocking, a flag its other users set); otherwise only what goes at
 * once. Returns 0 when all of it went, -EAGAIN when not (not blocking),
 * or another -errno. MSG_NOSIGNAL: a queue nobody reads any more is an
 * error, not a SIGPIPE. */
static int write_frame(int fd, frame *fr, int blocking) {
  while (fr->sent < fr->len) {
    ssize_t r = send(fd, fr->data + fr->sent, fr->len - fr->sent,
                     MSG_NOSIGNAL | (blocking ? 0 : MSG_DONTWAIT));
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        struct pollfd pfd;
        if (!blocking) return -EAGAIN;
        pfd.fd = fd;
        pfd.events = POLLOUT;
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR) return -errno;
        continue;
      }
      return -errno;
    }
    fr->sent += (size_t)r;
  }
  return 0;
}

/* Ends the thread: the feeder was closed and has nothing left to write.
 * The descriptors handed over go now; the memory too, unless the process
 * is exiting (then the exit handler may still be looking at it). */
static void finish(feeder *f) {
  int freeing;
  pthread_mutex_lock(&registry_mutex);
  freeing = !exiting;
  if (freeing) {
    feeder **p;
    for (p = &live_feeders; *p; p = &(*p)->next_live) {
      if (*p == f) {
        *p = f->next_live;
        break;
      }
    }
  }
  if (f->adopted_writer) close(f->writer_fd);
  if (f->adopted_lock) close(f->lock_fd);
  f->adopted_writer = f->adopted_lock = 0;
  pthread_mutex_unlock(&registry_mutex);
  if (freeing) feeder_free(f);
}

static void *feeder_thread(void *arg) {
  feeder *f = arg;
  pthread_mutex_lock(&f->mutex);
  for (;;) {
    frame *fr;
    int r;
    while (f->head == NULL && !f->closing) pthread_cond_wait(&f->wake, &f->mutex);
    if (f->head == NULL) break; /* closing, and all written */
    fr = f->head;
    f->busy = 1;
    pthread_mutex_unlock(&f->mutex);
    r = 0;
    if (!fr->locked && (r = write_lock(f->lock_fd, F_WRLCK, 1)) != 0) r = -errno;
    if (r == 0) {
      r = write_frame(f->writer_fd, fr, 1);
      write_lock(f->lock_fd, F_UNLCK, 0);
    }
    pthread_mutex_lock(&f->mutex);
    f->head = fr->next;
    if (f->head == NULL) f->tail = NULL;
    free(fr);
    if (r != 0) {
      /* No reader is left anywhere (or the socket failed): what is
       * buffered cannot be delivered. */
      f->broken = 1;
      f->broken_errno = -r;
      while (f->head) {
        fr = f->head;
        f->head = fr->next;
        free(fr);
      }
      f->tail = NULL;
    }
    f->busy = 0;
    if (f->head == NULL) pthread_cond_broadcast(&f->idle);
  }
  pthread_mutex_unlock(&f->mutex);
  finish(f);
  return NULL;
}

/* Waits until f has written everything it holds (or cannot). Called with
 * f->mutex held. */
static void wait_idle(feeder *f) {
  while ((f->head != NULL || f->busy) && !f->broken) pthread_cond_wait(&f->idle, &f->mutex);
}

/* Every feeder of this process writes what it holds before the process
 * ends, unless cancelled. */
void lmp__flush_feeders(void) {
  feeder *f, **all = NULL;
  size_t n = 0, i;
  pthread_mutex_lock(&registry_mutex);
  exiting = 1; /* from here no feeder is freed: the list stays valid */
  for (f = live_feeders; f; f = f->next_live) n++;
  if (n) all = malloc(n * sizeof *all);
  n = 0;
  if (all)
    for (f = live_feeders; f; f = f->next_live)
      if (f->owner == (long)getpid()) all[n++] = f;
  pthread_mutex_unlock(&registry_mutex);
  for (i = 0; i < n; i++) {
    f = all[i];
    pthread_mutex_lock(&f->mutex);
    if (!f->cancelled) wait_idle(f);
    pthread_mutex_unlock(&f->mutex);
  }
  free(all);
}

/* After Ctrl-C nothing waits for a reader. */
void lmp__cancel_feeders(void) {
  feeder *f;
  pthread_mutex_lock(&registry_mutex);
  for (f = live_feeders; f; f = f->next_live)
    if (f->owner == (long)getpid()) f->cancelled = 1;
  pthread_mutex_unlock(&registry_mutex);
}

/* A forked child's copy of the registry is its parent's: it starts with
 * none of its own (the copies' locks may have been held by a thread that
 * the child does not have). */
static void forget_feeders_in_child(void) {
  pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
  registry_mutex = fresh;
  live_feeders = NULL;
  exiting = 0;
}

int lmp__feeder_adopt(int fd) {
  feeder *f;
  int adopted = 0;
  pthread_mutex_lock(&registry_mutex);
  for (f = live_feeders; f && !adopted; f = f->next_live) {
    if (f->owner != (long)getpid()) continue;
    if (f->writer_fd == fd && !f->adopted_writer) adopted = f->adopted_writer = 1;
    else if (f->lock_fd == fd && !f->adopted_lock) adopted = f->adopted_lock = 1;
  }
  pthread_mutex_unlock(&registry_mutex);
  return adopted;
}

/* ---- the Lua side --------------------------------------------------- */

static feeder **check_box(lua_State *L) {
  return luaL_checkudata(L, 1, FEEDER_META);
}

/* Lets the feeder go: its thread, if any, writes what is left and ends;
 * without a thread, nothing is left and it goes now. */
static void release(feeder *f) {
  int has_thread;
  pthread_mutex_lock(&f->mutex);
  f->closing = 1;
  has_thread = f->thread_started;
  pthread_cond_signal(&f->wake);
  pthread_mutex_unlock(&f->mutex);
  if (!has_thread) finish(f);
}

static int feeder_close(lua_State *L) {
  feeder **box = check_box(L);
  feeder *f = *box;
  if (f == NULL) return 0;
  *box = NULL;
  /* A forked child's copy: its parent's, with no thread here. */
  if (f->owner == (long)getpid()) release(f);
  return 0;
}

static feeder *new_feeder(lua_State *L, int writer_fd, int lock_fd) {
  feeder *f = calloc(1, sizeof *f);
  int made = 0;
  /* luaL_error does not return, but the compiler is not told so: each
   * failure returns after it, lest the code below seem to run on a freed
   * (or NULL) feeder. */
  if (f == NULL) {
    luaL_error(L, "lmp: not enough memory");
    return NULL;
  }
  if (pthread_mutex_init(&f->mutex, NULL) == 0) made++;
  if (made == 1 && pthread_cond_init(&f->wake, NULL) == 0) made++;
  if (made == 2 && pthread_cond_init(&f->idle, NULL) == 0) made++;
  if (made < 3) {
    if (made > 1) pthread_cond_destroy(&f->wake);
    if (made > 0) pthread_mutex_destroy(&f->mutex);
    free(f);
    luaL_error(L, "lmp: cannot make a queue feeder");
    return NULL;
  }
  f->writer_fd = writer_fd;
  f->lock_fd = lock_fd;
  f->owner = (long)getpid();
  pthread_mutex_lock(&registry_mutex);
  if (!at_exit_registered) {
    Dl_info info;
    at_exit_registered = 1;
    /* lua_close unloads C modules; a feeder's thread may still be running
     * this module's code then, and the exit handler must still be there
     * after. So the module stays loaded (no effect where lmp is linked
     * into the program). */
    if (dladdr((void *)lmp__flush_feeders, &info) && info.dli_fname)
      dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE);
    atexit(lmp__flush_feeders);
    pthread_atfork(NULL, NULL, forget_feeders_in_child);
  }
  f->next_live = live_feeders;
  live_feeders = f;
  pthread_mutex_unlock(&registry_mutex);
  return f;
}

/* core.feeder(writer, lock) -> a feeder for the queue whose socket end is
 * the connection `writer` and whose lock file is `lock` (both kept alive
 * by it). */
static int core_feeder(lua_State *L) {
  int writer_fd, lock_fd;
  feeder **box;
  lua_getfield(L, 1, "fileno");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  writer_fd = (int)luaL_checkinteger(L, -1);
  lua_getfield(L, 2, "fileno");
  lua_pushvalue(L, 2);
  lua_call(L, 1, 1);
  lock_fd = (int)luaL_checkinteger(L, -1);
  lua_settop(L, 2);
  box = lua_newuserdatauv(L, sizeof *box, 2);
  *box = NULL;
  luaL_setmetatable(L, FEEDER_META);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 2);
  *box = new_feeder(L, writer_fd, lock_fd);
  return 1;
}

/* The feeder of this process: a forked child that inherited its parent's
 * makes its own, on the same descriptors. */
static feeder *own_feeder(lua_State *L) {
  feeder **box = check_box(L);
  if (*box == NULL) luaL_error(L, "lmp: the queue is closed");
  if ((*box)->owner != (long)getpid()) *box = new_feeder(L, (*box)->writer_fd, (*box)->lock_fd);
  return *box;
}

static int start_thread(feeder *f) {
  pthread_t thread;
  pthread_attr_t attr;
  sigset_t all, old;
  int r;
  /* Signals are the main thread's to take: the thread starts with every
   * one blocked. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  r = pthread_create(&thread, &attr, feeder_thread, f);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return r;
}

/* feeder:put(value): the value's frame goes at once if the socket takes
 * it whole and no other frame waits; otherwise it waits its turn, and put
 * returns. Refusals (kind "serialize") raise before anything is kept. */
static int feeder_put(lua_State *L) {
  feeder *f = own_feeder(L);
  lmp_buffer *b;
  frame *fr;
  size_t message_len;
  int r, direct;
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  b = lmp__take_encode_box(L);
  if (lmp__buffer_reserve(b, LMP_FRAME_PREFIX) != 0) return luaL_error(L, "lmp: not enough memory");
  b->len = LMP_FRAME_PREFIX;
  if (lmp__encode(L, 2, b, "") != 0) return lua_error(L);
  message_len = b->len - LMP_FRAME_PREFIX;
  if (message_len > UINT32_MAX) return luaL_error(L, "lmp: a message over 4 GB cannot be sent");
  fr = malloc(sizeof *fr + b->len);
  if (fr == NULL) return luaL_error(L, "lmp: not enough memory for a queued value");
  lmp__frame_set_length(b->data, b->len - LMP_FRAME_HEADER);
  lmp__set_u32_at(b->data + LMP_FRAME_HEADER, (uint32_t)message_len);
  memcpy(fr->data, b->data, b->len);
  fr->len = b->len;
  fr->sent = 0;
  fr->locked = 0;
  fr->next = NULL;
  lmp__give_back_encode_box(L, 3);
  pthread_mutex_lock(&f->mutex);
  if (f->broken) {
    int e = f->broken_errno;
    pthread_mutex_unlock(&f->mutex);
    free(fr);
    lmp__push_error(L, "closed", e == EPIPE ? "put: no process reads this queue any more"
                                           : strerror(e));
    return lua_error(L);
  }
  direct = f->head == NULL && !f->busy;
  pthread_mutex_unlock(&f->mutex);
  /* Nothing waits before it: try the socket now, from here. Only this
   * thread adds frames, so none can come before it meanwhile. */
  if (direct && write_lock(f->lock_fd, F_WRLCK, 0) == 0) {
    fr->locked = 1;
    r = write_frame(f->writer_fd, fr, 0);
    if (r == 0) {
      write_lock(f->lock_fd, F_UNLCK, 0);
      free(fr);
      return 0;
    }
    if (r != -EAGAIN) {
      write_lock(f->lock_fd, F_UNLCK, 0);
      free(fr);
      lmp__push_error(L, "closed", r == -EPIPE ? "put: no process reads this queue any more"
                                               : strerror(-r));
      return lua_error(L);
    }
    /* Half written: the lock stays held (it is this process's, which the
     * thread is part of) until the thread has written the rest. */
  }
  pthread_mutex_lock(&f->mutex);
  if (f->tail) f->tail->next = fr;
  else f->head = fr;
  f->tail = fr;
  if (!f->thread_started) {
    if ((r = start_thread(f)) != 0) {
      /* No thread: write it here, waiting, rather than lose it. */
      f->head = f->tail = NULL;
      pthread_mutex_unlock(&f->mutex);
      if (!fr->locked) write_lock(f->lock_fd, F_WRLCK, 1);
      r = write_frame(f->writer_fd, fr, 1);
      write_lock(f->lock_fd, F_UNLCK, 0);
      free(fr);
      if (r != 0) return luaL_error(L, "lmp: queue write failed: %s", strerror(-r));
      return 0;
    }
    f->thread_started = 1;
  }
  pthread_cond_signal(&f->wake);
  pthread_mutex_unlock(&f->mutex);
  return 0;
}

/* feeder:flush(): waits until everything put has been written. */
static int feeder_flush(lua_State *L) {
  feeder *f = own_feeder(L);
  pthread_mutex_lock(&f->mutex);
  wait_idle(f);
  pthread_mutex_unlock(&f->mutex);
  return 0;
}

/* feeder:cancel(): the process will not wait for this feeder at exit. */
static int feeder_cancel(lua_State *L) {
  feeder *f = own_feeder(L);
  pthread_mutex_lock(&f->mutex);
  f->cancelled = 1;
  pthread_mutex_unlock(&f->mutex);
  return 0;
}

/* feeder:pending() -> whether frames wait to be written. */
static int feeder_pending(lua_State *L) {
  feeder *f = own_feeder(L);
  int pending;
  pthread_mutex_lock(&f->mutex);
  pending = f->head != NULL || f->busy;
  pthread_mutex_unlock(&f->mutex);
  lua_pushboolean(L, pending);
  return 1;
}

static const luaL_Reg feeder_methods[] = {
    {"put", feeder_put},         {"flush", feeder_flush}, {"cancel", feeder_cancel},
    {"pending", feeder_pending}, {"close", feeder_close}, {NULL, NULL}};

static const luaL_Reg feeder_functions[] = {{"feeder", core_feeder}, {NULL, NULL}};

void lmp__open_feeder(lua_State *L) {
  if (luaL_newmetatable(L, FEEDER_META)) {
    luaL_newlib(L, feeder_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, feeder_close);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "a queue's feeder belongs to its process");
    lua_setfield(L, -2, "__lmp_nosend");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, feeder_functions, 0);
}

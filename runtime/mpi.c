/* The MPI transport (built with `make MPI=1`): inside an MPI job rank 0
 * runs the script and every other rank serves as a pool worker.
 *
 * A worker rank never runs tasks itself: it runs an ordinary lmp worker
 * as a local child on a socket pair and copies bytes between that socket
 * and MPI. A task that crashes its worker kills only that child; the rank
 * reports the loss (its exit status and signal) to rank 0 and starts a new
 * child when rank 0 asks. On rank 0 each remote worker is a relayed worker
 * handle (relay.c): the pool writes frames on a socket whose other end a
 * progress thread copies to MPI, and the thread writes what the rank sends
 * back. MPI is called from that thread only (and MPI_Init, MPI_Finalize
 * from the main thread before and after it), so the libuv loop never
 * blocks in MPI, and the thread sleeps in poll() when nothing moves rather
 * than spin as Open MPI's blocking receives do.
 *
 * Every message is one byte of kind and a body, on one tag, so that MPI's
 * ordering between two ranks holds across kinds. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mpi.h>

#include "process.h"

#define TAG 4242
#define CHUNK (1 << 20)              /* bytes read from a socket at once */
#define SMALL (64 << 10)             /* a read sent from a copy of its size */
#define SPARES 24                    /* large buffers kept for reuse */
#define IN_FLIGHT (16 << 20)         /* bytes sent to one rank not yet taken */
#define SPIN 200                     /* idle turns polled without sleeping */
#define QUIET (SPIN + 90 + 100)      /* idle turns (about 1.5 s) before 20 ms sleeps */

enum { M_START = 1, M_DATA, M_CLOSE, M_KILL, M_EXIT, M_LOST };

/* A buffer queued for a socket, written from off on (a message received
 * from MPI is queued as it came, its kind byte skipped). */
typedef struct chunk {
  char *data;
  size_t len, off;
  struct chunk *next;
} chunk;

typedef struct queue {
  chunk *head, *tail;
} queue;

/* An MPI_Isend not yet complete, and its buffer. */
typedef struct sending {
  MPI_Request request;
  char *data;
  int dest, len;
  struct sending *next;
} sending;

static int rank = -1, size = 0;
static sending *sends;
static long *in_flight; /* per rank: bytes of sends not complete */

/* Large message buffers (CHUNK + 1 bytes) are kept and reused: one fresh
 * from malloc is fresh memory from the kernel, and the page faults and
 * zeroing cost more than the copy that fills it (they were most of a
 * large payload's time). Only the relaying thread uses them (the progress
 * thread on rank 0, the main one on a worker rank); a long quiet gives
 * them back (buffers_trim). */
static char *spares[SPARES];
static int spare_count;

static char *buffer_new(size_t len) {
  char *b;
  if (len > SMALL && len <= CHUNK + 1 && spare_count > 0) return spares[--spare_count];
  b = malloc(len > SMALL && len <= CHUNK + 1 ? CHUNK + 1 : len > 0 ? len : 1);
  if (b == NULL) abort(); /* nothing sane to do without memory here */
  return b;
}

/* Frees a buffer of len bytes made by buffer_new. */
static void buffer_free(char *b, size_t len) {
  if (b != NULL && len > SMALL && len <= CHUNK + 1 && spare_count < SPARES) {
    spares[spare_count++] = b;
    return;
  }
  free(b);
}

static void buffers_trim(void) {
  while (spare_count > 0) free(spares[--spare_count]);
}

static void queue_push(queue *q, char *data, size_t len, size_t off) {
  chunk *k = malloc(sizeof *k);
  if (k == NULL) abort(); /* nothing sane to do without memory here */
  k->data = data, k->len = len, k->off = off, k->next = NULL;
  if (q->tail) q->tail->next = k;
  else q->head = k;
  q->tail = k;
}

static void queue_clear(queue *q) {
  while (q->head) {
    chunk *k = q->head;
    q->head = k->next;
    buffer_free(k->data, k->len);
    free(k);
  }
  q->tail = NULL;
}

/* Writes what the socket takes. Returns -1 when the peer is gone. */
static int queue_write(queue *q, int fd) {
  while (q->head) {
    chunk *k = q->head;
    ssize_t n = send(fd, k->data + k->off, k->len - k->off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return -1;
    }
    k->off += (size_t)n;
    if (k->off < k->len) return 0;
    q->head = k->next;
    if (q->head == NULL) q->tail = NULL;
    buffer_free(k->data, k->len);
    free(k);
  }
  return 0;
}

/* Sends data (len bytes, its kind first) to dest without waiting (two
 * ranks sending to each other at once must not both block); data is freed
 * once sent. */
static void post_owned(int dest, char *data, size_t len) {
  sending *s = malloc(sizeof *s);
  if (s == NULL) abort();
  s->data = data, s->dest = dest, s->len = (int)len;
  MPI_Isend(data, s->len, MPI_BYTE, dest, TAG, MPI_COMM_WORLD, &s->request);
  in_flight[dest] += s->len;
  s->next = sends;
  sends = s;
}

/* Sends kind and a copy of body to dest, as post_owned. */
static void post(int dest, int kind, const void *body, size_t len) {
  char *data = buffer_new(len + 1);
  data[0] = (char)kind;
  if (len) memcpy(data + 1, body, len);
  post_owned(dest, data, len + 1);
}

/* Frees the sends that completed. Returns how many. */
static int progress_sends(void) {
  sending **p = &sends;
  int done = 0;
  while (*p) {
    sending *s = *p;
    int flag = 0;
    MPI_Test(&s->request, &flag, MPI_STATUS_IGNORE);
    if (flag) {
      in_flight[s->dest] -= s->len;
      *p = s->next;
      buffer_free(s->data, (size_t)s->len);
      free(s);
      done++;
    } else {
      p = &s->next;
    }
  }
  return done;
}

/* The next message from source (MPI_ANY_SOURCE), or NULL. */
static char *receive(int source, int *from, int *len) {
  MPI_Message message;
  MPI_Status status;
  int flag = 0;
  char *data;
  MPI_Improbe(source, TAG, MPI_COMM_WORLD, &flag, &message, &status);
  if (!flag) return NULL;
  MPI_Get_count(&status, MPI_BYTE, len);
  data = buffer_new((size_t)*len);
  MPI_Mrecv(data, *len, MPI_BYTE, &message, MPI_STATUS_IGNORE);
  *from = status.MPI_SOURCE;
  return data;
}

/* Reads what the socket holds and sends it to dest, up to the in-flight
 * limit. Returns 1 at end of file or error, else 0. */
static int relay_out(int fd, int dest) {
  /* A large read is sent from the buffer it was read into, a small one
   * from a copy of its size (the large buffer goes back for reuse). */
  while (in_flight[dest] < IN_FLIGHT) {
    char *buf = buffer_new(CHUNK + 1);
    ssize_t n = recv(fd, buf + 1, CHUNK, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) {
      buffer_free(buf, CHUNK + 1);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      buffer_free(buf, CHUNK + 1);
      break;
    }
    if (n <= 0) {
      buffer_free(buf, CHUNK + 1);
      return 1;
    }
    if (n <= SMALL) {
      post(dest, M_DATA, buf + 1, (size_t)n);
      buffer_free(buf, CHUNK + 1);
    } else {
      buf[0] = M_DATA;
      post_owned(dest, buf, (size_t)n + 1);
    }
  }
  return 0;
}

/* How long poll sleeps after `idle` turns with nothing moving: not at all
 * at first (a reply usually follows soon), then 1 ms, growing to 10 ms
 * within half a second of quiet, and 20 ms after a second more. MPI's own
 * traffic is only seen by probing
 * (each probe of Open MPI costs tens of microseconds across its
 * transports), so the first message after a long quiet waits up to 20 ms;
 * sockets wake poll at once. */
static int backoff(int idle) {
  if (idle == QUIET) buffers_trim(); /* a long quiet gives them back */
  if (idle < SPIN) return 0;
  if (idle > QUIET) return 20;
  idle = 1 + (idle - SPIN) / 10;
  return idle < 10 ? idle : 10;
}

/* Gives both ends of a relay's socket pair room for a few chunks, so that
 * a large payload crosses in fewer turns of the relay and of the process
 * at the other end. The system's limit (net.core.wmem_max) may give less:
 * that costs only speed, so a refusal is not an error. */
static void widen(int sv[2]) {
  int size = 4 * CHUNK;
  (void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  (void)setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

/* ---- a worker rank ------------------------------------------------------ */

/* Starts the local worker: argv's program with the socket on its fd 3. */
static pid_t start_child(char **argv, int *fd) {
  int sv[2];
  pid_t pid;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -1;
  widen(sv);
  pid = fork();
  if (pid == 0) {
    if (dup2(sv[1], 3) < 0) _exit(127);
    execv(argv[0], argv);
    _exit(127);
  }
  close(sv[1]);
  if (pid < 0) {
    close(sv[0]);
    return -1;
  }
  *fd = sv[0];
  return pid;
}

/* The worker rank's whole life: until rank 0 says the job ends. */
static void serve(char **argv) {
  pid_t pid = 0;
  int fd = -1, eof = 0, closing = 0, idle = 0, done = 0;
  queue q = {NULL, NULL};
  while (!done) {
    int from, len, moved = progress_sends();
    char *m;
    while ((m = receive(0, &from, &len)) != NULL) {
      moved = 1;
      switch (m[0]) {
        case M_START:
          if (pid <= 0) {
            pid = start_child(argv, &fd);
            eof = closing = 0;
            if (pid < 0) {
              int report[2] = {127, 0};
              post(0, M_LOST, report, sizeof report);
              pid = 0;
            }
          }
          break;
        case M_DATA:
          /* Data for a worker that died is dropped: rank 0 knows it lost. */
          if (pid > 0) {
            queue_push(&q, m, (size_t)len, 1);
            m = NULL;
          }
          break;
        case M_CLOSE:
          if (pid > 0) closing = 1;
          break;
        case M_KILL:
          if (pid > 0 && len >= 1 + (int)sizeof(int)) {
            int sig;
            memcpy(&sig, m + 1, sizeof sig);
            kill(pid, sig);
          }
          break;
        case M_EXIT:
          done = 1;
          break;
      }
      buffer_free(m, (size_t)len);
    }
    if (pid > 0) {
      int status;
      struct pollfd p = {fd, 0, 0};
      if (queue_write(&q, fd) < 0) queue_clear(&q);
      if (closing && q.head == NULL) {
        shutdown(fd, SHUT_WR);
        closing = 0;
      }
      if (!eof) eof = relay_out(fd, 0);
      if (waitpid(pid, &status, WNOHANG) == pid) {
        /* What it wrote before it ended goes first, then the report. */
        int report[2];
        if (!eof) relay_out(fd, 0);
        report[0] = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
        report[1] = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        post(0, M_LOST, report, sizeof report);
        close(fd);
        fd = -1;
        pid = 0;
        queue_clear(&q);
        moved = 1;
      } else if (!done) {
        p.events = (eof ? 0 : POLLIN) | (q.head ? POLLOUT : 0);
        idle = moved ? 0 : idle + 1;
        poll(&p, 1, backoff(idle));
      }
    } else if (!done) {
      idle = moved ? 0 : idle + 1;
      poll(NULL, 0, backoff(idle));
    }
  }
  if (pid > 0) {
    int status;
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    close(fd);
  }
  queue_clear(&q);
  while (sends) progress_sends();
}

/* ---- rank 0: the progress thread ---------------------------------------- */

/* What the main thread asks of the progress thread. */
typedef struct command {
  int kind, dest, arg, fd, report;
  struct command *next;
} command;

typedef struct peer {
  int busy;          /* a handle holds this rank (guarded by lock) */
  int reserved;      /* handles started on it, not yet given it (lock) */
  int fd, report;    /* our ends of its channel and report sockets, or -1 */
  command *waiting;  /* the starts that wait for its handle to let go */
  int eof, lost;
  int status[2];     /* its report, once lost */
  queue q;           /* what it sent, for the channel */
} peer;

static peer *peers;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static command *commands, **commands_tail = &commands;
static int wake[2] = {-1, -1};
static pthread_t thread;
static int thread_running, stopping;
static pid_t joined_by; /* the process that called MPI_Init */
static int set_ucx_errors; /* UCX_HANDLE_ERRORS is lmp's, not the user's */

static void ask(int kind, int dest, int arg, int fd, int report) {
  command *c = malloc(sizeof *c);
  char byte = 0;
  if (c == NULL) abort();
  c->kind = kind, c->dest = dest, c->arg = arg, c->fd = fd, c->report = report;
  c->next = NULL;
  pthread_mutex_lock(&lock);
  *commands_tail = c;
  commands_tail = &c->next;
  pthread_mutex_unlock(&lock);
  while (write(wake[1], &byte, 1) < 0 && errno == EINTR) {}
}

/* Gives rank r to the handle whose sockets these are. */
static void attach(int r, int fd, int report) {
  peer *p = &peers[r];
  p->fd = fd, p->report = report, p->eof = p->lost = 0;
  pthread_mutex_lock(&lock);
  p->reserved--;
  pthread_mutex_unlock(&lock);
  post(r, M_START, NULL, 0);
}

/* Rank r's handle is done with it: the rank is free, or goes at once to
 * the first handle that waits for it. */
static void release(int r) {
  peer *p = &peers[r];
  command *next = p->waiting;
  if (p->fd >= 0) close(p->fd);
  if (p->report >= 0) close(p->report);
  p->fd = p->report = -1;
  queue_clear(&p->q);
  pthread_mutex_lock(&lock);
  if (p->reserved == 0) p->busy = 0;
  pthread_mutex_unlock(&lock);
  if (next) {
    p->waiting = next->next;
    attach(r, next->fd, next->report);
    free(next);
  }
}

static int run_commands(void) {
  command *c;
  char drain[64];
  int n = 0;
  while (read(wake[0], drain, sizeof drain) > 0) {}
  pthread_mutex_lock(&lock);
  c = commands;
  commands = NULL;
  commands_tail = &commands;
  pthread_mutex_unlock(&lock);
  while (c) {
    command *next = c->next;
    if (c->kind == M_START) {
      peer *p = &peers[c->dest];
      if (p->fd >= 0 || p->report >= 0 || p->waiting) {
        /* Started while the rank's handle lets go: it waits, in turn,
         * for release(). */
        command **end = &p->waiting;
        while (*end) end = &(*end)->next;
        c->next = NULL;
        *end = c;
        c = next;
        n++;
        continue;
      }
      attach(c->dest, c->fd, c->report);
    } else if (c->kind == M_KILL) {
      post(c->dest, M_KILL, &c->arg, sizeof c->arg);
    } else if (c->kind == M_EXIT) {
      stopping = 1;
    }
    free(c);
    c = next;
    n++;
  }
  return n;
}

static void *progress_thread(void *unused) {
  struct pollfd *fds = calloc((size_t)size + 1, sizeof *fds);
  int *which = calloc((size_t)size + 1, sizeof *which);
  int idle = 0, r;
  (void)unused;
  if (fds == NULL || which == NULL) abort();
  while (!stopping) {
    int from, len, n = 1, moved = run_commands() + progress_sends();
    char *m;
    while ((m = receive(MPI_ANY_SOURCE, &from, &len)) != NULL) {
      peer *p = &peers[from];
      moved = 1;
      if (m[0] == M_DATA && p->fd >= 0 && !p->lost) {
        queue_push(&p->q, m, (size_t)len, 1);
        m = NULL;
      } else if (m[0] == M_LOST && p->fd >= 0 && len >= 1 + (int)sizeof p->status) {
        memcpy(p->status, m + 1, sizeof p->status);
        p->lost = 1;
      }
      buffer_free(m, (size_t)len);
    }
    fds[0].fd = wake[0], fds[0].events = POLLIN, fds[0].revents = 0;
    for (r = 1; r < size; r++) {
      peer *p = &peers[r];
      if (p->fd < 0) continue;
      if (p->q.head && queue_write(&p->q, p->fd) < 0) queue_clear(&p->q);
      if (p->lost && p->q.head == NULL) {
        /* Everything it wrote is on the channel: now its end. */
        /* The rank is free before the pool hears of the loss: the
         * replacement it starts at once may take the same rank. */
        int report = p->report;
        p->report = -1;
        release(r);
        send(report, p->status, sizeof p->status, MSG_NOSIGNAL);
        close(report);
        moved = 1;
        continue;
      }
      if (!p->eof && !p->lost && (p->eof = relay_out(p->fd, r)) != 0) {
        /* The pool closed its input (or let go of the handle): the worker
         * finishes what it has and exits. */
        post(r, M_CLOSE, NULL, 0);
        moved = 1;
      }
      fds[n].fd = p->fd;
      fds[n].events = (p->eof ? 0 : POLLIN) | (p->q.head ? POLLOUT : 0);
      fds[n].revents = 0;
      which[n++] = r;
    }
    idle = moved ? 0 : idle + 1;
    poll(fds, (nfds_t)n, backoff(idle));
  }
  for (r = 1; r < size; r++) post(r, M_EXIT, NULL, 0);
  while (sends) progress_sends();
  free(fds);
  free(which);
  return NULL;
}

static void signal_remote(int id, int sig) {
  if (id > 0 && id < size) ask(M_KILL, id, sig, -1, -1);
}

/* At exit on rank 0: the worker ranks are told the job ends, then MPI. */
static void finish(void) {
  /* A forked copy of rank 0 (a "fork" worker calling os.exit) has no
   * progress thread and is no rank. */
  if (rank != 0 || getpid() != joined_by) return;
  if (thread_running) {
    ask(M_EXIT, 0, 0, -1, -1);
    pthread_join(thread, NULL);
    thread_running = 0;
  }
  MPI_Finalize();
}

/* ---- the binding ---------------------------------------------------------- */

/* core.mpi_init() -> rank, size: joins the MPI job (once); rank 0 starts
 * its progress thread. */
static int core_mpi_init(lua_State *L) {
  int provided, r;
  if (rank < 0) {
    /* UCX under MPI_Init would warn of a setting its process no longer
     * reads (see lmp__open_relay_mpi): it is set again afterwards. */
    if (set_ucx_errors) unsetenv("UCX_HANDLE_ERRORS");
    r = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
    if (set_ucx_errors) setenv("UCX_HANDLE_ERRORS", "none", 1);
    if (r != MPI_SUCCESS) return luaL_error(L, "lmp: MPI_Init_thread failed");
    joined_by = getpid();
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    /* lmp.current_process() tells the rank, in this process and in the
     * workers it starts. */
    lua_pushinteger(L, rank);
    setenv("LMP_MPI_RANK", lua_tostring(L, -1), 1);
    lua_pop(L, 1);
    in_flight = calloc((size_t)size, sizeof *in_flight);
    if (in_flight == NULL) return luaL_error(L, "lmp: not enough memory");
    if (rank == 0) {
      peers = calloc((size_t)size, sizeof *peers);
      if (peers == NULL) return luaL_error(L, "lmp: not enough memory");
      for (r = 0; r < size; r++) peers[r].fd = peers[r].report = -1;
      if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0)
        return luaL_error(L, "lmp: cannot make a pipe: %s", strerror(errno));
      if (pthread_create(&thread, NULL, progress_thread, NULL) != 0)
        return luaL_error(L, "lmp: cannot start the MPI progress thread");
      thread_running = 1;
      lmp__relay_signal = signal_remote;
    }
    atexit(finish);
  }
  lua_pushinteger(L, rank);
  lua_pushinteger(L, size);
  return 2;
}

/* core.mpi_serve(argv): a worker rank serves until the job ends. */
static int core_mpi_serve(lua_State *L) {
  int n, i;
  char **argv;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = (int)luaL_len(L, 1);
  argv = lua_newuserdatauv(L, sizeof *argv * (size_t)(n + 1), 0);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    argv[i] = (char *)luaL_checkstring(L, -1);
    lua_pop(L, 1); /* the strings stay in the table */
  }
  argv[n] = NULL;
  if (rank <= 0) return luaL_error(L, "lmp: mpi_serve is for worker ranks");
  serve(argv);
  MPI_Finalize();
  return 0;
}

/* core.mpi_free_ranks() -> how many worker ranks no handle holds. */
static int core_mpi_free_ranks(lua_State *L) {
  int r, n = 0;
  pthread_mutex_lock(&lock);
  for (r = 1; r < size; r++) n += !peers[r].busy;
  pthread_mutex_unlock(&lock);
  lua_pushinteger(L, n);
  return 1;
}

/* The handles that hold ranks, by rank: a table with weak values in the
 * registry, so that a handle the pool let go of holds its rank no more. */
#define HANDLES_KEY "lmp.mpi.handles"

/* Whether the last handle started on rank r is letting it go: its input
 * is closed (a pool retiring it, as maxtasksperchild does), its worker
 * ended, or Lua collected it; the rank is free as soon as its worker
 * exits. Uses the table of handles at the top of the stack. */
static int letting_go(lua_State *L, int r) {
  worker_handle **box;
  int going;
  lua_rawgeti(L, -1, r);
  box = lua_touserdata(L, -1);
  going = box == NULL || *box == NULL || (*box)->input_closed || (*box)->eof || (*box)->exited;
  lua_pop(L, 1);
  return going;
}

/* core.mpi_start(on_message, on_exit) -> a relayed worker handle on a free
 * worker rank or, with none free, on one whose last handle lets it go
 * (its worker starts when that one has exited: a pool starts a retiring
 * worker's replacement before the old one exits); raises a worker_lost
 * error otherwise. */
static int core_mpi_start(lua_State *L) {
  int r, chosen = 0, ch[2], rep[2];
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  if (rank != 0) return luaL_error(L, "lmp: MPI workers are started from rank 0");
  if (luaL_getsubtable(L, LUA_REGISTRYINDEX, HANDLES_KEY) == 0) {
    lua_newtable(L);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
  }
  /* The sockets come first: once a rank is chosen nothing may fail. */
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ch) != 0)
    return luaL_error(L, "lmp: cannot make a channel: %s", strerror(errno));
  widen(ch);
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, rep) != 0) {
    int e = errno;
    close(ch[0]);
    close(ch[1]);
    return luaL_error(L, "lmp: cannot make a channel: %s", strerror(e));
  }
  pthread_mutex_lock(&lock);
  for (r = 1; r < size && !chosen; r++)
    if (!peers[r].busy) chosen = r;
  for (r = 1; r < size && !chosen; r++)
    if (letting_go(L, r)) chosen = r;
  if (chosen) peers[chosen].busy = 1, peers[chosen].reserved++;
  pthread_mutex_unlock(&lock);
  if (!chosen) {
    close(ch[0]);
    close(ch[1]);
    close(rep[0]);
    close(rep[1]);
    lmp__push_error(L, "worker_lost", "no MPI worker rank is free (each pool worker holds one)");
    return lua_error(L);
  }
  ask(M_START, chosen, 0, ch[1], rep[1]);
  lmp__relay_worker(L, chosen, ch[0], rep[0], 1);
  lua_pushvalue(L, -1);
  lua_rawseti(L, 3, chosen);
  return 1;
}

static const luaL_Reg mpi_functions[] = {
    {"mpi_init", core_mpi_init},   {"mpi_serve", core_mpi_serve},
    {"mpi_start", core_mpi_start}, {"mpi_free_ranks", core_mpi_free_ranks},
    {NULL, NULL}};

void lmp__open_relay_mpi(lua_State *L) {
  /* MPICH brings UCX, whose library installs a handler at load that
   * prints a backtrace when its process crashes; a worker process links
   * it too, and lmp reports a worker's crash itself (worker_lost). The
   * workers this process starts inherit the setting; one the user made
   * stays. */
  if (getenv("UCX_HANDLE_ERRORS") == NULL) {
    if (setenv("UCX_HANDLE_ERRORS", "none", 1) != 0)
      luaL_error(L, "lmp: cannot set UCX_HANDLE_ERRORS: %s", strerror(errno));
    set_ucx_errors = 1;
  }
  luaL_setfuncs(L, mpi_functions, 0);
}

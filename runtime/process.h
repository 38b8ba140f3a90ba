/* The worker handle (worker_handle here, lmp.WorkerHandle to Lua, where
 * it is called `handle`), shared by the file that writes on its channel
 * (process_send.c), the file that runs it
 * (process.c: reading its channel, its exit watch, its methods) and the
 * file that makes one (spawn.c: the spawn and fork start methods). Part
 * of the transport layer; internal. */
#ifndef LMP_PROCESS_H
#define LMP_PROCESS_H

#include <stdint.h>

#include <uv.h>

#include "inbox.h"
#include "transport.h"

#define HANDLE_META "lmp.WorkerHandle"

typedef struct worker_handle {
  uv_poll_t exit_watch; /* the worker's pidfd, readable once it exited, */
  uv_signal_t sigchld;  /* or, without pidfd (old kernels, valgrind), SIGCHLD */
  int by_pidfd, pidfd;
  int relayed;          /* a remote worker (relay.c): pidfd is the socket its
                           end is reported on, pid the relay's number for it */
  long owner;           /* the process this handle belongs to */
  uv_pipe_t channel;
  lua_State *L; /* NULL once the Lua object is collected */
  int on_message_ref;
  int on_exit_ref;
  int view_ref;   /* the payload view lent to on_message (deliver_frame) */
  lmp_inbox inbox;
  lmp_arrivals arrived; /* descriptors received with its frames, not yet taken */
  lmp_buffer outbox;  /* frames sent while corked (see on_read) */
  lmp_buffer task_frame; /* where handle:send_task builds its frame, */
  int task_frame_busy;   /* while it does */
  struct worker_handle *flush_next;
  int flush_pending;
  int handles_open; /* freed when no handle is open and Lua let go */
  int lua_owned;
  int exited, eof, reported, input_closed;
  int broken;   /* the channel carried garbage: it is read no more */
  uint64_t frames_sent; /* frames sent to the worker: each send returns its number */
  int reset;    /* the worker's end closed with bytes of ours unread */
  int64_t exit_status;
  int term_signal;
  int pid;
  struct worker_handle *prev, *next; /* the live workers, for an interrupt */
  struct lmp_ring *ring; /* the shared-memory ring, or NULL (process_ring.c) */
  uint64_t ring_socket_delivered; /* the worker's socket frames delivered */
  int ring_draining;
  lmp_buffer ring_copy;    /* the frame being delivered, out of the ring */
  uint64_t ring_last_in;   /* uv_hrtime() of the last frame taken from it */
  uint64_t ring_frames_out, ring_frames_in; /* frames that went through it */
  struct worker_handle *ring_prev, *ring_next; /* the handles with a ring */
} worker_handle;

/* process.c: closes one of the handle's libuv handles; the last one closed frees it
 * once Lua let go. */
void lmp__handle_close_handle(uv_handle_t *handle);
/* How the handle learns of its worker's exit (every worker, spawned or
 * forked, is this process's child): its pidfd turning readable or, where
 * there is no pidfd, SIGCHLD. */
void lmp__handle_on_pidfd(uv_poll_t *watch, int status, int events);
void lmp__handle_on_sigchld(uv_signal_t *handle, int signum);
/* The parent's side once a worker runs, whichever way it was started: the
 * Lua callbacks at on_message and on_message + 1, the box at the top.
 * Returns 1 (the box). */
int lmp__handle_started(lua_State *L, worker_handle *c, worker_handle **box, int on_message);
/* process_send.c: the handle's metatable key, the handle at stack index 1
 * (raises if it is not one or is closed; called from the handle's methods,
 * whose upvalue 1 is its metatable), and a signal to its worker. */
extern const char lmp__handle_meta_key;
worker_handle *lmp__check_handle(lua_State *L);
void lmp__handle_signal(worker_handle *c, int sig);
/* Corking: between lmp__handle_cork and lmp__handle_uncork (nested), small
 * frames wait in their worker's outbox; the last uncork writes them, one
 * write per worker. */
void lmp__handle_cork(void);
void lmp__handle_uncork(void);
/* Takes the handle off the list of outboxes to write at uncork. */
void lmp__handle_unlist_flush(worker_handle *c);
/* The sending methods: handle:send, handle:send_task, handle:flush,
 * handle:close_input. */
int lmp__handle_send(lua_State *L);
int lmp__handle_send_task(lua_State *L);
int lmp__handle_flush(lua_State *L);
int lmp__handle_close_input(lua_State *L);
/* process.c: hands a frame's body to the handle's Lua callback, and
 * stops reading a channel that carried garbage. */
void lmp__handle_deliver_frame(void *ctx, const char *body, size_t n);
void lmp__handle_channel_broken(worker_handle *c, const char *reason);

/* process_ring.c: the ring of a worker's channel, main process side.
 * lmp__ring_open gives the handle a ring (0, or a libuv error code) and
 * the descriptors for its worker in *ring_fd and *wake (the caller's to
 * close); lmp__ring_send puts a frame in the ring (1) or
 * counts it as going on the socket (0: the caller writes it there), or
 * finds the worker gone (-1: nothing sent);
 * lmp__ring_count_end counts the end of file; lmp__ring_taken is how many
 * frames the worker took (ring.h, taken); lmp__ring_drain delivers
 * the worker's frames that wait (1 if any); lmp__ring_before_socket_frame
 * comes before each frame read from the socket; lmp__ring_release unmaps
 * it when the handle is freed. lmp__rings_forget_parent: in a forked child. */
int lmp__ring_open(worker_handle *c, uv_loop_t *loop, int *ring_fd, int *wake);
/* What the ring's side needs from the files above it, registered by
 * process.c when lmp.core opens. */
typedef struct lmp_ring_delivery {
  void (*deliver)(void *handle, const char *body, size_t n);
  void (*broken)(worker_handle *c, const char *reason);
  void (*cork)(void);
  void (*uncork)(void);
} lmp_ring_delivery;
void lmp__rings_deliver_with(const lmp_ring_delivery *d);
/* process_send.c: handle:open_ring() and handle:ring_counts(). */
int lmp__handle_open_ring(lua_State *L);
int lmp__handle_ring_counts(lua_State *L);
int lmp__ring_send(worker_handle *c, const uv_buf_t *bufs, size_t nbufs, size_t total, int carrying);
void lmp__ring_count_end(worker_handle *c);
int64_t lmp__ring_taken(worker_handle *c);
int lmp__ring_drain(worker_handle *c);
void lmp__ring_before_socket_frame(worker_handle *c);
void lmp__ring_release(worker_handle *c);
void lmp__rings_forget_parent(void);

/* spawn.c: a worker made by forking, from this process (the "fork" start
 * method) or from the forkserver (forkserver.c). lmp__new_forked_handle
 * pushes a handle whose channel is one end of a new socket pair, the
 * worker's end in *peer; raises on failure. lmp__watch_forked gives the
 * handle at the top of the stack its worker, a child of this process,
 * and returns 1, or kills and reaps it and raises. */
worker_handle *lmp__new_forked_handle(lua_State *L, int *peer);
/* Reads the table of strings at `index` (a worker's argv) into args,
 * NULL-terminated; room counts the terminator. The strings are the
 * table's, valid while it is. Raises when there are too many or one is
 * not a string. */
void lmp__check_worker_args(lua_State *L, int index, char **args, int room);
int lmp__watch_forked(lua_State *L, worker_handle *c, int pid, int on_message);

/* process_send.c: how a relayed worker is signalled, set by the transport
 * that relays it; NULL while none runs. */
extern void (*lmp__relay_signal)(int id, int sig);
/* relay.c: the handle of a worker another transport relays (MPI ranks):
 * its frames arrive on channel_fd, its end as two ints (exit status,
 * signal) on report_fd (both sockets, taken over here, closed on error);
 * id identifies it to lmp__relay_signal and is its pid(). The Lua
 * callbacks are at on_message and on_message + 1. Pushes the handle. */
int lmp__relay_worker(lua_State *L, int id, int channel_fd, int report_fd, int on_message);

/* In a forked worker: the handles it inherited are its parent's, not to
 * be killed or reaped here. */
void lmp__handle_forget_parents(void);

#endif

/* The manager server's state, shared by server.c (connections, the key
 * handshake, requests, the Lua binding) and server_reply.c (framing and
 * writing replies, the error reply when there is no memory). Internal. */
#ifndef LMP_SERVER_H
#define LMP_SERVER_H

#include <stdint.h>

#include <lua.h>
#include <uv.h>

#include "buffer.h"
#include "inbox.h"
#include "transport.h"
#include "value.h"

/* A stream served: a Unix socket's or a TCP connection's (or listener). */
typedef union server_stream {
  uv_pipe_t pipe;
  uv_tcp_t tcp;
  uv_handle_t handle;
  uv_stream_t stream;
} server_stream;

typedef struct server {
  server_stream listener;
  int tcp;            /* whether it serves on TCP */
  /* Drops connections that have not proved the key within handshake_ms of
   * their arrival: a peer that says nothing must not hold a connection
   * (a descriptor) for ever. */
  uv_timer_t sweeper;
  int sweeping;
  uint64_t handshake_ms;
  lua_State *L;       /* NULL once closed */
  int handler_ref;
  int on_close_ref;   /* LUA_NOREF, or called with a client's number when it goes */
  /* Takes and closes at once a connection there is no memory for: libuv
   * accepts nothing more until the waiting connection is taken. Busy
   * while it closes; refuse_waiting says one more waits meanwhile. */
  server_stream refuser;
  int refusing;
  int refuse_waiting;
  lua_Integer next_number;
  int open_handles;   /* listener, sweeper, refuser, clients; freed at zero */
  struct client *clients;
  char *key;          /* the authentication key, wiped and freed with it */
  size_t key_len;
  /* The frame of the reply {false, "...", "memory"}, made when the server
   * starts: what a client is told when there is no memory to make its
   * reply, rather than nothing at all (it would wait for ever). */
  lmp_buffer no_memory;
} server;

/* Where a connection is in the handshake. */
enum { AWAIT_ANSWER, AWAIT_CHALLENGE, AUTHENTICATED };

typedef struct client {
  server_stream conn;
  lmp_inbox inbox;
  server *srv;
  struct client *next;
  lua_Integer number; /* how the Lua side names this client */
  uint64_t arrived;   /* the loop's time when it was accepted, in ms */
  int stage;
  unsigned char challenge[LMP_AUTH_CHALLENGE_SIZE]; /* the one we sent */
  unsigned char got[LMP_SHA256_SIZE]; /* the handshake message being read */
  size_t got_len;
  /* Writes srv->no_memory when nothing can be allocated; busy while one is
   * in flight (a second such failure meanwhile closes the connection). */
  uv_write_t no_memory_write;
  int no_memory_busy;
} client;

typedef struct reply_write {
  uv_write_t req;
  lmp_buffer bytes; /* the reply's frame, freed once written */
} reply_write;

/* Frames the reply encoded after LMP_FRAME_PREFIX bytes of out and writes
 * it to c; takes out. */
int lmp__server_write_reply(client *c, lmp_buffer out);
/* Answers c's request with an error, for the error value on top of the
 * stack (popped) of a reply that failed with Lua status `status`. */
int lmp__server_write_failure(client *c, int status);
/* Tells c there was no memory for its reply, allocating nothing; -1 with
 * one such reply in flight already. */
int lmp__server_write_no_memory(client *c);
/* In protected mode: encodes the framed reply {false, "...", "memory"}
 * into the buffer at 1 (made when a server starts). */
int lmp__server_encode_no_memory(lua_State *L);

#endif

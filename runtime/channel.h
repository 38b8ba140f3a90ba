/* The channel between the main process and a worker: frames (inbox.h)
 * on a socket pair, the worker's blocking side of it, and the socket's
 * buffer size. Part of the transport layer. */
#ifndef LMP_CHANNEL_H
#define LMP_CHANNEL_H

#include <lua.h>

#include "inbox.h"

/* The file descriptor a worker finds its channel on. */
#define LMP_CHANNEL_FD 3

/* Decodes a frame body of n bytes: pushes the message and the payload (nil
 * when there is none). Malformed bodies raise. */
void lmp__decode_frame(lua_State *L, const char *body, size_t n);

/* Asks for a send buffer big enough for a whole map chunk on a channel's
 * socket (fd), capped by the system (net.core.wmem_max). */
#define LMP_CHANNEL_BUFFER (4 << 20)
void lmp__widen_socket(int fd);

/* Waits until fd is ready for `events` (POLLIN or POLLOUT): a frame must
 * go or come whole even on a descriptor another process made
 * non-blocking. 0, or -errno. */
int lmp__wait_ready(int fd, short events);
/* Reads n bytes into p, waiting (lmp__wait_ready) on a non-blocking
 * descriptor. Returns 1 once all are read; 0 at end of file before the
 * first byte (the peer closed between frames); -EPIPE at end of file
 * after some (it closed in the middle of one); -errno on failure. */
int lmp__read_full(int fd, char *p, size_t n);

/* Adds channel_recv and channel_send (a worker's blocking side of the
 * channel) to the table on top of the stack. */
void lmp__open_channel(lua_State *L);
/* channel_ring.c: the worker's side of its ring, used by channel.c.
 * lmp__worker_ring_next waits for the next frame: 1 with its body (it
 * stays in place until the next call), 0 when the next one is on the
 * socket, -1 when the ring holds garbage. lmp__worker_ring_socket_read
 * counts a frame read from the socket. lmp__worker_ring_send puts a frame
 * in the ring (1), or counts it as going on the socket (0: the caller
 * writes it). lmp__core_ring_attach is core.ring_attach(ring_fd, wake_fd),
 * which takes the ring the main process made (the descriptors stay the
 * caller's). lmp__channel_forget_ring: in a child forked from a worker. */
struct iovec;
int lmp__worker_ring_active(void);
int lmp__worker_ring_next(const char **body, size_t *n);
void lmp__worker_ring_socket_read(void);
int lmp__worker_ring_send(const struct iovec *iov, int n, size_t total, int carrying);
int lmp__core_ring_attach(lua_State *L);
void lmp__channel_forget_ring(void);

#endif

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

#endif

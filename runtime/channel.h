/* Message framing on a channel: an 8-byte little-endian length, then the
 * body: a 4-byte length of the message, the message (the value format),
 * and, filling the rest of the body, an optional payload (the value format
 * again). A task's arguments travel as a payload: encoded once when the
 * task is submitted, written as they are, decoded once in the worker. */
#ifndef LMP_CHANNEL_H
#define LMP_CHANNEL_H

#include <stdint.h>
#include <string.h>

#include <lua.h>

#define LMP_FRAME_HEADER 8
/* No frame is longer: a header that says more is garbage, and reading on
 * would wait for bytes that never come. */
#define LMP_FRAME_MAX ((uint64_t)1 << 40)
/* The file descriptor a worker finds its channel on. */
#define LMP_CHANNEL_FD 3

static inline uint64_t lmp__frame_length(const char *header) {
  const unsigned char *p = (const unsigned char *)header;
  uint64_t v = 0;
  int i;
  for (i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static inline void lmp__frame_set_length(char *header, uint64_t v) {
  int i;
  for (i = 0; i < 8; i++) header[i] = (char)(v >> (8 * i));
}

#define LMP_FRAME_PREFIX (LMP_FRAME_HEADER + 4) /* length + message length */

static inline uint32_t lmp__u32_at(const char *p) {
  const unsigned char *b = (const unsigned char *)p;
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static inline void lmp__set_u32_at(char *p, uint32_t v) {
  int i;
  for (i = 0; i < 4; i++) p[i] = (char)(v >> (8 * i));
}

/* The length of the message at the start of a frame body of n bytes
 * (after its 4-byte length; the payload follows it). Malformed bodies
 * raise. */
size_t lmp__frame_message(lua_State *L, const char *body, size_t n);

/* Decodes a frame body of n bytes: pushes the message and the payload (nil
 * when there is none). Malformed bodies raise. */
void lmp__decode_frame(lua_State *L, const char *body, size_t n);

/* Asks for a send buffer big enough for a whole map chunk on a channel's
 * socket (fd), capped by the system (net.core.wmem_max). */
#define LMP_CHANNEL_BUFFER (4 << 20)
void lmp__widen_socket(int fd);

/* Adds channel_recv and channel_send (a worker's blocking side of the
 * channel) to the table on top of the stack. */
void lmp__open_channel(lua_State *L);

#endif

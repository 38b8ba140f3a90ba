/* The frames and inbox layer: how messages are framed on a stream, and
 * bytes arriving on a stream cut into frames: a libuv stream in the main
 * process, a worker's blocking channel in the worker. Uses only the
 * layers below it (memory, buffer). */
#ifndef LMP_INBOX_H
#define LMP_INBOX_H

#include <stdint.h>
#include <string.h>

#include <lua.h>
#include <uv.h>

#include "buffer.h"

/* Frames: an 8-byte header, then the body: a 4-byte length of the
 * message, the message (the value format), and, filling the rest of the
 * body, an optional payload (the value format again). A task's arguments
 * travel as a payload: encoded once when the task is submitted, written as
 * they are, decoded once in the worker. The header is the body's length in
 * its first 6 bytes (little-endian), then two counts of the descriptors
 * the frame carries (SCM_RIGHTS, on the socket with its first byte): the
 * message's (byte 6) and the payload's (byte 7). */
#define LMP_FRAME_HEADER 8
/* No frame is longer: a header that says more is garbage, and reading on
 * would wait for bytes that never come. */
#define LMP_FRAME_MAX ((uint64_t)1 << 40)
/* No frame carries more descriptors (libuv takes at most 64 from one
 * read): a header that says more is garbage too. */
#define LMP_FRAME_DESCRIPTORS_MAX 64

static inline uint64_t lmp__frame_length(const char *header) {
  const unsigned char *p = (const unsigned char *)header;
  uint64_t v = 0;
  int i;
  for (i = 5; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* Sets the length and no descriptors. */
static inline void lmp__frame_set_length(char *header, uint64_t v) {
  int i;
  for (i = 0; i < 8; i++) header[i] = (char)(i < 6 ? v >> (8 * i) : 0);
}

static inline int lmp__frame_message_descriptors(const char *header) {
  return (unsigned char)header[6];
}

static inline int lmp__frame_payload_descriptors(const char *header) {
  return (unsigned char)header[7];
}

static inline void lmp__frame_set_descriptors(char *header, int message, int payload) {
  header[6] = (char)message;
  header[7] = (char)payload;
}

/* Whether a whole header is one of lmp's: a length and descriptor counts
 * within bounds. */
static inline int lmp__frame_header_valid(const char *header) {
  return lmp__frame_length(header) <= LMP_FRAME_MAX &&
         lmp__frame_message_descriptors(header) + lmp__frame_payload_descriptors(header) <=
             LMP_FRAME_DESCRIPTORS_MAX;
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

typedef struct lmp_inbox {
  lmp_buffer bytes; /* read and not yet delivered: from `used` on */
  size_t used;
} lmp_inbox;

/* For a uv_alloc_cb: room at the end of the inbox, all of a large frame
 * once its length is known. An empty buffer on failure (libuv then reports
 * UV_ENOBUFS). */
void lmp__inbox_alloc(lmp_inbox *in, uv_buf_t *buf);

/* Calls deliver(ctx, body, length) for every complete frame, then keeps
 * what is left of an incomplete one. Returns 0, or -1 when the next
 * frame's header is not valid (longer than LMP_FRAME_MAX, or more
 * descriptors than LMP_FRAME_DESCRIPTORS_MAX: the stream carries garbage: the
 * caller must stop reading it). */
int lmp__inbox_frames(lmp_inbox *in, void (*deliver)(void *ctx, const char *body, size_t n),
                       void *ctx);

/* Takes the next complete frame, if one has arrived: sets *body and *n and
 * returns 1; its bytes stay valid until the inbox is next touched.
 * Returns 0 otherwise, and -1 when the next frame's header is not valid. */
int lmp__inbox_next(lmp_inbox *in, const char **body, size_t *n);

/* Drops what was taken, keeping what is left of an incomplete frame. */
void lmp__inbox_compact(lmp_inbox *in);

void lmp__inbox_free(lmp_inbox *in);

#endif

/* Message framing on a channel: an 8-byte little-endian length, then that
 * many bytes of the value format. */
#ifndef LMP_CHANNEL_H
#define LMP_CHANNEL_H

#include <stdint.h>
#include <string.h>

#include <lua.h>

#define LMP_FRAME_HEADER 8
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

/* Adds channel_recv and channel_send (a worker's blocking side of the
 * channel) to the table on top of the stack. */
void lmp__open_channel(lua_State *L);

#endif

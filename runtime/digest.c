/* SHA-256 (FIPS 180-4), HMAC-SHA256 (RFC 2104), random bytes from the
 * kernel and a comparison whose time does not depend on where two digests
 * differ: what proves a key on a connection (lmp.Manager's socket) without
 * sending it. Exposed in lmp.core as sha256, hmac_sha256, random_bytes and
 * compare_digest. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport.h"

/* FIPS 180-4, 4.2.2: the first 32 bits of the fractional parts of the cube
 * roots of the first 64 primes. */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define CH(x, y, z) (((x) & (y)) ^ (~(x) & (z)))
#define MAJ(x, y, z) (((x) & (y)) ^ ((x) & (z)) ^ ((y) & (z)))
#define SIGMA0(x) (ROTR(x, 2) ^ ROTR(x, 13) ^ ROTR(x, 22))
#define SIGMA1(x) (ROTR(x, 6) ^ ROTR(x, 11) ^ ROTR(x, 25))
#define sigma0(x) (ROTR(x, 7) ^ ROTR(x, 18) ^ ((x) >> 3))
#define sigma1(x) (ROTR(x, 17) ^ ROTR(x, 19) ^ ((x) >> 10))

/* FIPS 180-4, 6.2.2: one 64-byte block into the hash value. */
static void compress(lmp_sha256 *s, const unsigned char *block) {
  uint32_t w[64], a, b, c, d, e, f, g, h, t1, t2;
  int t;
  for (t = 0; t < 16; t++)
    w[t] = (uint32_t)block[4 * t] << 24 | (uint32_t)block[4 * t + 1] << 16 |
           (uint32_t)block[4 * t + 2] << 8 | (uint32_t)block[4 * t + 3];
  for (t = 16; t < 64; t++) w[t] = sigma1(w[t - 2]) + w[t - 7] + sigma0(w[t - 15]) + w[t - 16];
  a = s->h[0]; b = s->h[1]; c = s->h[2]; d = s->h[3];
  e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
  for (t = 0; t < 64; t++) {
    t1 = h + SIGMA1(e) + CH(e, f, g) + K[t] + w[t];
    t2 = SIGMA0(a) + MAJ(a, b, c);
    h = g; g = f; f = e; e = d + t1;
    d = c; c = b; b = a; a = t1 + t2;
  }
  s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
  s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

void lmp__sha256_init(lmp_sha256 *s) {
  /* FIPS 180-4, 5.3.3: the fractional parts of the square roots of the
   * first 8 primes. */
  static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(s->h, initial, sizeof initial);
  s->length = 0;
  s->used = 0;
}

void lmp__sha256_update(lmp_sha256 *s, const void *data, size_t n) {
  const unsigned char *p = data;
  s->length += n;
  if (s->used > 0) {
    size_t take = 64 - s->used < n ? 64 - s->used : n;
    memcpy(s->block + s->used, p, take);
    s->used += take;
    p += take;
    n -= take;
    if (s->used < 64) return;
    compress(s, s->block);
    s->used = 0;
  }
  for (; n >= 64; p += 64, n -= 64) compress(s, p);
  memcpy(s->block, p, n);
  s->used = n;
}

void lmp__sha256_final(lmp_sha256 *s, unsigned char digest[LMP_SHA256_SIZE]) {
  /* FIPS 180-4, 5.1.1: a one bit, zeros, and the length in bits as a
   * 64-bit big-endian number, to a multiple of 64 bytes. */
  uint64_t bits = (uint64_t)s->length * 8;
  int i;
  s->block[s->used++] = 0x80;
  if (s->used > 56) {
    memset(s->block + s->used, 0, 64 - s->used);
    compress(s, s->block);
    s->used = 0;
  }
  memset(s->block + s->used, 0, 56 - s->used);
  for (i = 0; i < 8; i++) s->block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
  compress(s, s->block);
  for (i = 0; i < 8; i++) {
    digest[4 * i] = (unsigned char)(s->h[i] >> 24);
    digest[4 * i + 1] = (unsigned char)(s->h[i] >> 16);
    digest[4 * i + 2] = (unsigned char)(s->h[i] >> 8);
    digest[4 * i + 3] = (unsigned char)s->h[i];
  }
  memset(s, 0, sizeof *s);
}

void lmp__hmac_sha256(const void *key, size_t key_len, const void *message, size_t n,
                      unsigned char mac[LMP_SHA256_SIZE]) {
  /* RFC 2104: H(K ^ opad, H(K ^ ipad, text)), with a key longer than the
   * block hashed first and a shorter one padded with zeros. */
  unsigned char k[64], pad[64], inner[LMP_SHA256_SIZE];
  lmp_sha256 s;
  int i;
  memset(k, 0, sizeof k);
  if (key_len > sizeof k) {
    lmp__sha256_init(&s);
    lmp__sha256_update(&s, key, key_len);
    lmp__sha256_final(&s, k);
  } else {
    memcpy(k, key, key_len);
  }
  for (i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
  lmp__sha256_init(&s);
  lmp__sha256_update(&s, pad, sizeof pad);
  lmp__sha256_update(&s, message, n);
  lmp__sha256_final(&s, inner);
  for (i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
  lmp__sha256_init(&s);
  lmp__sha256_update(&s, pad, sizeof pad);
  lmp__sha256_update(&s, inner, sizeof inner);
  lmp__sha256_final(&s, mac);
  memset(k, 0, sizeof k);
  memset(pad, 0, sizeof pad);
}

int lmp__random_bytes(void *out, size_t n) {
  unsigned char *p = out;
  while (n > 0) {
    ssize_t got = getrandom(p, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += got;
    n -= (size_t)got;
  }
  return 0;
}

int lmp__compare_digest(const void *a, const void *b, size_t n) {
  const unsigned char *x = a, *y = b;
  unsigned char differ = 0;
  size_t i;
  for (i = 0; i < n; i++) differ |= x[i] ^ y[i];
  return differ == 0;
}

void lmp__auth_answer(const char *key, size_t key_len, const char *role,
                      const unsigned char challenge[LMP_AUTH_CHALLENGE_SIZE],
                      unsigned char answer[LMP_SHA256_SIZE]) {
  unsigned char message[16 + LMP_AUTH_CHALLENGE_SIZE];
  size_t n = strlen(role);
  memcpy(message, role, n);
  memcpy(message + n, challenge, LMP_AUTH_CHALLENGE_SIZE);
  lmp__hmac_sha256(key, key_len, message, n + LMP_AUTH_CHALLENGE_SIZE, answer);
}

int lmp__read_exactly(int fd, void *out, size_t n) {
  unsigned char *p = out;
  while (n > 0) {
    ssize_t got = read(fd, p, n);
    if (got < 0 && errno == EINTR) continue;
    if (got == 0) errno = 0; /* the end of the stream, not a time limit */
    if (got <= 0) return -1;
    p += got;
    n -= (size_t)got;
  }
  return 0;
}

int lmp__send_all(int fd, const void *data, size_t n) {
  const unsigned char *p = data;
  while (n > 0) {
    ssize_t put = send(fd, p, n, MSG_NOSIGNAL);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) return -1;
    p += put;
    n -= (size_t)put;
  }
  return 0;
}

/* Why a handshake read or write failed: the peer was silent past the
 * socket's time limit (EAGAIN), or it went. */
static const char *lost(const char *gone) {
  if (errno == EAGAIN || errno == EWOULDBLOCK)
    return "the server said nothing within the handshake's time limit";
  return gone;
}

int lmp__auth_client(int fd, const char *key, size_t key_len, const char **why) {
  unsigned char greeting[LMP_AUTH_TAG_SIZE + LMP_AUTH_CHALLENGE_SIZE];
  unsigned char answer[LMP_SHA256_SIZE], expected[LMP_SHA256_SIZE];
  unsigned char challenge[LMP_AUTH_CHALLENGE_SIZE], verdict[LMP_AUTH_TAG_SIZE];
  if (lmp__read_exactly(fd, greeting, sizeof greeting) != 0) {
    *why = lost("the server closed the connection before its challenge");
    return -1;
  }
  if (memcmp(greeting, LMP_AUTH_GREETING, LMP_AUTH_TAG_SIZE) != 0) {
    *why = "the server does not speak lmp's handshake";
    return -1;
  }
  lmp__auth_answer(key, key_len, "lmp client", greeting + LMP_AUTH_TAG_SIZE, answer);
  if (lmp__send_all(fd, answer, sizeof answer) != 0 ||
      lmp__read_exactly(fd, verdict, sizeof verdict) != 0) {
    *why = lost("the server closed the connection during the handshake");
    return -1;
  }
  if (memcmp(verdict, LMP_AUTH_WELCOME, LMP_AUTH_TAG_SIZE) != 0) {
    *why = "authentication failed: the server refused this key";
    return -1;
  }
  if (lmp__random_bytes(challenge, sizeof challenge) != 0 ||
      lmp__send_all(fd, challenge, sizeof challenge) != 0 ||
      lmp__read_exactly(fd, answer, sizeof answer) != 0) {
    *why = lost("the server closed the connection during the handshake");
    return -1;
  }
  lmp__auth_answer(key, key_len, "lmp server", challenge, expected);
  if (!lmp__compare_digest(answer, expected, sizeof answer)) {
    *why = "authentication failed: the server does not know this key";
    return -1;
  }
  return 0;
}

/* core.sha256(bytes) -> 32-byte digest */
static int core_sha256(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char digest[LMP_SHA256_SIZE];
  lmp_sha256 state;
  lmp__sha256_init(&state);
  lmp__sha256_update(&state, s, n);
  lmp__sha256_final(&state, digest);
  lua_pushlstring(L, (const char *)digest, sizeof digest);
  return 1;
}

/* core.hmac_sha256(key, message) -> 32-byte MAC */
static int core_hmac_sha256(lua_State *L) {
  size_t key_len, n;
  const char *key = luaL_checklstring(L, 1, &key_len);
  const char *message = luaL_checklstring(L, 2, &n);
  unsigned char mac[LMP_SHA256_SIZE];
  lmp__hmac_sha256(key, key_len, message, n, mac);
  lua_pushlstring(L, (const char *)mac, sizeof mac);
  return 1;
}

/* core.random_bytes(n) -> n bytes from the kernel's generator */
static int core_random_bytes(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_Buffer b;
  int r;
  luaL_argcheck(L, n >= 0 && n <= 65536, 1, "0 to 65536 bytes expected");
  r = lmp__random_bytes(luaL_buffinitsize(L, &b, (size_t)n), (size_t)n);
  if (r != 0) return luaL_error(L, "lmp: no random bytes: %s", strerror(-r));
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

/* core.compare_digest(a, b) -> whether the strings are equal, in a time
 * that depends on their length only. */
static int core_compare_digest(lua_State *L) {
  size_t na, nb;
  const char *a = luaL_checklstring(L, 1, &na);
  const char *b = luaL_checklstring(L, 2, &nb);
  lua_pushboolean(L, na == nb && lmp__compare_digest(a, b, na));
  return 1;
}

static const luaL_Reg digest_functions[] = {{"sha256", core_sha256},
                                            {"hmac_sha256", core_hmac_sha256},
                                            {"random_bytes", core_random_bytes},
                                            {"compare_digest", core_compare_digest},
                                            {NULL, NULL}};

void lmp__open_digest(lua_State *L) {
  luaL_setfuncs(L, digest_functions, 0);
}

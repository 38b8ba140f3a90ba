/* The floor for a wake-up between two processes: two words in shared
 * memory, each process sleeping in FUTEX_WAIT (the shared op, as lmp's
 * locks use) until the other changes its word and calls FUTEX_WAKE.
 * Nothing that sleeps in the kernel can hand over faster than this;
 * lmp.Event's set-to-wake latency is measured against it.
 *
 * Usage: futex_pingpong [round-trips]
 * Prints "futex.wake_us X": half the median round trip, in microseconds,
 * after a warm-up. */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Sets *word to value and wakes its sleeper. */
static void post(uint32_t *word, uint32_t value) {
  __atomic_store_n(word, value, __ATOMIC_SEQ_CST);
  syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Sleeps until *word is value. */
static void await(uint32_t *word, uint32_t value) {
  uint32_t seen;
  while ((seen = __atomic_load_n(word, __ATOMIC_SEQ_CST)) != value)
    syscall(SYS_futex, word, FUTEX_WAIT, seen, NULL, NULL, 0);
}

static int compare(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 2000, warm = rounds / 10, i;
  uint32_t *words = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  double *times = malloc(sizeof *times * (size_t)rounds);
  pid_t child;
  if (words == MAP_FAILED || times == NULL || rounds < 1) return 1;
  words[0] = words[1] = 0;
  if ((child = fork()) < 0) return 1;
  if (child == 0) {
    for (i = 1; i <= warm + rounds; i++) {
      await(&words[0], (uint32_t)i);
      post(&words[1], (uint32_t)i);
    }
    _exit(0);
  }
  for (i = 1; i <= warm + rounds; i++) {
    double t = now_us();
    post(&words[0], (uint32_t)i);
    await(&words[1], (uint32_t)i);
    if (i > warm) times[i - warm - 1] = now_us() - t;
  }
  waitpid(child, NULL, 0);
  qsort(times, (size_t)rounds, sizeof *times, compare);
  printf("futex.wake_us %.2f\n", times[rounds / 2] / 2);
  return 0;
}

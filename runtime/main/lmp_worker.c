/* lmp-worker: the executable pools start (start method "spawn"). */
#include <stdio.h>

#include "lmp.h"

int main(int argc, char **argv) {
  int status = lmp_worker_main(argc, argv, NULL, NULL);
  if (status >= 0) return status;
  fprintf(stderr, "lmp-worker: lmp pools start this program; it is not run by hand\n");
  return 2;
}

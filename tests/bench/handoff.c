/*
** bench_handoff — lock hand-off latency: a holder process releases while this
** one waits in lg_lock_acquire (timeout wait: backoff polling, 0.5 ms doubling
** to 4 ms). Prints the median and 90th percentile over N hand-offs, measured
** from just before the holder's release to the waiter holding the lock.
**
**   build/bin/bench_handoff [N]       (default 100)
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "lg_lock.h"

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 100, i;
  char dir[] = "/tmp/lg_handoff.XXXXXX", path[256];
  double *lat;
  if (n <= 0 || mkdtemp(dir) == NULL) return 2;
  lat = malloc((size_t)n * sizeof *lat);
  snprintf(path, sizeof path, "%s/.certbot.lock", dir);
  for (i = 0; i < n; i++) {
    int ready[2], report[2];
    double released = 0;
    char c;
    lg_lock waiter;
    pid_t child;
    if (pipe(ready) != 0 || pipe(report) != 0) return 2;
    child = fork();
    if (child == 0) {
      lg_lock holder;
      struct timespec hold = {0, 20000000L};   /* hold 20 ms while the waiter polls */
      double t;
      lg_lock_init(&holder);
      if (lg_lock_acquire(&holder, path, 0, NULL, NULL, NULL) != 0) _exit(1);
      if (write(ready[1], "r", 1) != 1) _exit(1);
      nanosleep(&hold, NULL);
      t = test_now();
      lg_lock_release(&holder, path);
      if (write(report[1], &t, sizeof t) != (ssize_t)sizeof t) _exit(1);
      _exit(0);
    }
    if (read(ready[0], &c, 1) != 1) return 2;
    lg_lock_init(&waiter);
    if (lg_lock_acquire(&waiter, path, 10, NULL, NULL, NULL) != 0) return 3;
    lat[i] = test_now();
    if (read(report[0], &released, sizeof released) != (ssize_t)sizeof released) return 2;
    lat[i] -= released;
    lg_lock_release(&waiter, path);
    waitpid(child, NULL, 0);
    close(ready[0]); close(ready[1]); close(report[0]); close(report[1]);
  }
  qsort(lat, (size_t)n, sizeof *lat, test_compare_doubles);
  printf("lock hand-off over %d runs: median %.3f ms, p90 %.3f ms, max %.3f ms\n",
         n, lat[n / 2] * 1e3, lat[(n * 9) / 10] * 1e3, lat[n - 1] * 1e3);
  printf("RESULT handoff %.6g %.6g %.6g\n", lat[n / 2], lat[n / 10], lat[(n * 9) / 10]);
  free(lat);
  rmdir(dir);
  return 0;
}

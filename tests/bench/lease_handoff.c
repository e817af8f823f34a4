/*
** bench_lease_handoff — lock.lease's hand-off through the core (lg_etcd.c),
** as bench_handoff does for lock.dir: a holder releases, a waiter in another
** process (already blocked in etcd's lock/lock) holds; the time from just
** before the release to just after the acquire, CLOCK_MONOTONIC on both sides.
**
**   bench_lease_handoff ENDPOINT NAME N
** Prints a human line and "RESULT lease_handoff median p10 p90" in seconds.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lg_etcd.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static lg_lease *open_lease(const char *endpoint, const char *name) {
  lg_etcd_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.endpoints[0] = endpoint;
  cfg.nendpoints = 1;
  return lg_lease_new(&cfg, name, 15);
}

static void take(lg_lease *ls) {
  lg_lease_wait w;
  lg_etcd_error err;
  memset(&w, 0, sizeof w);
  w.timeout = 30;
  if (lg_lease_acquire(ls, &w, NULL, NULL, &err) != LG_LEASE_OK) {
    fprintf(stderr, "bench_lease_handoff: acquire: %s: %s\n", err.endpoint, err.message);
    exit(1);
  }
}

int main(int argc, char **argv) {
  int to_waiter[2], to_holder[2], i, n;
  double *gaps;
  pid_t child;
  if (argc != 4 || (n = atoi(argv[3])) < 1) {
    fprintf(stderr, "usage: bench_lease_handoff ENDPOINT NAME N\n");
    return 2;
  }
  if (pipe(to_waiter) != 0 || pipe(to_holder) != 0) return 1;
  child = fork();
  if (child == 0) {                      /* the waiter */
    lg_lease *ls = open_lease(argv[1], argv[2]);
    char go;
    for (i = 0; i < n; i++) {
      double t;
      if (read(to_waiter[0], &go, 1) != 1) _exit(1);
      take(ls);                          /* blocks until the holder releases */
      t = now();
      lg_lease_release(ls, NULL);
      if (write(to_holder[1], &t, sizeof t) != (ssize_t)sizeof t) _exit(1);
    }
    lg_lease_free(ls);
    _exit(0);
  }
  gaps = calloc((size_t)n, sizeof *gaps);
  {
    lg_lease *ls = open_lease(argv[1], argv[2]);
    /* the waiter reaches lock/lock, and etcd's watch for it is synced: a
    ** watch that starts behind the head revision is caught up by a loop
    ** every 100 ms, so a waiter younger than that is woken up to 100 ms late */
    struct timespec settle = {0, 300000000L};
    for (i = 0; i < n; i++) {
      double t0, t1;
      take(ls);
      if (write(to_waiter[1], "g", 1) != 1) return 1;
      nanosleep(&settle, NULL);
      t0 = now();
      lg_lease_release(ls, NULL);
      if (read(to_holder[0], &t1, sizeof t1) != (ssize_t)sizeof t1) return 1;
      gaps[i] = t1 - t0;
    }
    lg_lease_free(ls);
  }
  waitpid(child, NULL, 0);
  qsort(gaps, (size_t)n, sizeof *gaps, by_value);
  printf("lease hand-off: median %.2f ms (p10 %.2f, p90 %.2f) over %d\n", gaps[n / 2] * 1e3,
         gaps[n / 10] * 1e3, gaps[n * 9 / 10] * 1e3, n);
  printf("RESULT lease_handoff %.6f %.6f %.6f\n", gaps[n / 2], gaps[n / 10], gaps[n * 9 / 10]);
  free(gaps);
  return 0;
}

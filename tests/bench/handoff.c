/*
** bench_handoff — lock hand-off latency, from just before a holder's release
** to the next holder holding, as medians and percentiles.
**
**   build/bin/bench_handoff N            one waiter: a holder process holds
**                                        20 ms and releases while this process
**                                        waits in lg_lock_acquire (timeout 10 s);
**                                        alternating with the same hand-off done
**                                        by bare system calls (the floor: the
**                                        waiter blocked in F_SETLKW, woken, opens
**                                        the next file and locks it), N each
**   build/bin/bench_handoff N WAITERS    contention: WAITERS processes take the
**                                        lock in turn (each waits with a
**                                        timeout), N hand-offs in all (a
**                                        re-take by the releaser is not one)
**
** A waiter blocks in F_SETLKW (src/core/lg_lock.c) and is woken by the
** unlock. Prints a human line and "RESULT NAME median p10 p90" (seconds).
*/
#define _DEFAULT_SOURCE   /* MAP_ANONYMOUS */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "lg_lock.h"

static void report(const char *name, const char *what, double *lat, int n) {
  qsort(lat, (size_t)n, sizeof *lat, test_compare_doubles);
  printf("%s over %d hand-offs: median %.3f ms, p90 %.3f ms, max %.3f ms\n",
         what, n, lat[n / 2] * 1e3, lat[(n * 9) / 10] * 1e3, lat[n - 1] * 1e3);
  printf("RESULT %s %.6g %.6g %.6g\n", name, lat[n / 2], lat[n / 10], lat[(n * 9) / 10]);
}

/* The floor's waiter: what any blocking waiter on certbot's protocol must do. */
static int bare_wait(const char *path) {
  struct flock fl;
  struct stat st, at_path;
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  if (fd < 0 || fcntl(fd, F_SETLKW, &fl) != 0) return -1;
  while (fstat(fd, &st) != 0 || stat(path, &at_path) != 0 || st.st_ino != at_path.st_ino) {
    close(fd);              /* unlinked by the holder: the next file */
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || fcntl(fd, F_SETLKW, &fl) != 0) return -1;
  }
  return fd;
}

static int one_waiter(const char *path, int n, double *lat) {
  double *floor_lat = malloc((size_t)n * sizeof *floor_lat);
  int i;
  if (floor_lat == NULL) return 2;
  for (i = 0; i < 2 * n; i++) {
    int bare = i % 2, fd = -1;
    int ready[2], told[2];
    double released = 0, t;
    char c;
    lg_lock waiter;
    pid_t child;
    if (pipe(ready) != 0 || pipe(told) != 0) return 2;
    child = fork();
    if (child == 0) {
      lg_lock holder;
      struct timespec hold = {0, 20000000L};   /* hold 20 ms: the waiter is blocked by then */
      double before;
      lg_lock_init(&holder);
      if (lg_lock_acquire(&holder, path, 0, NULL, NULL, NULL) != 0) _exit(1);
      if (write(ready[1], "r", 1) != 1) _exit(1);
      nanosleep(&hold, NULL);
      before = test_now();
      lg_lock_release(&holder, path);
      if (write(told[1], &before, sizeof before) != (ssize_t)sizeof before) _exit(1);
      _exit(0);
    }
    if (read(ready[0], &c, 1) != 1) return 2;
    lg_lock_init(&waiter);
    if (bare) {
      if ((fd = bare_wait(path)) < 0) return 3;
    }
    else if (lg_lock_acquire(&waiter, path, 10, NULL, NULL, NULL) != 0) return 3;
    t = test_now();
    if (read(told[0], &released, sizeof released) != (ssize_t)sizeof released) return 2;
    (bare ? floor_lat : lat)[i / 2] = t - released;
    if (bare) {
      unlink(path);
      close(fd);
    }
    else lg_lock_release(&waiter, path);
    waitpid(child, NULL, 0);
    close(ready[0]); close(ready[1]); close(told[0]); close(told[1]);
  }
  report("handoff", "lock hand-off, one waiter,", lat, n);
  report("handoff_floor", "the same by bare system calls (the floor),", floor_lat, n);
  free(floor_lat);
  return 0;
}

/* Shared by the contending processes; written only by the lock's holder. */
typedef struct shared {
  double last_release;      /* 0 before the first release */
  pid_t last_holder;        /* a re-take by the releaser is no hand-off */
  int count;                /* hand-offs recorded */
  int done;
  double lat[];
} shared;

static int contention(const char *path, int n, int waiters, double *lat) {
  size_t size = sizeof(shared) + (size_t)n * sizeof(double);
  shared *s = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  int i, status, failed = 0;
  if (s == MAP_FAILED) return 2;
  memset(s, 0, size);
  for (i = 0; i < waiters; i++) {
    if (fork() == 0) {
      for (;;) {
        lg_lock me;
        double t;
        lg_lock_init(&me);
        if (lg_lock_acquire(&me, path, 10, NULL, NULL, NULL) != 0) _exit(3);
        t = test_now();
        if (s->done) {
          lg_lock_release(&me, path);
          _exit(0);
        }
        if (s->last_release > 0 && s->last_holder != getpid())
          s->lat[s->count++] = t - s->last_release;
        if (s->count >= n) s->done = 1;
        s->last_holder = getpid();
        s->last_release = test_now();
        lg_lock_release(&me, path);
      }
    }
  }
  for (i = 0; i < waiters; i++) {
    wait(&status);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed = 1;
  }
  if (failed || s->count < n) return 3;
  memcpy(lat, s->lat, (size_t)n * sizeof *lat);
  munmap(s, size);
  {
    char what[64];
    snprintf(what, sizeof what, "lock hand-off, %d processes contending,", waiters);
    report("handoff_contended", what, lat, n);
  }
  return 0;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 200, waiters = argc > 2 ? atoi(argv[2]) : 1, rc;
  char dir[] = "/tmp/lg_handoff.XXXXXX", path[256];
  double *lat;
  if (n <= 0 || waiters <= 0 || mkdtemp(dir) == NULL) return 2;
  lat = malloc((size_t)n * sizeof *lat);
  if (lat == NULL) return 2;
  snprintf(path, sizeof path, "%s/.certbot.lock", dir);
  rc = waiters == 1 ? one_waiter(path, n, lat) : contention(path, n, waiters, lat);
  free(lat);
  rmdir(dir);
  return rc;
}

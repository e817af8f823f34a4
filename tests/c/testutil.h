/*
** testutil.h — small helpers the C test, soak, fuzz and bench programs share
** (each is a standalone program, so these are static inline).
*/
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <dirent.h>
#include <time.h>
#include <unistd.h>

/* CLOCK_MONOTONIC seconds */
static inline double test_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* qsort comparison of doubles */
static inline int test_compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* open descriptors of this process (not counting the one used to count) */
static inline int test_count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  int n = 0;
  if (d == NULL) return -1;
  while ((e = readdir(d)) != NULL) if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1;
}

/* fork(); the child ends by SIGALRM after 'seconds': a fault that leaves it
** waiting (or looping) fails the parent's check on its status, where a plain
** fork() would leave the parent in waitpid until the program's own alarm */
static inline pid_t test_fork_limited(unsigned seconds) {
  pid_t pid = fork();
  if (pid == 0) alarm(seconds);
  return pid;
}

#endif

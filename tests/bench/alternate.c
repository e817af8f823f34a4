/*
** bench_alternate — runs two commands side by side, alternating A, B, A, B
** ... for ROUNDS rounds, so that whatever the machine does meanwhile falls on
** both alike; reports each one's median and spread and the ratio A/B.
**
**   bench_alternate NAME ROUNDS wall|self 'COMMAND A' 'COMMAND B'
**
** wall: the figure is the command's wall time (fork to exit, CLOCK_MONOTONIC).
** self: the command times itself and prints its figure (seconds per
**       operation) as the last number on its stdout.
** Commands run through /bin/sh -c. Prints a human line and a machine line:
**   RESULT NAME a_median a_p10 a_p90 b_median b_p10 b_p90 ratio_median ratio_p10 ratio_p90
** The ratio's spread is over the rounds (A of round i over B of round i).
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

/* p in [0, 1] of n sorted values */
static double percentile(const double *sorted, int n, double p) {
  int i = (int)(p * (n - 1) + 0.5);
  return sorted[i];
}

/* One run: its figure, or -1 when it failed. */
static double run(const char *command, int self_timed) {
  int out[2], status;
  char buffer[4096];
  size_t used = 0;
  ssize_t got;
  double start, figure = -1;
  pid_t pid;
  if (pipe(out) != 0) return -1;
  start = test_now();
  pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    close(out[1]);
    execl("/bin/sh", "sh", "-c", command, (char *)NULL);
    _exit(127);
  }
  close(out[1]);
  while ((got = read(out[0], buffer + used, sizeof buffer - 1 - used)) > 0 ||
         (got < 0 && errno == EINTR)) {
    if (got > 0) used += (size_t)got;
    if (used == sizeof buffer - 1) used = 0;   /* only the end matters */
  }
  close(out[0]);
  if (waitpid(pid, &status, 0) != pid) return -1;
  if (!self_timed) figure = test_now() - start;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "bench_alternate: '%s' failed (status %d)\n", command, status);
    return -1;
  }
  if (self_timed) {
    char *last = NULL, *p;
    buffer[used] = '\0';
    for (p = strtok(buffer, " \t\n"); p != NULL; p = strtok(NULL, " \t\n")) last = p;
    if (last == NULL) return -1;
    figure = strtod(last, NULL);
  }
  return figure;
}

int main(int argc, char **argv) {
  int rounds, self_timed, i;
  double *a, *b, *ratio;
  if (argc != 6) {
    fprintf(stderr, "usage: %s NAME ROUNDS wall|self 'COMMAND A' 'COMMAND B'\n", argv[0]);
    return 2;
  }
  rounds = atoi(argv[2]);
  self_timed = strcmp(argv[3], "self") == 0;
  if (rounds < 1) return 2;
  /* one unmeasured run each: page cache, dynamic loader */
  if (run(argv[4], self_timed) < 0 || run(argv[5], self_timed) < 0) return 1;
  a = calloc((size_t)rounds, sizeof *a);
  b = calloc((size_t)rounds, sizeof *b);
  ratio = calloc((size_t)rounds, sizeof *ratio);
  if (a == NULL || b == NULL || ratio == NULL) return 2;   /* exiting: no free needed */
  for (i = 0; i < rounds; i++) {
    /* alternate which goes first, too */
    if (i % 2 == 0) { a[i] = run(argv[4], self_timed); b[i] = run(argv[5], self_timed); }
    else { b[i] = run(argv[5], self_timed); a[i] = run(argv[4], self_timed); }
    if (a[i] < 0 || b[i] <= 0) return 1;
    ratio[i] = a[i] / b[i];
  }
  qsort(a, (size_t)rounds, sizeof *a, test_compare_doubles);
  qsort(b, (size_t)rounds, sizeof *b, test_compare_doubles);
  qsort(ratio, (size_t)rounds, sizeof *ratio, test_compare_doubles);
  printf("%s: A median %.3g s (p10 %.3g, p90 %.3g), B median %.3g s (p10 %.3g, p90 %.3g), "
         "A/B %.3f (p10 %.3f, p90 %.3f) over %d alternating rounds\n", argv[1],
         percentile(a, rounds, 0.5), percentile(a, rounds, 0.1), percentile(a, rounds, 0.9),
         percentile(b, rounds, 0.5), percentile(b, rounds, 0.1), percentile(b, rounds, 0.9),
         percentile(ratio, rounds, 0.5), percentile(ratio, rounds, 0.1),
         percentile(ratio, rounds, 0.9), rounds);
  printf("RESULT %s %.6g %.6g %.6g %.6g %.6g %.6g %.4f %.4f %.4f\n", argv[1],
         percentile(a, rounds, 0.5), percentile(a, rounds, 0.1), percentile(a, rounds, 0.9),
         percentile(b, rounds, 0.5), percentile(b, rounds, 0.1), percentile(b, rounds, 0.9),
         percentile(ratio, rounds, 0.5), percentile(ratio, rounds, 0.1),
         percentile(ratio, rounds, 0.9));
  free(a);
  free(b);
  free(ratio);
  return 0;
}

/*
** bench_signal_latency — from kill(SIGTERM) to the first cleanup running:
** starts tests/bench/signal_victim.lua in the host (body in Lua code, or
** blocked in io.read on a silent pipe, or in a lock wait), waits for "r", sends SIGTERM, and
** times the arrival of the cleanup's "c" on the pipe. RUNS runs.
**
**   bench_signal_latency HOST VICTIM lua|read|lock RUNS
**
** Prints a human line and "RESULT NAME median p10 p90" (seconds).
*/
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

/* read until the byte 'want' arrives; 0 on success */
static int wait_byte(int fd, char want) {
  char c;
  for (;;) {
    ssize_t n = read(fd, &c, 1);
    if (n == 1 && c == want) return 0;
    if (n == 0 || (n < 0 && errno != EINTR)) return -1;
  }
}

static double one(const char *host, const char *victim, const char *mode) {
  int out[2], in[2], status;
  struct timespec settle = { 0, 10 * 1000 * 1000 };
  double t0, t1;
  pid_t pid;
  if (pipe(out) != 0 || pipe(in) != 0) return -1;
  pid = fork();
  if (pid == 0) {
    int quiet = open("/dev/null", O_WRONLY);
    signal(SIGTERM, SIG_DFL);
    dup2(in[0], 0);
    dup2(out[1], 1);
    if (quiet >= 0) { dup2(quiet, 2); close(quiet); }  /* the host's SignalExit report */
    close(in[0]); close(in[1]); close(out[0]); close(out[1]);
    execl(host, host, victim, mode, (char *)NULL);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  if (wait_byte(out[0], 'r') != 0) return -1;
  nanosleep(&settle, NULL);           /* well into the body */
  t0 = test_now();
  kill(pid, SIGTERM);
  if (wait_byte(out[0], 'c') != 0) return -1;
  t1 = test_now();
  close(out[0]);
  close(in[1]);
  waitpid(pid, &status, 0);
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGTERM) return -1;
  return t1 - t0;
}

int main(int argc, char **argv) {
  int runs, i;
  double *t;
  if (argc != 5) {
    fprintf(stderr, "usage: %s HOST VICTIM lua|read|lock RUNS\n", argv[0]);
    return 2;
  }
  runs = atoi(argv[4]);
  t = calloc((size_t)(runs > 0 ? runs : 1), sizeof *t);
  if (t == NULL || runs < 1) return 2;
  for (i = 0; i < runs; i++) {
    t[i] = one(argv[1], argv[2], argv[3]);
    if (t[i] < 0) {
      fprintf(stderr, "bench_signal_latency: run %d failed\n", i + 1);
      return 1;
    }
  }
  qsort(t, (size_t)runs, sizeof *t, test_compare_doubles);
  printf("signal -> first cleanup (body: %s): median %.3f ms, p10 %.3f ms, p90 %.3f ms over %d runs\n",
         argv[3], t[runs / 2] * 1e3, t[runs / 10] * 1e3, t[runs * 9 / 10] * 1e3, runs);
  printf("RESULT signal_%s %.6g %.6g %.6g\n", argv[3], t[runs / 2], t[runs / 10], t[runs * 9 / 10]);
  free(t);
  return 0;
}

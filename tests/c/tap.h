/*
** tap.h — a tiny TAP producer for the C tests: "ok N - what" / "not ok N -
** what" with the expected and actual values, then "1..N". scripts/test counts
** these lines.
*/
#ifndef TAP_H
#define TAP_H

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t tap_count;   /* read by the deadline's handler */
static int tap_failed;

#define CHECK(cond, what) tap_check((cond), (what), #cond, __FILE__, __LINE__)
#define CHECK_INT(expected, actual, what) \
  tap_check_int((long)(expected), (long)(actual), (what), __FILE__, __LINE__)
#define CHECK_STR(expected, actual, what) \
  tap_check_str((expected), (actual), (what), __FILE__, __LINE__)

static inline int tap_check(int ok, const char *what, const char *expr,
                            const char *file, int line) {
  tap_count++;
  if (ok) printf("ok %d - %s\n", tap_count, what);
  else {
    tap_failed++;
    printf("not ok %d - %s\n#   %s:%d: expected %s\n", tap_count, what, file, line, expr);
  }
  fflush(stdout);
  return ok;
}

static inline int tap_check_int(long expected, long actual, const char *what,
                                const char *file, int line) {
  tap_count++;
  if (expected == actual) printf("ok %d - %s\n", tap_count, what);
  else {
    tap_failed++;
    printf("not ok %d - %s\n#   %s:%d: expected %ld, got %ld\n", tap_count, what,
           file, line, expected, actual);
  }
  fflush(stdout);
  return expected == actual;
}

static inline int tap_check_str(const char *expected, const char *actual, const char *what,
                                const char *file, int line) {
  int ok = actual != NULL && strcmp(expected, actual) == 0;
  tap_count++;
  if (ok) printf("ok %d - %s\n", tap_count, what);
  else {
    tap_failed++;
    printf("not ok %d - %s\n#   %s:%d: expected \"%s\", got %s%s%s\n", tap_count, what,
           file, line, expected, actual != NULL ? "\"" : "", actual != NULL ? actual : "NULL",
           actual != NULL ? "\"" : "");
  }
  fflush(stdout);
  return ok;
}

#ifndef _WIN32
static pid_t tap_pid;
static volatile sig_atomic_t tap_deadline_s;

/*
** The deadline's SIGALRM, in the test's own process: a "not ok" line naming
** the last check that passed (write(2) only: a signal handler), then death
** by SIGALRM, so a hung test is a failure with a message, not a hung suite.
** A forked child that set an alarm of its own just dies by it.
*/
static inline void tap_on_deadline(int sig) {
  char line[128], digits[12];
  size_t len = 0, k;
  long parts[2];
  const char *text[3] = {"not ok - not done within ", " s (SIGALRM): hung after check ", "\n"};
  int i;
  parts[0] = tap_deadline_s;
  parts[1] = tap_count;
  if (getpid() == tap_pid) {
    for (i = 0; i < 3; i++) {
      for (k = 0; text[i][k] != '\0'; k++) line[len++] = text[i][k];
      if (i < 2) {
        long v = parts[i];
        size_t nd = 0;
        do { digits[nd++] = (char)('0' + v % 10); v /= 10; } while (v > 0 && nd < sizeof digits);
        while (nd > 0) line[len++] = digits[--nd];
      }
    }
    if (write(1, line, len) < 0) {}
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

/* A test that waits forever fails after 'seconds' instead of hanging the suite. */
static inline void tap_deadline(unsigned seconds) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = tap_on_deadline;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, NULL);
  tap_pid = getpid();
  tap_deadline_s = (sig_atomic_t)seconds;
  alarm(seconds);
}
#endif

static inline int tap_done(void) {
  printf("1..%d\n", tap_count);
  return tap_failed != 0;
}

#endif

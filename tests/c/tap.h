/*
** tap.h — a tiny TAP producer for the C tests: "ok N - what" / "not ok N -
** what" with the expected and actual values, then "1..N". scripts/test counts
** these lines.
*/
#ifndef TAP_H
#define TAP_H

#include <stdio.h>
#include <string.h>

static int tap_count, tap_failed;

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

static inline int tap_done(void) {
  printf("1..%d\n", tap_count);
  return tap_failed != 0;
}

#endif

/*
** lease_threads — the lease core's two threads under -fsanitize=thread
** (tests/lease_spec.lua builds and runs it against the test cluster): the
** caller asks lg_lease_alive in a loop while the keep-alive thread renews,
** then the member it is pinned to is stopped (by the spec, on our "held"
** line) and the thread reports the loss through the callback, which the
** caller sees. ThreadSanitizer reports any race between them; TAP out.
** With "fork" (a build without TSan, which does not follow a fork of a
** threaded process), a forked child releases and frees its copy of the held
** lease instead, and the parent's lease must live on. With "late" (built
** with -DLEASE_LATE_KEEPER and the linker's --wrap below), the keep-alive
** thread oversleeps: the caller finds the lease dead by its count first,
** and must then see it lost, its callback called, as the thread would have.
**
**   lease_threads ENDPOINT NAME [fork | late]
*/
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lg_etcd.h"
#include "tap.h"

#ifdef LEASE_LATE_KEEPER
/* -Wl,--wrap=pthread_cond_timedwait: once 'oversleep' is set, a wait on any
** thread but the main one (the keep-alive thread's) lasts 2 s past its
** deadline, deaf to signals. */
int __real_pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex,
                                  const struct timespec *abstime);
int __wrap_pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex,
                                  const struct timespec *abstime);
static volatile int oversleep;
static pthread_t main_thread;

int __wrap_pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex,
                                  const struct timespec *abstime) {
  struct timespec until;
  if (!__atomic_load_n(&oversleep, __ATOMIC_SEQ_CST) || pthread_equal(pthread_self(), main_thread))
    return __real_pthread_cond_timedwait(cond, mutex, abstime);
  until = *abstime;
  until.tv_sec += 2;     /* past the count's end: ttl 2 lives 1.6 s after a renewal */
  pthread_mutex_unlock(mutex);
  /* the condition's clock (lg_etcd.c) */
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {}
  pthread_mutex_lock(mutex);
  return ETIMEDOUT;
}
#endif

static volatile int lost_calls;   /* written by the thread, read here: atomics */

static void on_lost(void *ud) {
  (void)ud;
  __atomic_add_fetch(&lost_calls, 1, __ATOMIC_SEQ_CST);
}

static void nap_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
  lg_etcd_config cfg;
  lg_etcd_error err;
  lg_lease_wait w;
  lg_lease *ls;
  int i, alive_seen = 0;
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: lease_threads ENDPOINT NAME [fork]\n");
    return 2;
  }
  memset(&cfg, 0, sizeof cfg);
  memset(&w, 0, sizeof w);
  cfg.endpoints[0] = argv[1];
  cfg.nendpoints = 1;
  w.timeout = 5;
  ls = lg_lease_new(&cfg, argv[2], 2);
  CHECK(ls != NULL, "a lease lock");
  if (ls == NULL) return tap_done();
  CHECK_INT(LG_LEASE_OK, lg_lease_acquire(ls, &w, on_lost, NULL, &err), "acquired");
  for (i = 0; i < 30; i++) {       /* 1.5 s: two renewals or more */
    alive_seen += lg_lease_alive(ls);
    nap_ms(50);
  }
  CHECK_INT(30, alive_seen, "alive through its renewals");
#ifdef LEASE_LATE_KEEPER
  if (argc == 4 && strcmp(argv[3], "late") == 0) {
    main_thread = pthread_self();
    __atomic_store_n(&oversleep, 1, __ATOMIC_SEQ_CST);
    for (i = 0; i < 600 && lg_lease_alive(ls); i++) nap_ms(10);
    CHECK(i < 600, "the lease is dead by the holder's count while its thread oversleeps");
    CHECK(lg_lease_lost(ls), "and lost at once: alive() told no one else");
    CHECK_INT(1, __atomic_load_n(&lost_calls, __ATOMIC_SEQ_CST), "the callback ran (called from the caller's check)");
    /* the thread wakes about 1.1 s later (2 s past its renewal's time) and
    ** finds the lease gone: the loss was reported already, no second call */
    nap_ms(1500);
    CHECK_INT(1, __atomic_load_n(&lost_calls, __ATOMIC_SEQ_CST), "the thread, awake again, calls it no more");
    CHECK_INT(0, lg_lease_release(ls, &err), "a lost lease releases without a request");
    CHECK_INT(1, __atomic_load_n(&lost_calls, __ATOMIC_SEQ_CST), "nor after the release");
    lg_lease_free(ls);
    return tap_done();
  }
#endif
  if (argc == 4 && strcmp(argv[3], "fork") == 0) {   /* built without TSan: see the top */
    pid_t child = fork();
    int status = -1;
    if (child == 0) {
      lg_lease_release(ls, NULL);
      lg_lease_free(ls);
      _exit(0);
    }
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a forked child released and freed its copy");
    nap_ms(1000);                  /* a renewal or more since */
    CHECK(lg_lease_alive(ls) && !lg_lease_lost(ls), "the parent's lease lives on (not revoked)");
    CHECK_INT(0, lg_lease_release(ls, &err), "then the parent releases it");
    lg_lease_free(ls);
    return tap_done();
  }
  printf("# held\n");
  fflush(stdout);
  for (i = 0; i < 200 && !lg_lease_lost(ls); i++) {   /* the spec stops the member */
    (void)lg_lease_alive(ls);
    nap_ms(25);
  }
  CHECK(lg_lease_lost(ls), "the loss is seen once the member is silent");
  /* the thread marks the lease lost, then calls the callback: wait for it
  ** (1 s at most), then make sure no second call comes */
  for (i = 0; i < 100 && __atomic_load_n(&lost_calls, __ATOMIC_SEQ_CST) == 0; i++) nap_ms(10);
  nap_ms(100);
  CHECK_INT(1, __atomic_load_n(&lost_calls, __ATOMIC_SEQ_CST), "the callback ran once");
  CHECK_INT(0, lg_lease_release(ls, &err), "a lost lease releases without a request");
  lg_lease_free(ls);
  return tap_done();
}

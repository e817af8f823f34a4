/*
** test_signal_core — the signal-deferral core in C alone (no Lua): arming and
** restoring dispositions, recording, deferral during cleanup, hand-off between
** frames, re-delivery in arrival order to the previous handler, the kick that
** cuts a body's blocking call short under SA_RESTART (and the fallback that
** switches SA_RESTART for cleanups), and a forked child that never acts for
** its parent.
*/
#define _GNU_SOURCE   /* gettid, for the slowed timer below */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lg_signal.h"
#include "tap.h"
#include "testutil.h"

static volatile sig_atomic_t seen[16];
static volatile sig_atomic_t nseen;
static volatile sig_atomic_t interrupts;

static void recording_handler(int sig) {
  if (nseen < 16) seen[nseen] = sig;
  nseen++;
}

static void count_interrupt(lg_frame *f) {
  (void)f;
  interrupts++;
}

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static void set_disposition(int sig, void (*handler)(int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sigaction(sig, &sa, NULL);
}

/* The process's POSIX timers, as the kernel lists them (-1: cannot tell). */
static int posix_timers(void) {
  char line[256];
  int n = 0;
  FILE *f = fopen("/proc/self/timers", "r");
  if (f == NULL) return -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "ID:", 3) == 0) n++;
  fclose(f);
  return n;
}

static void (*disposition(int sig))(int) {
  struct sigaction sa;
  sigaction(sig, NULL, &sa);
  return sa.sa_handler;
}

static void test_arm_and_restore(void) {
  lg_frame f;
  set_disposition(SIGTERM, recording_handler);
  set_disposition(SIGHUP, SIG_IGN);
  set_disposition(SIGINT, SIG_DFL);
  CHECK_INT(0, lg_frame_arm(&f, count_interrupt, NULL), "arm succeeds");
  CHECK(disposition(SIGTERM) != recording_handler && disposition(SIGTERM) != SIG_DFL,
        "arm replaces a foreign handler");
  CHECK(disposition(SIGINT) != SIG_DFL, "arm replaces SIG_DFL");
  CHECK(disposition(SIGHUP) == SIG_IGN, "arm leaves an ignored signal ignored (nohup)");
  CHECK(lg_frame_top() == &f, "the frame is the innermost");
  lg_frame_close(&f);
  CHECK(disposition(SIGTERM) == recording_handler, "close restores the foreign handler");
  CHECK(disposition(SIGINT) == SIG_DFL, "close restores SIG_DFL");
  CHECK(disposition(SIGHUP) == SIG_IGN, "close leaves SIG_IGN");
  CHECK(lg_frame_top() == NULL, "no frame after close");
  set_disposition(SIGHUP, SIG_DFL);
}

static void test_record_and_interrupt(void) {
  lg_frame f;
  int list[LG_RECORD_LIST_MAX];
  interrupts = 0;
  nseen = 0;
  set_disposition(SIGTERM, recording_handler);
  set_disposition(SIGHUP, recording_handler);
  set_disposition(SIGXFSZ, recording_handler);
  lg_frame_arm(&f, count_interrupt, NULL);
  kill(getpid(), SIGTERM);
  kill(getpid(), SIGHUP);
  CHECK_INT(2, interrupts, "each signal in the body interrupts");
  CHECK_INT(2, lg_record_list(&f.record, list), "both recorded");
  CHECK(list[0] == SIGTERM && list[1] == SIGHUP, "in arrival order");
  CHECK_INT(0, nseen, "the previous handler has not run yet");
  lg_frame_begin_cleanup(&f);
  kill(getpid(), SIGXFSZ);
  CHECK_INT(2, interrupts, "during cleanup a signal is only recorded");
  lg_frame_close(&f);
  CHECK_INT(3, nseen, "outermost close re-delivers every recorded signal");
  CHECK(seen[0] == SIGTERM && seen[1] == SIGHUP && seen[2] == SIGXFSZ,
        "re-delivered in arrival order (certbot: [sig2, sig1])");
}

/* certbot's test_bad_recovery_with_signal, in C: the body gets sig2, a cleanup
** sends sig1; the previous handler sees [sig2, sig1]. */
static void test_arrival_order_not_signal_order(void) {
  lg_frame f;
  nseen = 0;
  set_disposition(SIGTERM, recording_handler);
  set_disposition(SIGXFSZ, recording_handler);
  lg_frame_arm(&f, count_interrupt, NULL);
  kill(getpid(), SIGXFSZ);          /* in the body */
  lg_frame_begin_cleanup(&f);
  kill(getpid(), SIGTERM);          /* from a cleanup: deferred */
  CHECK_INT(0, nseen, "deferred while cleanups run");
  lg_frame_close(&f);
  CHECK_INT(2, nseen, "both delivered after the cleanups");
  CHECK(seen[0] == SIGXFSZ && seen[1] == SIGTERM, "XFSZ (25) before TERM (15): arrival order");
}

static void test_nesting_and_hand_off(void) {
  lg_frame outer, inner;
  int list[LG_RECORD_LIST_MAX];
  interrupts = 0;
  nseen = 0;
  set_disposition(SIGTERM, recording_handler);
  lg_frame_arm(&outer, count_interrupt, NULL);
  lg_frame_arm(&inner, count_interrupt, NULL);
  CHECK(lg_frame_older(&inner) == &outer, "inner sits on outer");
  kill(getpid(), SIGTERM);
  CHECK_INT(1, lg_record_list(&inner.record, list), "the innermost frame records");
  CHECK_INT(0, outer.record.length, "the outer one does not, yet");
  lg_frame_begin_cleanup(&inner);
  lg_frame_close(&inner);
  CHECK_INT(1, lg_record_list(&outer.record, list), "closing hands the record to the outer frame");
  CHECK_INT(SIGTERM, list[0], "with the signal");
  CHECK_INT(2, interrupts, "and interrupts the outer frame's body");
  CHECK_INT(0, nseen, "nothing re-delivered while a frame is armed");
  CHECK(disposition(SIGTERM) != recording_handler, "still ours while outer is armed");
  lg_frame_close(&outer);
  CHECK_INT(1, nseen, "outermost close re-delivers once");
  CHECK(disposition(SIGTERM) == recording_handler, "and restored the original");
}

/* A read on a pipe whose data comes 'late_ms' after the child's signal (sent
** after 100 ms): EINTR (as -EINTR) if the read was cut short, else 1. */
static int read_with_signal_from_child_after(int sig, long late_ms) {
  int fds[2], rc;
  char c;
  pid_t child;
  if (pipe(fds) != 0) return -2;
  child = test_fork_limited(10);
  if (child == 0) {
    sleep_ms(100);
    if (sig != 0) kill(getppid(), sig);
    sleep_ms(late_ms);
    if (write(fds[1], "x", 1) != 1) _exit(1);
    _exit(0);
  }
  rc = (int)read(fds[0], &c, 1);
  if (rc < 0) rc = -errno;
  waitpid(child, NULL, 0);
  close(fds[0]);
  close(fds[1]);
  return rc;
}

static int read_with_signal_from_child(int sig) {
  return read_with_signal_from_child_after(sig, 100);
}

static int has_restart_flag(int sig) {
  struct sigaction sa;
  sigaction(sig, NULL, &sa);
  return (sa.sa_flags & SA_RESTART) != 0;
}

/*
** Our handler has SA_RESTART (a cleanup's read must never be cut short), and
** the kick cuts a body's read short all the same.
*/
static void test_kick_cuts_body_reads_short(void) {
  lg_frame f;
  set_disposition(SIGTERM, recording_handler);
  lg_frame_arm(&f, count_interrupt, NULL);
  CHECK(lg_signal_kick_signal() >= SIGRTMIN && lg_signal_kick_signal() <= SIGRTMAX,
        "a real-time signal kicks");
  CHECK(has_restart_flag(SIGTERM), "the handler is installed with SA_RESTART");
  interrupts = 0;
  CHECK_INT(-EINTR, read_with_signal_from_child_after(SIGTERM, 2000),
            "a body's read still returns early: the kick");
  CHECK_INT(1, interrupts, "the signal interrupted the body");
  /* a signal that landed before the call blocked (the hook's blind spot) */
  lg_signal_kick_stop();
  kill(getpid(), SIGTERM);
  CHECK_INT(-EINTR, read_with_signal_from_child_after(0, 2000),
            "a read entered after the signal is cut short too");
  lg_signal_kick_stop();
  CHECK_INT(1, read_with_signal_from_child_after(0, 100),
            "once the body has stopped, no more kicks");
  lg_frame_begin_cleanup(&f);
  CHECK_INT(1, read_with_signal_from_child(SIGTERM), "a cleanup's read is not cut short");
  CHECK_INT(2, interrupts, "a deferred signal is only recorded (two from the body before)");
  nseen = 0;
  lg_frame_close(&f);
  CHECK_INT(3, nseen, "all three signals re-delivered after");
  CHECK(!has_restart_flag(SIGTERM) && disposition(SIGTERM) == recording_handler,
        "the previous disposition is back");
}

/* Until the body stops, the kick repeats, backing off (0.2 ms doubling to
** 64 ms): over 600 ms about 16 kicks, each one EINTR; not one, not thousands. */
static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void test_kick_repeats_and_backs_off(void) {
  lg_frame f;
  double last, longest = 0;
  int fds[2], kicks = 0;
  char c;
  pid_t child;
  set_disposition(SIGTERM, recording_handler);
  lg_frame_arm(&f, count_interrupt, NULL);
  if (pipe(fds) != 0) return;
  child = test_fork_limited(10);
  if (child == 0) {
    sleep_ms(600);
    if (write(fds[1], "x", 1) != 1) _exit(1);
    _exit(0);
  }
  kill(getpid(), SIGTERM);
  last = now_ms();
  while (read(fds[0], &c, 1) < 0 && errno == EINTR) {
    double t = now_ms();
    if (t - last > longest) longest = t - last;
    last = t;
    kicks++;
  }
  lg_signal_kick_stop();
  waitpid(child, NULL, 0);
  close(fds[0]);
  close(fds[1]);
  CHECK(kicks >= 5, "the kick repeats while the body has not stopped");
  CHECK(kicks <= 60, "backing off");
  /* 64 ms at most between kicks (without the cap: 205 ms, then 410 ms); the
  ** bound leaves 96 ms for a busy machine's scheduling (120 ms was exceeded
  ** once, with the suite running beside other load) */
  CHECK_INT(1, longest < 160.0, "the back-off is capped: no gap of 160 ms or more");
  printf("#   longest gap between kicks: %.1f ms\n", longest);   /* how close to the bound */
  nseen = 0;
  lg_frame_close(&f);
  CHECK_INT(1, nseen, "the signal re-delivered after");
}

/*
** The kick goes to the thread whose body it must cut short. Another thread
** takes the signal (this one blocks it), so only the kick can end the read:
** (a) the frames were armed, and all closed, by the main thread first, then
** by this one; (b) this thread arms while the main thread's frame is armed.
*/
typedef struct kick_thread {
  int keep_main_armed;
  int rc;
  double took_ms;
} kick_thread;

static double now_ms(void);

static void *read_in_thread(void *arg) {
  kick_thread *t = (kick_thread *)arg;
  lg_frame f;
  sigset_t term;
  double t0;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, NULL);   /* the signal lands on the main thread */
  lg_frame_arm(&f, count_interrupt, NULL);
  t0 = now_ms();
  t->rc = read_with_signal_from_child_after(SIGTERM, 2000);
  t->took_ms = now_ms() - t0;
  lg_signal_kick_stop();
  lg_frame_begin_cleanup(&f);
  lg_frame_close(&f);
  return NULL;
}

static void test_kick_reaches_the_arming_thread(void) {
  int i;
  set_disposition(SIGTERM, recording_handler);
  for (i = 0; i < 2; i++) {
    lg_frame f;
    pthread_t th;
    kick_thread t;
    memset(&t, 0, sizeof t);
    t.keep_main_armed = i;
    lg_frame_arm(&f, count_interrupt, NULL);         /* the main thread installs */
    if (!t.keep_main_armed) lg_frame_close(&f);
    nseen = 0;
    if (pthread_create(&th, NULL, read_in_thread, &t) != 0) return;
    pthread_join(th, NULL);
    CHECK_INT(-EINTR, t.rc, i == 0 ? "another thread, arming after the main thread closed: its read is kicked"
                                   : "another thread, arming while the main thread is armed: its read is kicked");
    if (t.rc != -EINTR) printf("#   the read took %.0f ms\n", t.took_ms);
    if (t.keep_main_armed) {
      lg_frame_begin_cleanup(&f);
      lg_frame_close(&f);
    }
    CHECK_INT(1, nseen, "the signal re-delivered after");
  }
}

/* The kick's own signal: one a program handles is left alone, and the one
** taken is given back at the outermost close. */
static void test_kick_signal_is_borrowed(void) {
  lg_frame f;
  int sig, top;
  /* the highest one we may set (valgrind keeps the very top for itself) */
  lg_frame_arm(&f, count_interrupt, NULL);
  top = lg_signal_kick_signal();
  lg_frame_close(&f);
  set_disposition(top, recording_handler);
  lg_frame_arm(&f, count_interrupt, NULL);
  sig = lg_signal_kick_signal();
  CHECK(sig != 0 && sig < top, "a real-time signal in use is not taken");
  CHECK(disposition(top) == recording_handler, "and keeps its handler");
  lg_frame_close(&f);
  CHECK(disposition(sig) == SIG_DFL, "the kick's signal is SIG_DFL again");
  CHECK_INT(0, lg_signal_kick_signal(), "no kick with no frame");
  set_disposition(top, SIG_DFL);
}

/*
** A thread that blocks every signal arms a frame (the main thread's is older)
** and is stopped: no kick is passed on to it, or it would wait there and meet
** SIG_DFL once the thread unblocks after the last close. In a child process.
*/
typedef struct blocking_thread {
  int armed[2], close_now[2], unblock_now[2];
} blocking_thread;

static void *arm_blocking_all(void *arg) {
  blocking_thread *t = (blocking_thread *)arg;
  sigset_t all;
  lg_frame f;
  char c = 'a';
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  lg_frame_arm(&f, count_interrupt, NULL);
  if (write(t->armed[1], &c, 1) != 1 || read(t->close_now[0], &c, 1) != 1) return NULL;
  lg_frame_begin_cleanup(&f);
  lg_frame_close(&f);
  if (read(t->unblock_now[0], &c, 1) != 1) return NULL;
  pthread_sigmask(SIG_UNBLOCK, &all, NULL);   /* a kick left pending here would end the process */
  return NULL;
}

/* body() in a forked child (10 s at most, SIGTERM recorded): it must exit 0. */
static void check_in_child(void (*body)(void), const char *what) {
  pid_t child;
  int status = -1;
  set_disposition(SIGTERM, recording_handler);
  child = test_fork_limited(10);
  if (child == 0) {
    body();
    _exit(0);
  }
  waitpid(child, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, what);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    printf("#   the child: %s %d\n", WIFSIGNALED(status) ? "killed by signal" : "exit status",
           WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

static void no_kick_left_on_a_blocking_thread(void) {
  blocking_thread t;
  pthread_t th;
  lg_frame f;
  char c = 'c';
  if (pipe(t.armed) != 0 || pipe(t.close_now) != 0 || pipe(t.unblock_now) != 0) _exit(2);
  lg_frame_arm(&f, count_interrupt, NULL);
  if (pthread_create(&th, NULL, arm_blocking_all, &t) != 0) _exit(2);
  if (read(t.armed[0], &c, 1) != 1) _exit(2);
  interrupts = 0;
  kill(getpid(), SIGTERM);            /* lands here; stops the thread's frame */
  sleep_ms(50);                       /* kicks meanwhile */
  lg_signal_kick_stop();
  if (interrupts != 1) _exit(3);
  if (write(t.close_now[1], &c, 1) != 1) _exit(2);
  sleep_ms(20);
  lg_frame_begin_cleanup(&f);
  lg_frame_close(&f);                 /* the last: the kick's signal given back */
  if (write(t.unblock_now[1], &c, 1) != 1) _exit(2);
  pthread_join(th, NULL);
  sleep_ms(20);
}

static void test_no_kick_left_on_a_blocking_thread(void) {
  check_in_child(no_kick_left_on_a_blocking_thread,
                 "a stopped thread that blocks every signal: no kick left pending there");
}

/*
** A kick left pending on the timer's thread, which blocks the kick's signal,
** when the last frame closes on another thread: that close cannot take it,
** so the signal keeps our empty handler (SIG_DFL would end the process once
** the thread unblocks), and the next arm takes that same signal again, as
** still ours; its close gives it back. In a child; exit status 3-8 says
** which step failed (see each).
*/
typedef struct kick_blocker {
  int armed[2], close_now[2], exit_now[2];
  volatile sig_atomic_t sig, tid;
} kick_blocker;

static void *arm_then_block_the_kick(void *arg) {
  kick_blocker *t = (kick_blocker *)arg;
  sigset_t kick;
  lg_frame f;
  char c = 'a';
  t->tid = (sig_atomic_t)syscall(SYS_gettid);
  lg_frame_arm(&f, count_interrupt, NULL);       /* installs: the timer signals this thread */
  t->sig = (sig_atomic_t)lg_signal_kick_signal();
  sigemptyset(&kick);
  if (t->sig != 0) sigaddset(&kick, t->sig);
  pthread_sigmask(SIG_BLOCK, &kick, NULL);
  if (write(t->armed[1], &c, 1) != 1 || read(t->close_now[0], &c, 1) != 1) return NULL;
  lg_frame_close(&f);                            /* not the last */
  if (write(t->armed[1], &c, 1) != 1) return NULL;
  if (read(t->exit_now[0], &c, 1) != 1) return NULL;
  return NULL;              /* a kick still pending here goes with the thread */
}

static int thread_has_pending(pid_t tid, int sig) {
  char path[64], line[256];
  int found = 0;
  FILE *f;
  snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)tid);
  if ((f = fopen(path, "r")) == NULL) return 0;
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "SigPnd:", 7) == 0)
      found = (int)((strtoull(line + 7, NULL, 16) >> (sig - 1)) & 1);
  fclose(f);
  return found;
}

static void kick_kept_for_the_next_arm(void) {
  kick_blocker t;
  pthread_t th;
  lg_frame f;
  char c = 'c';
  int sig;
  memset(&t, 0, sizeof t);
  if (pipe(t.armed) != 0 || pipe(t.close_now) != 0 || pipe(t.exit_now) != 0) _exit(2);
  if (pthread_create(&th, NULL, arm_then_block_the_kick, &t) != 0) _exit(2);
  if (read(t.armed[0], &c, 1) != 1) _exit(2);
  if ((sig = t.sig) == 0) _exit(3);                   /* 3: no kick at all */
  lg_frame_arm(&f, count_interrupt, NULL);
  interrupts = 0;
  kill(getpid(), SIGTERM);            /* stops this frame; the kick goes to the timer's thread */
  sleep_ms(50);
  if (interrupts != 1) _exit(4);                      /* 4: the frame was not stopped */
  if (!thread_has_pending((pid_t)t.tid, sig)) _exit(5);   /* 5: no kick pending there: nothing tested */
  if (write(t.close_now[1], &c, 1) != 1 || read(t.armed[0], &c, 1) != 1) _exit(2);
  lg_frame_begin_cleanup(&f);
  lg_frame_close(&f);                 /* the last, with the kick pending on the other thread */
  if (disposition(sig) == SIG_DFL) _exit(6);          /* 6: given back with a kick pending */
  lg_frame_arm(&f, count_interrupt, NULL);
  if (lg_signal_kick_signal() != sig) _exit(7);       /* 7: the kept signal not taken again */
  lg_frame_close(&f);
  if (disposition(sig) != SIG_DFL) _exit(8);          /* 8: not given back at the close after */
  if (write(t.exit_now[1], &c, 1) != 1) _exit(2);
  pthread_join(th, NULL);
}

static void test_kick_kept_for_the_next_arm(void) {
  check_in_child(kick_kept_for_the_next_arm,
                 "a kick pending on the timer's thread (it blocks it) at the last close elsewhere: "
                 "its signal stays ours, the next arm takes it again, its close gives it back");
}

/*
** The thread that installed (its timer's) armed, was kicked, closed and is
** gone; the last frame closes on the main thread: the kick's signal is given
** back all the same (nothing can be pending on a thread that is gone).
*/
typedef struct installer_thread {
  int armed[2], close_now[2];
  lg_frame f;
} installer_thread;

static void *install_and_go(void *arg) {
  installer_thread *t = (installer_thread *)arg;
  char c = 'a';
  ssize_t rc;
  lg_frame_arm(&t->f, count_interrupt, NULL);
  if (write(t->armed[1], &c, 1) != 1) return NULL;
  /* the timer signals this thread: it gets the kicks it passes on (EINTR) */
  while ((rc = read(t->close_now[0], &c, 1)) < 0 && errno == EINTR) {}
  if (rc != 1) return NULL;
  lg_frame_begin_cleanup(&t->f);
  lg_frame_close(&t->f);
  return NULL;
}

static void test_kick_given_back_when_its_thread_is_gone(void) {
  installer_thread t;
  pthread_t th;
  lg_frame f, f2;
  int sig;
  char c = 'c';
  set_disposition(SIGTERM, recording_handler);
  if (pipe(t.armed) != 0 || pipe(t.close_now) != 0) return;
  if (pthread_create(&th, NULL, install_and_go, &t) != 0) return;
  if (read(t.armed[0], &c, 1) != 1) return;
  lg_frame_arm(&f, count_interrupt, NULL);
  sig = lg_signal_kick_signal();
  interrupts = 0;
  kill(getpid(), SIGTERM);                 /* stops this thread's frame: the kick runs */
  sleep_ms(20);
  lg_signal_kick_stop();
  CHECK(sig != 0 && interrupts == 1, "kick's thread gone: the signal stopped the main thread's frame");
  if (write(t.close_now[1], &c, 1) != 1) return;
  pthread_join(th, NULL);
  /* an arm now makes the kick's timer again, for this thread: the old one goes */
  lg_frame_arm(&f2, count_interrupt, NULL);
  CHECK_INT(1, posix_timers(), "kick's thread gone: an arm makes its timer again, and deletes the old one");
  lg_frame_begin_cleanup(&f2);
  lg_frame_close(&f2);
  nseen = 0;
  lg_frame_begin_cleanup(&f);
  lg_frame_close(&f);
  CHECK_INT(1, nseen, "kick's thread gone: the signal re-delivered at the last close");
  CHECK(disposition(sig) == SIG_DFL, "kick's thread gone: the kick's signal is SIG_DFL again");
  CHECK_INT(1, posix_timers(), "kick's thread gone: after the last close one timer only, kept for the next arm");
  close(t.armed[0]);
  close(t.armed[1]);
  close(t.close_now[0]);
  close(t.close_now[1]);
}

/*
** The core's timer_settime, through the linker (-Wl,--wrap=timer_settime in
** premake5.lua): while slow_arm_tid is set, an arm on that thread (the kick's
** handler re-arming its timer) takes 30 ms, long enough for another thread
** to close the last frame meanwhile. slow_arm_inside says it is under way.
*/
int __real_timer_settime(timer_t timer, int flags, const struct itimerspec *value,
                         struct itimerspec *old);
int __wrap_timer_settime(timer_t timer, int flags, const struct itimerspec *value,
                         struct itimerspec *old);
static volatile sig_atomic_t slow_arm_tid;
static volatile sig_atomic_t slow_arm_inside;

int __wrap_timer_settime(timer_t timer, int flags, const struct itimerspec *value,
                         struct itimerspec *old) {
  int rc;
  if (slow_arm_tid != 0 && (value->it_value.tv_sec != 0 || value->it_value.tv_nsec != 0) &&
      (pid_t)syscall(SYS_gettid) == slow_arm_tid) {
    struct timespec ts = {0, 30000000L};
    slow_arm_inside = 1;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
  }
  rc = __real_timer_settime(timer, flags, value, old);
  slow_arm_inside = 0;
  return rc;
}

/*
** The last frame closes on one thread while the kick's handler runs on the
** timer's (the installer's), about to arm the timer again: the close waits
** for it, then disarms. Closing under it would give the kick's signal back
** to SIG_DFL with the timer about to fire: the process would die by it.
*/
typedef struct kicked_installer {
  int armed[2], close_now[2], exit_now[2];
  volatile sig_atomic_t tid;
} kicked_installer;

static void *install_then_take_kicks(void *arg) {
  kicked_installer *t = (kicked_installer *)arg;
  lg_frame f;
  char c = 'a';
  ssize_t rc;
  t->tid = (sig_atomic_t)syscall(SYS_gettid);
  lg_frame_arm(&f, count_interrupt, NULL);       /* installs: the timer signals this thread */
  if (write(t->armed[1], &c, 1) != 1) return NULL;
  while ((rc = read(t->close_now[0], &c, 1)) < 0 && errno == EINTR) {}
  if (rc != 1) return NULL;
  lg_frame_close(&f);                             /* not the last: the timer stays this thread's */
  if (write(t->armed[1], &c, 1) != 1) return NULL;
  while ((rc = read(t->exit_now[0], &c, 1)) < 0 && errno == EINTR) {}
  return NULL;
}

static void last_close_waits_for_a_running_kick(void) {
  kicked_installer t;
  pthread_t th;
  lg_frame f;
  char c = 'c';
  int waited;
  memset(&t, 0, sizeof t);
  if (pipe(t.armed) != 0 || pipe(t.close_now) != 0 || pipe(t.exit_now) != 0) _exit(2);
  if (pthread_create(&th, NULL, install_then_take_kicks, &t) != 0) _exit(2);
  if (read(t.armed[0], &c, 1) != 1) _exit(2);
  lg_frame_arm(&f, count_interrupt, NULL);
  if (lg_signal_kick_signal() == 0) _exit(3);
  if (write(t.close_now[1], &c, 1) != 1 || read(t.armed[0], &c, 1) != 1) _exit(2);
  slow_arm_tid = t.tid;
  kill(getpid(), SIGTERM);            /* stops this frame: kicks from the installer's timer */
  for (waited = 0; !slow_arm_inside && waited < 2000; waited++) sleep_ms(1);
  if (!slow_arm_inside) _exit(4);     /* no kick is re-arming: nothing tested */
  lg_frame_begin_cleanup(&f);
  lg_frame_close(&f);                 /* the last, while the kick's handler runs */
  slow_arm_tid = 0;
  sleep_ms(150);                      /* past any timer left armed (64 ms at most) */
  if (write(t.exit_now[1], &c, 1) != 1) _exit(2);
  pthread_join(th, NULL);
}

static void test_last_close_waits_for_a_running_kick(void) {
  check_in_child(last_close_waits_for_a_running_kick,
                 "the last close while the kick's handler re-arms on another thread: it waits, nothing fires after");
}

/* Without a timer: no SA_RESTART in the body, switched on for cleanups; a
** signal that was ignored (nohup) is left alone by the switch, and after. */
static void test_fallback_flips_restart_for_cleanups(void) {
  lg_frame f;
  set_disposition(SIGTERM, recording_handler);
  set_disposition(SIGHUP, SIG_IGN);
  lg_signal_use_kick(0);
  lg_frame_arm(&f, count_interrupt, NULL);
  CHECK_INT(0, lg_signal_kick_signal(), "fallback: no kick");
  CHECK(!has_restart_flag(SIGTERM), "fallback: no SA_RESTART while the body runs");
  CHECK_INT(-EINTR, read_with_signal_from_child(SIGTERM), "fallback: a body's read returns early");
  interrupts = 0;
  lg_frame_begin_cleanup(&f);
  CHECK(has_restart_flag(SIGTERM), "fallback: SA_RESTART while cleanups run");
  CHECK_INT(1, read_with_signal_from_child(SIGTERM), "fallback: a cleanup's read is not cut short");
  CHECK_INT(0, interrupts, "fallback: and the signal is only recorded");
  CHECK(disposition(SIGHUP) == SIG_IGN, "fallback: an ignored signal stays ignored while cleanups run");
  nseen = 0;
  lg_frame_close(&f);
  CHECK_INT(2, nseen, "both signals re-delivered after");
  CHECK(!has_restart_flag(SIGTERM), "fallback: the previous disposition, without SA_RESTART");
  CHECK(disposition(SIGHUP) == SIG_IGN, "fallback: and ignored after");
  lg_frame_arm(&f, count_interrupt, NULL);       /* a second install finds it ignored too */
  lg_frame_begin_cleanup(&f);
  CHECK(disposition(SIGHUP) == SIG_IGN, "fallback, again: still ignored while cleanups run");
  lg_frame_close(&f);
  set_disposition(SIGHUP, SIG_DFL);
  lg_signal_use_kick(1);
}

/* The fallback with two frames: when the inner one's cleanups end, the outer
** body runs again, without SA_RESTART (its blocking reads must return early). */
static void test_fallback_restart_off_for_the_outer_body(void) {
  lg_frame outer, inner;
  set_disposition(SIGTERM, recording_handler);
  lg_signal_use_kick(0);
  lg_frame_arm(&outer, count_interrupt, NULL);
  lg_frame_arm(&inner, count_interrupt, NULL);
  lg_frame_begin_cleanup(&inner);
  CHECK(has_restart_flag(SIGTERM), "fallback, nested: SA_RESTART while the inner cleanups run");
  lg_frame_close(&inner);
  CHECK(!has_restart_flag(SIGTERM), "fallback, nested: off again for the outer body");
  nseen = 0;
  lg_frame_close(&outer);
  lg_signal_use_kick(1);
}

/* A forked child (no exec), the parent's frames still in the list it
** inherited: none of them is its own, and the close of its own last frame is
** the last (its signal re-delivered: it dies by it). */
static void test_forked_child_own_frames(void) {
  lg_frame f;
  int status = -1;
  pid_t child;
  set_disposition(SIGHUP, SIG_DFL);
  lg_frame_arm(&f, count_interrupt, NULL);
  child = test_fork_limited(10);
  if (child == 0) {
    lg_frame mine;
    if (lg_frame_top() != NULL) _exit(3);      /* the parent's frame is not ours */
    if (lg_frame_arm(&mine, count_interrupt, NULL) != 0) _exit(2);
    if (lg_frame_top() != &mine || lg_frame_older(&mine) != NULL) _exit(4);
    kill(getpid(), SIGHUP);                    /* recorded by our frame */
    lg_frame_close(&mine);                     /* our last: dies here */
    _exit(5);
  }
  waitpid(child, &status, 0);
  CHECK_INT(SIGHUP, WIFSIGNALED(status) ? WTERMSIG(status) : 100 + WEXITSTATUS(status),
            "a forked child: its own frames only, its last close re-delivers (dies by SIGHUP)");
  lg_frame_close(&f);
}

static void test_forked_child(void) {
  lg_frame f;
  int status = 0;
  pid_t child;
  set_disposition(SIGINT, SIG_DFL);
  lg_frame_arm(&f, count_interrupt, NULL);
  child = test_fork_limited(10);
  if (child == 0) {
    /* inherited our handler and frame: a signal here must not be recorded
    ** for the parent's frame, but meet the original disposition */
    kill(getpid(), SIGINT);
    _exit(3);
  }
  waitpid(child, &status, 0);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT,
        "a forked child dies by the signal, not deferred for the parent");
  CHECK_INT(0, f.record.length, "the parent's frame recorded nothing");
  lg_frame_close(&f);
}

/* A forked child (no exec) that arms a frame of its own gets a kick of its
** own: timers are not inherited, and with the parent's a body's blocking read
** in the child would not return at the signal (SA_RESTART). */
static void test_forked_child_kick(void) {
  lg_frame f;
  int status = -1, waited_ms;
  pid_t child;
  set_disposition(SIGTERM, recording_handler);
  lg_frame_arm(&f, count_interrupt, NULL);     /* the parent's, with its timer */
  child = test_fork_limited(10);
  if (child == 0) {
    lg_frame mine;
    int fds[2];
    ssize_t rc;
    char c;
    if (pipe(fds) != 0 || lg_frame_arm(&mine, count_interrupt, NULL) != 0) _exit(2);
    if (lg_signal_kick_signal() == 0) _exit(3);   /* no timer of its own: the fallback */
    rc = read(fds[0], &c, 1);                  /* nobody writes: only the kick ends it */
    _exit(rc < 0 && errno == EINTR ? 0 : 1);
  }
  sleep_ms(100);
  kill(child, SIGTERM);
  for (waited_ms = 0; waited_ms < 3000 && waitpid(child, &status, WNOHANG) == 0; waited_ms += 10)
    sleep_ms(10);
  if (waited_ms >= 3000) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
  }
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "a forked child's own frame: its body's read returns EINTR at the signal (its own kick)");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) printf("#   the child: status %d\n", status);
  lg_frame_close(&f);
}

/* A signal that lands while normal code holds the list's lock waits in the
** pending ring; giving the lock back routes it (the body is stopped then). */
static void test_signal_while_the_list_is_locked(void) {
  lg_frame f;
  int list[LG_RECORD_LIST_MAX];
  interrupts = 0;
  nseen = 0;
  set_disposition(SIGHUP, recording_handler);
  lg_frame_arm(&f, count_interrupt, NULL);
  lg_frames_lock();
  kill(getpid(), SIGHUP);           /* delivered now: the handler finds the list busy */
  CHECK_INT(0, interrupts, "while the list is locked the signal only waits");
  lg_frames_unlock();
  CHECK_INT(1, interrupts, "giving the lock back routes it: the body is asked to stop");
  CHECK(f.state == LG_FRAME_STOPPING, "the frame is stopping");
  CHECK(lg_record_list(&f.record, list) == 1 && list[0] == SIGHUP, "and recorded it");
  lg_frame_close(&f);
  CHECK(nseen == 1 && seen[0] == SIGHUP, "the close re-delivers it");
  /* one recorded before the lock, one while it is held: the ring keeps its
  ** place in the arrival order (after the first, not before) */
  set_disposition(SIGTERM, recording_handler);
  nseen = 0;
  lg_frame_arm(&f, count_interrupt, NULL);
  kill(getpid(), SIGTERM);
  lg_frames_lock();
  kill(getpid(), SIGHUP);
  lg_frames_unlock();
  CHECK(lg_record_list(&f.record, list) == 2 && list[0] == SIGTERM && list[1] == SIGHUP,
        "a signal that waited in the ring is recorded after one that came before it");
  lg_frame_begin_cleanup(&f);
  lg_frame_close(&f);
  CHECK(nseen == 2 && seen[0] == SIGTERM && seen[1] == SIGHUP, "and re-delivered after it");
  set_disposition(SIGHUP, SIG_DFL);
}

static void test_record_overflow(void) {
  lg_frame f;
  int list[LG_RECORD_LIST_MAX], i, n;
  set_disposition(SIGTERM, recording_handler);
  set_disposition(SIGHUP, recording_handler);
  lg_frame_arm(&f, count_interrupt, NULL);
  lg_frame_begin_cleanup(&f);
  for (i = 0; i < 70; i++) kill(getpid(), SIGTERM);
  kill(getpid(), SIGHUP);
  n = lg_record_list(&f.record, list);
  CHECK_INT(71, f.record.length, "every arrival counted");
  CHECK_INT(LG_RECORD_ORDER_MAX + 2, n, "overflow kept once per signal");
  CHECK_INT(SIGHUP, list[n - 1], "the signal past the array is not dropped");
  nseen = 0;
  lg_frame_close(&f);
  CHECK_INT(n, nseen, "all re-delivered");
  /* the other way round: the first signal of the table is the one past it */
  lg_frame_arm(&f, count_interrupt, NULL);
  lg_frame_begin_cleanup(&f);
  for (i = 0; i < 70; i++) kill(getpid(), SIGHUP);
  kill(getpid(), SIGTERM);
  n = lg_record_list(&f.record, list);
  CHECK_INT(LG_RECORD_ORDER_MAX + 2, n, "overflow kept once per signal (SIGTERM past the array)");
  CHECK_INT(SIGTERM, list[n - 1], "SIGTERM past the array is not dropped");
  nseen = 0;
  lg_frame_close(&f);
  CHECK_INT(n, nseen, "all re-delivered (SIGTERM past the array)");
  set_disposition(SIGHUP, SIG_DFL);
}

/* A record past its array closes out of order: what it kept goes on with its
** arrival numbers, so in the frame it merges into an earlier arrival stays
** first (the array's last slot must not spill into the numbers). */
static void test_overflowed_record_merges_in_arrival_order(void) {
  lg_frame older, newer;
  int list[LG_RECORD_LIST_MAX], i, n;
  set_disposition(SIGTERM, recording_handler);
  set_disposition(SIGHUP, recording_handler);
  lg_frame_arm(&older, count_interrupt, NULL);
  lg_frame_arm(&newer, count_interrupt, NULL);
  kill(getpid(), SIGHUP);                 /* to the newest: newer */
  lg_frame_begin_cleanup(&older);         /* deferred to older from now */
  for (i = 0; i < LG_RECORD_ORDER_MAX + 6; i++) kill(getpid(), SIGTERM);
  CHECK_INT(LG_RECORD_ORDER_MAX + 6, older.record.length, "overflowed record: every arrival counted");
  lg_frame_close(&older);
  n = lg_record_list(&newer.record, list);
  CHECK(n >= 2 && list[0] == SIGHUP && list[1] == SIGTERM,
        "overflowed record: merged after the earlier SIGHUP, in arrival order");
  lg_frame_begin_cleanup(&newer);
  nseen = 0;
  lg_frame_close(&newer);
  CHECK(nseen == n && seen[0] == SIGHUP && seen[1] == SIGTERM,
        "overflowed record: re-delivered in arrival order");
  set_disposition(SIGHUP, SIG_DFL);
}

/* More signals land while the list is locked than the pending ring holds:
** those past it are counted per signal, and the next unlock routes every one
** of them, so none is left over to stop a frame armed later. */
static void test_pending_ring_overflow(void) {
  lg_frame f, later;
  int list[LG_RECORD_LIST_MAX], i, n;
  set_disposition(SIGTERM, recording_handler);
  set_disposition(SIGHUP, recording_handler);
  interrupts = 0;
  lg_frame_arm(&f, count_interrupt, NULL);
  lg_frames_lock();
  for (i = 0; i < 70; i++) raise(SIGTERM);     /* the ring holds 64 */
  for (i = 0; i < 3; i++) raise(SIGHUP);       /* past it too */
  lg_frames_unlock();
  CHECK(f.state == LG_FRAME_STOPPING, "ring overflow: the frame is stopping");
  n = lg_record_list(&f.record, list);
  CHECK(n >= 2 && list[0] == SIGTERM && list[n - 1] == SIGHUP,
        "ring overflow: both signals recorded, SIGHUP (which came past the ring) included");
  CHECK_INT(73, f.record.length, "ring overflow: every arrival routed at the unlock");
  lg_frame_begin_cleanup(&f);
  nseen = 0;
  lg_frame_close(&f);
  CHECK(nseen == n, "ring overflow: re-delivered at the close");
  interrupts = 0;
  lg_frame_arm(&later, count_interrupt, NULL);
  lg_frames_lock();
  lg_frames_unlock();
  CHECK(interrupts == 0 && later.state == LG_FRAME_ARMED && later.record.length == 0,
        "ring overflow: nothing is left over for a frame armed afterwards");
  lg_frame_close(&later);
  set_disposition(SIGHUP, SIG_DFL);
}

/* The oldest frame closes first: nothing is restored while the newer one is
** armed, and the record it passes on merges in arrival order. */
static void test_out_of_order_close_merges_in_arrival_order(void) {
  lg_frame older, newer;
  int list[LG_RECORD_LIST_MAX];
  nseen = 0;
  set_disposition(SIGTERM, recording_handler);
  set_disposition(SIGHUP, recording_handler);
  lg_frame_arm(&older, count_interrupt, NULL);
  kill(getpid(), SIGHUP);                 /* to the newest: older */
  lg_frame_arm(&newer, count_interrupt, NULL);
  kill(getpid(), SIGTERM);                /* to the newest: newer */
  lg_frame_begin_cleanup(&older);
  lg_frame_close(&older);                 /* out of order */
  CHECK(disposition(SIGTERM) != recording_handler, "the newer frame keeps the signals caught");
  CHECK_INT(0, nseen, "nothing re-delivered while a frame is armed");
  CHECK_INT(2, lg_record_list(&newer.record, list), "the older frame's record went to the newer");
  CHECK(list[0] == SIGHUP && list[1] == SIGTERM, "merged in arrival order (HUP came first)");
  lg_frame_begin_cleanup(&newer);
  lg_frame_close(&newer);
  CHECK_INT(2, nseen, "both re-delivered at the last close");
  CHECK(seen[0] == SIGHUP && seen[1] == SIGTERM, "in arrival order");
  set_disposition(SIGHUP, SIG_DFL);
}

/* A disposition the program installs while frames are armed stays. */
static void test_program_disposition_left_alone(void) {
  lg_frame f;
  int kick;
  set_disposition(SIGTERM, SIG_DFL);
  lg_frame_arm(&f, count_interrupt, NULL);
  kick = lg_signal_kick_signal();
  set_disposition(SIGTERM, recording_handler);   /* the program's own, meanwhile */
  set_disposition(SIGINT, SIG_IGN);
  if (kick != 0) set_disposition(kick, recording_handler);
  lg_frame_close(&f);
  CHECK(disposition(SIGTERM) == recording_handler, "the program's SIGTERM handler stays");
  CHECK(disposition(SIGINT) == SIG_IGN, "the program's SIG_IGN stays");
  CHECK(kick == 0 || disposition(kick) == recording_handler,
        "the kick's signal, taken over by the program meanwhile, stays the program's");
  set_disposition(SIGTERM, SIG_DFL);
  set_disposition(SIGINT, SIG_DFL);
  if (kick != 0) set_disposition(kick, SIG_DFL);
}

/* A signal during cleanups goes to the cleaning frame, not to one a cleanup
** armed (deferred for everyone), and interrupts nobody. */
static void test_frame_armed_by_cleanup_receives_nothing(void) {
  lg_frame outer, inner;
  set_disposition(SIGTERM, recording_handler);
  interrupts = 0;
  nseen = 0;
  lg_frame_arm(&outer, count_interrupt, NULL);
  lg_frame_begin_cleanup(&outer);
  lg_frame_arm(&inner, count_interrupt, NULL);          /* armed by a cleanup */
  kill(getpid(), SIGTERM);
  CHECK_INT(0, inner.record.length, "the frame armed by the cleanup received nothing");
  CHECK_INT(1, outer.record.length, "the cleaning frame did");
  CHECK_INT(0, interrupts, "and nobody was interrupted");
  lg_frame_close(&inner);
  lg_frame_close(&outer);
  CHECK_INT(1, nseen, "re-delivered after the outer frame's cleanups");
}

/* SIGPIPE: dropped while a frame cleans (the write fails with EPIPE), the
** default otherwise, given back at the last close. */
static void test_sigpipe_during_cleanups(void) {
  lg_frame f;
  int fds[2], status = 0;
  pid_t child;
  set_disposition(SIGPIPE, SIG_DFL);
  lg_frame_arm(&f, count_interrupt, NULL);
  CHECK(disposition(SIGPIPE) != SIG_DFL, "SIGPIPE is ours while a frame is armed");
  if (pipe(fds) != 0) return;
  close(fds[0]);
  lg_frame_begin_cleanup(&f);
  errno = 0;
  CHECK(write(fds[1], "x", 1) == -1 && errno == EPIPE, "a cleanup's write to a closed pipe: EPIPE");
  lg_frame_close(&f);
  CHECK(disposition(SIGPIPE) == SIG_DFL, "SIGPIPE's default is back");
  lg_frame_arm(&f, count_interrupt, NULL);
  child = test_fork_limited(10);
  if (child == 0) {
    lg_frame g;
    lg_frame_arm(&g, count_interrupt, NULL);
    if (write(fds[1], "x", 1) < 0) _exit(9);   /* not reached: SIGPIPE kills */
    _exit(0);
  }
  waitpid(child, &status, 0);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE,
        "outside cleanups a write to a closed pipe still dies by SIGPIPE");
  lg_frame_close(&f);
  close(fds[1]);
}

/*
** A stop with a reason (lg_frame_stop: a lease lost) goes where a signal goes,
** but among its group's frames only; deferred while one of them cleans up,
** routed on at close within the group, dropped (never delivered) at the
** group's last close.
*/
static void test_stop_reason_stays_in_its_group(void) {
  static const char group_a[] = "a", group_b[] = "b", group_c[] = "c";
  lg_frame a_outer, a_inner, b, a_by_cleanup;
  interrupts = 0;
  nseen = 0;
  set_disposition(SIGTERM, recording_handler);
  lg_frame_arm(&a_outer, count_interrupt, group_a);
  lg_frame_arm(&a_inner, count_interrupt, group_a);
  lg_frame_arm(&b, count_interrupt, group_b);   /* the newest of the process */
  CHECK_INT(0, lg_frame_stop(group_c, 3), "a group with no frame takes no stop");
  CHECK_INT(1, lg_frame_stop(group_a, 7), "a group's frame takes its stop");
  CHECK_INT(7, a_inner.reason, "the group's newest frame holds the reason");
  CHECK_INT(LG_FRAME_STOPPING, a_inner.state, "and is stopping");
  CHECK_INT(1, interrupts, "and was asked to stop, once");
  CHECK_INT(0, b.reason, "another group's newer frame is not touched");
  CHECK_INT(LG_FRAME_ARMED, b.state, "it stays armed");
  CHECK_INT(0, a_inner.record.length, "a reason is not a signal in the record");
  lg_frame_stop(group_a, 8);
  CHECK_INT(7, a_inner.reason, "a frame keeps the first reason it got");
  lg_frame_close(&b);
  lg_frame_begin_cleanup(&a_inner);
  lg_frame_arm(&a_by_cleanup, count_interrupt, group_a);
  lg_frame_close(&a_by_cleanup);
  CHECK_INT(0, a_by_cleanup.reason, "a frame armed by a cleanup gets nothing");
  interrupts = 0;
  lg_frame_close(&a_inner);
  CHECK_INT(7, a_outer.reason, "the close routes the reason on within the group");
  CHECK_INT(LG_FRAME_STOPPING, a_outer.state, "the next frame is stopping");
  CHECK_INT(1, interrupts, "and asked to stop");
  lg_frame_begin_cleanup(&a_outer);
  interrupts = 0;
  CHECK_INT(1, lg_frame_stop(group_a, 9), "during cleanups the stop is taken");
  CHECK_INT(0, interrupts, "deferred: nothing is interrupted");
  CHECK_INT(7, a_outer.reason, "a cleaning frame keeps the reason it cleans up for (the first)");
  lg_frame_close(&a_outer);
  CHECK(lg_frame_top() == NULL, "every frame closed");
  CHECK_INT(0, nseen, "the group's last close delivers no signal for a reason");
  CHECK(disposition(SIGTERM) == recording_handler, "dispositions restored");
  set_disposition(SIGTERM, SIG_DFL);
}

/*
** A signal that asks the body to stop starts the kick; when the cleanups
** begin before the body noticed (a handler closing just as the signal came),
** beginning them stops the kick, or a cleanup's blocking read is cut short.
*/
static void test_cleanup_stops_the_kick(void) {
  lg_frame f;
  nseen = 0;
  set_disposition(SIGTERM, recording_handler);
  lg_frame_arm(&f, count_interrupt, NULL);
  kill(getpid(), SIGTERM);          /* routed to f: stopping, the kick started */
  CHECK_INT(LG_FRAME_STOPPING, f.state, "the signal asked the body to stop");
  lg_frame_begin_cleanup(&f);
  CHECK_INT(1, read_with_signal_from_child(0),
            "a cleanup's blocking read completes: beginning the cleanups stopped the kick");
  lg_frame_close(&f);
  CHECK_INT(1, nseen, "the signal re-delivered at the close");
  set_disposition(SIGTERM, SIG_DFL);
}

/*
** The kick belongs to the process: while one group's frame cleans up, a stop
** for another group (its lease lost) asks that group's frame to stop but
** starts no kick, or the cleanup's blocking read would be cut short (EINTR).
*/
static void test_stop_for_a_group_does_not_kick_a_cleanup(void) {
  static const char group_a[] = "a", group_b[] = "b";
  lg_frame a, b;
  interrupts = 0;
  lg_frame_arm(&a, count_interrupt, group_a);
  lg_frame_arm(&b, count_interrupt, group_b);
  lg_frame_begin_cleanup(&b);
  CHECK_INT(1, lg_frame_stop(group_a, 5), "a stop for group a while group b cleans up");
  CHECK_INT(1, interrupts, "group a's frame was asked to stop");
  CHECK_INT(1, read_with_signal_from_child(0),
            "group b's cleanup's blocking read completes (no kick while a cleanup runs)");
  lg_frame_close(&b);
  lg_frame_close(&a);
  CHECK(lg_frame_top() == NULL, "both closed");
}

/* Two threads arm and close frames at once, in and out of order with each
** other, inside an outer frame: every change of the list is made under its
** lock, so after them the outer frame is the only one, and its close is the
** last (it restores). */
#define CHURN_ROUNDS 50000
static void *churn_frames(void *arg) {
  long i, *left = (long *)arg;
  for (i = 0; i < CHURN_ROUNDS; i++) {
    lg_frame f;
    if (lg_frame_arm(&f, count_interrupt, NULL) != 0) break;
    lg_frame_close(&f);
  }
  *left = CHURN_ROUNDS - i;
  return NULL;
}

static void test_two_threads_churn_the_list(void) {
  lg_frame outer;
  pthread_t th[2];
  long left[2] = {-1, -1};
  int i;
  set_disposition(SIGTERM, recording_handler);
  lg_frame_arm(&outer, count_interrupt, NULL);
  for (i = 0; i < 2; i++)
    if (pthread_create(&th[i], NULL, churn_frames, &left[i]) != 0) return;
  for (i = 0; i < 2; i++) pthread_join(th[i], NULL);
  CHECK(left[0] == 0 && left[1] == 0, "churn: every arm succeeded");
  CHECK(lg_frame_top() == &outer, "churn: the outer frame is the only one left");
  lg_frame_close(&outer);
  CHECK(lg_frame_top() == NULL && disposition(SIGTERM) == recording_handler,
        "churn: its close is the last, and restores");
}

int main(void) {
  tap_deadline(30);
  test_arm_and_restore();
  test_record_and_interrupt();
  test_arrival_order_not_signal_order();
  test_nesting_and_hand_off();
  test_kick_cuts_body_reads_short();
  test_kick_repeats_and_backs_off();
  test_kick_signal_is_borrowed();
  test_kick_reaches_the_arming_thread();
  test_kick_given_back_when_its_thread_is_gone();
  test_kick_kept_for_the_next_arm();
  test_no_kick_left_on_a_blocking_thread();
  test_last_close_waits_for_a_running_kick();
  test_fallback_flips_restart_for_cleanups();
  test_fallback_restart_off_for_the_outer_body();
  test_forked_child();
  test_forked_child_kick();
  test_forked_child_own_frames();
  test_signal_while_the_list_is_locked();
  test_record_overflow();
  test_overflowed_record_merges_in_arrival_order();
  test_pending_ring_overflow();
  test_out_of_order_close_merges_in_arrival_order();
  test_program_disposition_left_alone();
  test_frame_armed_by_cleanup_receives_nothing();
  test_sigpipe_during_cleanups();
  test_stop_reason_stays_in_its_group();
  test_stop_for_a_group_does_not_kick_a_cleanup();
  test_cleanup_stops_the_kick();
  test_two_threads_churn_the_list();
  return tap_done();
}

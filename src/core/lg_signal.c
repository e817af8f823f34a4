/*
** lg_signal.c — the signal-deferral core.
**
** A process-wide stack of armed frames (a volatile list, as git's tempfile.c
** keeps one). While at least one frame is armed, one sigaction handler serves
** the six handled signals; it only appends to the innermost frame's record and,
** unless cleanups are running, asks that frame's owner to stop its body (the
** Lua binding does that with lua_sethook, as lua.c's laction does). Everything
** else happens in normal code: cleanups, then hand-off to the next older frame,
** or, for the outermost frame, restoring the previous dispositions and
** re-delivering every signal in arrival order (git's sigchain: pop, re-raise).
**
** SA_RESTART, and the kick. Cleanups are never interrupted: a signal that
** arrives while one runs must not cut its read short, so our handler is
** installed with SA_RESTART. A body, though, must stop early even inside a
** blocking call. So when the handler stops a body it also starts the kick: a
** one-shot timer aimed at the armed thread, whose signal (a real-time one
** nobody else handles) has an empty handler *without* SA_RESTART. The call
** the first signal restarted returns EINTR at the kick (0.2 ms later), and
** the kick repeats, backing off, until the body has stopped
** (lg_signal_kick_stop). That also closes the window where a signal lands
** just before a blocking call and the hook could only act once it returned.
** The earlier way, no SA_RESTART in bodies and the handlers re-installed with
** it around every cleanup, cost 12 rt_sigaction per close that runs cleanups:
** 3/4 of an ExitHandler cycle (scripts/bench). A nested frame now arms and
** closes, cleanups or not, with no system call. Where no timer can be had
** (timer_create refused), that earlier way is still there as the fallback.
*/
#define _GNU_SOURCE   /* SIGEV_THREAD_ID and gettid: the kick targets a thread */
#include "lg_signal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define KICK_FIRST_NS 200000L     /* 0.2 ms after the signal, then doubling */
#define KICK_MAX_NS 64000000L     /* up to 64 ms: a body stuck in C is not polled hard */

const int lg_signals[LG_SIGNAL_COUNT] = {
  SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGXCPU, SIGXFSZ
};
static const char *const signal_names[LG_SIGNAL_COUNT] = {
  "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGXCPU", "SIGXFSZ"
};

static lg_frame *volatile top_frame;             /* innermost armed frame */
static volatile sig_atomic_t arrivals;           /* handled arrivals, ever */
static volatile sig_atomic_t cleaning_depth;     /* frames deferring signals */
static int restart_depth;                        /* frames whose calls restart */

/* Normal-code state: touched only outside the signal handler. */
static int installed;                            /* our handler is in place */
static int installed_for[LG_SIGNAL_COUNT];       /* not SIG_IGN when armed */
static struct sigaction saved[LG_SIGNAL_COUNT];  /* what we replaced */
static pid_t cached_pid;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* The kick (see the top). kick_signal 0: none, the SA_RESTART-flip fallback;
** nonzero only while kick_timer is this process's timer for it (the handler
** reads both). */
static int kick_wanted = 1;                      /* lg_signal_use_kick */
static volatile sig_atomic_t kick_signal;
static struct sigaction kick_saved;              /* its disposition before us */
static timer_t kick_timer;
static int kick_timer_signal;                    /* the signal it was made for */
static pid_t kick_timer_owner;                   /* timers are not inherited */
static volatile sig_atomic_t kick_active;
static volatile sig_atomic_t kick_delay_ns;
static volatile sig_atomic_t kick_used;          /* since install */


int lg_signal_index(int sig) {
  int i;
  for (i = 0; i < LG_SIGNAL_COUNT; i++)
    if (lg_signals[i] == sig) return i;
  return -1;
}

const char *lg_signal_name(int sig) {
  int i = lg_signal_index(sig);
  return i < 0 ? NULL : signal_names[i];
}

unsigned long lg_signal_arrivals(void) { return (unsigned long)arrivals; }
int lg_signal_cleaning(void) { return cleaning_depth > 0; }


/*
** getpid() is a system call; arming a nested frame must cost none. The pid is
** cached and refreshed in a forked child by an atfork handler (fork() from
** any Lua binding goes through libc's fork, which runs it).
*/
static void refresh_pid(void) {
  cached_pid = getpid();
  kick_active = 0;          /* a forked child has no timer running */
}
static void register_atfork(void) { pthread_atfork(NULL, NULL, refresh_pid); }

pid_t lg_signal_pid(void) {
  pthread_once(&atfork_once, register_atfork);
  if (cached_pid == 0) refresh_pid();
  return cached_pid;
}


static void record_append(lg_record *r, int sig) {
  int i = lg_signal_index(sig);
  sig_atomic_t n = r->length;
  if (n < LG_RECORD_ORDER_MAX) r->order[n] = sig;
  r->length = n + 1;
  if (i >= 0) r->counts[i]++;
}

static int occurrences(const lg_record *r, int kept, int sig) {
  int k, n = 0;
  for (k = 0; k < kept; k++) if (r->order[k] == sig) n++;
  return n;
}

/*
** Arrivals past the array are known by the counters only: each such signal
** is listed once more, those seen in the array in first-arrival order, then
** those never seen there (in table order: their order was not kept).
*/
int lg_record_list(const lg_record *r, int *out) {
  int n = 0, i, kept = r->length < LG_RECORD_ORDER_MAX ? r->length
                                                       : LG_RECORD_ORDER_MAX;
  for (i = 0; i < kept; i++) out[n++] = r->order[i];
  if (r->length > kept) {
    for (i = 0; i < kept; i++) {
      int sig = r->order[i], idx = lg_signal_index(sig);
      if (idx >= 0 && occurrences(r, i, sig) == 0 &&
          r->counts[idx] > occurrences(r, kept, sig))
        out[n++] = sig;
    }
    for (i = 0; i < LG_SIGNAL_COUNT; i++)
      if (r->counts[i] > 0 && occurrences(r, kept, lg_signals[i]) == 0)
        out[n++] = lg_signals[i];
  }
  return n;
}


/* The innermost frame owned by pid, from f down. */
static lg_frame *own_frame_from(lg_frame *f, pid_t pid) {
  while (f != NULL && f->owner != pid) f = f->outer;
  return f;
}

lg_frame *lg_frame_top(void) { return own_frame_from(top_frame, lg_signal_pid()); }
lg_frame *lg_frame_outer(const lg_frame *f) {
  return own_frame_from(f->outer, lg_signal_pid());
}


/* Signal-handler context too: timer_settime is async-signal-safe. */
static void kick_arm(long ns) {
  struct itimerspec when;
  memset(&when, 0, sizeof when);
  when.it_value.tv_sec = (time_t)(ns / 1000000000L);
  when.it_value.tv_nsec = ns % 1000000000L;
  timer_settime(kick_timer, 0, &when, NULL);   /* 0 disarms */
}

/* The kick's handler: its arrival is the point (EINTR); arm the next one. */
static void on_kick(int sig) {
  int saved_errno = errno;
  (void)sig;
  if (kick_active) {
    long next = (long)kick_delay_ns * 2;
    if (next > KICK_MAX_NS) next = KICK_MAX_NS;
    kick_delay_ns = (sig_atomic_t)next;
    kick_arm(next);
  }
  errno = saved_errno;
}

static void kick_start(void) {
  if (kick_signal == 0 || kick_active) return;
  kick_active = 1;
  kick_used = 1;
  kick_delay_ns = KICK_FIRST_NS;
  kick_arm(KICK_FIRST_NS);
}

void lg_signal_kick_stop(void) {
  if (!kick_active) return;
  kick_active = 0;
  kick_arm(0);              /* a kick already due is delivered as this returns */
}

int lg_signal_kick_signal(void) { return kick_signal; }
void lg_signal_use_kick(int enabled) { kick_wanted = enabled; }

/*
** The handler. Async-signal-safe only: getpid, sigaction, kill,
** timer_settime, and writes to sig_atomic_t state; the interrupt callback
** obeys the same rule. Our six signals are in sa_mask, so it never runs
** nested with itself.
*/
static void on_signal(int sig) {
  int saved_errno = errno;
  lg_frame *f = own_frame_from(top_frame, getpid());
  if (f == NULL) {
    /* A forked child that inherited our handler, or a signal racing the last
    ** close: behave as if we were not there. Blocked until we return. */
    int i = lg_signal_index(sig);
    if (i >= 0) sigaction(sig, &saved[i], NULL);
    kill(getpid(), sig);
  }
  else {
    record_append(&f->record, sig);
    arrivals++;
    if (cleaning_depth == 0 && f->interrupt != NULL) {
      f->interrupt(f->interrupt_ud);
      kick_start();         /* a blocking call restarted: cut it short */
    }
  }
  errno = saved_errno;
}

/* Point every signal we handle at on_signal, restarting or not. */
static int set_handler_flags(int restart) {
  struct sigaction sa;
  int i, rc = 0;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (i = 0; i < LG_SIGNAL_COUNT; i++) sigaddset(&sa.sa_mask, lg_signals[i]);
  /* Fallback only (no kick): no SA_RESTART while a body runs, so a blocking
  ** call returns early; SA_RESTART while cleanups run. */
  sa.sa_flags = restart ? SA_RESTART : 0;
  for (i = 0; i < LG_SIGNAL_COUNT; i++)
    if (installed_for[i] && sigaction(lg_signals[i], &sa, NULL) != 0) rc = -1;
  return rc;
}

/* A timer sending sig to this thread, made once per process. Call with
** kick_signal 0: the handler must not use kick_timer while it changes. */
static int kick_make_timer(int sig) {
  struct sigevent ev;
  pid_t pid = lg_signal_pid();
  if (kick_timer_owner == pid && kick_timer_signal == sig) return 0;
  if (kick_timer_owner == pid) timer_delete(kick_timer);
  kick_timer_owner = 0;
  memset(&ev, 0, sizeof ev);
  ev.sigev_signo = sig;
#ifdef SIGEV_THREAD_ID
  ev.sigev_notify = SIGEV_THREAD_ID;   /* the body's thread, not any thread */
#ifdef sigev_notify_thread_id
  ev.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
#else
  ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);   /* glibc before 2.41 */
#endif
#else
  ev.sigev_notify = SIGEV_SIGNAL;
#endif
  if (timer_create(CLOCK_MONOTONIC, &ev, &kick_timer) != 0) return -1;
  kick_timer_owner = pid;
  kick_timer_signal = sig;
  return 0;
}

/*
** Take the highest real-time signal whose disposition is still SIG_DFL (one
** a program uses is left alone), and a timer for it. No kick on failure.
*/
static void kick_install(void) {
  struct sigaction sa;
  int sig, taken = 0;
  kick_signal = 0;
  kick_used = 0;
  if (!kick_wanted) return;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_kick;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;          /* no SA_RESTART: interrupting is its job */
  for (sig = SIGRTMAX; sig >= SIGRTMIN; sig--) {
    if (sigaction(sig, &sa, &kick_saved) != 0) continue;
    if (kick_saved.sa_handler == SIG_DFL && !(kick_saved.sa_flags & SA_SIGINFO)) {
      taken = sig;
      break;
    }
    sigaction(sig, &kick_saved, NULL);
  }
  if (taken == 0) return;
  if (kick_make_timer(taken) != 0) sigaction(taken, &kick_saved, NULL);
  else kick_signal = taken;
}

/* Stop the kick and give its signal back; one still pending (only if the
** program blocks it) is taken first, or SIG_DFL would end the process. */
static void kick_uninstall(void) {
  int sig = kick_signal;
  if (sig == 0) return;
  kick_signal = 0;          /* first: a signal from now on starts no kick */
  lg_signal_kick_stop();
  if (kick_used) {
    sigset_t only;
    struct timespec none = {0, 0};
    sigemptyset(&only);
    sigaddset(&only, sig);
    sigtimedwait(&only, NULL, &none);
  }
  sigaction(sig, &kick_saved, NULL);
}

static int restore_dispositions(void) {
  int i, rc = 0, err = 0;
  kick_uninstall();
  for (i = 0; i < LG_SIGNAL_COUNT; i++) {
    if (installed_for[i] && sigaction(lg_signals[i], &saved[i], NULL) != 0) {
      rc = -1;
      err = errno;
    }
    installed_for[i] = 0;
  }
  installed = 0;
  if (rc != 0) errno = err;
  return rc;
}

/*
** First frame of the process: install, one sigaction per signal; one that was
** SIG_IGN (nohup) is put back and left alone.
*/
static int install(void) {
  struct sigaction sa;
  int i;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (i = 0; i < LG_SIGNAL_COUNT; i++) sigaddset(&sa.sa_mask, lg_signals[i]);
  kick_install();
  sa.sa_flags = kick_signal != 0 || restart_depth > 0 ? SA_RESTART : 0;
  for (i = 0; i < LG_SIGNAL_COUNT; i++) {
    if (sigaction(lg_signals[i], &sa, &saved[i]) != 0) {
      int err = errno;
      restore_dispositions();
      errno = err;
      return -1;
    }
    installed_for[i] = 1;
    if (saved[i].sa_handler == SIG_IGN && !(saved[i].sa_flags & SA_SIGINFO)) {
      sigaction(lg_signals[i], &saved[i], NULL);
      installed_for[i] = 0;
    }
  }
  installed = 1;
  return 0;
}


int lg_frame_arm(lg_frame *f, lg_interrupt_fn interrupt, void *ud) {
  pid_t pid = lg_signal_pid();
  memset(f, 0, sizeof *f);
  f->owner = pid;
  f->interrupt = interrupt;
  f->interrupt_ud = ud;
  /* A forked child inherits 'installed' and our handler with it, but not
  ** the kick's timer: it makes its own, or falls back to flipping. */
  if (!installed) {
    if (install() != 0) return -1;
  }
  else if (kick_signal != 0 && kick_timer_owner != pid) {
    int sig = kick_signal;
    kick_signal = 0;
    if (kick_make_timer(sig) == 0) kick_signal = sig;
    else if (set_handler_flags(restart_depth > 0) != 0) return -1;
  }
  f->outer = top_frame;
  top_frame = f;            /* linked only once complete: one pointer store */
  f->linked = 1;
  return 0;
}

int lg_frame_defer(lg_frame *f) {
  if (f->deferring || !f->linked) return 0;
  f->deferring = 1;
  cleaning_depth++;         /* before the kick stops: a signal now starts none */
  lg_signal_kick_stop();
  return 0;
}

int lg_frame_begin_cleanup(lg_frame *f) {
  lg_frame_defer(f);
  if (f->restarting || !f->linked) return 0;
  f->restarting = 1;
  /* Cleanups are never interrupted: a read in one must not fail with EINTR.
  ** With the kick our handler has SA_RESTART already; without, switch. */
  if (restart_depth++ == 0 && installed && kick_signal == 0) return set_handler_flags(1);
  return 0;
}

static void unlink_frame(lg_frame *f) {
  if (top_frame == f) top_frame = f->outer;
  else {
    lg_frame *p = top_frame;
    while (p != NULL && p->outer != f) p = p->outer;
    if (p != NULL) p->outer = f->outer;
  }
  f->linked = 0;
}

static void deliver(const lg_record *r) {
  int list[LG_RECORD_LIST_MAX], n = lg_record_list(r, list), i;
  if (n == 0) return;
  fflush(NULL);             /* death by signal skips stdio's own flush */
  for (i = 0; i < n; i++)
    kill(getpid(), list[i]);  /* not raise(): that targets one thread only */
}

/*
** The hand-off writes into a record the handler may append to at the same
** moment; our six signals are blocked for those few stores (only when there
** is something to hand off, so a quiet nested close makes no system call).
*/
static void hand_off(const lg_record *from, lg_frame *to, int interrupt) {
  int list[LG_RECORD_LIST_MAX], n = lg_record_list(from, list), i;
  sigset_t block, old;
  if (n == 0) return;
  sigemptyset(&block);
  for (i = 0; i < LG_SIGNAL_COUNT; i++) sigaddset(&block, lg_signals[i]);
  sigprocmask(SIG_BLOCK, &block, &old);
  for (i = 0; i < n; i++) record_append(&to->record, list[i]);
  if (interrupt && cleaning_depth == 0 && to->interrupt != NULL)
    to->interrupt(to->interrupt_ud);
  sigprocmask(SIG_SETMASK, &old, NULL);
}

int lg_frame_close(lg_frame *f, int interrupt_outer) {
  pid_t pid = lg_signal_pid();
  lg_frame *outer;
  int rc = 0, ended_restart = 0;
  if (!f->linked) return 0;
  if (f->owner != pid) {    /* forked child: never act for the parent */
    unlink_frame(f);
    return 0;
  }
  lg_signal_kick_stop();
  if (f->deferring) {
    f->deferring = 0;
    cleaning_depth--;
  }
  if (f->restarting) {
    f->restarting = 0;
    ended_restart = (--restart_depth == 0);
  }
  outer = own_frame_from(f->outer, pid);
  if (outer == NULL) {
    /* Restore first, then unlink: a signal in between is still recorded in f,
    ** or already meets the restored disposition. Either way none is lost. */
    rc = restore_dispositions();
    unlink_frame(f);
    deliver(&f->record);
    return rc;
  }
  unlink_frame(f);
  if (ended_restart && installed && kick_signal == 0) rc = set_handler_flags(0);
  hand_off(&f->record, outer, interrupt_outer);
  return rc;
}

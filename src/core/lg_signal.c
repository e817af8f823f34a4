/*
** lg_signal.c — the signal-deferral core.
**
** The machine (tests/model/deferral.pml checks it with spin; the functions
** below carry its transition names):
**
**   arm            link a frame as the newest; the first frame of the process
**                  installs our handler (dispositions: restored -> caught)
**   route          where a signal goes, on arrival or when a closing frame
**                  passes its record on: to the innermost CLEANING frame
**                  (recorded only: deferred for everyone, frames armed by the
**                  cleanups included), else to the newest frame, which turns
**                  STOPPING and is asked to stop (its interrupt callback)
**   begin_cleanup  a frame's cleanups start: signals are deferred to it
**   close          unlink, in any order; the record is routed again, or, when
**                  the last frame of the process goes, the saved dispositions
**                  come back (caught -> restored) and every recorded signal is
**                  re-delivered in arrival order (git's sigchain: pop, re-raise)
**   stop           a reason that is not a signal (a lease lost) goes the way
**                  a signal goes, but among one group's frames (route_reason);
**                  never re-delivered: the group's last close drops it
**
** The list is shared by every thread and by the handler, so it has a lock:
** one word taken with an atomic exchange (lock-free, so the handler may use
** it). Normal code spins for it; the handler never does: when the list is
** busy it leaves the signal in a small pending ring, and whoever gives the
** lock back routes what is pending. A frame is unlinked only under the lock,
** so the handler never follows a frame that is being freed.
**
** SA_RESTART, and the kick. Cleanups are never interrupted: a signal that
** arrives while one runs must not cut its read short, so our handler is
** installed with SA_RESTART. A body must stop early even inside a blocking
** call, though, so when a signal asks a body to stop, the kick starts: a
** one-shot timer aimed at the arming thread, whose signal (a real-time one
** nobody else handles) has an empty handler *without* SA_RESTART. The call
** the first signal restarted returns EINTR at the kick (0.2 ms later), and the
** kick repeats, backing off, until the body has stopped (lg_signal_kick_stop).
** So a frame arms, runs its cleanups and closes with no system call. Where no
** timer can be had, the handler is installed without SA_RESTART and switched
** to it while any frame is CLEANING (the fallback).
**
** SIGPIPE. While a frame is CLEANING, a cleanup that writes to a closed pipe
** must get EPIPE (logged like any failure) rather than kill the process in
** the middle of the rollback. So while frames are armed, a SIGPIPE at SIG_DFL
** is ours too: during cleanups it is dropped; otherwise it is re-raised at
** SIG_DFL, as if we were not there. Children exec'd meanwhile get SIG_DFL (an
** ignored SIGPIPE would be inherited).
*/
#define _GNU_SOURCE   /* SIGEV_THREAD_ID and gettid: the kick targets a thread */
#include "lg_signal.h"
#include "lg_pid.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define KICK_FIRST_NS 200000L     /* 0.2 ms after the signal, then doubling */
#define KICK_MAX_NS 64000000L     /* up to 64 ms: a body stuck in C is not polled hard */
#define PENDING_MAX 64            /* signals arriving while the list is locked */

const int lg_signals[LG_SIGNAL_COUNT] = {
  SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGXCPU, SIGXFSZ
};
static const char *const signal_names[LG_SIGNAL_COUNT] = {
  "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGXCPU", "SIGXFSZ"
};

/* Shared with the handler. */
static lg_frame *volatile top_frame;             /* newest frame, any process */
static volatile int list_lock;                   /* atomic: 0 free, 1 held */
static volatile sig_atomic_t arrivals;           /* handled arrivals, ever */
static volatile sig_atomic_t cleaning_count;     /* this process's CLEANING frames */
static volatile sig_atomic_t pending[PENDING_MAX];   /* 0: slot not written yet */
static volatile sig_atomic_t pending_seq[PENDING_MAX];
static volatile unsigned pending_head, pending_tail; /* atomic */
static volatile sig_atomic_t pending_lost[LG_SIGNAL_COUNT];

/* Normal-code state (the handler reads installed_for and saved only when it
** finds no frame of its process: a forked child). */
static volatile sig_atomic_t installed;
static volatile sig_atomic_t installed_for[LG_SIGNAL_COUNT];
static struct sigaction saved[LG_SIGNAL_COUNT];  /* what we replaced */
static int pipe_installed;
static struct sigaction pipe_saved;
static lg_record orphans;     /* routed when no frame was left: delivered by normal code */

/* The kick (see the top). kick_signal is nonzero only while kick_timer is
** this process's timer for it (the handler reads both). */
static int kick_wanted = 1;
static volatile sig_atomic_t kick_signal;
static struct sigaction kick_saved;
static timer_t kick_timer;
static int kick_timer_signal;
static pid_t kick_timer_owner;                   /* timers are not inherited */
static volatile sig_atomic_t kick_timer_tid;     /* the thread the timer signals */
static volatile sig_atomic_t kick_target;        /* the thread to kick: the stopped frame's */
static volatile sig_atomic_t kick_active;
static volatile sig_atomic_t kick_delay_ns;
static volatile sig_atomic_t kick_used;          /* since install */
static int kick_kept;         /* a signal left with on_kick at uninstall (see there) */
static volatile sig_atomic_t kick_handlers;   /* on_kick calls running, any thread (atomic ops) */

static void on_signal(int sig);


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

int lg_signal_cleaning(void) { return cleaning_count > 0; }


/* ---- records ---- */

/* a arrived before b (arrival numbers wrap; they are never far apart) */
static int seq_before(sig_atomic_t a, sig_atomic_t b) {
  return (int)((unsigned)a - (unsigned)b) < 0;
}

/* Insert in arrival order; past the array only the counters see it. */
static void record_insert(lg_record *r, int sig, sig_atomic_t seq) {
  int i = lg_signal_index(sig);
  sig_atomic_t n = r->length;
  if (n < LG_RECORD_ORDER_MAX) {
    sig_atomic_t pos = n;
    while (pos > 0 && seq_before(seq, r->seq[pos - 1])) {
      r->order[pos] = r->order[pos - 1];
      r->seq[pos] = r->seq[pos - 1];
      pos--;
    }
    r->order[pos] = sig;
    r->seq[pos] = seq;
  }
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


/* ---- the kick ---- */

/* Signal-handler context too: timer_settime is async-signal-safe. */
static void kick_arm(long ns) {
  struct itimerspec when;
  memset(&when, 0, sizeof when);
  when.it_value.tv_sec = (time_t)(ns / 1000000000L);
  when.it_value.tv_nsec = ns % 1000000000L;
  timer_settime(kick_timer, 0, &when, NULL);   /* 0 disarms */
}

/*
** The kick's handler: its arrival is the point (EINTR). On the timer's thread
** it arms the next one, and passes the kick on to the thread whose block was
** stopped when that is another (the timer's thread is the one that installed:
** frames armed in other threads since are stopped on theirs). A kick passed
** on only interrupts.
*/
static void on_kick(int sig) {
  int saved_errno = errno;
  pid_t self = (pid_t)syscall(SYS_gettid), target = kick_target;
  __atomic_add_fetch(&kick_handlers, 1, __ATOMIC_SEQ_CST);   /* lock-free */
  if (kick_active && self == kick_timer_tid) {
    long next = (long)kick_delay_ns * 2;
    if (next > KICK_MAX_NS) next = KICK_MAX_NS;
    kick_delay_ns = (sig_atomic_t)next;
    kick_arm(next);
    if (target != 0 && target != self) syscall(SYS_tgkill, getpid(), target, sig);
  }
  __atomic_sub_fetch(&kick_handlers, 1, __ATOMIC_SEQ_CST);
  errno = saved_errno;
}

/* Kick the thread that armed f (its block is stopped): f->tid, 0 when that
** thread blocks the kick's signal (the timer's thread is kicked all the same). */
static void kick_start(const lg_frame *f) {
  kick_target = f->tid;
  if (kick_signal == 0 || kick_active || cleaning_count > 0) return;
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

/* Whether this thread blocks sig. */
static int thread_blocks(int sig) {
  sigset_t mask;
  return pthread_sigmask(SIG_BLOCK, NULL, &mask) == 0 && sigismember(&mask, sig);
}

/* This thread's id, cached per thread (normal code only: the first use of a
** thread-local may allocate in a dlopen'ed module). */
static pid_t current_tid(void) {
  static __thread pid_t tid, of;      /* of: the process it was read in (fork copies it) */
  pid_t pid = lg_pid();
  if (tid == 0 || of != pid) {
    tid = (pid_t)syscall(SYS_gettid);
    of = pid;
  }
  return tid;
}

/* A timer sending sig to this thread, made again only when the process, the
** signal or the arming thread changed (the thread it kicked may be gone).
** Call with kick_signal 0: the handler must not use kick_timer meanwhile. */
static int kick_make_timer(int sig) {
  struct sigevent ev;
  pid_t pid = lg_pid();
  if (kick_timer_owner == pid && kick_timer_signal == sig && kick_timer_tid == current_tid())
    return 0;
  if (kick_timer_owner == pid) timer_delete(kick_timer);
  kick_timer_owner = 0;
  memset(&ev, 0, sizeof ev);
  ev.sigev_signo = sig;
#ifdef SIGEV_THREAD_ID
  ev.sigev_notify = SIGEV_THREAD_ID;   /* the body's thread, not any thread */
#ifdef sigev_notify_thread_id
  ev.sigev_notify_thread_id = current_tid();
#else
  ev._sigev_un._tid = current_tid();   /* glibc before 2.41 */
#endif
#else
  ev.sigev_notify = SIGEV_SIGNAL;
#endif
  if (timer_create(CLOCK_MONOTONIC, &ev, &kick_timer) != 0) return -1;
  kick_timer_owner = pid;
  kick_timer_signal = sig;
  kick_timer_tid = current_tid();
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
  if (kick_kept != 0) {     /* still ours (kick_saved still what it replaced)? */
    struct sigaction now;
    sig = kick_kept;
    kick_kept = 0;
    if (sigaction(sig, NULL, &now) == 0 && now.sa_handler == on_kick &&
        !(now.sa_flags & SA_SIGINFO))
      taken = sig;
  }
  for (sig = SIGRTMAX; taken == 0 && sig >= SIGRTMIN; sig--) {
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

/* Put back what 'old' replaced unless the program changed it meanwhile (then
** its own disposition stays). */
static int give_back(int sig, const struct sigaction *before, void (*ours)(int)) {
  struct sigaction now;
  if (sigaction(sig, before, &now) != 0) return -1;
  if (now.sa_handler != ours || (now.sa_flags & SA_SIGINFO))
    sigaction(sig, &now, NULL);
  return 0;
}

/* Whether sig is pending on thread tid (its own set, SigPnd in /proc): 1, 0,
** or -1 when it cannot be known. A thread that is gone has nothing pending. */
static int pending_on_thread(pid_t tid, int sig) {
  char path[64], line[256];
  int found = -1;
  FILE *f;
  snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)tid);
  if ((f = fopen(path, "re")) == NULL) return errno == ENOENT ? 0 : -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "SigPnd:", 7) == 0) {
      found = (int)((strtoull(line + 7, NULL, 16) >> (sig - 1)) & 1);
      break;
    }
  fclose(f);
  return found;
}

/*
** Stop the kick and give its signal back; one still pending would meet
** SIG_DFL and end the process. With several threads, on_kick may be running
** on the thread the timer aims at, about to arm it again: wait until no
** on_kick runs, then disarm once more. This thread's pending kick (only if
** the program blocks it) is taken. One pending on the timer's thread, another
** one, cannot be taken from here: then the signal keeps our empty handler,
** and the next install takes it again (kick_kept).
*/
static void kick_uninstall(void) {
  int sig = kick_signal;
  if (sig == 0) return;
  kick_signal = 0;          /* first: a signal from now on starts no kick */
  lg_signal_kick_stop();
  if (kick_used) {
    sigset_t only;
    struct timespec none = {0, 0};
    while (__atomic_load_n(&kick_handlers, __ATOMIC_SEQ_CST) > 0) sched_yield();
    kick_arm(0);
    sigemptyset(&only);
    sigaddset(&only, sig);
    sigtimedwait(&only, NULL, &none);
    if (kick_timer_tid != current_tid() && pending_on_thread(kick_timer_tid, sig) != 0) {
      kick_kept = sig;
      return;
    }
  }
  give_back(sig, &kick_saved, on_kick);
}


/* ---- dispositions ---- */

/* SIGPIPE while frames are armed (see the top): dropped during cleanups,
** otherwise what SIG_DFL would do. */
static void on_pipe(int sig) {
  if (cleaning_count > 0) return;           /* the write fails with EPIPE */
  sigaction(sig, &pipe_saved, NULL);        /* SIG_DFL */
  raise(sig);               /* blocked until we return, then it ends the process */
}

static void fill_action(struct sigaction *sa, void (*handler)(int), int restart) {
  int i;
  memset(sa, 0, sizeof *sa);
  sa->sa_handler = handler;
  sigemptyset(&sa->sa_mask);
  for (i = 0; i < LG_SIGNAL_COUNT; i++) sigaddset(&sa->sa_mask, lg_signals[i]);
  sa->sa_flags = restart ? SA_RESTART : 0;
}

/* Whether blocking calls restart after our handler: always with a kick; in
** the fallback only while cleanups run. */
static int want_restart(void) { return kick_signal != 0 || cleaning_count > 0; }

/* Fallback only: switch SA_RESTART on every signal we handle. */
static int set_restart(int restart) {
  struct sigaction sa;
  int i, rc = 0;
  fill_action(&sa, on_signal, restart);
  for (i = 0; i < LG_SIGNAL_COUNT; i++)
    if (installed_for[i] && sigaction(lg_signals[i], &sa, NULL) != 0) rc = -1;
  return rc;
}

static int restore_dispositions(void) {
  int i, rc = 0, err = 0;
  kick_uninstall();
  for (i = 0; i < LG_SIGNAL_COUNT; i++) {
    if (installed_for[i] && give_back(lg_signals[i], &saved[i], on_signal) != 0) {
      rc = -1;
      err = errno;
    }
    installed_for[i] = 0;
  }
  if (pipe_installed) give_back(SIGPIPE, &pipe_saved, on_pipe);
  pipe_installed = 0;
  installed = 0;
  if (rc != 0) errno = err;
  return rc;
}

/*
** First frame of the process: one sigaction per signal; one that was SIG_IGN
** (nohup) is put back and left alone. SIGPIPE is taken only from SIG_DFL (a
** program's own handler or SIG_IGN already keeps a cleanup alive).
*/
static int install(void) {
  struct sigaction sa;
  int i;
  kick_install();
  fill_action(&sa, on_signal, want_restart());
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
  fill_action(&sa, on_pipe, 1);
  if (sigaction(SIGPIPE, &sa, &pipe_saved) == 0) {
    pipe_installed = 1;
    if (pipe_saved.sa_handler != SIG_DFL || (pipe_saved.sa_flags & SA_SIGINFO)) {
      sigaction(SIGPIPE, &pipe_saved, NULL);
      pipe_installed = 0;
    }
  }
  installed = 1;
  return 0;
}


/* ---- the list, its lock, and routing ---- */

static int lock_try(void) {
  return __atomic_exchange_n(&list_lock, 1, __ATOMIC_ACQUIRE) == 0;
}

/* Normal code only. The holder is another thread's normal code (never this
** thread's: the handler does not spin), so it lets go soon. */
static void lock_take(void) {
  while (!lock_try()) sched_yield();
}

static int own_frame_exists(pid_t pid) {
  lg_frame *f;
  for (f = top_frame; f != NULL; f = f->older)
    if (f->owner == pid) return 1;
  return 0;
}

/*
** route (lock held): see the top. Returns the frame it went to, or NULL when
** this process has no frame left (the caller delivers it).
*/
static lg_frame *route(int sig, sig_atomic_t seq, pid_t pid) {
  lg_frame *f, *newest = NULL;
  for (f = top_frame; f != NULL; f = f->older) {
    if (f->owner != pid) continue;
    if (newest == NULL) {
      newest = f;
      if (cleaning_count == 0) break;
    }
    if (f->state == LG_FRAME_CLEANING) {    /* deferred for everyone */
      record_insert(&f->record, sig, seq);
      return f;
    }
  }
  if (newest == NULL) return NULL;
  record_insert(&newest->record, sig, seq);
  if (newest->state == LG_FRAME_ARMED) newest->state = LG_FRAME_STOPPING;
  if (newest->interrupt != NULL) {
    newest->interrupt(newest);    /* lands in the binding: lg_guard.c's guard_interrupt */
    kick_start(newest);           /* a blocking call restarted: cut it short */
  }
  return newest;
}

/*
** route_reason (lock held, normal code): route's twin for a stop that is not
** a signal, among the frames of 'group' only (another Lua state's cleanups do
** not defer it; the kick, being the process's, waits for them).
*/
static lg_frame *route_reason(const void *group, int reason, pid_t pid) {
  lg_frame *f, *newest = NULL;
  for (f = top_frame; f != NULL; f = f->older) {
    if (f->owner != pid || f->group != group) continue;
    if (newest == NULL) newest = f;
    if (f->state == LG_FRAME_CLEANING) {    /* deferred, like a signal */
      if (f->reason == 0) f->reason = reason;
      return f;
    }
  }
  if (newest == NULL) return NULL;
  if (newest->reason == 0) newest->reason = reason;
  if (newest->state == LG_FRAME_ARMED) newest->state = LG_FRAME_STOPPING;
  if (newest->interrupt != NULL) {
    newest->interrupt(newest);    /* lg_guard.c's guard_interrupt */
    kick_start(newest);
  }
  return newest;
}

/* A signal with no frame of ours to go to (a forked child that inherited our
** handler, or one racing the last close): as if we were not there. */
static void deliver_unowned(int sig) {
  int i = lg_signal_index(sig);
  if (installed && i >= 0 && installed_for[i]) sigaction(sig, &saved[i], NULL);
  kill(getpid(), sig);
}

/* Signal-handler context: reserve a slot in the pending ring, or count the
** signal when it is full (its order among the pending is then lost). */
static void pending_push(int sig, sig_atomic_t seq) {
  unsigned tail;
  for (;;) {
    unsigned head = __atomic_load_n(&pending_head, __ATOMIC_ACQUIRE);
    tail = __atomic_load_n(&pending_tail, __ATOMIC_ACQUIRE);
    if (tail - head >= PENDING_MAX) {
      int i = lg_signal_index(sig);
      if (i >= 0) __atomic_fetch_add(&pending_lost[i], 1, __ATOMIC_ACQ_REL);
      return;
    }
    if (__atomic_compare_exchange_n(&pending_tail, &tail, tail + 1, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
      break;
  }
  pending_seq[tail % PENDING_MAX] = seq;
  __atomic_store_n(&pending[tail % PENDING_MAX], sig, __ATOMIC_RELEASE);
}

static int pending_any(void) {
  int i;
  if (__atomic_load_n(&pending_head, __ATOMIC_ACQUIRE) !=
      __atomic_load_n(&pending_tail, __ATOMIC_ACQUIRE))
    return 1;
  for (i = 0; i < LG_SIGNAL_COUNT; i++)
    if (__atomic_load_n(&pending_lost[i], __ATOMIC_ACQUIRE) != 0) return 1;
  return 0;
}

/* Route one signal (lock held); one with no frame of ours to go to is
** delivered at once from the handler, or joins the orphans in normal code. */
static void route_or_orphan(int sig, sig_atomic_t seq, pid_t pid, int in_handler) {
  if (route(sig, seq, pid) != NULL) return;
  if (in_handler) deliver_unowned(sig);
  else record_insert(&orphans, sig, seq);
}

/* Route what is pending (lock held). */
static void drain(pid_t pid, int in_handler) {
  int i;
  for (;;) {
    unsigned head = __atomic_load_n(&pending_head, __ATOMIC_ACQUIRE);
    int sig;
    sig_atomic_t seq;
    if (head == __atomic_load_n(&pending_tail, __ATOMIC_ACQUIRE)) break;
    while ((sig = __atomic_load_n(&pending[head % PENDING_MAX], __ATOMIC_ACQUIRE)) == 0) {}
    seq = pending_seq[head % PENDING_MAX];
    __atomic_store_n(&pending[head % PENDING_MAX], 0, __ATOMIC_RELEASE);
    __atomic_store_n(&pending_head, head + 1, __ATOMIC_RELEASE);
    route_or_orphan(sig, seq, pid, in_handler);
  }
  for (i = 0; i < LG_SIGNAL_COUNT; i++) {
    while (__atomic_load_n(&pending_lost[i], __ATOMIC_ACQUIRE) > 0) {
      sig_atomic_t seq = __atomic_load_n(&arrivals, __ATOMIC_ACQUIRE);
      __atomic_fetch_sub(&pending_lost[i], 1, __ATOMIC_ACQ_REL);
      route_or_orphan(lg_signals[i], seq, pid, in_handler);   /* its order was lost */
    }
  }
}

/* Let go of the lock; whatever arrived meanwhile is routed by whoever holds
** it next, or here. */
static void lock_give(pid_t pid, int in_handler) {
  for (;;) {
    __atomic_store_n(&list_lock, 0, __ATOMIC_RELEASE);
    if (!pending_any() || !lock_try()) return;
    drain(pid, in_handler);
  }
}

/* Normal code, no lock held: deliver the orphans, in arrival order. */
static void deliver_orphans(void) {
  int list[LG_RECORD_LIST_MAX], n, i;
  if (orphans.length == 0) return;
  lock_take();
  n = lg_record_list(&orphans, list);
  memset(&orphans, 0, sizeof orphans);
  lock_give(lg_pid(), 0);
  for (i = 0; i < n; i++) deliver_unowned(list[i]);
}

/*
** The handler. Async-signal-safe only: getpid, sigaction, kill, raise,
** timer_settime, lock-free atomics and sig_atomic_t state; the interrupt
** callback obeys the same rule. Our six signals are in sa_mask, so it never
** runs nested with itself in one thread.
*/
static void on_signal(int sig) {
  int saved_errno = errno;
  pid_t pid = getpid();
  sig_atomic_t seq = __atomic_add_fetch(&arrivals, 1, __ATOMIC_ACQ_REL);
  if (!lock_try()) pending_push(sig, seq);  /* the holder routes it */
  else {
    route_or_orphan(sig, seq, pid, 1);
    lock_give(pid, 1);
  }
  errno = saved_errno;
}


/* ---- transitions ---- */

/* In a forked child: no timer, no kick, no cleanup of ours running, and the
** lock (held, perhaps, by a thread that does not exist here) is free. */
static void after_fork(void) {
  kick_active = 0;
  cleaning_count = 0;
  list_lock = 0;
  pending_head = pending_tail = 0;
  memset((void *)pending, 0, sizeof pending);
  memset((void *)pending_lost, 0, sizeof pending_lost);
}

int lg_frame_arm(lg_frame *f, lg_interrupt_fn interrupt, const void *group) {
  static int fork_hooked;
  pid_t pid = lg_pid();
  int rc = 0;
  if (!fork_hooked) {
    lg_pid_on_fork(after_fork);
    fork_hooked = 1;
  }
  memset(f, 0, sizeof *f);
  f->owner = pid;
  f->tid = current_tid();
  f->group = group;
  f->interrupt = interrupt;
  f->state = LG_FRAME_ARMED;
  lock_take();
  if (!installed) rc = install();
  else if (kick_signal != 0 &&
           (kick_timer_owner != pid ||
            (kick_timer_tid != current_tid() && syscall(SYS_tgkill, pid, (pid_t)kick_timer_tid, 0) != 0))) {
    /* a forked child inherits our handler, not the kick's timer; and the
    ** thread the timer signals may be gone (on_kick passes kicks on there) */
    int sig = kick_signal;
    kick_signal = 0;
    if (kick_make_timer(sig) == 0) kick_signal = sig;
    else rc = set_restart(want_restart());
  }
  if (rc == 0) {
    /* a kick passed on to a thread blocking it would wait there, then meet
    ** SIG_DFL; the timer's own thread needs no check (nor its syscall) */
    if (kick_signal != 0 && f->tid != kick_timer_tid && thread_blocks(kick_signal))
      f->tid = 0;
    f->older = top_frame;
    if (top_frame != NULL) top_frame->newer = f;
    top_frame = f;          /* linked only once complete */
  }
  else f->state = LG_FRAME_CLOSED;
  lock_give(pid, 0);
  deliver_orphans();
  return rc;
}

void lg_frame_begin_cleanup(lg_frame *f) {
  pid_t pid = lg_pid();
  if (f->state == LG_FRAME_CLEANING || f->state == LG_FRAME_CLOSED) return;
  lock_take();
  f->state = LG_FRAME_CLEANING;
  if (f->owner == pid && cleaning_count++ == 0) {
    lg_signal_kick_stop();
    if (installed && kick_signal == 0) set_restart(1);
  }
  lock_give(pid, 0);
  deliver_orphans();
}

static void unlink_frame(lg_frame *f) {
  if (f->newer != NULL) f->newer->older = f->older;
  else top_frame = f->older;
  if (f->older != NULL) f->older->newer = f->newer;
  f->older = f->newer = NULL;
}

/* The process dies here with default dispositions: stdio first (death by a
** signal skips exit's flush), with SIGPIPE held off so a closed stdout does
** not change which signal it dies by. */
static void deliver(const lg_record *r) {
  int list[LG_RECORD_LIST_MAX], n = lg_record_list(r, list), i;
  struct sigaction ignore, before;
  if (n == 0) return;
  memset(&ignore, 0, sizeof ignore);
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  if (sigaction(SIGPIPE, &ignore, &before) == 0) {
    fflush(NULL);
    sigaction(SIGPIPE, &before, NULL);
  }
  else fflush(NULL);
  for (i = 0; i < n; i++)
    kill(getpid(), list[i]);  /* not raise(): that targets one thread only */
}

int lg_frame_close(lg_frame *f) {
  pid_t pid = lg_pid();
  int rc = 0, last = 0;
  if (f->state == LG_FRAME_CLOSED) return 0;
  lock_take();
  unlink_frame(f);
  if (f->owner == pid) {
    if (f->state == LG_FRAME_CLEANING && --cleaning_count == 0 &&
        installed && kick_signal == 0)
      rc = set_restart(0);
    f->state = LG_FRAME_CLOSED;
    lg_signal_kick_stop();
    if (own_frame_exists(pid)) {             /* route the record again */
      int list[LG_RECORD_LIST_MAX], n = lg_record_list(&f->record, list), i;
      sig_atomic_t now = __atomic_load_n(&arrivals, __ATOMIC_ACQUIRE);
      for (i = 0; i < n; i++)
        route(list[i], i < LG_RECORD_ORDER_MAX && i < f->record.length ? f->record.seq[i] : now, pid);
      if (f->reason != 0) route_reason(f->group, f->reason, pid);   /* or dropped */
    }
    else {
      last = 1;
      rc = restore_dispositions();
    }
  }
  else f->state = LG_FRAME_CLOSED;   /* forked child: never act for the parent */
  {
    int err = errno;
    lock_give(pid, 0);
    if (last) deliver(&f->record);
    deliver_orphans();
    errno = err;
  }
  return rc;
}

int lg_frame_stop(const void *group, int reason) {
  pid_t pid = lg_pid();
  lg_frame *f;
  lock_take();
  f = route_reason(group, reason, pid);
  lock_give(pid, 0);
  deliver_orphans();
  return f != NULL;
}

void lg_frames_lock(void) { lock_take(); }

void lg_frames_unlock(void) {
  lock_give(lg_pid(), 0);
  deliver_orphans();
}

lg_frame *lg_frame_top(void) {
  pid_t pid = lg_pid();
  lg_frame *f = top_frame;
  while (f != NULL && f->owner != pid) f = f->older;
  return f;
}

lg_frame *lg_frame_older(const lg_frame *f) {
  pid_t pid = lg_pid();
  lg_frame *o = f->older;
  while (o != NULL && o->owner != pid) o = o->older;
  return o;
}

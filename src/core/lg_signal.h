/*
** lg_signal.h — the signal-deferral core: a stack of armed frames.
** Pure C, no Lua headers. See lg_signal.c for the why.
*/
#ifndef LG_SIGNAL_H
#define LG_SIGNAL_H

#include <signal.h>
#include <sys/types.h>

/* SIGTERM SIGINT SIGHUP SIGQUIT SIGXCPU SIGXFSZ */
#define LG_SIGNAL_COUNT 6
/* Arrivals kept in order; beyond this, per-signal counters still see them. */
#define LG_RECORD_ORDER_MAX 64
/* Longest list lg_record_list() can produce. */
#define LG_RECORD_LIST_MAX (LG_RECORD_ORDER_MAX + LG_SIGNAL_COUNT)

/* What a frame has received: written by the signal handler, so sig_atomic_t. */
typedef struct lg_record {
  volatile sig_atomic_t order[LG_RECORD_ORDER_MAX];
  volatile sig_atomic_t length;                  /* arrivals, may exceed the array */
  volatile sig_atomic_t counts[LG_SIGNAL_COUNT]; /* per signal, never dropped */
} lg_record;

/* Called from the signal handler when the innermost frame's body should stop:
** it may touch only sig_atomic_t state, async-signal-safe calls, lua_sethook. */
typedef void (*lg_interrupt_fn)(void *ud);

typedef struct lg_frame {
  struct lg_frame *volatile outer;  /* next older armed frame */
  lg_record record;
  pid_t owner;                      /* process that armed it */
  lg_interrupt_fn interrupt;
  void *interrupt_ud;
  int linked;
  int deferring;                    /* signals only recorded (defer/begin_cleanup) */
  int restarting;                   /* and system calls restart (begin_cleanup) */
} lg_frame;

/* The handled signals, in SPEC order; lg_signal_index(sig) is -1 for others. */
extern const int lg_signals[LG_SIGNAL_COUNT];
int lg_signal_index(int sig);
/* "SIGTERM" for SIGTERM; NULL for a signal that is not handled. */
const char *lg_signal_name(int sig);

/*
** Arm f (its memory must stay valid until lg_frame_close). The first frame of a
** process installs the handler for every handled signal not SIG_IGN and saves
** what it replaced; a nested one costs no system call. 0, or -1 with errno.
*/
int lg_frame_arm(lg_frame *f, lg_interrupt_fn interrupt, void *ud);

/* From now on signals are only recorded (no interrupt) and the kick stops;
** no system call unless a kick was running. For a host about to close its
** Lua state. Idempotent per frame. */
int lg_frame_defer(lg_frame *f);

/* As lg_frame_defer, and system calls that signals interrupt restart (our
** handler has SA_RESTART; in the fallback without a kick timer, the first
** such frame re-installs it so). Call before running cleanups. Idempotent
** per frame. */
int lg_frame_begin_cleanup(lg_frame *f);

/*
** Unlink f. In the process that armed it: hand its record to the next older
** frame of this process (interrupting it unless told not to or it is cleaning);
** with none left, flush stdio, restore the saved dispositions and re-deliver
** every recorded signal, in arrival order (by default the process dies there).
** In a forked child it only unlinks. Idempotent. 0, or -1 with errno when a
** disposition could not be restored (delivery still happens).
*/
int lg_frame_close(lg_frame *f, int interrupt_outer);

/* The next older armed frame of this process below f, or NULL. */
lg_frame *lg_frame_outer(const lg_frame *f);
/* The innermost armed frame of this process, or NULL. */
lg_frame *lg_frame_top(void);

/* Fill out[] with the record's signals in arrival order (overflowing arrivals
** once each, in first-arrival order); returns how many. out needs
** LG_RECORD_LIST_MAX slots. */
int lg_record_list(const lg_record *r, int *out);

/* Counts every handled arrival: a waiter compares before and after. */
unsigned long lg_signal_arrivals(void);
/* Nonzero while some frame runs cleanups (signals only recorded). */
int lg_signal_cleaning(void);
/* This process's pid, cached (refreshed in forked children). */
pid_t lg_signal_pid(void);

/* The body has stopped (its SignalExit is raised): stop kicking blocking
** calls (see lg_signal.c). No system call unless a kick is running. */
void lg_signal_kick_stop(void);
/* The real-time signal the kick uses while a frame is armed; 0 for none
** (the fallback: no SA_RESTART in bodies, switched on for cleanups). */
int lg_signal_kick_signal(void);
/* Tests: whether the next install may use a kick (default 1). */
void lg_signal_use_kick(int enabled);

#endif

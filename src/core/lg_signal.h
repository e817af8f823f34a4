/*
** lg_signal.h — the signal-deferral core: frames armed and closed in any
** order, signals routed, deferred during cleanups and re-delivered.
** Pure C, no Lua headers. The state machine is written down in
** tests/model/deferral.pml (checked by spin); the names below are its names.
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

/* What a frame has received: written by the signal handler, so sig_atomic_t.
** Kept in arrival order (by each arrival's number, 'seq'): a close that routes
** its record into a frame holding later arrivals merges, it does not append. */
typedef struct lg_record {
  volatile sig_atomic_t order[LG_RECORD_ORDER_MAX];
  volatile sig_atomic_t seq[LG_RECORD_ORDER_MAX];  /* arrival numbers (wrapping) */
  volatile sig_atomic_t length;                  /* arrivals, may exceed the array */
  volatile sig_atomic_t counts[LG_SIGNAL_COUNT]; /* per signal, never dropped */
} lg_record;

/*
** A frame's life (the model's FRAME_* states):
**   ARMED     its block runs (or is suspended); a signal routed here stops it
**   STOPPING  a signal was routed here: its owner has been asked to stop
**   CLEANING  its cleanups run: every signal of the process is deferred to it
**   CLOSED    unlinked; what it recorded went on (re-routed, or re-delivered)
*/
enum { LG_FRAME_CLOSED, LG_FRAME_ARMED, LG_FRAME_STOPPING, LG_FRAME_CLEANING };

typedef struct lg_frame lg_frame;

/* Asks the owner of f to stop its block. Runs in the signal handler (or in
** normal code when a close re-routes a signal): it may touch only
** sig_atomic_t state, async-signal-safe calls and lua_sethook. */
typedef void (*lg_interrupt_fn)(lg_frame *f);

struct lg_frame {
  lg_frame *volatile older;         /* the process's frames, newest first */
  lg_frame *volatile newer;
  lg_record record;                 /* signals routed to it, in arrival order */
  volatile sig_atomic_t state;      /* LG_FRAME_* */
  volatile sig_atomic_t reason;     /* a stop that is not a signal (lg_frame_stop); 0: none */
  pid_t owner;                      /* process that armed it */
  pid_t tid;                        /* thread that armed it: the kick goes there */
  const void *group;                /* whose it is (the binding's Lua state) */
  lg_interrupt_fn interrupt;        /* NULL: record only */
};

/* The handled signals, in SPEC order; lg_signal_index(sig) is -1 for others. */
extern const int lg_signals[LG_SIGNAL_COUNT];
int lg_signal_index(int sig);
/* "SIGTERM" for SIGTERM; NULL for a signal that is not handled. */
const char *lg_signal_name(int sig);

/*
** arm: link f as the newest frame (f's memory must stay valid until
** lg_frame_close), in 'group' (who it belongs to: a stop with a reason stays
** among one group's frames; signals go to any). The first frame of a process
** installs the handler for every handled signal not SIG_IGN (and SIGPIPE,
** see lg_signal.c) and saves what it replaced; any other arm costs no system
** call. 0, or -1 with errno.
*/
int lg_frame_arm(lg_frame *f, lg_interrupt_fn interrupt, const void *group);

/*
** stop: a reason to stop that is not a signal (a lease lost), for the frames
** of 'group': routed like a signal, but only among them. To the group's
** innermost CLEANING frame (deferred until it closes), else to its newest
** frame, which turns STOPPING and is asked to stop (interrupt, kick). A
** frame keeps the first reason it gets; its close routes it on within the
** group, and the group's last close drops it (nothing to re-deliver: the
** binding raises the reason's error instead). 'reason' is the binding's
** nonzero number. Normal code, any thread. 1 when a frame took it, 0 when
** the group has none.
*/
int lg_frame_stop(const void *group, int reason);

/*
** begin_cleanup: f's cleanups are about to run (or, for a host's outer frame,
** its Lua state is about to close). From now until f closes, every signal of
** the process is recorded in the innermost CLEANING frame and interrupts
** nothing, a blocking call restarts, and SIGPIPE is ignored. Idempotent.
*/
void lg_frame_begin_cleanup(lg_frame *f);

/*
** close: unlink f, in any order. What f recorded is routed again as if it
** arrived now (to the innermost CLEANING frame, else to the newest frame,
** which is asked to stop). With no frame of this process left: the saved
** dispositions come back (one the program changed meanwhile is left as it
** set it), stdio is flushed and every recorded signal is re-delivered in
** arrival order (with default dispositions the process dies here). In a
** forked child, a frame of the parent is only unlinked. Idempotent.
** 0, or -1 with errno when a disposition could not be restored.
*/
int lg_frame_close(lg_frame *f);

/* The frames of this process, newest first: lg_frame_top(), then
** lg_frame_older(f) until NULL. Normal code only; a frame another thread
** closes meanwhile is not to be followed (the binding runs Lua states one
** thread each, and each walks only while it owns no lock on the list). */
lg_frame *lg_frame_top(void);
lg_frame *lg_frame_older(const lg_frame *f);

/* The list's lock, for a user whose own data the interrupt callback reads
** (the binding's set of coroutines): normal code only, held briefly, no
** call into Lua while held. */
void lg_frames_lock(void);
void lg_frames_unlock(void);

/* Fill out[] with the record's signals in arrival order (overflowing arrivals
** once each, in first-arrival order); returns how many. out needs
** LG_RECORD_LIST_MAX slots. */
int lg_record_list(const lg_record *r, int *out);

/* Nonzero while some frame is CLEANING (signals only recorded). */
int lg_signal_cleaning(void);

/* A body has stopped (its stop error is raised): stop kicking blocking calls
** (see lg_signal.c). No system call unless a kick is running. */
void lg_signal_kick_stop(void);
/* The real-time signal the kick uses while a frame is armed; 0 for none
** (the fallback: no SA_RESTART in bodies, switched on for cleanups). */
int lg_signal_kick_signal(void);
/* Tests: whether the next install may use a kick (default 1). */
void lg_signal_use_kick(int enabled);

#endif

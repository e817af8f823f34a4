/*
** lg_guard.h — a core frame bound to a Lua thread: what stops a guarded
** block (hook, kick, SignalExit) and what closes it. lg_guard.c tells the
** whole path of a signal; the Handler type (lg_handler.c) and the host's
** outer frame are its two users.
*/
#ifndef LG_GUARD_H
#define LG_GUARD_H

#include <signal.h>

#include <lua.h>

#include "lg_signal.h"

typedef struct lg_guard lg_guard;
typedef struct lg_state lg_state;

/* Closes g's handler as by the signal (its cleanups run, LIFO), with the
** handler's Lua value found from g. Called by the guard when a block that
** can no longer be reached (a suspended or dead coroutine's, or any at the
** REPL) must be closed: lg_handler.c's handler_close_stopped. */
typedef void (*lg_guard_close_fn)(lua_State *L, lg_guard *g);

struct lg_guard {
  lg_frame frame;                  /* first member: the core links it */
  lua_State *thread;               /* armed there */
  lg_state *state;                 /* its Lua state's guard data */
  lg_guard_close_fn close_stopped; /* NULL for the host's outer frame */
  volatile sig_atomic_t in_flight; /* its SignalExit is on its way */
  volatile sig_atomic_t reraise;   /* a protected call swallowed it */
  int stop_ref;                    /* registry ref of that SignalExit */
  int raised_at;                   /* the thread's stack depth where it was raised */
  int handed_on;                   /* in flight, handed on from a guard of another thread */
  lua_Hook user_hook;              /* the thread's own hook, put back after */
  int user_mask, user_count;
};

/* Arm g on thread L. Stack: [-0, +0, m]. 0, or -1 with errno. */
int lg_guard_arm(lua_State *L, lg_guard *g, lg_guard_close_fn close_stopped);
/* Nonzero when g's block was stopped (a signal reached it). */
int lg_guard_stopped(const lg_guard *g);
/* Its cleanups start: signals are deferred, the hook is the user's again. */
void lg_guard_begin_cleanup(lg_guard *g);
/* Unlink g; a SignalExit on its way goes on to the next guard of the state.
** Stack: [-0, +0, m] */
void lg_guard_close(lua_State *L, lg_guard *g);

/* If a handled signal (or a reason) asks L's state to stop, do now what the hook would do
** at the next instruction (children stopped, SignalExit raised); otherwise
** return 0. For waits in C (a lock, a child), cut short by the signal or the
** kick. */
int lg_guard_raise_pending(lua_State *L);
/* Nonzero when such a stop is pending (a wait in C should end). */
int lg_guard_stop_wanted(lua_State *L);

/*
** Stops that are not signals (a lease lost). The owner takes a reason
** number (lg_guard_new_reason, process-wide, nonzero), registers the error
** its stop raises (lg_guard_set_stop_error, in L's state), and, when the time
** comes, asks the frames of L's state (lg_guard_group) to stop: from any
** thread, no Lua (lg_guard_request_stop, the core's lg_frame_stop). The
** block then stops as for a signal: children first, the error raised at the
** next instruction (a blocking call cut short by the kick), unswallowable in
** the block, cleanups LIFO; the error goes on past the last guard (it is not
** re-delivered: nothing ends the process by a signal).
*/
int lg_guard_new_reason(void);
const void *lg_guard_group(lua_State *L);
void lg_guard_set_stop_error(lua_State *L, int reason);   /* Stack: [-1, +0, m] */
int lg_guard_request_stop(const void *group, int reason);

/*
** The same, for a module built apart (luaguard/lease.so, loaded on first
** use): it cannot link the guard's symbols (only luaguard.h's are exported),
** so the core leaves this table in the registry under LG_GUARD_API_KEY, as a
** light userdata, and the module checks 'version' before using it.
*/
#define LG_GUARD_API_KEY "luaguard.guard_api"
#define LG_GUARD_API_VERSION 1
typedef struct lg_guard_api {
  int version;
  const char *luaguard_version;             /* LUAGUARD_VERSION of the core */
  const void *(*group)(lua_State *L);
  int (*new_reason)(void);
  void (*set_stop_error)(lua_State *L, int reason);
  int (*request_stop)(const void *group, int reason);
  int (*raise_pending)(lua_State *L);
  int (*stop_wanted)(lua_State *L);
} lg_guard_api;

/* Registers what the guard needs in L's state (once per state). */
void lg_open_guard(lua_State *L);
/* At lua_close, last: close every frame of the state still armed (those made
** too late to be finalized, and the host's outer frame). */
void lg_sweep_guards(lua_State *L);

#endif

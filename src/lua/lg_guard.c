/*
** lg_guard.c — stopping a guarded block, and closing it.
**
** A guard is a core frame (lg_signal.c) plus what Lua needs: the thread it
** was armed on, its state's guard data, and the SignalExit on its way. The
** whole path of a signal, in the two files a reader needs (names to grep):
**
**  1. lg_signal.c on_signal -> route: the signal is recorded in the newest
**     frame (or, while cleanups run, in the cleaning frame: deferred, and the
**     path ends here until that frame closes, step 6).
**  2. route calls the frame's interrupt, guard_interrupt (below): lua_sethook
**     (count 1) on the guard's thread, its state's main thread and every
**     coroutine of the state (track_alloc knows them); and kick_start, so a
**     blocking call returns EINTR 0.2 ms later.
**  3. guard_hook runs at the next Lua instruction of whichever thread runs:
**     - on a thread with an armed guard: guards of the state armed later on
**       threads that cannot run now (suspended or dead coroutines) are closed
**       as by the signal (close_abandoned), then raise_stop raises the
**       SignalExit there (in flight; a return hook stays on);
**     - on the main thread with no guard of its own (module mode, the guards
**       sit in suspended coroutines): stop_state closes every armed handler
**       of the state as by the signal; the last close re-delivers;
**     - in a coroutine with no guard of its own: it is stopped (a SignalExit
**       at each instruction until it is dead), and its resumer's block next.
**  4. A protected call (pcall, xpcall, coroutine.resume) that returns while
**     the guard is in flight swallowed the SignalExit: guard_hook raises the
**     same object again at the next instruction - in a coroutine with no
**     guard of its own resumed inside the guard's block too (the error was
**     handed on to the guard from there: hook_resume_chain).
**  5. Closing the handler (lg_handler.c handler_close): lg_guard_begin_cleanup
**     (signals deferred), the cleanups LIFO, then lg_guard_close: the core's
**     lg_frame_close re-routes what the frame recorded (step 1, to the next
**     frame, which is asked to stop: the SignalExit goes on), and the in-flight
**     SignalExit is handed to the next guard of the state.
**  6. The last frame's close restores the dispositions and re-delivers every
**     signal (lg_signal.c deliver): with SIG_DFL the process dies by it.
**
** A stop that is not a signal (a lease lost, lg_lease.c) has a reason:
** lg_guard_request_stop -> lg_signal.c lg_frame_stop -> route_reason, which
** is step 1 among this state's frames only, then steps 2 to 5 as above with
** the reason's error (LeaseLost) for the SignalExit (pending_stop,
** push_stop_error); at step 6 there is nothing to re-deliver, the error goes
** on.
*/
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "luaguard.h"
#include "lg_child.h"
#include "lg_common.h"
#include "lg_guard.h"

/*
** What the guards of one Lua state share. Malloc'd, not Lua memory: it is the
** user data of the state's allocator (below), which Lua calls until the very
** end of lua_close; it is freed with the state's last block.
**
** The coroutines. A signal must stop a coroutine that armed no guard of its
** own but runs inside a guarded block (resumed from it), and the handler has
** no way to ask Lua which thread runs. The allocator knows every thread: Lua
** passes osize == LUA_TTHREAD when it makes one (the manual's lua_Alloc), and
** the thread's lua_State follows its LUA_EXTRASPACE bytes (lua_getextraspace).
** So the state's allocator is wrapped, the set of its coroutines kept (an
** open-addressing table, changed under the core's list lock, which the
** handler holds while it reads it), and guard_interrupt hooks them all.
*/
struct lg_state {
  lua_State *main;
  volatile sig_atomic_t closed;     /* swept: nothing may touch the state */
  volatile sig_atomic_t off_main;   /* armed guards on other threads than main */
  lua_Hook main_hook;               /* the main thread's own hook */
  int main_mask, main_count;
  lua_Alloc base_alloc;             /* the allocator we wrap */
  void *base_ud;
  void *last_block;                 /* the state's own block: freed last */
  size_t thread_size;               /* what Lua allocates for a thread */
  volatile sig_atomic_t tracking;   /* our allocator is still the state's */
  lua_State *stopping;              /* a coroutine stopped inside a block (step 4) */
  lua_State **threads;              /* the coroutines: NULL slots are free */
  size_t nthreads, capacity;        /* capacity: 0 or a power of two */
};

#define STATE_KEY "luaguard.guard_state"
#define STOP_ERRORS_KEY "luaguard.stop_errors"   /* reason -> its error (a table) */

/* The protected-call builtins, to tell a swallowed SignalExit (step 4). */
static lua_CFunction pcall_fn, xpcall_fn, resume_fn;

static lg_guard outer_guard;       /* the host's frame (luaguard.h) */

static void guard_interrupt(lg_frame *f);
static void guard_hook(lua_State *L, lua_Debug *ar);
static int resuming(lua_State *co, const lua_State *running);


static lg_guard *as_guard(lg_frame *f) {
  return (f != NULL && f->interrupt == guard_interrupt) ? (lg_guard *)f : NULL;
}

static int is_open(const lg_guard *g) {
  return g->frame.state == LG_FRAME_ARMED || g->frame.state == LG_FRAME_STOPPING;
}


/* ---- the coroutines of a state (lock held for every change) ---- */

static size_t slot_of(const lg_state *st, const lua_State *co) {
  return ((size_t)co >> 4) * 2654435761u & (st->capacity - 1);
}

static void threads_put(lg_state *st, lua_State *co) {
  size_t i = slot_of(st, co);
  while (st->threads[i] != NULL) i = (i + 1) & (st->capacity - 1);
  st->threads[i] = co;
  st->nthreads++;
}

/* Room for one more, keeping the table at most half full; 0 without memory
** (the coroutine is then not tracked: only stopped when it yields). */
static int threads_grow(lg_state *st) {
  size_t old = st->capacity, i;
  lua_State **was = st->threads, **now;
  if (2 * (st->nthreads + 1) <= old) return 1;
  now = (lua_State **)calloc(old == 0 ? 16 : 2 * old, sizeof *now);
  if (now == NULL) return 0;
  st->threads = now;
  st->capacity = old == 0 ? 16 : 2 * old;
  st->nthreads = 0;
  for (i = 0; i < old; i++)
    if (was[i] != NULL) threads_put(st, was[i]);
  free(was);
  return 1;
}

/* Remove co, moving back the entries after it (no tombstones). */
static void threads_remove(lg_state *st, const lua_State *co) {
  size_t i, j, mask = st->capacity - 1;
  if (st->capacity == 0) return;
  for (i = slot_of(st, co); st->threads[i] != co; i = (i + 1) & mask)
    if (st->threads[i] == NULL) return;
  st->threads[i] = NULL;
  st->nthreads--;
  for (j = (i + 1) & mask; st->threads[j] != NULL; j = (j + 1) & mask) {
    lua_State *moved = st->threads[j];
    st->threads[j] = NULL;
    st->nthreads--;
    threads_put(st, moved);
  }
}

/*
** The state's allocator (lua_setallocf in state_of): the base one does the
** work; a thread made or freed is added to or removed from st->threads, and
** the state's own block, freed last by lua_close, takes st with it.
*/
static void *track_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  lg_state *st = (lg_state *)ud;
  void *block;
  if (ptr == NULL && osize == LUA_TTHREAD && nsize > 0) {
    block = st->base_alloc(st->base_ud, NULL, osize, nsize);
    if (block != NULL) {
      lg_frames_lock();
      st->thread_size = nsize;
      if (threads_grow(st)) threads_put(st, (lua_State *)((char *)block + LUA_EXTRASPACE));
      lg_frames_unlock();
    }
    return block;
  }
  if (ptr != NULL && nsize == 0) {
    if (ptr == st->last_block) {            /* lua_close's very last call */
      lua_Alloc base = st->base_alloc;
      void *base_ud = st->base_ud;
      lg_frames_lock();
      st->tracking = 0;
      lg_frames_unlock();
      free(st->threads);
      free(st);
      return base(base_ud, ptr, osize, 0);
    }
    if (osize == st->thread_size && st->nthreads > 0) {
      lg_frames_lock();
      threads_remove(st, (lua_State *)((char *)ptr + LUA_EXTRASPACE));
      lg_frames_unlock();
    }
  }
  return st->base_alloc(st->base_ud, ptr, osize, nsize);
}

/* Whether st's set of coroutines is still right: another library may have
** put its own allocator in after ours, and then the set is dropped. */
static void check_tracking(lua_State *L, lg_state *st) {
  void *ud;
  if (st->tracking && (lua_getallocf(L, &ud) != track_alloc || ud != st)) {
    lg_frames_lock();
    st->tracking = 0;
    lg_frames_unlock();
  }
}

/*
** At lua_close, from the sentinel: the base allocator goes back and st with
** it. Under stock lua5.4, luaguard/core.so is unloaded by a finalizer that
** runs after ours (package's), while Lua still frees memory: the allocator
** must not point into it then. If another library wrapped our allocator,
** st stays (its wrapper still calls ours) and is freed with the last block.
*/
static void give_back_allocator(lua_State *L, lg_state *st) {
  void *ud;
  lg_frames_lock();
  st->tracking = 0;
  lg_frames_unlock();
  if (lua_getallocf(L, &ud) != track_alloc || ud != st) return;
  lua_setallocf(L, st->base_alloc, st->base_ud);
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, STATE_KEY);
  free(st->threads);
  free(st);
}

/* L's state's guard data, made on first use. Stack: [-0, +0, m] */
static lg_state *state_of(lua_State *L) {
  lg_state *st;
  if (lua_getfield(L, LUA_REGISTRYINDEX, STATE_KEY) == LUA_TLIGHTUSERDATA) {
    st = (lg_state *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    return st;
  }
  lua_pop(L, 1);
  st = (lg_state *)calloc(1, sizeof *st);
  if (st == NULL) luaL_error(L, "not enough memory");
  st->main = lg_main_thread(L);
  st->last_block = (char *)st->main - LUA_EXTRASPACE;
  st->base_alloc = lua_getallocf(L, &st->base_ud);
  st->tracking = 1;
  lua_pushlightuserdata(L, st);
  lua_setfield(L, LUA_REGISTRYINDEX, STATE_KEY);
  lua_setallocf(L, track_alloc, st);
  return st;
}


/*
** Step 2, signal-handler context: only lua_sethook and sig_atomic_t state.
** The main thread is hooked too: it stops the state when the guard's thread
** cannot run (step 3). Guards on other threads (coroutines) are walked only
** when the state has some, so nested guards on one thread stop in O(1) each.
*/
static void guard_interrupt(lg_frame *f) {
  lg_guard *g = (lg_guard *)f;
  lg_state *st = g->state;
  size_t i;
  /* count 1: the next instruction; ret: a guard in flight keeps catching a
  ** protected call that swallows its SignalExit (step 4) */
  const int mask = LUA_MASKCOUNT | LUA_MASKRET;
  if (st->closed) return;
  lua_sethook(g->thread, guard_hook, mask, 1);
  lua_sethook(st->main, guard_hook, mask, 1);
  if (st->off_main > 0) {
    lg_frame *o;
    for (o = f->older; o != NULL; o = o->older) {
      lg_guard *other = as_guard(o);
      if (other != NULL && other->state == st && o->owner == f->owner)
        lua_sethook(other->thread, guard_hook, mask, 1);
    }
  }
  if (st->tracking)                 /* the list lock is held: the set is stable */
    for (i = 0; i < st->capacity; i++)
      if (st->threads[i] != NULL) lua_sethook(st->threads[i], guard_hook, mask, 1);
}

/* What newest_guard looks for, besides an open guard of the state. */
enum {
  ANY_GUARD = 0,
  HANDLER_GUARD = 1,     /* a handler's (not the host's outer frame) */
  STOPPED_GUARD = 2,     /* a signal reached it (lg_guard_stopped) */
  UNACTED_GUARD = 4,     /* asked to stop, its SignalExit not yet raised */
  IN_FLIGHT_GUARD = 8,   /* its stop error is on its way (raised or handed on) */
  STUCK_THREAD_GUARD = 16 /* its thread cannot run now (ended by an error, or
                          ** suspended: its error was handed on to it there) */
};

/*
** The newest open guard of this process of state st (any state when NULL) on
** thread 'thread' (any when NULL), newer than 'limit' (when given), with
** what 'want' asks. Every walk of the guard's list is this one.
*/
static lg_guard *newest_guard(const lg_state *st, const lua_State *thread,
                              const lg_guard *limit, int want) {
  const lg_frame *stop = limit != NULL ? &limit->frame : NULL;
  lg_frame *f;
  for (f = lg_frame_top(); f != NULL && f != stop; f = lg_frame_older(f)) {
    lg_guard *g = as_guard(f);
    if (g == NULL || !is_open(g)) continue;
    if ((st != NULL && g->state != st) || (thread != NULL && g->thread != thread)) continue;
    if ((want & HANDLER_GUARD) && g->close_stopped == NULL) continue;
    if ((want & STOPPED_GUARD) && !lg_guard_stopped(g)) continue;
    if ((want & UNACTED_GUARD) && (f->state != LG_FRAME_STOPPING || g->in_flight ||
                                   (f->record.length == 0 && f->reason == 0))) continue;
    if ((want & IN_FLIGHT_GUARD) && !g->in_flight) continue;
    if ((want & STUCK_THREAD_GUARD) && lua_status(g->thread) == LUA_OK) continue;
    return g;
  }
  return NULL;
}

/* The innermost armed guard of this process on thread L. */
static lg_guard *guard_of_thread(lua_State *L) {
  return newest_guard(NULL, L, NULL, ANY_GUARD);
}

/*
** Why a guard of st was asked to stop and has not acted on it: a signal (its
** number, returned), or a reason (lg_frame_stop: *reason set, 0 returned).
** A signal wins: the process ends by it anyway. Nonzero when there is a stop.
*/
typedef struct { int sig, reason; } stop_cause;

/*
** A guard whose stop error cannot reach its block: the error ended its
** coroutine (coroutine.resume returned it: caught outside the guard), or was
** handed on to it (step 5) while its coroutine is suspended. Its handlers are
** still armed there, and no instruction of that block runs now: the stop goes
** on from whichever thread of st runs next, as when no armed block is running.
*/
static lg_guard *stop_left_in_stuck_thread(const lg_state *st) {
  return newest_guard(st, NULL, NULL, IN_FLIGHT_GUARD | STUCK_THREAD_GUARD);
}

static int pending_stop(const lg_state *st, stop_cause *why) {
  lg_guard *g = newest_guard(st, NULL, NULL, UNACTED_GUARD);
  why->sig = why->reason = 0;
  if (g == NULL) g = stop_left_in_stuck_thread(st);
  if (g == NULL) return 0;
  if (g->frame.record.length > 0) why->sig = g->frame.record.order[0];
  else why->reason = g->frame.reason;
  return 1;
}

static void save_user_hook(lg_guard *g, lua_State *L) {
  lua_Hook h = lua_gethook(L);
  if (h == guard_hook) {    /* ours is in: keep what an older guard saved */
    lg_guard *older = guard_of_thread(L);
    if (older != NULL && older != g) {
      g->user_hook = older->user_hook;
      g->user_mask = older->user_mask;
      g->user_count = older->user_count;
    }
    return;
  }
  g->user_hook = h;
  g->user_mask = lua_gethookmask(L);
  g->user_count = lua_gethookcount(L);
}

/* Whether a guard on thread L other than 'leaving' (one being closed) has
** its stop error on its way (step 4 needs that thread's return hook). One
** guard of a thread is in flight at a time: raised in the innermost, handed
** on only once it closes. */
static int in_flight_on(const lua_State *L, const lg_guard *leaving) {
  const lg_guard *o = newest_guard(NULL, L, NULL, IN_FLIGHT_GUARD);
  return o != NULL && o != leaving;
}

/*
** Put the thread's own hook back (nothing left to stop there; g's saved
** one, g the innermost guard on L, or 'leaving' as it closes) - unless a
** guard of the thread is in flight: a handler armed and closed while a
** SignalExit unwinds (in a __close on its way) must leave the return hook
** that catches a pcall swallowing it, or the pcall keeps it.
*/
static void put_back_hook(lua_State *L, const lg_guard *g, const lg_state *st,
                          const lg_guard *leaving) {
  if (lua_gethook(L) != guard_hook) return;
  if (in_flight_on(L, leaving)) lua_sethook(L, guard_hook, LUA_MASKRET, 0);
  else if (g != NULL) lua_sethook(L, g->user_hook, g->user_mask, g->user_count);
  else if (st != NULL && L == st->main)
    lua_sethook(L, st->main_hook, st->main_mask, st->main_count);
  else lua_sethook(L, NULL, 0, 0);
}

/*
** The stop's error. A signal's: SignalExit (kind, signal, name; tostring
** "SignalExit: SIGTERM"). A reason's: what its owner registered
** (lg_guard_set_stop_error: LeaseLost), or a plain one should it be gone.
*/
static void push_stop_error(lua_State *L, const stop_cause *why) {
  const char *name;
  if (why == NULL) {        /* in flight with its error gone: cannot happen */
    lua_pushliteral(L, "stopped");
    return;
  }
  if (why->sig == 0) {
    lua_getfield(L, LUA_REGISTRYINDEX, STOP_ERRORS_KEY);
    if (lua_type(L, -1) != LUA_TTABLE || lua_rawgeti(L, -1, why->reason) == LUA_TNIL) {
      lua_settop(L, lua_gettop(L) - 1);
      lua_pushfstring(L, "stopped (reason %d)", why->reason);
    }
    lua_remove(L, -2);
    return;
  }
  name = lg_signal_name(why->sig);
  lg_push_error(L, "SignalExit", lua_pushfstring(L, "SignalExit: %s", name));
  lua_remove(L, -2);
  lua_pushinteger(L, why->sig);
  lua_setfield(L, -2, "signal");
  lua_pushstring(L, name);
  lua_setfield(L, -2, "name");
}

/* How many calls are active on L (lua_getstack's levels). lua_getstack walks
** from the top to its level, so the depth is found by doubling then halving:
** O(n log n), not O(n^2), on a deep stack. */
static int stack_depth(lua_State *L) {
  lua_Debug ar;
  int low = 0, high = 1;                 /* level low exists (or n is 0); high is tried */
  if (!lua_getstack(L, 0, &ar)) return 0;
  while (lua_getstack(L, high, &ar)) { low = high; high *= 2; }
  while (high - low > 1) {               /* low exists, high does not */
    int mid = low + (high - low) / 2;
    if (lua_getstack(L, mid, &ar)) low = mid;
    else high = mid;
  }
  return low + 1;
}

/* Step 3: raise g's stop error (the same object each time); a return hook
** stays on for step 4. Where it is raised is noted: a message handler runs
** above that point, and a pcall returning there swallowed nothing. */
static int raise_stop(lua_State *L, lg_guard *g, const stop_cause *why) {
  if (g->stop_ref == LUA_NOREF) {
    push_stop_error(L, why);
    lua_pushvalue(L, -1);
    g->stop_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  else lua_rawgeti(L, LUA_REGISTRYINDEX, g->stop_ref);
  g->in_flight = 1;
  g->reraise = 0;
  g->raised_at = stack_depth(L);
  lg_signal_kick_stop();    /* the body has stopped: no more EINTR for it */
  lua_sethook(L, guard_hook, LUA_MASKRET, 0);
  return lua_error(L);
}

/*
** Step 3, before anything is closed: the children the state started (proc)
** that still run get the signal once, 'grace', SIGKILL, and are reaped, so no
** cleanup runs and no lock is released while one runs (lg_child.c). Every
** block of the state is being stopped, so every child of theirs goes now;
** one started by a cleanup is left to finish.
*/
static void stop_children(const lg_state *st, const stop_cause *why) {
  lg_signal_kick_stop();    /* the wait below must not be cut short */
  lg_children_stop(st->main, why->sig != 0 ? why->sig : SIGTERM);
}

/* Step 3: handlers of st armed after g on threads that cannot run now are
** closed as by the signal, newest first (their blocks will never end). A
** thread that waits in a resume of L's is not one of them: its block runs
** again once the SignalExit leaves L, and is stopped there (step 4). */
static void close_abandoned(lua_State *L, const lg_state *st, const lg_guard *g) {
  lg_guard *o;
  while ((o = newest_guard(st, NULL, g, HANDLER_GUARD)) != NULL && o->thread != L &&
         !resuming(o->thread, L))
    o->close_stopped(L, o);   /* lands in lg_handler.c handler_close_stopped */
}

/* Step 3 (and the REPL): close every armed handler of st as by the signal,
** newest first. The last frame's close re-delivers. */
static void stop_state(lua_State *L, const lg_state *st) {
  lg_guard *o;
  while ((o = newest_guard(st, NULL, NULL, HANDLER_GUARD)) != NULL)
    o->close_stopped(L, o);   /* lands in lg_handler.c handler_close_stopped */
}

/*
** Step 3, what a stop does on thread L (the hook, or a wait in C cut short):
** children first; then on a thread with an armed guard, the abandoned ones
** closed and the stop error raised there; on the main thread with no guard
** of its own (module mode), every handler of the state closed as by the
** stop: for a signal the last close re-delivers it, a reason's error is then
** raised on the main thread (returns for a signal); in a coroutine with no
** guard of its own, it is stopped too, and stays stopped (again at each
** instruction) until it is dead; the block that resumed it then stops.
*/
static int act_on_stop(lua_State *L, lg_guard *g, const lg_state *st, const stop_cause *why) {
  stop_children(st, why);
  if (g != NULL) {
    close_abandoned(L, st, g);
    return raise_stop(L, g, why);
  }
  if (L == st->main) {
    stop_state(L, st);
    if (why->sig != 0) return 0;
  }
  push_stop_error(L, why);
  if (L != st->main) lua_sethook(L, guard_hook, LUA_MASKCOUNT, 1);
  return lua_error(L);
}

/* Whether thread co waits in a resume (Lua's "normal" status): it has calls,
** is neither suspended nor dead, and is not the running thread. */
static int resuming(lua_State *co, const lua_State *running) {
  lua_Debug ar;
  return co != running && lua_status(co) == LUA_OK && lua_getstack(co, 0, &ar);
}

/*
** A guard's stop error was handed on (step 5) by a thread other than the new
** guard's: the running one is a coroutine resumed inside that guard's block.
** It, and every coroutine between it and the guard's thread, gets the return
** hook of step 4: a pcall there that caught the error must not let it go on.
*/
static void hook_resume_chain(lg_state *st, lua_State *running) {
  size_t i;
  lua_sethook(running, guard_hook, LUA_MASKRET, 0);
  lg_frames_lock();
  if (st->tracking)
    for (i = 0; i < st->capacity; i++)
      if (st->threads[i] != NULL && resuming(st->threads[i], running))
        lua_sethook(st->threads[i], guard_hook, LUA_MASKRET, 0);
  lg_frames_unlock();
}

/* The guard of st whose stop error was handed on to it from a coroutine and
** is on its way while its thread waits in a resume: L, a coroutine with no
** guard of its own, runs inside its block. (A coroutine that a __close runs
** while a guard's own error unwinds is not stopped: it runs to its end.) */
static const lg_guard *block_around(lua_State *L, const lg_state *st) {
  const lg_guard *on_way = newest_guard(st, NULL, NULL, IN_FLIGHT_GUARD);
  if (on_way == NULL || !on_way->handed_on || on_way->stop_ref == LUA_NOREF ||
      !resuming(on_way->thread, L))
    return NULL;
  return on_way;
}

/* Step 4 in such a coroutine, once a protected call there returned: stopped
** with that guard's error (the same object), again at each instruction until
** it is dead; its resumer then sees the error, or the resume's return. */
static void stop_inside_block(lua_State *L, lg_state *st, const lg_guard *around) {
  st->stopping = L;
  lua_sethook(L, guard_hook, LUA_MASKCOUNT | LUA_MASKRET, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, around->stop_ref);
  lua_error(L);
}

static int returns_from_protected_call(lua_State *L, lua_Debug *ar) {
  lua_CFunction fn;
  lua_getinfo(L, "f", ar);  /* stack: function */
  fn = lua_tocfunction(L, -1);
  lua_pop(L, 1);
  return fn != NULL && (fn == pcall_fn || fn == xpcall_fn || fn == resume_fn);
}

/*
** Steps 3 and 4. The hook runs in normal context (the VM calls it between
** instructions), so it may allocate, raise, walk the stack and run cleanups.
*/
static void guard_hook(lua_State *L, lua_Debug *ar) {
  lg_guard *g = guard_of_thread(L);
  lg_state *st = g != NULL ? g->state : state_of(L);
  const lg_guard *around;
  stop_cause why;
  if (lg_signal_cleaning()) {   /* deferred: routed again when cleanups end */
    put_back_hook(L, g, st, NULL);
    return;
  }
  if (ar->event == LUA_HOOKRET) {
    if (g != NULL && g->in_flight && returns_from_protected_call(L, ar) &&
        stack_depth(L) <= g->raised_at) {
      g->reraise = 1;
      lua_sethook(L, guard_hook, LUA_MASKCOUNT | LUA_MASKRET, 1);
    }
    else if (g == NULL && L != st->main && block_around(L, st) != NULL &&
             returns_from_protected_call(L, ar)) {
      st->stopping = L;
      lua_sethook(L, guard_hook, LUA_MASKCOUNT | LUA_MASKRET, 1);
    }
    else if ((g == NULL || !g->in_flight) && stop_left_in_stuck_thread(st) != NULL &&
             returns_from_protected_call(L, ar))
      lua_sethook(L, guard_hook, LUA_MASKCOUNT | LUA_MASKRET, 1);   /* step 3 next */
    return;
  }
  if (g != NULL && g->in_flight) {
    if (g->reraise) raise_stop(L, g, NULL);
    lua_sethook(L, guard_hook, LUA_MASKRET, 0);
    return;
  }
  if (g == NULL && L == st->stopping) {
    if ((around = block_around(L, st)) != NULL) stop_inside_block(L, st, around);
    st->stopping = NULL;
  }
  if (pending_stop(st, &why)) act_on_stop(L, g, st, &why);
  put_back_hook(L, g, st, NULL);
}


int lg_guard_arm(lua_State *L, lg_guard *g, lg_guard_close_fn close_stopped) {
  lg_state *st = state_of(L);
  check_tracking(L, st);
  memset(g, 0, sizeof *g);
  g->thread = L;
  g->state = st;
  g->close_stopped = close_stopped;
  g->stop_ref = LUA_NOREF;
  save_user_hook(g, L);
  if (L != st->main) st->off_main++;
  /* a stop hooks the main thread too, whichever thread g is on: what to put
  ** back there once nothing is left to stop */
  if (lua_gethook(st->main) != guard_hook) {
    st->main_hook = lua_gethook(st->main);
    st->main_mask = lua_gethookmask(st->main);
    st->main_count = lua_gethookcount(st->main);
  }
  if (lg_frame_arm(&g->frame, guard_interrupt, st) != 0) {   /* step 2's callback */
    if (L != st->main) st->off_main--;
    return -1;
  }
  return 0;
}

int lg_guard_stopped(const lg_guard *g) {
  return g->in_flight || g->frame.state == LG_FRAME_STOPPING || g->frame.record.length > 0 ||
         g->frame.reason != 0;
}

void lg_guard_begin_cleanup(lg_guard *g) {
  put_back_hook(g->thread, g, g->state, g);
  lg_frame_begin_cleanup(&g->frame);
}

/*
** Step 5. The SignalExit, if g's was on its way, goes on towards the next
** guard of the state: that one is in flight too (the same object), and its
** thread gets the return hook that catches a swallowing pcall or resume.
*/
void lg_guard_close(lua_State *L, lg_guard *g) {
  lg_state *st = g->state;
  lg_guard *next;
  if (g->frame.state == LG_FRAME_CLOSED) return;
  put_back_hook(g->thread, g, st, g);
  if (g->thread != st->main) st->off_main--;
  if (lg_frame_close(&g->frame) != 0)
    lg_log("could not restore signal dispositions: %s", strerror(errno));
  next = g->in_flight ? newest_guard(st, NULL, NULL, ANY_GUARD) : NULL;
  if (next != NULL && !next->in_flight) {
    if (next->stop_ref == LUA_NOREF && g->stop_ref != LUA_NOREF) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, g->stop_ref);
      next->stop_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    next->in_flight = 1;
    next->raised_at = INT_MAX;   /* on its way back: any pcall that returns swallows it */
    if (lua_gethook(next->thread) != guard_hook) save_user_hook(next, next->thread);
    lua_sethook(next->thread, guard_hook, LUA_MASKRET, 0);
    next->handed_on = L != next->thread;
    if (next->handed_on) hook_resume_chain(st, L);
  }
  if (g->in_flight && next == NULL) st->stopping = NULL;   /* the stop is over */
  g->handed_on = 0;
  luaL_unref(L, LUA_REGISTRYINDEX, g->stop_ref);
  g->stop_ref = LUA_NOREF;
  g->in_flight = 0;
}

/*
** A wait in C that a signal cut short (or one that began just after the
** signal, and was cut short by the kick): what the hook would do at the next
** instruction (step 3), now. Returns 0 when nothing is to be stopped.
*/
int lg_guard_raise_pending(lua_State *L) {
  lg_guard *g = guard_of_thread(L);
  lg_state *st = g != NULL ? g->state : state_of(L);
  stop_cause why;
  if (lg_signal_cleaning() || st->closed) return 0;
  if (g != NULL && g->in_flight) return raise_stop(L, g, NULL);
  if (!pending_stop(st, &why)) return 0;
  return act_on_stop(L, g, st, &why);
}

/*
** lua.c's way to stop a chunk from a signal handler (Ctrl-C in lua5.4, or in
** luaguard's REPL with no handler armed): a hook on the main thread at the
** next instruction (count 1). Our own hook is not it; a debug hook counting
** every instruction would be taken for it.
*/
static int interrupt_requested(lua_State *L) {
  lua_Hook hook = lua_gethook(L);
  return hook != NULL && hook != guard_hook && (lua_gethookmask(L) & LUA_MASKCOUNT) &&
         lua_gethookcount(L) == 1;
}

/* Whether a wait (a lock's, a lease's) should end now: a stop for this
** thread, or lua.c's interrupt, which would otherwise wait with it. */
int lg_guard_stop_wanted(lua_State *L) {
  lg_guard *g = guard_of_thread(L);
  lg_state *st = g != NULL ? g->state : state_of(L);
  stop_cause why;
  if (lg_signal_cleaning() || st->closed) return 0;
  return (g != NULL && g->in_flight) || pending_stop(st, &why) ||
         interrupt_requested(st->main) || interrupt_requested(L);
}


/* ---- stops that are not signals (a lease lost: lg_lease.c) ---- */

int lg_guard_new_reason(void) {
  static int last;
  return __atomic_add_fetch(&last, 1, __ATOMIC_RELAXED);
}

const void *lg_guard_group(lua_State *L) { return state_of(L); }

/* Stack: [-1, +0, m]: pops the error (nil: forget the reason's). */
void lg_guard_set_stop_error(lua_State *L, int reason) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, STOP_ERRORS_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, STOP_ERRORS_KEY);
  }                                           /* stack: err, errors */
  lua_rotate(L, -2, 1);                       /* stack: errors, err */
  lua_rawseti(L, -2, reason);
  lua_pop(L, 1);
}

int lg_guard_request_stop(const void *group, int reason) {
  return lg_frame_stop(group, reason);
}


static lua_CFunction field_cfunction(lua_State *L, const char *table, const char *name) {
  lua_CFunction fn = NULL;
  if (lua_getglobal(L, table) == LUA_TTABLE) {
    lua_getfield(L, -1, name);
    fn = lua_tocfunction(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return fn;
}

static const lg_guard_api guard_api = {
  LG_GUARD_API_VERSION, LUAGUARD_VERSION, lg_guard_group, lg_guard_new_reason,
  lg_guard_set_stop_error, lg_guard_request_stop, lg_guard_raise_pending, lg_guard_stop_wanted
};

void lg_open_guard(lua_State *L) {
  state_of(L);
  lua_pushlightuserdata(L, (void *)&guard_api);
  lua_setfield(L, LUA_REGISTRYINDEX, LG_GUARD_API_KEY);
  if (lua_getglobal(L, "pcall") == LUA_TFUNCTION) pcall_fn = lua_tocfunction(L, -1);
  lua_pop(L, 1);
  if (lua_getglobal(L, "xpcall") == LUA_TFUNCTION) xpcall_fn = lua_tocfunction(L, -1);
  lua_pop(L, 1);
  resume_fn = field_cfunction(L, "coroutine", "resume");
}

/*
** lua_close finalizes every object, but one made *during* that (a cleanup run
** by a finalizer arming a handler) is freed with no __gc, and the host's
** outer frame has no __gc at all: a frame left linked would point into freed
** memory. The module's sentinel is finalized last and calls this: every
** frame of the state still armed is closed (an ExitHandler's cleanups can no
** longer run, which is logged by its owner), and the state is marked closed
** so that no signal touches it again.
*/
void lg_sweep_guards(lua_State *L) {
  lg_state *st = state_of(L);
  lg_frame *f = lg_frame_top();
  while (f != NULL) {
    lg_guard *g = as_guard(f);
    if (g != NULL && g->state == st) {
      if (g->close_stopped != NULL)
        lg_log("a handler armed while its Lua state was closing is closed "
               "without running its cleanups");
      lg_frame_close(&g->frame);   /* may re-deliver: the state is done */
      f = lg_frame_top();          /* the list changed: start over */
    }
    else f = lg_frame_older(f);
  }
  st->closed = 1;
  give_back_allocator(L, st);
}


/* ---- the host's outermost frame (luaguard.h) ---- */

LUAGUARD_API int luaguard_outer_arm(lua_State *L) {
  return lg_guard_arm(L, &outer_guard, NULL);
}

LUAGUARD_API void luaguard_outer_defer(lua_State *L) {
  if (outer_guard.frame.state == LG_FRAME_CLOSED) return;
  lg_guard_begin_cleanup(&outer_guard);
  luaL_unref(L, LUA_REGISTRYINDEX, outer_guard.stop_ref);
  outer_guard.stop_ref = LUA_NOREF;
}

LUAGUARD_API int luaguard_outer_close(void) {
  return lg_frame_close(&outer_guard.frame);
}

/*
** Between chunks (the REPL): a signal that reached an armed handler of L's
** state, and whose SignalExit may have been reported rather than ended the
** process, closes every armed handler as by the signal.
*/
LUAGUARD_API int luaguard_stop_pending(lua_State *L) {
  lg_state *st = state_of(L);
  lg_guard *g;
  stop_cause why;
  if (lg_signal_cleaning() || (g = newest_guard(st, NULL, NULL, STOPPED_GUARD)) == NULL) return 0;
  why.sig = g->frame.record.length > 0 ? g->frame.record.order[0] : 0;
  why.reason = g->frame.reason;
  if (why.sig != 0 || why.reason != 0) stop_children(st, &why);
  stop_state(L, st);
  return 1;
}

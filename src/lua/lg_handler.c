/*
** lg_handler.c — ErrorHandler / ExitHandler over the signal core, and the
** host's outermost frame.
**
** A Guard is a core frame plus what Lua needs: the thread it was armed on (the
** hook goes there, not to the main thread, so a guard armed in a coroutine is
** reached) and the SignalExit on its way. The life of a signal:
**
**  1. The core's handler records it in the innermost frame and calls
**     guard_interrupt, which only calls lua_sethook (count 1): the body stops
**     at its very next instruction, in guard_hook.
**  2. guard_hook raises a SignalExit and marks the guard in flight. From then
**     on no second SignalExit is raised for that guard (a message handler, an
**     xpcall's or lua.c's, runs before <close> variables are closed; raising
**     again in there ends in "error in error handling"). The hook stays as a
**     return hook only: when a pcall, xpcall or coroutine.resume returns while
**     the guard is still open, the body swallowed the error, and the same
**     object is raised again at the next instruction.
**  3. Closing the guard runs the cleanups with the hook off and signals only
**     recorded, then the core hands the record to the next older frame (the
**     SignalExit goes on propagating to it) or, for the outermost, restores
**     the dispositions and re-delivers.
**
** A body blocked in a system call (io.read) is reached by the core's kick:
** the call returns EINTR, and the hook runs at the next instruction. The kick
** also covers a signal landing just before the call blocks.
**
** Known limit: a coroutine that armed no guard is stopped when it yields or
** returns to a thread that did (hooks are per thread, and hooking every
** thread would cost the body a hook check per instruction).
*/
#include <errno.h>
#include <limits.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "luaguard.h"
#include "lg_binding.h"
#include "lg_signal.h"

enum { ERROR_HANDLER, EXIT_HANDLER };
enum { HANDLER_CLOSED, HANDLER_ARMED, HANDLER_CLOSING };

typedef struct Guard {
  lg_frame frame;                  /* first member: the core links it */
  lua_State *thread;               /* armed there; kept alive by the handler */
  const void *state;               /* its Lua state (the main thread) */
  volatile sig_atomic_t in_flight; /* its SignalExit is on its way */
  volatile sig_atomic_t closing;
  volatile sig_atomic_t reraise;   /* a protected call swallowed it */
  int signal_exit_ref;             /* registry ref of that SignalExit */
  lua_Hook user_hook;              /* the script's own hook, put back after */
  int user_mask, user_count;
} Guard;

typedef struct Handler {
  Guard guard;
  int kind;
  int state;
  int ncleanups;                   /* registered and not yet run or dropped */
  int top;                         /* last slot used in the cleanups table */
} Handler;

/*
** Uservalues of a Handler. The cleanups live in one flat table, made at the
** first register: each is its values fn, args... followed by their count, so
** the last one registered ends at 'top'. No table per cleanup, none for a
** handler with none: an arm/register/close cycle allocates the userdata and
** that one table (scripts/bench, "handler cycle").
*/
#define UV_CLEANUPS 1              /* nil, or { fn, args..., n, fn, args..., n } */
#define UV_THREAD 2                /* the thread it was armed on */

#define toHandler(L, i) ((Handler *)luaL_checkudata(L, i, LG_HANDLER_MT))

static const char *const kind_names[] = {"ErrorHandler", "ExitHandler"};

/* The protected-call builtins, to tell a swallowed SignalExit (step 2). */
static lua_CFunction pcall_fn, xpcall_fn, resume_fn;

static Guard outer_guard;          /* the host's frame */

static void guard_interrupt(void *ud);
static void guard_hook(lua_State *L, lua_Debug *ar);


static Guard *as_guard(lg_frame *f) {
  return (f != NULL && f->interrupt == guard_interrupt) ? (Guard *)f : NULL;
}

/*
** Signal-handler context: only lua_sethook and sig_atomic_t reads. Each
** thread that has a guard gets the hook, so the body stops wherever it runs;
** only the innermost guard of a thread decides, and one in flight is left be.
*/
static void guard_interrupt(void *ud) {
  Guard *top = (Guard *)ud;
  lg_frame *f, *g;
  for (f = &top->frame; f != NULL; f = f->outer) {
    Guard *o = as_guard(f);
    int innermost = 1;
    if (o == NULL || f->owner != top->frame.owner) continue;
    for (g = &top->frame; g != f; g = g->outer) {
      Guard *newer = as_guard(g);
      if (newer != NULL && newer->thread == o->thread) innermost = 0;
    }
    if (innermost && !o->in_flight && !o->closing)
      lua_sethook(o->thread, guard_hook, LUA_MASKCOUNT, 1);
  }
}

/* The innermost open guard of this process armed on thread L. */
static Guard *guard_of_thread(lua_State *L) {
  lg_frame *f;
  for (f = lg_frame_top(); f != NULL; f = lg_frame_outer(f)) {
    Guard *g = as_guard(f);
    if (g != NULL && g->thread == L && !g->closing) return g;
  }
  return NULL;
}

/* The first signal waiting for g: in its record or in a newer frame's (a
** guard left armed in a suspended coroutine still stops the thread below). */
static int pending_signal(Guard *g) {
  lg_frame *f;
  for (f = lg_frame_top(); f != NULL; f = lg_frame_outer(f)) {
    if (f->record.length > 0) return f->record.order[0];
    if (f == &g->frame) break;
  }
  return 0;
}

static void save_user_hook(Guard *g, lua_State *L) {
  lua_Hook h = lua_gethook(L);
  if (h == guard_hook) {    /* ours is in: keep what an outer guard saved */
    Guard *outer = guard_of_thread(L);
    if (outer != NULL && outer != g) {
      g->user_hook = outer->user_hook;
      g->user_mask = outer->user_mask;
      g->user_count = outer->user_count;
    }
    return;
  }
  g->user_hook = h;
  g->user_mask = lua_gethookmask(L);
  g->user_count = lua_gethookcount(L);
}

static void restore_user_hook(Guard *g) {
  if (lua_gethook(g->thread) == guard_hook)
    lua_sethook(g->thread, g->user_hook, g->user_mask, g->user_count);
}

/* SignalExit: kind, signal, name; tostring "SignalExit: SIGTERM". */
static void push_signal_exit(lua_State *L, int sig) {
  const char *name = lg_signal_name(sig);
  lg_push_error(L, "SignalExit", lua_pushfstring(L, "SignalExit: %s", name));
  lua_remove(L, -2);
  lua_pushinteger(L, sig);
  lua_setfield(L, -2, "signal");
  lua_pushstring(L, name);
  lua_setfield(L, -2, "name");
}

/* Raise g's SignalExit (the same object each time); leave a return hook on. */
static int raise_signal_exit(lua_State *L, Guard *g, int sig) {
  if (g->signal_exit_ref == LUA_NOREF) {
    push_signal_exit(L, sig);
    lua_pushvalue(L, -1);
    g->signal_exit_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  else lua_rawgeti(L, LUA_REGISTRYINDEX, g->signal_exit_ref);
  g->in_flight = 1;
  g->reraise = 0;
  lg_signal_kick_stop();    /* the body has stopped: no more EINTR for it */
  lua_sethook(L, guard_hook, LUA_MASKRET, 0);
  return lua_error(L);
}

int lg_raise_pending_signal(lua_State *L) {
  Guard *g = guard_of_thread(L);
  int sig;
  if (g == NULL || lg_signal_cleaning()) return 0;
  if (g->in_flight) return raise_signal_exit(L, g, 0);
  sig = pending_signal(g);
  return sig != 0 ? raise_signal_exit(L, g, sig) : 0;
}

int lg_signal_wait_interrupted(unsigned long since) {
  return lg_signal_arrivals() != since && !lg_signal_cleaning() &&
         lg_frame_top() != NULL;
}

/* Inside a function called from a hook, i.e. the message handler run for the
** error raised by our hook? (Lua names such a call's kind "hook".) */
static int inside_hook_call(lua_State *L) {
  lua_Debug d;
  int level;
  for (level = 1; lua_getstack(L, level, &d); level++) {
    lua_getinfo(L, "n", &d);
    if (d.namewhat != NULL && strcmp(d.namewhat, "hook") == 0) return 1;
  }
  return 0;
}

static int returns_from_protected_call(lua_State *L, lua_Debug *ar) {
  lua_CFunction fn;
  lua_getinfo(L, "f", ar);  /* stack: function */
  fn = lua_tocfunction(L, -1);
  lua_pop(L, 1);
  return fn != NULL && (fn == pcall_fn || fn == xpcall_fn || fn == resume_fn);
}

/*
** The hook. Runs in normal context (the VM calls it between instructions),
** so it may allocate, raise and walk the stack.
*/
static void guard_hook(lua_State *L, lua_Debug *ar) {
  Guard *g = guard_of_thread(L);
  int sig;
  if (g == NULL) {          /* nothing left to stop on this thread */
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  if (lg_signal_cleaning()) {   /* cleanups are never interrupted */
    restore_user_hook(g);
    return;
  }
  if (ar->event == LUA_HOOKRET) {
    if (g->in_flight && returns_from_protected_call(L, ar) && !inside_hook_call(L)) {
      g->reraise = 1;
      lua_sethook(L, guard_hook, LUA_MASKCOUNT | LUA_MASKRET, 1);
    }
    return;
  }
  if (g->in_flight) {
    if (g->reraise) raise_signal_exit(L, g, 0);
    lua_sethook(L, guard_hook, LUA_MASKRET, 0);
    return;
  }
  sig = pending_signal(g);
  if (sig != 0) raise_signal_exit(L, g, sig);
  restore_user_hook(g);
}


/* Arm g on thread L (g's memory must outlive the frame). 0 or -1/errno. */
static int guard_arm(Guard *g, lua_State *L) {
  memset(g, 0, sizeof *g);
  g->thread = L;
  g->state = lg_state_of(L);
  g->signal_exit_ref = LUA_NOREF;
  save_user_hook(g, L);
  return lg_frame_arm(&g->frame, guard_interrupt, g);
}

/*
** Unlink g. If its SignalExit is on its way, it goes on towards the next older
** guard: that one is in flight too (no new SignalExit, the same object), and
** its thread gets the return hook that catches a swallowing pcall.
*/
static void guard_close(lua_State *L, Guard *g) {
  Guard *outer = as_guard(lg_frame_outer(&g->frame));
  int handed = 0;
  g->closing = 1;
  restore_user_hook(g);
  if (g->in_flight && outer != NULL && !outer->closing) {
    if (outer->signal_exit_ref == LUA_NOREF && g->signal_exit_ref != LUA_NOREF) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, g->signal_exit_ref);
      outer->signal_exit_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    outer->in_flight = 1;
    handed = 1;
  }
  if (lg_frame_close(&g->frame, 1) != 0)
    lg_log("could not restore signal dispositions: %s", strerror(errno));
  if (handed && lua_gethook(outer->thread) != guard_hook) {
    save_user_hook(outer, outer->thread);
    lua_sethook(outer->thread, guard_hook, LUA_MASKRET, 0);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, g->signal_exit_ref);
  g->signal_exit_ref = LUA_NOREF;
  g->in_flight = 0;
}


static int is_callable(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TFUNCTION) return 1;
  if (luaL_getmetafield(L, idx, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}

/* Append fn(args...) (values from 'first' to the top) to the handler at h_idx. */
static void add_cleanup(lua_State *L, int h_idx, Handler *h, int first) {
  int n = lua_gettop(L) - first + 1, i;
  if (lua_getiuservalue(L, h_idx, UV_CLEANUPS) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, n + 1, 0);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, h_idx, UV_CLEANUPS);
  }                                           /* stack: ..., cleanups */
  if (h->top > INT_MAX - n - 1) luaL_error(L, "too many cleanups");
  for (i = 0; i < n; i++) {
    lua_pushvalue(L, first + i);
    lua_rawseti(L, -2, h->top + 1 + i);
  }
  lua_pushinteger(L, n);
  lua_rawseti(L, -2, h->top + n + 1);
  h->top += n + 1;
  h->ncleanups++;
  lua_pop(L, 1);
}

static int check_callable(lua_State *L, int idx) {
  if (!is_callable(L, idx)) return luaL_typeerror(L, idx, "callable");
  return 1;
}

/* ErrorHandler([fn, ...]) / ExitHandler([fn, ...]) -> armed handler */
static int new_handler(lua_State *L, int kind) {
  int nargs = lua_gettop(L), h_idx;
  Handler *h;
  if (nargs > 0 && !(nargs == 1 && lua_isnil(L, 1))) check_callable(L, 1);
  h = (Handler *)lua_newuserdatauv(L, sizeof(Handler), 2);
  memset(h, 0, sizeof *h);
  h->kind = kind;
  h->state = HANDLER_CLOSED;
  h->guard.signal_exit_ref = LUA_NOREF;
  luaL_setmetatable(L, LG_HANDLER_MT);
  h_idx = lua_gettop(L);
  lua_pushthread(L);
  lua_setiuservalue(L, h_idx, UV_THREAD);
  if (nargs > 0 && !lua_isnil(L, 1)) {
    lua_rotate(L, 1, 1);                      /* stack: h, fn, args... */
    add_cleanup(L, 1, h, 2);
    lua_settop(L, 1);
    h_idx = 1;
  }
  if (guard_arm(&h->guard, L) != 0) {
    int err = errno;
    lua_pushfstring(L, "%s: could not install signal handlers", kind_names[kind]);
    return lg_raise_os_error(L, err, lua_tostring(L, -1), NULL);
  }
  h->state = HANDLER_ARMED;
  lua_pushvalue(L, h_idx);
  return 1;
}

/*
** lua_close finalizes every object, but one made *during* that (a cleanup run
** by a finalizer arming a handler) is freed with no __gc: its frame would stay
** linked to freed memory. The module's sentinel is finalized last and calls
** this: such guards are unlinked (dispositions restored, signals re-delivered);
** an ExitHandler's cleanups can no longer run, which is logged.
*/
void lg_sweep_handlers(const void *state) {
  lg_frame *f = lg_frame_top();
  while (f != NULL) {
    Guard *g = as_guard(f);
    if (g != NULL && g != &outer_guard && g->state == state) {
      Handler *h = (Handler *)g;
      if (h->kind == EXIT_HANDLER && h->ncleanups > 0)
        lg_log("an ExitHandler armed while its Lua state was closing is closed "
               "without running its %d cleanup(s)", h->ncleanups);
      h->ncleanups = 0;
      h->state = HANDLER_CLOSED;
      g->closing = 1;
      lg_frame_close(&g->frame, 0);
      f = lg_frame_top();     /* the list changed: start over */
    }
    else f = lg_frame_outer(f);
  }
}

int lg_error_handler_new(lua_State *L) { return new_handler(L, ERROR_HANDLER); }
int lg_exit_handler_new(lua_State *L) { return new_handler(L, EXIT_HANDLER); }

/* h:register(fn, ...) -> h */
static int handler_register(lua_State *L) {
  Handler *h = toHandler(L, 1);
  check_callable(L, 2);
  if (h->state != HANDLER_ARMED)
    return luaL_error(L, "register on a %s %s",
                      h->state == HANDLER_CLOSING ? "closing" : "closed",
                      kind_names[h->kind]);
  add_cleanup(L, 1, h, 2);
  lua_settop(L, 1);
  return 1;
}

/* Message handler for a cleanup: its message, and a traceback when debugging. */
static int cleanup_msgh(lua_State *L) {
  const char *msg = luaL_tolstring(L, 1, NULL);
  if (lg_debug_enabled()) luaL_traceback(L, L, msg, 1);
  return 1;
}

static void log_signals(Guard *g) {
  int list[LG_RECORD_LIST_MAX], n = lg_record_list(&g->frame.record, list), i;
  luaL_Buffer b;
  lua_State *L = g->thread;
  if (n == 0) return;
  luaL_buffinit(L, &b);
  for (i = 0; i < n; i++) {
    if (i > 0) luaL_addstring(&b, ", ");
    luaL_addstring(&b, lg_signal_name(list[i]));
  }
  luaL_pushresult(&b);
  lg_log("encountered signals: %s", lua_tostring(L, -1));
  lua_pop(L, 1);
}

/*
** Run the cleanups of the handler at h_idx, last registered first, each at
** most once (taken off the list before it is called), each in its own
** protected call; a failure is logged and the next one still runs.
*/
static void run_cleanups(lua_State *L, int h_idx, Handler *h) {
  int cleanups;
  if (lg_debug_enabled()) log_signals(&h->guard);
  lua_getiuservalue(L, h_idx, UV_CLEANUPS);   /* stack: cleanups */
  cleanups = lua_gettop(L);
  while (h->ncleanups > 0) {
    int n, i, first, msgh;
    lua_rawgeti(L, cleanups, h->top);
    n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    first = h->top - n;
    luaL_checkstack(L, n + 2, "too many cleanup arguments");  /* msgh, values, a nil */
    lua_pushcfunction(L, cleanup_msgh);       /* stack: cleanups, msgh */
    msgh = lua_gettop(L);
    for (i = first; i <= h->top; i++) {       /* take it off before calling */
      if (i < h->top) lua_rawgeti(L, cleanups, i);   /* stack: ..., fn, args... */
      lua_pushnil(L);
      lua_rawseti(L, cleanups, i);
    }
    h->top = first - 1;
    h->ncleanups--;
    if (lg_debug_enabled()) {
      lua_Debug d;
      lua_pushvalue(L, msgh + 1);
      lua_getinfo(L, ">S", &d);
      lg_log("calling registered function %s", d.short_src);
    }
    if (lua_pcall(L, n - 1, 0, msgh) != LUA_OK) {
      lg_log("encountered exception during recovery: %s", lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    lua_settop(L, cleanups);                  /* stack: cleanups */
  }
  lua_pop(L, 1);
}

/*
** Shared by close, __close, __gc and run: idempotent (a second close, or one
** from inside a cleanup, does nothing). 'failed': closed by an error.
** A handler stopped by a signal counts as failed whatever error reaches it
** (with a message handler, __close gets the handler's result instead).
*/
static void handler_close(lua_State *L, int h_idx, int failed) {
  Handler *h = toHandler(L, h_idx);
  Guard *g = &h->guard;
  if (h->state != HANDLER_ARMED) return;
  h->state = HANDLER_CLOSING;
  g->closing = 1;
  if (g->frame.owner != lg_signal_pid()) {
    /* forked child: the cleanups are the parent's business */
    lg_frame_close(&g->frame, 0);
    h->ncleanups = 0;
  }
  else {
    int stopped = g->in_flight || g->frame.record.length > 0;
    restore_user_hook(g);
    if ((failed || stopped || h->kind == EXIT_HANDLER) && h->ncleanups > 0) {
      lg_frame_begin_cleanup(&g->frame);
      run_cleanups(L, h_idx, h);
    }
    h->ncleanups = 0;
    guard_close(L, g);
  }
  lua_pushnil(L);           /* drop what was registered: nothing runs twice */
  lua_setiuservalue(L, h_idx, UV_CLEANUPS);
  h->top = 0;
  h->state = HANDLER_CLOSED;
}

/* h:close([err]) */
static int handler_close_method(lua_State *L) {
  handler_close(L, 1, !lua_isnoneornil(L, 2));
  return 0;
}

/* __close(h, err): Lua passes the error, or nil on a normal exit. */
static int handler_tbc_close(lua_State *L) {
  handler_close(L, 1, !lua_isnil(L, 2));
  return 0;
}

static int handler_gc(lua_State *L) {
  handler_close(L, 1, 0);
  return 0;
}

/*
** h:run(body, ...): body(...), then close; the body's results, or its error
** re-raised (the same object) after the cleanups. In C, not Lua: no Lua
** instruction may run between the protected call and the close, or a pending
** SignalExit would be raised there and skip the close.
*/
static int handler_run(lua_State *L) {
  int nargs;
  toHandler(L, 1);
  luaL_checkany(L, 2);
  nargs = lua_gettop(L) - 2;
  if (lua_pcall(L, nargs, LUA_MULTRET, 0) != LUA_OK) {   /* stack: h, err */
    handler_close(L, 1, 1);
    return lua_error(L);
  }
  handler_close(L, 1, 0);
  return lua_gettop(L) - 1;
}

/* h:received() -> {signal numbers, in arrival order} */
static int handler_received(lua_State *L) {
  Handler *h = toHandler(L, 1);
  int list[LG_RECORD_LIST_MAX], n = lg_record_list(&h->guard.frame.record, list), i;
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    lua_pushinteger(L, list[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int handler_tostring(lua_State *L) {
  static const char *const states[] = {"closed", "armed", "closing"};
  Handler *h = toHandler(L, 1);
  lua_pushfstring(L, "%s (%d cleanup%s, %s)", kind_names[h->kind], h->ncleanups,
                  h->ncleanups == 1 ? "" : "s", states[h->state]);
  return 1;
}

static const luaL_Reg handler_methods[] = {
  {"register", handler_register},
  {"close", handler_close_method},
  {"run", handler_run},
  {"received", handler_received},
  {NULL, NULL}
};

static const luaL_Reg handler_metamethods[] = {
  {"__index", NULL},
  {"__close", handler_tbc_close},
  {"__gc", handler_gc},
  {"__tostring", handler_tostring},
  {NULL, NULL}
};

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

void lg_open_handler(lua_State *L) {
  if (luaL_newmetatable(L, LG_HANDLER_MT)) {
    luaL_setfuncs(L, handler_metamethods, 0);
    luaL_newlib(L, handler_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (lua_getglobal(L, "pcall") == LUA_TFUNCTION) pcall_fn = lua_tocfunction(L, -1);
  lua_pop(L, 1);
  if (lua_getglobal(L, "xpcall") == LUA_TFUNCTION) xpcall_fn = lua_tocfunction(L, -1);
  lua_pop(L, 1);
  resume_fn = field_cfunction(L, "coroutine", "resume");
}


/* The host's outermost frame (luaguard.h). */
LUAGUARD_API int luaguard_outer_arm(lua_State *L) {
  return guard_arm(&outer_guard, L);
}

LUAGUARD_API int luaguard_outer_signal(void) {
  return outer_guard.frame.record.length > 0 ? outer_guard.frame.record.order[0] : 0;
}

LUAGUARD_API void luaguard_outer_defer(lua_State *L) {
  if (!outer_guard.frame.linked) return;
  outer_guard.closing = 1;
  /* Record only; no SA_RESTART flip just before the dispositions are restored
  ** (a handler whose cleanups run in lua_close flips for them itself). */
  lg_frame_defer(&outer_guard.frame);
  restore_user_hook(&outer_guard);
  luaL_unref(L, LUA_REGISTRYINDEX, outer_guard.signal_exit_ref);
  outer_guard.signal_exit_ref = LUA_NOREF;
}

LUAGUARD_API int luaguard_outer_close(void) {
  return lg_frame_close(&outer_guard.frame, 0);
}

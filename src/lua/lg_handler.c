/*
** lg_handler.c — the Handler type: ErrorHandler and ExitHandler, a LIFO
** list of cleanups over a guard (lg_guard.c, which stops the block).
*/
#include <errno.h>
#include <limits.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lg_common.h"
#include "lg_guard.h"
#include "lg_handler.h"
#include "lg_pid.h"

enum { ERROR_HANDLER, EXIT_HANDLER };
enum { HANDLER_CLOSED, HANDLER_ARMED, HANDLER_CLOSING };

typedef struct Handler {
  lg_guard guard;                  /* first member: a guard is its handler */
  int kind;
  int state;
  int ncleanups;                   /* registered and not yet run or dropped */
  int top;                         /* last slot used in the cleanups table */
  int stopped;                     /* closed as by a signal before its __gc */
} Handler;

/*
** Uservalues of a Handler. The cleanups live in one flat table, made at the
** first register: each is its values fn, args... followed by their count, so
** the last one registered ends at 'top'. No table per cleanup, none for a
** handler with none: an arm/register/close cycle allocates the userdata and
** that one table (scripts/bench, "handler cycle").
*/
#define UV_CLEANUPS 1              /* nil, or { fn, args..., n, fn, args..., n } */
#define UV_THREAD 2                /* the thread it was armed on: kept alive */

/* Registry: guard pointer -> its Handler, weak values (an armed handler can
** still be collected), so the guard can close one it can no longer reach. */
#define ARMED_KEY "luaguard.armed_handlers"

#define toHandler(L, i) ((Handler *)luaL_checkudata(L, i, LG_HANDLER_MT))

static const char *const kind_names[] = {"ErrorHandler", "ExitHandler"};

static void handler_close(lua_State *L, int h_idx, int failed);


static int is_callable(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TFUNCTION) return 1;
  if (luaL_getmetafield(L, idx, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}

static int check_callable(lua_State *L, int idx) {
  if (!is_callable(L, idx)) return luaL_typeerror(L, idx, "callable");
  return 1;
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

/*
** The guard's lg_guard_close_fn (lg_guard.c close_abandoned, stop_state): a
** handler whose block can no longer end by itself is closed as by the signal.
*/
static void handler_close_stopped(lua_State *L, lg_guard *g) {
  lua_getfield(L, LUA_REGISTRYINDEX, ARMED_KEY);
  if (lua_rawgetp(L, -1, g) == LUA_TUSERDATA) {   /* stack: armed, h */
    handler_close(L, lua_gettop(L), 1);
  }
  else {
    /* Unreachable, its __gc pending (weak values go first): the frame goes
    ** now, so the stop can go on; the __gc then runs the cleanups as by the
    ** signal (their table lives as long as the userdata). */
    ((Handler *)g)->stopped = 1;
    lg_guard_close(L, g);
  }
  lua_pop(L, 2);
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
  h->guard.stop_ref = LUA_NOREF;
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
  lua_getfield(L, LUA_REGISTRYINDEX, ARMED_KEY);
  lua_pushvalue(L, h_idx);
  lua_rawsetp(L, -2, &h->guard);
  lua_pop(L, 1);
  if (lg_guard_arm(L, &h->guard, handler_close_stopped) != 0) {
    int err = errno;
    lua_pushfstring(L, "%s: could not install signal handlers", kind_names[kind]);
    return lg_raise_os_error(L, err, lua_tostring(L, -1), NULL);
  }
  h->state = HANDLER_ARMED;
  lua_pushvalue(L, h_idx);
  return 1;
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

static void log_signals(lua_State *L, const lg_guard *g) {
  int list[LG_RECORD_LIST_MAX], n = lg_record_list(&g->frame.record, list), i;
  luaL_Buffer b;
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
  if (lg_debug_enabled()) log_signals(L, &h->guard);
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
** Shared by close, __close, __gc, run and the guard's handler_close_stopped:
** idempotent (a second close, or one from inside a cleanup, does nothing).
** 'failed': closed by an error. A handler whose block a signal reached counts
** as failed whatever error reaches it (with a message handler, __close gets
** the handler's result instead).
*/
static void handler_close(lua_State *L, int h_idx, int failed) {
  Handler *h = toHandler(L, h_idx);
  lg_guard *g = &h->guard;
  if (h->state != HANDLER_ARMED) return;
  h->state = HANDLER_CLOSING;
  if (g->frame.owner == lg_pid()) {
    int stopped = failed || h->stopped || lg_guard_stopped(g);
    if ((stopped || h->kind == EXIT_HANDLER) && h->ncleanups > 0) {
      lg_guard_begin_cleanup(g);
      run_cleanups(L, h_idx, h);
    }
  }                         /* else a forked child: the cleanups are the parent's */
  h->ncleanups = 0;
  lg_guard_close(L, g);
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

/* __close(h, err) and __gc(h): Lua passes the error, or nil on a normal exit
** (and nothing to __gc). */
static int handler_close_meta(lua_State *L) {
  handler_close(L, 1, !lua_isnoneornil(L, 2));
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

void lg_open_handler(lua_State *L) {
  lg_open_type(L, LG_HANDLER_MT, handler_close_meta, handler_tostring, handler_methods);
  if (lua_getfield(L, LUA_REGISTRYINDEX, ARMED_KEY) != LUA_TTABLE) {
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, ARMED_KEY);
  }
  lua_pop(L, 1);
  lg_open_guard(L);
}

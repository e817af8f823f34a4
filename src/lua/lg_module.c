/*
** lg_module.c — the opener of 'luaguard.core' (the C module), and the error
** objects it raises. ('luaguard', with the facade compiled in, is lg_embed.c.)
**
** Errors are made in C rather than in the facade because they are raised from
** C: from a lock call, and from the interrupt hook, where calling back into
** Lua would be one more thing that can fail while a signal is being handled.
*/
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "luaguard.h"
#include "lg_binding.h"

int lg_debug_enabled(void) {
  static int cached = -1;
  if (cached < 0) {
    const char *v = getenv("LUAGUARD_DEBUG");
    cached = v != NULL && *v != '\0' && strcmp(v, "0") != 0;
  }
  return cached;
}

void lg_log(const char *fmt, ...) {
  va_list ap;
  fflush(stdout);           /* keep the order a reader of both streams sees */
  fputs("luaguard: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
}


static int error_tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  if (!lua_isstring(L, -1)) {
    lua_getfield(L, 1, "kind");
    lua_pushfstring(L, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "error");
  }
  return 1;
}

void lg_push_error(lua_State *L, const char *kind, const char *message) {
  lua_createtable(L, 0, 5);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, message);
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, LG_ERROR_MT);
}

int lg_raise_os_error(lua_State *L, int err, const char *path, const char *reason) {
  const char *msg = lua_pushfstring(L, "%s: %s", *path != '\0' ? path : "(empty path)",
                                    reason != NULL ? reason : strerror(err));
  lg_push_error(L, "OSError", msg);
  lua_pushinteger(L, err);
  lua_setfield(L, -2, "errno");
  lua_pushstring(L, path);
  lua_setfield(L, -2, "path");
  return lua_error(L);
}


const void *lg_state_of(lua_State *L) {
  const void *state;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  state = lua_tothread(L, -1);
  lua_pop(L, 1);
  return state;
}

/*
** The sentinel is made when the core is first opened in a state, before any
** handler or lock, so lua_close finalizes it last (newest first): whatever a
** finalizer created during the close, and Lua will free without __gc, is
** still in our lists then and closed here.
*/
static int sweep_at_close(lua_State *L) {
  const void *state = lg_state_of(L);
  lg_sweep_handlers(state);
  lg_sweep_locks(state);
  return 0;
}

#define SENTINEL_KEY "luaguard.sentinel"

static void make_sentinel(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, SENTINEL_KEY) == LUA_TNIL) {
    lua_newuserdatauv(L, 0, 0);              /* stack: nil, sentinel */
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, sweep_at_close);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, SENTINEL_KEY);
  }
  lua_pop(L, 1);
}

static const luaL_Reg core_functions[] = {
  {"lock_dir", lg_lock_dir},
  {"LockFile", lg_lockfile_new},
  {"ErrorHandler", lg_error_handler_new},
  {"ExitHandler", lg_exit_handler_new},
  {NULL, NULL}
};

LUAGUARD_API int luaopen_luaguard_core(lua_State *L) {
  if (luaL_newmetatable(L, LG_ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  make_sentinel(L);
  lg_open_lockfile(L);
  lg_open_handler(L);
  luaL_newlib(L, core_functions);
  lua_pushliteral(L, LUAGUARD_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}

/*
** lg_common.c — the debug log and the error objects (see lg_common.h).
**
** Errors are made in C rather than in the facade because they are raised from
** C: from a lock call, and from the interrupt hook, where calling back into
** Lua would be one more thing that can fail while a signal is being handled.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lg_common.h"

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


/* tostring(err): its 'text' when it has one (EtcdError: 'message' is etcd's
** own words there), else its 'message'. */
static int error_tostring(lua_State *L) {
  if (lua_getfield(L, 1, "text") == LUA_TSTRING) return 1;
  lua_getfield(L, 1, "message");
  if (!lua_isstring(L, -1)) {
    lua_getfield(L, 1, "kind");
    lua_pushfstring(L, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "error");
  }
  return 1;
}

void lg_open_errors(lua_State *L) {
  if (luaL_newmetatable(L, LG_ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
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

void lg_open_type(lua_State *L, const char *name, lua_CFunction close,
                  lua_CFunction tostring, const luaL_Reg *methods) {
  if (luaL_newmetatable(L, name)) {             /* stack: mt */
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}

lua_State *lg_main_thread(lua_State *L) {
  lua_State *main;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  main = lua_tothread(L, -1);
  lua_pop(L, 1);
  return main;
}

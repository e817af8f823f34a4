/*
** lg_module.c — the openers: 'luaguard.core' (C) and 'luaguard' (the Lua
** facade, compiled in), and the error objects both raise.
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

extern const unsigned char lg_embedded_init_lua[];
extern const size_t lg_embedded_init_lua_size;

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
  const char *msg = lua_pushfstring(L, "%s: %s", path,
                                    reason != NULL ? reason : strerror(err));
  lg_push_error(L, "OSError", msg);
  lua_pushinteger(L, err);
  lua_setfield(L, -2, "errno");
  lua_pushstring(L, path);
  lua_setfield(L, -2, "path");
  return lua_error(L);
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
  lg_open_lockfile(L);
  lg_open_handler(L);
  luaL_newlib(L, core_functions);
  lua_pushliteral(L, LUAGUARD_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}

/*
** The facade is lua/luaguard/init.lua, embedded at build time; its
** 'require "luaguard.core"' finds the core put in package.loaded here, so a C
** program needs no file and no search path.
*/
LUAGUARD_API int luaopen_luaguard(lua_State *L) {
  luaL_requiref(L, "luaguard.core", luaopen_luaguard_core, 0);
  lua_pop(L, 1);
  if (luaL_loadbufferx(L, (const char *)lg_embedded_init_lua,
                       lg_embedded_init_lua_size, "=[luaguard]", "t") != LUA_OK)
    return lua_error(L);
  lua_pushliteral(L, "luaguard");
  lua_call(L, 1, 1);        /* stack: module */
  return 1;
}

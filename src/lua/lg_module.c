/*
** lg_module.c — the opener of 'luaguard.core' (the C module). ('luaguard',
** with the facade compiled in, is lg_embed.c.)
*/
#include <lauxlib.h>
#include <lua.h>

#include "luaguard.h"
#include "lg_common.h"
#include "lg_guard.h"
#include "lg_handler.h"
#include "lg_lockfile.h"
#include "lg_process.h"

/*
** The sentinel is made when the core is first opened in a state, before any
** handler or lock, so lua_close finalizes it last (newest first): whatever a
** finalizer created during the close, and Lua will free without __gc, is
** still linked then and closed here.
*/
static int sweep_at_close(lua_State *L) {
  lg_sweep_guards(L);
  lg_sweep_locks(L);
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
  make_sentinel(L);
  lg_open_errors(L);
  lg_open_lockfile(L);
  lg_open_handler(L);
  luaL_newlib(L, core_functions);
  lg_open_process(L);
  lua_setfield(L, -2, "proc");
  lua_pushliteral(L, LUAGUARD_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}

/*
** lg_embed.c — the opener of 'luaguard' for C programs and the host: the Lua
** facade (lua/luaguard/init.lua) compiled in by premake as a byte array, over
** the core. Kept apart from the core module's files, so luaguard/core.so (for
** stock lua5.4, and the rockspec's build) needs no generated source.
*/
#include <stddef.h>

#include <lauxlib.h>
#include <lua.h>

#include "luaguard.h"

extern const unsigned char lg_embedded_init_lua[];
extern const size_t lg_embedded_init_lua_size;

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

LUAGUARD_API void luaguard_open_globals(lua_State *L) {
  static const char *const names[] = {"lock", "ErrorHandler", "ExitHandler", "proc"};
  size_t i;
  luaL_requiref(L, "luaguard", luaopen_luaguard, 0);   /* stack: module */
  for (i = 0; i < sizeof names / sizeof names[0]; i++) {
    lua_getfield(L, -1, names[i]);
    lua_setglobal(L, names[i]);
  }
  lua_pop(L, 1);
}

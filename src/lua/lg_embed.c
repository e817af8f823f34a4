/*
** lg_embed.c — the opener of 'luaguard' for C programs and the host: the Lua
** facade (lua/luaguard/init.lua) compiled in by premake as a byte array, over
** the core. Kept apart from the core module's files, so luaguard/core.so (for
** stock lua5.4, and the rockspec's build) needs no generated source.
*/
#define _GNU_SOURCE   /* dladdr */
#include <dlfcn.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "luaguard.h"

extern const unsigned char lg_embedded_init_lua[];
extern const size_t lg_embedded_init_lua_size;

/*
** package.preload["luaguard.lease"]: the lease module (luaguard/lease.so) is
** built apart and loaded on first use. The host is self-contained, so it is
** looked for next to whatever holds this code, the host or libluaguard.so
** (dladdr, links resolved): an install (PREFIX/bin or PREFIX/lib ->
** PREFIX/lib/lua/5.4/luaguard/) or the build tree (build/bin or build/lib ->
** build/lib/lua/luaguard/); then on package.cpath, as require would.
*/
static int load_lease(lua_State *L) {
  static const char *const beside[] = {
    "/../lib/lua/5.4/luaguard/lease.so", "/lua/5.4/luaguard/lease.so",
    "/../lib/lua/luaguard/lease.so", "/lua/luaguard/lease.so"
  };
  char here[PATH_MAX], path[PATH_MAX + 64];
  Dl_info info;
  size_t i;
  int found = 0;
  if (dladdr((void *)load_lease, &info) != 0 && info.dli_fname != NULL &&
      (realpath(info.dli_fname, here) != NULL || realpath("/proc/self/exe", here) != NULL)) {
    char *slash = strrchr(here, '/');
    if (slash != NULL) *slash = '\0';
    for (i = 0; i < sizeof beside / sizeof beside[0] && !found; i++) {
      snprintf(path, sizeof path, "%s%s", here, beside[i]);
      found = access(path, R_OK) == 0;
    }
  }
  lua_getglobal(L, "package");                 /* stack: name, ..., package */
  if (!found) {                                /* package.searchpath(name, package.cpath) */
    lua_getfield(L, -1, "searchpath");
    lua_pushliteral(L, "luaguard.lease");
    lua_getfield(L, -3, "cpath");
    lua_call(L, 2, 2);
    if (lua_isnil(L, -2))
      return luaL_error(L, "module 'luaguard.lease' not found (lock.lease needs luaguard/lease.so):\n\t%s",
                        lua_tostring(L, -1));
    snprintf(path, sizeof path, "%s", lua_tostring(L, -2));
    lua_pop(L, 2);
  }
  lua_getfield(L, -1, "loadlib");
  lua_pushstring(L, path);
  lua_pushliteral(L, "luaopen_luaguard_lease");
  lua_call(L, 2, 2);                           /* stack: ..., package, fn|nil, err */
  if (lua_isnil(L, -2)) return luaL_error(L, "error loading %s: %s", path, lua_tostring(L, -1));
  lua_pop(L, 1);
  lua_pushliteral(L, "luaguard.lease");
  lua_pushstring(L, path);
  lua_call(L, 2, 1);
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
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  if (lua_getfield(L, -1, "luaguard.lease") == LUA_TNIL) {
    lua_pushcfunction(L, load_lease);
    lua_setfield(L, -3, "luaguard.lease");
  }
  lua_pop(L, 2);
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

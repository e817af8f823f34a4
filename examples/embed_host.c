/*
** embed_host.c — a C program that embeds Lua itself and opens luaguard through
** the public header: a minimal host in lua.c's shape. It runs a Lua script with
** `luaguard` as a global (no file needed on disk: the Lua layer is compiled
** into the library), and a SIGTERM or Ctrl-C while the script runs closes the
** script's <close> variables first (locks released, cleanups run), then ends
** the process by that signal, as the luaguard program does.
**
** Build it either way:
**   scripts/build                      (premake: build/bin/embed_host)
**   cc embed_host.c -o embed_host $(pkg-config --cflags --libs luaguard)
** Run:
**   embed_host script.lua [args]
*/
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <luaguard.h>

/* the message handler: a traceback, as lua.c's msghandler */
static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) msg = luaL_tolstring(L, 1, NULL);   /* a SignalExit has __tostring */
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int main(int argc, char **argv) {
  lua_State *L;
  int status, i;
  if (argc < 2) {
    fprintf(stderr, "usage: %s script.lua [args]\n", argv[0]);
    return 2;
  }
  L = luaL_newstate();
  if (L == NULL) return 1;
  luaL_openlibs(L);
  luaL_requiref(L, "luaguard", luaopen_luaguard, 1);   /* global 'luaguard' */
  lua_pop(L, 1);
  lua_createtable(L, argc, 0);                         /* arg, as lua.c makes it */
  for (i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_setglobal(L, "arg");

  /* the outermost frame: handled signals stop the script with a SignalExit */
  if (luaguard_outer_arm(L) != 0) perror("luaguard_outer_arm");
  lua_pushcfunction(L, traceback);
  status = luaL_loadfile(L, argv[1]);
  if (status == LUA_OK) {
    for (i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
    status = lua_pcall(L, argc - 2, 0, -(argc - 2) - 2);
  }
  if (status != LUA_OK) fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
  luaguard_outer_defer(L);          /* from here, signals are only recorded */
  fflush(NULL);
  lua_close(L);                     /* <close> variables and __gc: locks released */
  luaguard_outer_close();           /* restore; re-deliver: dies by the signal (128+N) */
  return status == LUA_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}

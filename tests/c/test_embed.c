/*
** test_embed — a C program that embeds Lua itself and opens luaguard through
** the public header, with no file on disk and no search path: the Lua layer
** is compiled into the library.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "luaguard.h"
#include "tap.h"

static const char *run(lua_State *L, const char *code) {
  if (luaL_dostring(L, code) != LUA_OK) return lua_tostring(L, -1);
  return lua_isstring(L, -1) ? lua_tostring(L, -1) : "(no result)";
}

int main(void) {
  char dir[] = "/tmp/lg_embed.XXXXXX", code[1024];
  lua_State *L = luaL_newstate();
  setenv("LUA_PATH", "/nonexistent/?.lua", 1);     /* prove no file is needed */
  setenv("LUA_CPATH", "/nonexistent/?.so", 1);
  luaL_openlibs(L);
  luaL_requiref(L, "luaguard", luaopen_luaguard, 1);
  lua_pop(L, 1);
  CHECK(strcmp(run(L, "return type(luaguard.lock.dir)"), "function") == 0,
        "luaopen_luaguard gives the whole module");
  CHECK(strcmp(run(L, "return tostring(require('luaguard') == luaguard)"), "true") == 0,
        "require returns the same table");
  CHECK(strcmp(run(L, "return tostring(rawget(_G, 'lock'))"), "nil") == 0,
        "the module sets no global of its own");
  CHECK(mkdtemp(dir) != NULL, "temp dir");
  snprintf(code, sizeof code,
    "local l = luaguard.lock.dir('%s'); local s = tostring(l); l:release(); return s", dir);
  {
    char expected[512];
    snprintf(expected, sizeof expected, "LockFile(%s/.certbot.lock) <acquired>", dir);
    CHECK(strcmp(run(L, code), expected) == 0, "a lock through the embedded module");
  }
  CHECK(strcmp(run(L,
    "local out = {}\n"
    "local h = luaguard.ExitHandler(function(x) out[#out+1] = x end, 'a')\n"
    "h:register(function() out[#out+1] = 'b' end)\n"
    "h:close()\n"
    "return table.concat(out, ',')"), "b,a") == 0, "handlers through the embedded module");
  lua_close(L);
  rmdir(dir);
  return tap_done();
}

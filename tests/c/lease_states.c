/*
** lease_states — two Lua states in two threads of one process, through the
** public header (libluaguard.so; luaguard.lease found beside it), each with
** a lease and a guarded block: A's lease on ENDPOINT_A, B's on ENDPOINT_B.
** When the spec stops A's member (on our "held" line), A's block stops with
** LeaseLost and its ErrorHandler rolls back; B's block, in the same process,
** is not stopped: a loss is its own state's (the stop reason's group), not
** a signal for the process. TAP out.
**
**   lease_states ENDPOINT_A ENDPOINT_B NAME
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "luaguard.h"
#include "tap.h"

static volatile int ready_count, a_done;   /* atomics */

static int note_ready(lua_State *L) {
  (void)L;
  __atomic_add_fetch(&ready_count, 1, __ATOMIC_SEQ_CST);
  return 0;
}

static int a_is_done(lua_State *L) {
  lua_pushboolean(L, __atomic_load_n(&a_done, __ATOMIC_SEQ_CST));
  return 1;
}

typedef struct {
  const char *endpoint, *name, *code;
  char *result;
} job;

/* A: spins (15 s at most) until its lease is lost. B: spins until A is done,
** then a little longer, and ends normally. Both return "<error> <cleaned>". */
static const char code_a[] =
  "local ep, name = ...\n"
  "local l = luaguard.lock.lease(name, {ttl = 2, endpoints = {ep}})\n"
  "local cleaned = false\n"
  "local ok, e = pcall(function()\n"
  "  local h <close> = luaguard.ErrorHandler(function() cleaned = true end)\n"
  "  READY()\n"
  "  local stop = os.time() + 15\n"
  "  while os.time() < stop do pcall(function() end) end\n"
  "  error('still running 15 s later: not stopped', 0)\n"
  "end)\n"
  "return tostring(e) .. ' ' .. tostring(cleaned) .. ' ' .. tostring(l:is_locked())";
static const char code_b[] =
  "local ep, name = ...\n"
  "local l <close> = luaguard.lock.lease(name, {ttl = 2, endpoints = {ep}})\n"
  "local cleaned = false\n"
  "local ok, e = pcall(function()\n"
  "  local h <close> = luaguard.ErrorHandler(function() cleaned = true end)\n"
  "  READY()\n"
  "  local stop = os.time() + 20\n"
  "  while not A_DONE() and os.time() < stop do end\n"
  "  stop = os.clock() + 0.5\n"
  "  while os.clock() < stop do end\n"
  "  return 'went on'\n"
  "end)\n"
  "return tostring(e) .. ' ' .. tostring(cleaned) .. ' ' .. tostring(l:check())";

static void *run_state(void *arg) {
  job *j = arg;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "luaguard", luaopen_luaguard, 1);
  lua_pop(L, 1);
  lua_register(L, "READY", note_ready);
  lua_register(L, "A_DONE", a_is_done);
  if (luaL_loadstring(L, j->code) != LUA_OK) {
    j->result = strdup(lua_tostring(L, -1));
  } else {
    lua_pushstring(L, j->endpoint);
    lua_pushstring(L, j->name);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) j->result = strdup(luaL_tolstring(L, -1, NULL));
    else j->result = strdup(lua_tostring(L, -1));
  }
  lua_close(L);
  return NULL;
}

int main(int argc, char **argv) {
  pthread_t ta, tb;
  char name_a[256], name_b[256], expect[300];
  job a, b;
  int waited = 0;
  if (argc != 4) {
    fprintf(stderr, "usage: lease_states ENDPOINT_A ENDPOINT_B NAME\n");
    return 2;
  }
  alarm(60);              /* a test that waits forever fails instead of hanging */
  snprintf(name_a, sizeof name_a, "%s_a", argv[3]);
  snprintf(name_b, sizeof name_b, "%s_b", argv[3]);
  a.endpoint = argv[1], a.name = name_a, a.code = code_a, a.result = NULL;
  b.endpoint = argv[2], b.name = name_b, b.code = code_b, b.result = NULL;
  pthread_create(&ta, NULL, run_state, &a);
  pthread_create(&tb, NULL, run_state, &b);
  while (__atomic_load_n(&ready_count, __ATOMIC_SEQ_CST) < 2 && waited++ < 1000) {
    struct timespec ms = {0, 10000000L};
    nanosleep(&ms, NULL);
  }
  CHECK_INT(2, ready_count, "both states hold a lease and run a guarded block (10 s at most)");
  printf("# held\n");     /* the spec stops A's member now */
  fflush(stdout);
  pthread_join(ta, NULL);
  __atomic_store_n(&a_done, 1, __ATOMIC_SEQ_CST);
  pthread_join(tb, NULL);
  snprintf(expect, sizeof expect, "LeaseLost: %s (token ", name_a);
  CHECK(a.result != NULL && strncmp(a.result, expect, strlen(expect)) == 0,
        "A's block stopped with its LeaseLost");
  printf("# A: %s\n", a.result != NULL ? a.result : "(none)");
  CHECK(a.result != NULL && strstr(a.result, ") true false") != NULL,
        "A's ErrorHandler rolled back; its lease is no longer held");
  CHECK_STR("went on false true", b.result != NULL ? b.result : "(none)",
            "B's block in the same process went on, nothing rolled back, its lease alive");
  free(a.result);
  free(b.result);
  return tap_done();
}

/*
** fuzz_lua_api — libFuzzer target over the Lua API. Each input is read as a
** little program: each step picks an operation (lock.dir, LockFile, acquire,
** release, ErrorHandler, ExitHandler, register, close, run, received,
** tostring, dropping and collecting, a SIGTERM while armed, a handler left in
** a suspended coroutine ...) and its argument values from a fixed alphabet:
** every Lua type, NaN and negative and huge timeouts, empty, huge and NUL
** strings, callables that are not functions, and cleanups that re-enter the
** API (register or close from inside a running cleanup, raising non-string
** error objects, yielding, sending a signal). The program runs as Lua source
** in a fresh state, each step in its own pcall. Errors are fine; afterwards
** (lua_close done) these must hold, or the target aborts:
**   - no descriptor left open,
**   - the sandbox directory holds nothing but its fixtures,
**   - the six signals have the dispositions they had before, and so do the
**     real-time ones (the kick borrows one).
** LG_FUZZ_PRINT=1 prints each program on stderr (to reproduce a finding).
** The harness has its own SIGTERM handler (counting), so a signal re-delivered
** after the cleanups lands there instead of ending the fuzzer.
*/
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "testutil.h"
#include "fuzz_target.h"
#include "luaguard.h"

static char sandbox[] = "/tmp/lg_fuzz_lua.XXXXXX";
static volatile sig_atomic_t terms_received;
static const int handled[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGXCPU, SIGXFSZ };
static struct sigaction dispositions[6];
/* the real-time signals too: the kick borrows one while a handler is armed */
#define RT_MAX_COUNT 64
static void (*rt_dispositions[RT_MAX_COUNT])(int);

static void on_term(int sig) {
  (void)sig;
  terms_received++;
}

static void fail(const char *what, const char *program) {
  fprintf(stderr, "fuzz_lua_api: %s\nprogram:\n%s\n", what, program);
  abort();
}

/* 1 when the sandbox holds nothing but its fixtures. 'file' may be gone: a
** LockFile on it removes it at release, as certbot's does; it is put back. */
static int sandbox_clean(void) {
  DIR *d = opendir(sandbox);
  struct dirent *e;
  int clean = 1;
  char file[200];
  FILE *f;
  if (d == NULL) return 0;
  while ((e = readdir(d)) != NULL) {
    const char *n = e->d_name;
    if (strcmp(n, ".") && strcmp(n, "..") && strcmp(n, "sub") && strcmp(n, "link") &&
        strcmp(n, "file"))
      clean = 0;
  }
  closedir(d);
  snprintf(file, sizeof file, "%s/file", sandbox);
  f = fopen(file, "a");
  if (f != NULL) fclose(f);
  return clean;
}

static void remove_sandbox(void) {
  char command[200];
  snprintf(command, sizeof command, "rm -rf '%s'", sandbox);
  if (system(command) != 0) fprintf(stderr, "could not remove %s\n", sandbox);
}

/* kill(): SIGTERM to ourselves, as an operator's 'kill' would */
static int lua_kill_self(lua_State *L) {
  (void)L;
  kill(getpid(), SIGTERM);
  return 0;
}

/* The alphabet of argument values: Lua expressions. */
static const char *const values[] = {
  "nil", "true", "false", "0", "-1", "0/0", "math.huge", "-math.huge", "1e308", "2^63",
  "math.mininteger", "''", "'a\\0b'", "string.rep('x', 5000)",
  "D .. string.rep('/', 300) .. 'x.lock'", "D .. '/' .. string.rep('n', 300)",
  "D .. '/' .. string.rep('d/', 2100)", "D", "D .. '/'", "D .. '/x.lock'", "D .. '/sub'",
  "D .. '/link'", "D .. '/file'", "D .. '/missing/x'", "'x.lock'",
  "{}", "{timeout = 0}", "{timeout = -1}", "{timeout = 0/0}", "{timeout = 'soon'}",
  "{timeout = 0.001}", "{timeout = math.huge}", "{timeout = {}}",
  "print", "io.stdout", "coroutine.create(print)", "setmetatable({}, {__call = function() end})",
  "setmetatable({}, {__call = function() error('call fails') end})",
  "function() end", "function() error('cleanup failed') end", "function() error({code = 1}) end",
  "function() error(setmetatable({}, {__tostring = function() error('no tostring') end})) end",
  "function() error() end", "function() error(H[1]) end",
  "function() H[1]:register(print) end", "function() H[1]:close() end",
  "function() H[2]:close('closing error') end", "function() H[1]:run(print) end",
  "function() L[1]:release() end", "function() L[2] = lock.dir(D) end",
  "function() L[3] = lock.LockFile(D .. '/x.lock', {timeout = math.huge}) end",
  "function() coroutine.yield() end", "function() kill() end",
  "function() H[3] = ExitHandler(function() H[1]:close() end) H[3]:close() end",
  "function() collectgarbage() end", "function() return ErrorHandler(kill) end",
  "L[1]", "L[2]", "H[1]", "H[2]", "H[3]", "ErrorHandler", "lock",
};
#define NVALUES (sizeof values / sizeof values[0])

/* Steps: %s are filled with a slot (1-3) or a value from the alphabet. */
static const char *const steps[] = {
  "L[$] = lock.dir(#, #)",
  "L[$] = lock.LockFile(#, #)",
  "L[$]:acquire(#)",
  "L[$]:release()",
  "local _ = L[$]:is_locked(), tostring(L[$])",
  "L[$].acquire(#)",
  "H[$] = ErrorHandler(#, #)",
  "H[$] = ExitHandler(#, #, #)",
  "H[$]:register(#, #)",
  "H[$]:close(#)",
  "local _ = H[$]:run(#, #)",
  "local _ = H[$]:received(), tostring(H[$])",
  "H[$].register(#, #)",
  "L[$] = nil; H[$] = nil; collectgarbage()",
  "do local h <close> = ErrorHandler(#) h:register(#) kill() end",
  "do local h <close> = ExitHandler(#) h:register(#) error(#) end",
  "do local l <close> = lock.dir(D, #) local h <close> = ExitHandler(#) kill() end",
  "C = coroutine.wrap(function() H[$] = ExitHandler(#) coroutine.yield() kill() end) C()",
  "if C then C() end",
  "local _ = ErrorHandler():run(#, #)",
  /* handlers left in suspended coroutines; coroutines with no guard stopped */
  "CO = coroutine.create(function() H[$] = ErrorHandler(#) coroutine.yield() end) coroutine.resume(CO)",
  "if CO then coroutine.resume(CO) end",
  "local co = coroutine.wrap(function() kill() for i = 1, 1e5 do end end) co()",
  "local h <close> = ExitHandler(#) coroutine.wrap(function() kill() for i = 1, 1e5 do end end)()",
  "H[$] = ExitHandler(function() H[$] = ErrorHandler(#) kill() end)",
};
#define NSTEPS (sizeof steps / sizeof steps[0])

/* Ours for SIGTERM (libFuzzer may have put its own there since), then note
** all six, to compare after the input. */
static void take_dispositions(void) {
  struct sigaction sa;
  int i;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  for (i = 0; i < 6; i++) sigaction(handled[i], NULL, &dispositions[i]);
  for (i = 0; i <= SIGRTMAX - SIGRTMIN && i < RT_MAX_COUNT; i++) {
    struct sigaction rt;
    rt_dispositions[i] = sigaction(SIGRTMIN + i, NULL, &rt) == 0 ? rt.sa_handler : SIG_ERR;
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char path[200];
  (void)argc;
  (void)argv;
  if (mkdtemp(sandbox) == NULL) fail("mkdtemp", "");
  atexit(remove_sandbox);
  snprintf(path, sizeof path, "%s/sub", sandbox);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/link", sandbox);
  if (symlink("sub/target", path) != 0) fail("symlink", "");
  sandbox_clean();
  return 0;
}

/* Turn the input into Lua source; at most 24 steps. */
static void build_program(const uint8_t *data, size_t size, luaL_Buffer *b) {
  size_t at = 0;
  int n = 0;
  luaL_addstring(b, "local D = ...\nL, H = {}, {}\n");
  while (at < size && n++ < 24) {
    const char *s = steps[data[at++] % NSTEPS];
    luaL_addstring(b, "pcall(function() ");
    for (; *s != '\0'; s++) {
      if (*s == '$') {
        luaL_addchar(b, (char)('1' + (at < size ? data[at++] % 3 : 0)));
      }
      else if (*s == '#') {
        luaL_addchar(b, '(');
        luaL_addstring(b, values[at < size ? data[at++] % NVALUES : 0]);
        luaL_addchar(b, ')');
      }
      else luaL_addchar(b, *s);
    }
    luaL_addstring(b, " end)\n");
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = luaL_newstate(), *P, *second;
  luaL_Buffer b;
  char *program;
  size_t len;
  int fds, i, here;
  if (L == NULL) return 0;
  take_dispositions();
  /* relative paths resolve in the sandbox; libFuzzer's own cwd is given back */
  here = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (here < 0 || chdir(sandbox) != 0) fail("chdir", "");
  fds = test_count_fds();
  luaL_openlibs(L);
  luaguard_open_globals(L);
  lua_register(L, "kill", lua_kill_self);

  /* the program text lives in a second state, so it outlives L for reports */
  P = luaL_newstate();
  if (P == NULL) { lua_close(L); return 0; }
  luaL_buffinit(P, &b);
  build_program(data, size, &b);
  luaL_pushresult(&b);
  program = (char *)lua_tolstring(P, -1, &len);

  if (getenv("LG_FUZZ_PRINT") != NULL) fprintf(stderr, "--- program:\n%s", program);
  if (luaL_loadbuffer(L, program, len, "=fuzz") != LUA_OK) fail("the generated program does not load", program);
  /* a second Lua state with a handler armed from before the program, closed
  ** before or after the first state as the input says: frames of two states
  ** closed in either order */
  second = luaL_newstate();
  if (second != NULL) {
    luaL_openlibs(second);
    luaguard_open_globals(second);
    if (luaL_dostring(second, "KEEP = ExitHandler(function() end)") != LUA_OK) lua_pop(second, 1);
  }
  lua_pushstring(L, sandbox);
  (void)lua_pcall(L, 1, 0, 0);   /* errors are fine: a SignalExit may end it */
  if (second != NULL && size > 0 && (data[0] & 1)) { lua_close(second); second = NULL; }
  lua_close(L);
  if (second != NULL) lua_close(second);

  if (test_count_fds() != fds) fail("descriptor leaked", program);
  if (!sandbox_clean()) fail("the sandbox holds something besides its fixtures", program);
  for (i = 0; i < 6; i++) {
    struct sigaction now;
    sigaction(handled[i], NULL, &now);
    if (now.sa_handler != dispositions[i].sa_handler)
      fail("a signal disposition was not restored", program);
  }
  for (i = 0; i <= SIGRTMAX - SIGRTMIN && i < RT_MAX_COUNT; i++) {
    struct sigaction rt;
    if (sigaction(SIGRTMIN + i, NULL, &rt) == 0 && rt.sa_handler != rt_dispositions[i])
      fail("a real-time signal (the kick's) was not given back", program);
  }
  lua_close(P);
  if (fchdir(here) != 0) fail("fchdir", "");
  close(here);
  return 0;
}

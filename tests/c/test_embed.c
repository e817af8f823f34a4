/*
** test_embed — a C program that embeds Lua itself and opens luaguard through
** the public header, with no file on disk and no search path: the Lua layer
** is compiled into the library.
*/
#include <pthread.h>
#include <sys/wait.h>
#include <signal.h>
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
#include "testutil.h"

/* In place of `while true do end` where a signal must stop the block: a
** fault that keeps it running fails the check in 5 s, not at the alarm. */
#define SPIN_UNTIL_STOPPED \
  "  do local stop = os.time() + 5 while os.time() < stop do end end\n" \
  "  error('still running 5 s after the signal: not stopped', 0)\n"

static const char *run(lua_State *L, const char *code) {
  if (luaL_dostring(L, code) != LUA_OK) return luaL_tolstring(L, -1, NULL);
  return lua_isstring(L, -1) ? lua_tostring(L, -1) : "(no result)";
}

static volatile sig_atomic_t terms;
static void count_term(int sig) { (void)sig; terms++; }

/* sigaction, not signal(): with _POSIX_C_SOURCE glibc's signal() is one-shot
** (SA_RESETHAND), and a second SIGTERM would then end the test. */
static void catch_term(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = count_term;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
}

static int note_armed(lua_State *L);

static lua_State *new_state(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "luaguard", luaopen_luaguard, 1);
  lua_pop(L, 1);
  lua_register(L, "ARMED", note_armed);
  return L;
}

/* A state, with SIGTERM caught by count_term from a count of 0: where a
** signal goes once the state's handlers let it go. */
static lua_State *new_state_counting_terms(void) {
  lua_State *L = new_state();
  terms = 0;
  catch_term();
  return L;
}

/*
** lua_close finalizes every object, but what a finalizer makes during the
** close is freed without __gc. A global ExitHandler's cleanup, run by that
** close, arms a handler and takes a lock: both must be closed all the same
** (the fuzzer found the handler's frame left linked to freed memory, which
** hung or crashed the next state's first signal).
*/
static void test_made_while_closing(const char *dir) {
  char code[1024], lock_path[600];
  struct sigaction now;
  lua_State *L = new_state();
  snprintf(code, sizeof code,
    "KEEP = luaguard.ExitHandler(function()\n"
    "  LATE = luaguard.ExitHandler(print, 'never runs')\n"
    "  LATE_LOCK = luaguard.lock.dir('%s')\n"
    "end)\n"
    "return 'armed'", dir);
  CHECK_STR("armed", run(L, code), "a global ExitHandler armed");
  lua_close(L);
  sigaction(SIGTERM, NULL, &now);
  CHECK(now.sa_handler == SIG_DFL, "after lua_close SIGTERM is back to its default");
  snprintf(lock_path, sizeof lock_path, "%s/.certbot.lock", dir);
  CHECK(access(lock_path, F_OK) != 0, "the lock taken during the close is released");
  L = new_state();
  catch_term();  /* re-delivered to it after the cleanup */
  CHECK_STR("cleanup SignalExit: SIGTERM", run(L,
    "local got\n"
    "local ok, e = pcall(function()\n"
    "  local h <close> = luaguard.ErrorHandler(function() got = 'cleanup' end)\n"
    "  local me = io.open('/proc/self/stat'):read('n')\n"
    "  io.popen('kill -TERM ' .. me):close()\n"
    SPIN_UNTIL_STOPPED
    "end)\n"
    "return tostring(got) .. ' ' .. tostring(e)"),
    "a second state still stops on a signal and runs its cleanup");
  CHECK_INT(1, terms, "then the SIGTERM goes on to the handler that was there before");
  lua_close(L);
  signal(SIGTERM, SIG_DFL);
}

/* lua_close sweeps the locks of its own state only: another state's lock,
** held in a global there, stays held. */
static void test_close_leaves_other_states_locks(const char *dir) {
  char code[1024];
  lua_State *a = new_state(), *b = new_state();
  snprintf(code, sizeof code, "HELD = luaguard.lock.dir('%s') return tostring(HELD:is_locked())", dir);
  CHECK_STR("true", run(b, code), "state b holds a lock");
  CHECK_STR("ok", run(a, "return 'ok'"), "state a runs");
  lua_close(a);
  CHECK_STR("true", run(b, "return tostring(HELD:is_locked())"),
            "closing state a leaves state b's lock held");
  lua_close(b);
}

/*
** Two Lua states in one process, the older closed first (lua_close of the
** state that armed first): the newer one's handler keeps SIGTERM caught, is
** stopped by it, and runs its cleanup; then the signal goes on to the
** disposition from before.
*/
static void test_two_states_closed_out_of_order(void) {
  lua_State *A = new_state(), *B = new_state();
  terms = 0;
  catch_term();
  CHECK_STR("a", run(A, "KEEP = luaguard.ExitHandler(function() end) return 'a'"),
        "state A arms first");
  CHECK_STR("b", run(B, "CLEANED = false\n"
                      "KEEP = luaguard.ExitHandler(function() CLEANED = true end) return 'b'"), "state B arms second");
  lua_close(A);                                   /* the oldest frame goes first */
  kill(getpid(), SIGTERM);
  CHECK_INT(0, terms, "SIGTERM is still caught while B's handler is armed");
  CHECK_STR("SignalExit: SIGTERM", run(B, "local s = 0 for i = 1, 1000 do s = s + i end return 'went on'"), "B's next chunk is stopped by it");
  CHECK_STR("true", run(B, "KEEP:close() return tostring(CLEANED)"),
        "B's cleanup ran");
  CHECK_INT(1, terms, "then the signal went on to the previous handler, once");
  lua_close(B);
  signal(SIGTERM, SIG_DFL);
}

/* Two threads, a Lua state each, a handler each: one SIGTERM stops both
** blocks (the second when the first one's frame passes the signal on), each
** cleanup runs once, and the signal is re-delivered once, at the end. */
static volatile sig_atomic_t armed_threads;

static void *guarded_thread(void *arg) {
  lua_State *L = new_state();
  const char *out;
  (void)arg;
  out = run(L,
    "local n = 0\n"
    "local ok, e = pcall(function()\n"
    "  local h <close> = luaguard.ExitHandler(function() n = n + 1 end)\n"
    "  ARMED()\n"
    SPIN_UNTIL_STOPPED
    "end)\n"
    "return n .. ' ' .. tostring(e)");
  out = strdup(out);
  lua_close(L);
  return (void *)out;
}

static int note_armed(lua_State *L) {
  (void)L;
  armed_threads++;
  return 0;
}

static void test_two_threads(void) {
  pthread_t t1, t2;
  void *r1, *r2;
  int waited = 0;
  terms = 0;
  armed_threads = 0;
  catch_term();
  pthread_create(&t1, NULL, guarded_thread, NULL);
  pthread_create(&t2, NULL, guarded_thread, NULL);
  while (armed_threads < 2 && waited++ < 5000) {
    struct timespec ms = {0, 1000000L};
    nanosleep(&ms, NULL);
  }
  CHECK_INT(2, armed_threads, "both threads armed a handler (5 s at most)");
  kill(getpid(), SIGTERM);
  pthread_join(t1, &r1);
  pthread_join(t2, &r2);
  CHECK_STR("1 SignalExit: SIGTERM", (char *)r1, "thread 1 stopped, its cleanup ran once");
  CHECK_STR("1 SignalExit: SIGTERM", (char *)r2, "thread 2 stopped, its cleanup ran once");
  CHECK_INT(1, terms, "the signal re-delivered once, after both");
  free(r1);
  free(r2);
  signal(SIGTERM, SIG_DFL);
}

/*
** A state armed on the main thread, then another in a thread that blocks
** SIGTERM and reads a pipe nobody writes for 3 s: the signal lands on the
** main thread and stops the newest block, the thread's; its read is cut
** short by the kick, not left to run its course.
*/
static void *reading_thread(void *arg) {
  lua_State *L = new_state();
  sigset_t term;
  const char *out;
  (void)arg;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, NULL);
  out = run(L,
    "local t0 = os.time()\n"
    "local p = io.popen('sleep 3; echo late')\n"
    "local ok, e = pcall(function()\n"
    "  local h <close> = luaguard.ErrorHandler()\n"
    "  ARMED()\n"
    "  return p:read('a')\n"
    "end)\n"
    "return tostring(e) .. (os.time() - t0 < 2 and ' early' or ' late')");
  out = strdup(out);
  lua_close(L);
  return (void *)out;
}

/* With a handler armed in this thread's state: reading_thread armed and in
** its read, SIGTERM to the process; what the thread's block said (malloc'd). */
static char *read_stopped_by_sigterm(void) {
  pthread_t t;
  void *r;
  int waited = 0;
  armed_threads = 0;
  pthread_create(&t, NULL, reading_thread, NULL);
  while (armed_threads < 1 && waited++ < 5000) {
    struct timespec ms = {0, 1000000L};
    nanosleep(&ms, NULL);
  }
  {
    struct timespec settle = {0, 100000000L};   /* into the read */
    nanosleep(&settle, NULL);
  }
  kill(getpid(), SIGTERM);
  pthread_join(t, &r);
  return (char *)r;
}

static void test_thread_read_cut_short(void) {
  lua_State *A = new_state();
  char *r;
  terms = 0;
  catch_term();
  CHECK_STR("armed", run(A, "H = luaguard.ExitHandler() return 'armed'"), "the main thread's state armed first");
  r = read_stopped_by_sigterm();
  CHECK_STR("SignalExit: SIGTERM early", r, "a thread's blocking read is cut short by the kick");
  free(r);
  run(A, "pcall(function() H:close() end)");
  lua_close(A);
  CHECK_INT(1, terms, "the signal re-delivered once, after both");
  signal(SIGTERM, SIG_DFL);
}

/* Arms and closes a handler in a state of its own, then ends: the first
** thread of a fresh process to arm, the one the kick's timer was made for. */
static void *arm_once_thread(void *arg) {
  lua_State *L = new_state();
  (void)arg;
  run(L, "luaguard.ExitHandler():close()");
  lua_close(L);
  return NULL;
}

/*
** The kick's timer signals the thread that made it; when that thread is gone
** the next arm must make it again, or kicks go nowhere. In a forked child (a
** fresh timer): a thread arms, closes and ends; then the read cut short as
** above. Exit status 0: cut short; 1: the read ran its course.
*/
static void test_kick_outlives_its_thread(void) {
  pid_t child;
  int status = -1;
  child = test_fork_limited(20);
  if (child == 0) {
    lua_State *A;
    pthread_t t;
    char *r;
    int early;
    pthread_create(&t, NULL, arm_once_thread, NULL);
    pthread_join(t, NULL);
    terms = 0;
    catch_term();
    A = new_state();
    run(A, "H = luaguard.ExitHandler()");
    r = read_stopped_by_sigterm();
    early = strcmp(r, "SignalExit: SIGTERM early") == 0;
    free(r);
    run(A, "pcall(function() H:close() end)");
    lua_close(A);
    _exit(early ? 0 : 1);
  }
  waitpid(child, &status, 0);
  CHECK_INT(0, status, "a thread's read is cut short by the kick when the thread the timer was "
                       "made for has ended (wait status 0; 256: the read ran its course)");
}

/* A SignalExit caught outside its guard holds no reference of ours: after
** the handler closed, collectgarbage() frees it. */
static void test_caught_signal_exit_is_freed(void) {
  lua_State *L = new_state_counting_terms();
  CHECK_STR("SignalExitSignalExitSignalExit 0", run(L,
    "local weak = setmetatable({}, { __mode = 'v' })\n"
    "for i = 1, 3 do\n"
    "  local ok, e = pcall(function()\n"
    "    local h <close> = luaguard.ErrorHandler(function() end)\n"
    "    local me = io.open('/proc/self/stat'):read('n')\n"
    "    io.popen('kill -TERM ' .. me):close()\n"
    SPIN_UNTIL_STOPPED
    "  end)\n"
    "  weak[i] = e\n"
    "end\n"
    "local kinds = weak[1].kind .. weak[2].kind .. weak[3].kind\n"
    "collectgarbage(); collectgarbage()\n"
    "local alive = 0\n"
    "for i = 1, 3 do if weak[i] then alive = alive + 1 end end\n"
    "return kinds .. ' ' .. alive"),
    "three SignalExits caught outside their guards are all collected");
  CHECK_INT(3, terms, "each signal went on to the program's handler");
  lua_close(L);
  signal(SIGTERM, SIG_DFL);
}

/*
** An embedder's outer frame (luaguard_outer_arm) on a thread of its own, a
** handler left armed in a suspended coroutine, and SIGTERM while the main
** thread runs Lua: the handler is closed as by the signal (its cleanup runs);
** the outer frame, which has no cleanups, is not closed by that (its owner
** closes it); the signal goes on to it, and its close delivers it.
*/
static void test_outer_frame_on_a_thread(void) {
  lua_State *L = new_state_counting_terms();
  lua_State *T = lua_newthread(L);          /* stack: T (kept there) */
  CHECK_INT(0, luaguard_outer_arm(T), "an outer frame armed on a thread of the embedder's");
  CHECK_STR("suspended", run(L,
    "CO = coroutine.create(function()\n"
    "  local h = luaguard.ExitHandler(function() CLEANED = true end)\n"
    "  coroutine.yield()\n"
    "end)\n"
    "coroutine.resume(CO)\n"
    "return coroutine.status(CO)"), "outer frame on a thread: a handler left armed in a suspended coroutine");
  CHECK_STR("cleaned", run(L,
    "local me = io.open('/proc/self/stat'):read('n')\n"
    "io.popen('kill -TERM ' .. me):close()\n"
    "local stop = os.time() + 5\n"
    "while os.time() < stop and not CLEANED do end\n"
    "return CLEANED and 'cleaned' or 'not cleaned'"),
    "outer frame on a thread: SIGTERM on the main thread closes the handler as by the signal");
  CHECK_INT(0, terms, "outer frame on a thread: the signal is held by the outer frame meanwhile");
  luaguard_outer_close();
  CHECK_INT(1, terms, "outer frame on a thread: its close delivers the signal to the program");
  lua_close(L);
  signal(SIGTERM, SIG_DFL);
}

/* A program's own allocator, put in after luaguard wrapped the state's: the
** state keeps working (handlers, coroutines, signals, lua_close), only the
** tracking of coroutines stops (luaguard.h). */
static lua_Alloc their_base;
static void *their_base_ud;
static long their_calls;

static void *their_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  their_calls++;
  return their_base(their_base_ud, ptr, osize, nsize);
}

static void test_program_allocator_after_ours(void) {
  lua_State *L = new_state_counting_terms();
  run(L, "local h = luaguard.ExitHandler() h:close()");   /* luaguard's allocator is in */
  their_base = lua_getallocf(L, &their_base_ud);
  lua_setallocf(L, their_alloc, NULL);
  CHECK_STR("SignalExit: SIGTERM 1", run(L,
    "local n = 0\n"
    "local ok, e = pcall(function()\n"
    "  local h <close> = luaguard.ExitHandler(function() n = n + 1 end)\n"
    "  local co = coroutine.wrap(function() coroutine.yield() end)\n"
    "  co()\n"
    "  local me = io.open('/proc/self/stat'):read('n')\n"
    "  io.popen('kill -TERM ' .. me):close()\n"
    SPIN_UNTIL_STOPPED
    "end)\n"
    "collectgarbage()\n"
    "return tostring(e) .. ' ' .. n"),
    "with a program's allocator after ours, a guarded block still stops and cleans up");
  CHECK(their_calls > 0, "the program's allocator is the one called");
  CHECK_INT(1, terms, "the signal went on to the program's handler");
  /* With the set of coroutines dropped, the guards themselves name the
  ** threads to hook: a running coroutine's guard, older than one armed in a
  ** coroutine it left suspended, must still stop its block. Handlers on the
  ** main thread come and go first: the count of guards off it must not move. */
  CHECK_STR("waiting running SignalExit: SIGTERM", run(L,
    "for _ = 1, 3 do luaguard.ErrorHandler():close() end\n"
    "local order = {}\n"
    "local runner = coroutine.wrap(function()\n"
    "  local a <close> = luaguard.ErrorHandler(function() order[#order + 1] = 'running' end)\n"
    "  local waiting = coroutine.create(function()\n"
    "    local b <close> = luaguard.ErrorHandler(function() order[#order + 1] = 'waiting' end)\n"
    "    coroutine.yield()\n"
    "  end)\n"
    "  coroutine.resume(waiting)\n"
    "  local me = io.open('/proc/self/stat'):read('n')\n"
    "  io.popen('kill -TERM ' .. me):close()\n"
    SPIN_UNTIL_STOPPED
    "end)\n"
    "local ok, e = pcall(runner)\n"
    "return table.concat(order, ' ') .. ' ' .. tostring(e)"),
    "with a program's allocator after ours, a running coroutine's guard stops its block "
    "while a newer one waits in a suspended coroutine");
  CHECK_INT(2, terms, "that signal went on to the program's handler too");
  /* One guard off the main thread only, older than the main thread's: the
  ** signal goes to the newest frame (main's) while the coroutine resumed
  ** from main's block runs; the coroutine is stopped first. Its
  ** SignalExit ends it with its handler still armed (a dead coroutine's
  ** <close> waits for coroutine.close); main's block is stopped next: its
  ** handler first (the newer), then the coroutine's. Main's is not closed
  ** as abandoned while the coroutine runs: its block went on after the
  ** resume, the signal swallowed. */
  CHECK_STR("main coroutine SignalExit: SIGTERM, coroutine: SignalExit: SIGTERM", run(L,
    "local order = {}\n"
    "local co = coroutine.create(function()\n"
    "  local a <close> = luaguard.ErrorHandler(function() order[#order + 1] = 'coroutine' end)\n"
    "  coroutine.yield()\n"
    "  local me = io.open('/proc/self/stat'):read('n')\n"
    "  io.popen('kill -TERM ' .. me):close()\n"
    SPIN_UNTIL_STOPPED
    "end)\n"
    "coroutine.resume(co)\n"
    "local ok, e = pcall(function()\n"
    "  local m <close> = luaguard.ErrorHandler(function() order[#order + 1] = 'main' end)\n"
    "  local rok, re = coroutine.resume(co)\n"
    "  order[#order + 1] = 'NOT REACHED: ' .. tostring(re)\n"
    "end)\n"
    "local cok, cerr = coroutine.close(co)\n"       /* what the coroutine died of */
    "return table.concat(order, ' ') .. ' ' .. tostring(e) .. ', coroutine: ' .. tostring(cerr)"),
    "with a program's allocator after ours, a coroutine's guard older than the main thread's "
    "stops its block when the only one off the main thread (not 5 s later, by its own "
    "error), and main's block next");
  CHECK_INT(3, terms, "and that signal went on to the program's handler");
  lua_close(L);                                   /* our wrapper, behind theirs, frees last */
  their_base = NULL;        /* nothing of the state left reachable: a leak shows (LSan) */
  their_base_ud = NULL;
  signal(SIGTERM, SIG_DFL);
}

/*
** Memory errors. An allocator that fails the n-th growth from some point on,
** for n = 0, 1, 2, ... until a script of handlers and a lock runs through:
** each failure is Lua's memory error, nothing else, and after lua_close
** nothing is left (SIGTERM at its default again, no lock file, no crash;
** under ASan, no leak).
*/
static long growths_left = -1;       /* -1: no limit */

static void *failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  if (ptr == NULL || nsize > osize) {     /* Lua relies on shrinks never failing */
    if (growths_left == 0) return NULL;
    if (growths_left > 0) growths_left--;
  }
  return realloc(ptr, nsize);
}

static void test_memory_errors_leave_nothing(const char *dir) {
  char code[1024], lock_path[600];
  long n;
  int completed = 0, wrong = 0, left = 0;
  snprintf(lock_path, sizeof lock_path, "%s/.certbot.lock", dir);
  snprintf(code, sizeof code,
    "local nothing = function() end\n"
    "local h = luaguard.ErrorHandler(nothing, 'a', 'b')\n"
    "h:register(nothing, 1, 2, 3)\n"
    "local e <close> = luaguard.ExitHandler(nothing)\n"
    "local l = luaguard.lock.dir('%s')\n"
    "l:release() l:acquire()\n"
    "local s = tostring(l) .. tostring(h)\n"
    "h:close('failed')\n"
    "l:release()\n"
    "return 'done'", dir);
  for (n = 0; n < 5000 && !completed; n++) {
    lua_State *L = lua_newstate(failing_alloc, NULL);
    struct sigaction now;
    int status;
    luaL_openlibs(L);
    luaL_requiref(L, "luaguard", luaopen_luaguard, 1);
    lua_pop(L, 1);
    growths_left = n;
    status = luaL_dostring(L, code);
    growths_left = -1;
    if (status == LUA_OK) completed = 1;
    else {
      const char *msg = lua_isstring(L, -1) ? lua_tostring(L, -1) : "(an error object, not a string)";
      if (status != LUA_ERRMEM && strstr(msg, "not enough memory") == NULL && wrong++ == 0)
        printf("#   with %ld growths: %s\n", n, msg);
    }
    lua_close(L);
    sigaction(SIGTERM, NULL, &now);
    if (now.sa_handler != SIG_DFL || access(lock_path, F_OK) == 0) {
      if (left++ == 0) printf("#   with %ld growths something was left after lua_close\n", n);
      unlink(lock_path);
    }
  }
  CHECK(completed, "memory errors: the script runs through once allocations stop failing");
  CHECK_INT(0, wrong, "memory errors: every failure is a memory error");
  CHECK_INT(0, left, "memory errors: after lua_close no handler is installed and no lock file left");
}

/* A process forked from the one that armed a handler (no exec) never runs
** its cleanups, however it closes it: an ExitHandler closed in the child,
** an ErrorHandler closed there with an error, and a lua_close there. The
** parent's close runs them, once. */
static void test_forked_child_runs_no_cleanup(const char *dir) {
  char code[1024], path[600], log[256] = "";
  lua_State *L = new_state();
  FILE *f;
  pid_t child;
  int status = -1;
  snprintf(path, sizeof path, "%s/cleanups", dir);
  snprintf(code, sizeof code,
    "local function note(who) local f = io.open('%s', 'a') f:write(who, ' ') f:close() end\n"
    "EXIT = luaguard.ExitHandler(note, 'exit')\n"
    "ERR = luaguard.ErrorHandler(note, 'error')\n"
    "LEFT = luaguard.ExitHandler(note, 'left')\n"
    "return 'armed'", path);
  CHECK_STR("armed", run(L, code), "three handlers armed");
  child = test_fork_limited(10);
  if (child == 0) {
    run(L, "EXIT:close() ERR:close('failed')");
    lua_close(L);           /* LEFT, still armed, closed by the close of the state */
    _exit(0);
  }
  waitpid(child, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child closed them and exited");
  if ((f = fopen(path, "r")) != NULL) {
    if (fgets(log, sizeof log, f) == NULL) log[0] = '\0';
    fclose(f);
  }
  CHECK_STR("", log, "the child ran none of the parent's cleanups");
  run(L, "EXIT:close() ERR:close('failed') LEFT:close()");
  lua_close(L);
  log[0] = '\0';
  if ((f = fopen(path, "r")) != NULL) {
    if (fgets(log, sizeof log, f) == NULL) log[0] = '\0';
    fclose(f);
  }
  CHECK_STR("exit error left ", log, "the parent's closes ran each once");
  unlink(path);
}

/* A Process inherited by a forked child (no exec) is not the child's: the
** close of the state there neither signals the parent's child nor waits for
** it (the grace, then SIGKILL's wait); the parent's child runs on. */
static void test_forked_child_process(void) {
  lua_State *L = new_state();
  pid_t child;
  int status = -1;
  CHECK_STR("running", run(L, "P = luaguard.proc.spawn({'sleep', '30'}, {grace = 3}) "
                              "return P:wait(0) == nil and 'running' or 'ended'"), "the parent's child runs");
  child = test_fork_limited(10);
  if (child == 0) {
    double start = test_now();
    lua_close(L);
    _exit(test_now() - start < 1.5 ? 0 : 3);
  }
  waitpid(child, &status, 0);
  CHECK_INT(0, status, "a forked child's close of the state does not wait for the parent's child "
                       "(wait status 0; 768: it took 1.5 s or more)");
  CHECK_STR("running", run(L, "return P:wait(0.2) == nil and 'running' or 'ended'"),
            "the parent's child was not signalled by the forked one");
  CHECK_STR("15", run(L, "P:kill() return tostring(P:wait(5).signal)"), "the parent stops it");
  lua_close(L);
}

/* From a cleanup (this process defers signals meanwhile): fork; the child, a
** process of its own, is not running cleanups, so a handler it arms is
** stopped by a SIGTERM at once. Pushes the child's wait status. */
static int fork_in_cleanup(lua_State *L) {
  pid_t child = test_fork_limited(10);
  int status = -1;
  if (child == 0) {
    lua_State *C = new_state();
    const char *out = run(C,
      "local ok, e = pcall(function()\n"
      "  local h <close> = luaguard.ErrorHandler()\n"
      "  local me = io.open('/proc/self/stat'):read('n')\n"
      "  io.popen('kill -TERM ' .. me):close()\n"
      SPIN_UNTIL_STOPPED
      "end)\n"
      "return tostring(e)");
    _exit(strcmp(out, "SignalExit: SIGTERM") == 0 ? 0 : 1);
  }
  waitpid(child, &status, 0);
  lua_pushinteger(L, status);
  return 1;
}

static void test_fork_during_cleanup(void) {
  lua_State *L = new_state_counting_terms();
  lua_register(L, "FORK_IN_CLEANUP", fork_in_cleanup);
  CHECK_STR("0", run(L,
    "local status\n"
    "do local h <close> = luaguard.ExitHandler(function() status = FORK_IN_CLEANUP() end) end\n"
    "return tostring(status)"),
    "a child forked by a cleanup is stopped by its own SIGTERM (wait status 0; 256: it ran on)");
  lua_close(L);
  signal(SIGTERM, SIG_DFL);
}

/* A LockFile inherited by a forked child (no exec) is not the child's: it
** says so (is_locked false, tostring <released>) and its release there
** leaves the parent's file. */
static void test_forked_child_lockfile(const char *dir) {
  char code[700], path[600];
  lua_State *L = new_state();
  pid_t child;
  int status = -1;
  snprintf(path, sizeof path, "%s/inherited.lock", dir);
  snprintf(code, sizeof code, "L = luaguard.lock.LockFile('%s') return tostring(L:is_locked())", path);
  CHECK_STR("true", run(L, code), "the parent holds it");
  child = test_fork_limited(10);
  if (child == 0) {
    const char *seen = run(L, "local s = tostring(L:is_locked()) .. ' ' .. tostring(L):match('<.*>') "
                              "L:release() return s");
    _exit(strcmp(seen, "false <released>") == 0 && access(path, F_OK) == 0 ? 0 : 1);
  }
  waitpid(child, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "a forked child: the inherited LockFile is not locked there, and its release leaves the file");
  CHECK_STR("true", run(L, "return tostring(L:is_locked())"), "the parent still holds it");
  lua_close(L);
  CHECK(access(path, F_OK) != 0, "the parent's close removed it");
}

/*
** The core opened a second time in one state (luaopen_luaguard_core is public:
** an embedder may call it again) keeps what was armed before: a handler left
** armed in a suspended coroutine is still closed at the signal, its cleanup
** run then (not left to a __gc that the signal's exit never reaches).
*/
static void test_core_opened_twice(void) {
  lua_State *L = new_state_counting_terms();
  CHECK_STR("armed", run(L,
    "OUT = {}\n"
    "CO = coroutine.create(function()\n"
    "  local h <close> = luaguard.ErrorHandler(function() OUT[#OUT + 1] = 'co' end)\n"
    "  coroutine.yield()\n"
    "end)\n"
    "coroutine.resume(CO)\n"
    "return 'armed'"), "opened twice: a handler armed in a coroutine left suspended");
  luaL_requiref(L, "luaguard.core.again", luaopen_luaguard_core, 0);
  lua_pop(L, 1);
  kill(getpid(), SIGTERM);
  CHECK_INT(0, terms, "opened twice: SIGTERM caught while that handler is armed");
  CHECK_STR("went on", run(L, "local s = 0 for i = 1, 1000 do s = s + i end return 'went on'"),
        "opened twice: the next chunk, in no guarded block, goes on (the stop was the coroutine's)");
  CHECK_STR("co", run(L, "return table.concat(OUT, ',')"),
        "opened twice: the suspended coroutine's cleanup ran at the stop");
  CHECK_INT(1, terms, "opened twice: then the signal went on to the previous handler");
  lua_close(L);
  signal(SIGTERM, SIG_DFL);
}

int main(void) {
  char dir[] = "/tmp/lg_embed.XXXXXX", code[1024];
  lua_State *L = luaL_newstate();
  tap_deadline(30);
  setenv("LUA_PATH", "/nonexistent/?.lua", 1);     /* prove no file is needed */
  setenv("LUA_CPATH", "/nonexistent/?.so", 1);
  luaL_openlibs(L);
  luaL_requiref(L, "luaguard", luaopen_luaguard, 1);
  lua_pop(L, 1);
  CHECK_STR("function", run(L, "return type(luaguard.lock.dir)"),
        "luaopen_luaguard gives the whole module");
  CHECK_STR("true", run(L, "return tostring(require('luaguard') == luaguard)"),
        "require returns the same table");
  CHECK_STR("nil", run(L, "return tostring(rawget(_G, 'lock'))"),
        "the module sets no global of its own");
  CHECK(mkdtemp(dir) != NULL, "temp dir");
  snprintf(code, sizeof code,
    "local l = luaguard.lock.dir('%s'); local s = tostring(l); l:release(); return s", dir);
  {
    char expected[512];
    snprintf(expected, sizeof expected, "LockFile(%s/.certbot.lock) <acquired>", dir);
    CHECK_STR(expected, run(L, code), "a lock through the embedded module");
  }
  CHECK_STR("b,a", run(L,
    "local out = {}\n"
    "local h = luaguard.ExitHandler(function(x) out[#out+1] = x end, 'a')\n"
    "h:register(function() out[#out+1] = 'b' end)\n"
    "h:close()\n"
    "return table.concat(out, ',')"), "handlers through the embedded module");
  lua_close(L);
  L = luaL_newstate();
  luaL_openlibs(L);
  luaopen_luaguard(L);        /* called as a C function, not through lua_call */
  CHECK_INT(1, lua_gettop(L), "luaopen_luaguard called directly pushes one value");
  CHECK(lua_istable(L, 1) && lua_getfield(L, 1, "ErrorHandler") == LUA_TFUNCTION,
        "luaopen_luaguard called directly: that value is the module");
  lua_close(L);
  L = luaL_newstate();
  luaL_openlibs(L);
  luaguard_open_globals(L);
  CHECK(lua_gettop(L) == 0, "luaguard_open_globals leaves the stack as it was");
  CHECK_STR("true", run(L, "local g = require('luaguard'); return tostring(lock == g.lock and "
                      "ErrorHandler == g.ErrorHandler and ExitHandler == g.ExitHandler)"), "luaguard_open_globals: the host's globals, the module's objects");
  lua_close(L);
  test_made_while_closing(dir);
  test_close_leaves_other_states_locks(dir);
  test_two_states_closed_out_of_order();
  test_two_threads();
  test_thread_read_cut_short();
  test_kick_outlives_its_thread();
  test_caught_signal_exit_is_freed();
  test_outer_frame_on_a_thread();
  test_program_allocator_after_ours();
  test_memory_errors_leave_nothing(dir);
  test_forked_child_runs_no_cleanup(dir);
  test_forked_child_lockfile(dir);
  test_forked_child_process();
  test_fork_during_cleanup();
  test_core_opened_twice();
  rmdir(dir);
  return tap_done();
}

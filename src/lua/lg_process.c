/*
** lg_process.c — proc.run, proc.spawn and the Process type over lg_child.
**
** What makes these more than a posix_spawn binding is the guard: a child is
** tagged with its Lua state, and when a handled signal stops a guarded block
** (lg_guard.c stop_children) every child of the state still running gets the
** signal once, 'grace' seconds, then SIGKILL, and is reaped, before the
** SignalExit is raised: no cleanup runs and no lock is released while one
** runs. A child started by a cleanup (signals deferred) is left to finish.
**
** A Process owns everything a wait needs (pipes, buffers, the child's record
** in the process-wide list), so a SignalExit raised in the middle of a wait
** leaks nothing: the userdata's __gc closes and frees it.
*/
#define _GNU_SOURCE   /* sigabbrev_np */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "lg_child.h"
#include "lg_common.h"
#include "lg_guard.h"
#include "lg_process.h"

#define STDERR_TAIL 4096        /* what a ProcessError keeps of stderr */
#define DEFAULT_GRACE 10.0
#define FALLBACK_NAP_MS 10      /* a wait without a pidfd looks this often */

/* uservalues: the argv table (names the process, goes into a ProcessError),
** and the stdin string being fed (kept alive while it is) */
enum { UV_ARGV = 1, UV_STDIN, UV_COUNT = UV_STDIN };

typedef struct Process {
  lg_child child;
  int capture[3];           /* stdout, stderr captured (index 1, 2) */
  char *buf[3];             /* malloc'd captured output */
  size_t len[3], cap[3];
  const char *feed;         /* stdin string (UV_STDIN), fed from 'fed' on */
  size_t feed_len, fed;
  int timed_out;
  int closed;               /* __close/__gc done */
} Process;

#define toProcess(L, i) ((Process *)luaL_checkudata(L, i, LG_PROCESS_MT))

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


/* ---- options ---- */

typedef struct spawn_request {
  lg_spawn_options o;
  double timeout;           /* run only; HUGE_VAL: none */
  double grace;
  int check;
  int argv_idx;             /* stack: the argv array (userdata); the envp
                            ** array stays on the stack above it, o.envp's
                            ** anchor */
} spawn_request;

/* argv at idx: a table of strings. Pushes a NULL-ended char *[] (a userdata
** whose strings live in the table). */
static char **check_argv(lua_State *L, int idx) {
  lua_Integer n, i;
  char **argv;
  if (lua_type(L, idx) == LUA_TSTRING)
    luaL_argerror(L, idx, "a table of strings expected, not a command line "
                          "(for a shell, say {\"sh\", \"-c\", cmd})");
  luaL_checktype(L, idx, LUA_TTABLE);
  n = luaL_len(L, idx);
  if (n < 1) luaL_argerror(L, idx, "argv is empty (argv[1] names the command)");
  argv = (char **)lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *argv, 0);
  for (i = 1; i <= n; i++) {
    size_t len;
    if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
      luaL_argerror(L, idx, lua_pushfstring(L, "argv[%d] must be a string, not %s",
                                            (int)i, luaL_typename(L, -1)));
    argv[i - 1] = (char *)lua_tolstring(L, -1, &len);
    if (strlen(argv[i - 1]) != len)
      luaL_argerror(L, idx, lua_pushfstring(L, "argv[%d] contains a NUL byte", (int)i));
    lua_pop(L, 1);          /* the table keeps it */
  }
  argv[n] = NULL;
  return argv;
}

/* opts[name]: nil (-> dflt) or one of the words; the index in 'words'. */
static int check_word(lua_State *L, int opts, const char *name, const char *const words[],
                      int dflt) {
  int i;
  const char *w;
  if (lua_getfield(L, opts, name) == LUA_TNIL) {
    lua_pop(L, 1);
    return dflt;
  }
  w = lua_tostring(L, -1);
  for (i = 0; w != NULL && lua_type(L, -1) == LUA_TSTRING && words[i] != NULL; i++)
    if (strcmp(words[i], w) == 0) {
      lua_pop(L, 1);
      return i;
    }
  return luaL_argerror(L, opts, lua_pushfstring(L, "opts.%s: unknown value", name));
}

static double check_seconds(lua_State *L, int opts, const char *name, double dflt) {
  double v;
  if (lua_getfield(L, opts, name) == LUA_TNIL) {
    lua_pop(L, 1);
    return dflt;
  }
  if (!lua_isnumber(L, -1))
    luaL_argerror(L, opts, lua_pushfstring(L, "opts.%s must be a number of seconds", name));
  v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (isnan(v) || v < 0)
    luaL_argerror(L, opts, lua_pushfstring(L, "opts.%s must be a non-negative number", name));
  return v;
}

/* Copies every "K=V" of env (a table: string keys, string values) into out
** (a table being filled as a list). */
static void add_env_table(lua_State *L, int opts, int env, int out) {
  lua_pushnil(L);
  while (lua_next(L, env) != 0) {
    size_t klen, vlen;
    const char *k, *v;
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      luaL_argerror(L, opts, "env and env_add map names (strings) to values (strings)");
    k = lua_tolstring(L, -2, &klen);
    v = lua_tolstring(L, -1, &vlen);
    if (klen == 0 || strchr(k, '=') != NULL || strlen(k) != klen || strlen(v) != vlen)
      luaL_argerror(L, opts, lua_pushfstring(L, "bad environment variable name '%s'", k));
    lua_pushvalue(L, -2);
    lua_pushfstring(L, "%s=%s", k, v);
    lua_settable(L, out);   /* out[k] = "k=v": a later one replaces */
    lua_pop(L, 1);
  }
}

extern char **environ;

/* The child's environment: env (replacing ours) or ours, then env_add.
** Pushes a char *[] userdata (and the table holding its strings below it),
** or pushes two nils when neither is given. */
static char **build_env(lua_State *L, int opts) {
  int has_env, has_add, out, n = 0;
  char **envp;
  has_env = lua_getfield(L, opts, "env") != LUA_TNIL;
  has_add = lua_getfield(L, opts, "env_add") != LUA_TNIL;   /* stack: env, add */
  if (!has_env && !has_add) {
    lua_pop(L, 2);
    lua_pushnil(L);
    lua_pushnil(L);
    return NULL;
  }
  if (has_env) luaL_argexpected(L, lua_istable(L, -2), opts, "a table as opts.env");
  if (has_add) luaL_argexpected(L, lua_istable(L, -1), opts, "a table as opts.env_add");
  lua_newtable(L);          /* stack: env, add, out (name -> "name=value") */
  out = lua_gettop(L);
  if (has_env) add_env_table(L, opts, out - 2, out);
  else {
    char **e;
    for (e = environ; e != NULL && *e != NULL; e++) {
      const char *eq = strchr(*e, '=');
      if (eq == NULL) continue;
      lua_pushlstring(L, *e, (size_t)(eq - *e));
      lua_pushstring(L, *e);
      lua_settable(L, out);
    }
  }
  if (has_add) add_env_table(L, opts, out - 1, out);
  lua_pushnil(L);
  while (lua_next(L, out) != 0) { n++; lua_pop(L, 1); }
  envp = (char **)lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *envp, 0);
  n = 0;
  lua_pushnil(L);
  while (lua_next(L, out) != 0) {
    envp[n++] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  envp[n] = NULL;
  lua_remove(L, out - 2);   /* stack: add, out, envp */
  lua_remove(L, out - 2);   /* stack: out, envp */
  return envp;
}

static const char *const in_words[] = {"inherit", "null", NULL};
static const char *const out_words[] = {"inherit", "null", "capture", "stdout", NULL};

/* Reads argv (1) and opts (2) into r; pushes what r points into. */
static void check_request(lua_State *L, spawn_request *r, int for_run) {
  static const int stream_of[] = {LG_STREAM_INHERIT, LG_STREAM_NULL, LG_STREAM_PIPE,
                                  LG_STREAM_STDOUT};
  int opts = 2, i;
  memset(r, 0, sizeof *r);
  r->timeout = HUGE_VAL;
  r->grace = DEFAULT_GRACE;
  lua_settop(L, 2);         /* stack: argv, opts */
  check_argv(L, 1);
  r->argv_idx = lua_gettop(L);
  if (lua_isnoneornil(L, opts)) {
    lua_pushnil(L);         /* (the same stack as with opts) */
    lua_pushnil(L);
    return;
  }
  luaL_checktype(L, opts, LUA_TTABLE);
  if (lua_getfield(L, opts, "cwd") != LUA_TNIL) {
    size_t len;
    if (lua_type(L, -1) != LUA_TSTRING) luaL_argerror(L, opts, "opts.cwd must be a string");
    r->o.cwd = lua_tolstring(L, -1, &len);
    if (strlen(r->o.cwd) != len) luaL_argerror(L, opts, "opts.cwd contains a NUL byte");
  }
  lua_pop(L, 1);            /* opts keeps it */
  if (lua_getfield(L, opts, "stdin") == LUA_TSTRING &&
      strcmp(lua_tostring(L, -1), "inherit") != 0 && strcmp(lua_tostring(L, -1), "null") != 0)
    r->o.stream[0] = LG_STREAM_PIPE;        /* a string to feed */
  else if (!lua_isnil(L, -1)) r->o.stream[0] = stream_of[check_word(L, opts, "stdin", in_words, 0)];
  lua_pop(L, 1);
  for (i = 1; i <= 2; i++) {
    int w = check_word(L, opts, i == 1 ? "stdout" : "stderr", out_words, 0);
    if (w == 3 && i == 1) luaL_argerror(L, opts, "opts.stdout: unknown value");
    r->o.stream[i] = stream_of[w];
  }
  r->timeout = check_seconds(L, opts, "timeout", HUGE_VAL);
  if (!for_run && r->timeout != HUGE_VAL)
    luaL_argerror(L, opts, "opts.timeout is for proc.run (a Process has wait(timeout))");
  r->grace = check_seconds(L, opts, "grace", DEFAULT_GRACE);
  lua_getfield(L, opts, "check");
  r->check = lua_toboolean(L, -1);
  lua_getfield(L, opts, "terminal");
  r->o.terminal = lua_toboolean(L, -1);
  lua_pop(L, 2);
  r->o.envp = build_env(L, opts);
}


/* ---- waiting ---- */

/* Append what fd has now to p's buffer i; 1 at end of file (or an error),
** 0 when it has no more for now. Raises for memory (p owns what it got). */
static int drain(lua_State *L, Process *p, int i) {
  int fd = p->child.pipe[i];
  for (;;) {
    ssize_t n;
    if (p->cap[i] - p->len[i] < 65536) {
      size_t cap = p->cap[i] < 65536 ? 131072 : 2 * p->cap[i];
      char *more = (char *)realloc(p->buf[i], cap);
      if (more == NULL) luaL_error(L, "not enough memory for the output of a process");
      p->buf[i] = more;
      p->cap[i] = cap;
    }
    n = read(fd, p->buf[i] + p->len[i], p->cap[i] - p->len[i]);
    if (n > 0) { p->len[i] += (size_t)n; continue; }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return 0;
    return 1;
  }
}

static void close_pipe(Process *p, int i) {
  if (p->child.pipe[i] >= 0) {
    close(p->child.pipe[i]);
    p->child.pipe[i] = -1;
  }
}

/* Feed stdin; a reader gone (EPIPE) is the child's business: SIGPIPE is
** blocked meanwhile (our handler would end the process) and taken if sent. */
static void feed(Process *p) {
  sigset_t pipe_only, old;
  ssize_t n;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  do n = write(p->child.pipe[0], p->feed + p->fed, p->feed_len - p->fed);
  while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EPIPE && !sigismember(&old, SIGPIPE)) {
    struct timespec none = {0, 0};
    sigtimedwait(&pipe_only, NULL, &none);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (n > 0) p->fed += (size_t)n;
  if ((n < 0 && errno != EAGAIN) || p->fed == p->feed_len) close_pipe(p, 0);
}

/*
** Until p's child is reaped (then what its pipes hold is read: output a
** grandchild writes later is not waited for), or 'until' passes (0 then).
** A handled signal that stops the block raises its SignalExit from here:
** the stop path has stopped and reaped the child first (lg_guard.c).
*/
static int communicate(lua_State *L, Process *p, double until) {
  lg_child *c = &p->child;
  for (;;) {
    struct pollfd fds[4];
    int nfds = 0, i, ms, rc, slot[4];
    double remaining;
    if (c->pipe[0] >= 0) {
      fds[nfds].fd = c->pipe[0];
      fds[nfds].events = POLLOUT;
      slot[nfds++] = 0;
    }
    for (i = 1; i <= 2; i++)
      if (c->pipe[i] >= 0) {
        fds[nfds].fd = c->pipe[i];
        fds[nfds].events = POLLIN;
        slot[nfds++] = i;
      }
    if (c->pidfd >= 0) {
      fds[nfds].fd = c->pidfd;
      fds[nfds].events = POLLIN;
      slot[nfds++] = 3;
    }
    if (lg_child_try_reap(c)) {
      for (i = 1; i <= 2; i++)
        if (c->pipe[i] >= 0) {
          drain(L, p, i);
          close_pipe(p, i);
        }
      close_pipe(p, 0);
      return 1;
    }
    remaining = until - now_seconds();
    if (remaining <= 0) return 0;
    ms = remaining > 3600 ? 3600000 : (int)(remaining * 1000) + 1;
    if (c->pidfd < 0 && ms > FALLBACK_NAP_MS) ms = FALLBACK_NAP_MS;
    rc = poll(fds, (nfds_t)nfds, ms);
    if (rc < 0 && errno == EINTR) {
      lg_guard_raise_pending(L);   /* a signal that arrived even before the wait */
      continue;
    }
    for (i = 0; i < nfds && rc > 0; i++) {
      if (fds[i].revents == 0) continue;
      if (slot[i] == 0) feed(p);
      else if (slot[i] <= 2 && drain(L, p, slot[i])) close_pipe(p, slot[i]);
    }
  }
}

/* proc.run's wait: 'timeout', then SIGTERM to the group, 'grace', SIGKILL. */
static void run_to_end(lua_State *L, Process *p, double timeout, double grace) {
  double start = now_seconds();
  if (communicate(L, p, timeout == HUGE_VAL ? HUGE_VAL : start + timeout)) return;
  p->timed_out = 1;
  lg_child_signal(&p->child, SIGTERM);
  p->child.signalled = 1;
  if (communicate(L, p, now_seconds() + grace)) {
    lg_child_stop(&p->child, SIGTERM);    /* its group's leftovers */
    return;
  }
  lg_child_signal(&p->child, SIGKILL);
  communicate(L, p, HUGE_VAL);
}


/* ---- results ---- */

static const char *signal_name(int sig, char *buf, size_t size) {
  const char *abbrev = sigabbrev_np(sig);
  if (abbrev != NULL) snprintf(buf, size, "SIG%s", abbrev);
  else snprintf(buf, size, "signal %d", sig);
  return buf;
}

static void push_captured(lua_State *L, const Process *p, int i) {
  if (p->capture[i]) lua_pushlstring(L, p->buf[i] != NULL ? p->buf[i] : "", p->len[i]);
  else lua_pushnil(L);
}

/* status (exited) or signal (killed) into the table on top, from wait status
** st (-1: unknown, neither). */
static void set_status_fields(lua_State *L, int st) {
  if (st != -1 && WIFEXITED(st)) {
    lua_pushinteger(L, WEXITSTATUS(st));
    lua_setfield(L, -2, "status");
  }
  if (st != -1 && WIFSIGNALED(st)) {
    lua_pushinteger(L, WTERMSIG(st));
    lua_setfield(L, -2, "signal");
  }
}

/* The result table of a reaped process. Stack: [-0, +1, m] */
static void push_result(lua_State *L, const Process *p) {
  lua_createtable(L, 0, 6);
  set_status_fields(L, p->child.status);
  push_captured(L, p, 1);
  lua_setfield(L, -2, "stdout");
  push_captured(L, p, 2);
  lua_setfield(L, -2, "stderr");
  lua_pushboolean(L, p->timed_out);
  lua_setfield(L, -2, "timed_out");
  lua_pushinteger(L, p->child.pid);
  lua_setfield(L, -2, "pid");
}

/* argv[1] of the Process at idx, for messages. Stack: [-0, +1, -] */
static const char *push_name(lua_State *L, int idx) {
  const char *name, *slash;
  lua_getiuservalue(L, idx, UV_ARGV);
  lua_rawgeti(L, -1, 1);
  lua_remove(L, -2);
  name = lua_tostring(L, -1);
  if (name == NULL) return "?";
  slash = strrchr(name, '/');
  if (slash != NULL && slash[1] != '\0') {
    lua_pushstring(L, slash + 1);
    lua_remove(L, -2);
    name = lua_tostring(L, -1);
  }
  return name;
}

/* With opts.check: a non-zero status or a death by signal is a ProcessError
** {argv, status, signal, stderr}. */
static void check_result(lua_State *L, int idx, const Process *p) {
  int st = p->child.status;
  char sigbuf[32];
  const char *name;
  if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0) return;
  name = push_name(L, idx);
  if (st != -1 && WIFSIGNALED(st))
    lua_pushfstring(L, "%s was killed by %s%s", name,
                    signal_name(WTERMSIG(st), sigbuf, sizeof sigbuf),
                    p->timed_out ? " (timed out)" : "");
  else if (st != -1)
    lua_pushfstring(L, "%s exited with status %d", name, WEXITSTATUS(st));
  else lua_pushfstring(L, "%s ended with an unknown status", name);
  lg_push_error(L, "ProcessError", lua_tostring(L, -1));
  lua_getiuservalue(L, idx, UV_ARGV);
  lua_setfield(L, -2, "argv");
  set_status_fields(L, st);
  if (p->capture[2]) {
    size_t from = p->len[2] > STDERR_TAIL ? p->len[2] - STDERR_TAIL : 0;
    lua_pushlstring(L, p->buf[2] != NULL ? p->buf[2] + from : "", p->len[2] - from);
    lua_setfield(L, -2, "stderr");
  }
  lua_error(L);
}


/* ---- the Process type ---- */

/* A child still running is stopped (SIGTERM to its group, grace, SIGKILL)
** and reaped; pipes closed, buffers freed. Idempotent. */
static void close_process(Process *p) {
  int i;
  if (p->closed) return;
  p->closed = 1;
  lg_child_stop(&p->child, SIGTERM);
  lg_child_forget(&p->child);
  for (i = 0; i < 3; i++) {
    free(p->buf[i]);
    p->buf[i] = NULL;
    p->len[i] = p->cap[i] = 0;
  }
}

/* __close and __gc */
static int process_close(lua_State *L) {
  close_process(toProcess(L, 1));
  return 0;
}

/*
** Start argv (1) with opts (2): pushes the Process. A command that cannot be
** started raises OSError {errno, path} here, leaving nothing behind.
*/
static Process *start(lua_State *L, spawn_request *r, int for_run) {
  Process *p;
  int i, idx;
  check_request(L, r, for_run);
  p = (Process *)lua_newuserdatauv(L, sizeof(Process), UV_COUNT);
  memset(p, 0, sizeof *p);
  p->closed = 1;            /* nothing to close until it runs */
  luaL_setmetatable(L, LG_PROCESS_MT);
  idx = lua_gettop(L);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, idx, UV_ARGV);
  if (r->o.stream[0] == LG_STREAM_PIPE) {
    lua_getfield(L, 2, "stdin");
    p->feed = lua_tolstring(L, -1, &p->feed_len);
    lua_setiuservalue(L, idx, UV_STDIN);
  }
  for (i = 1; i <= 2; i++) p->capture[i] = r->o.stream[i] == LG_STREAM_PIPE;
  /* Nothing armed (module mode, no handler): no guard will forward a signal,
  ** so the child stays in our process group, where the terminal's Ctrl-C
  ** reaches it as it reaches os.execute's; in a group of its own it would
  ** outlive us. */
  if (lg_frame_top() == NULL) r->o.terminal = 1;
  if (lg_child_spawn(&p->child, (char *const *)lua_touserdata(L, r->argv_idx), &r->o) != 0) {
    int err = errno;
    if (p->child.cwd_failed)
      lg_raise_os_error(L, err, r->o.cwd, lua_pushfstring(L, "cannot enter it (opts.cwd): %s", strerror(err)));
    lua_rawgeti(L, 1, 1);
    lg_raise_os_error(L, err, lua_tostring(L, -1),
                      err == ENOENT ? "command not found" : NULL);
  }
  p->closed = 0;
  p->child.grace = r->grace;
  p->child.context = lg_main_thread(L);
  p->child.from_cleanup = lg_signal_cleaning();
  if (p->feed != NULL && p->feed_len == 0) close_pipe(p, 0);
  return p;
}

/* proc.spawn(argv [, opts]) -> Process */
static int proc_spawn(lua_State *L) {
  spawn_request r;
  start(L, &r, 0);
  return 1;
}

/* proc.run(argv [, opts]) -> result */
static int proc_run(lua_State *L) {
  spawn_request r;
  Process *p = start(L, &r, 1);
  int idx = lua_gettop(L);
  run_to_end(L, p, r.timeout, r.grace);
  if (r.check) check_result(L, idx, p);
  push_result(L, p);
  close_process(p);         /* forgets it (reaped): no __gc work left */
  return 1;
}

/* p:wait([timeout]) -> result, or nil when the timeout ran out */
static int process_wait(lua_State *L) {
  Process *p = toProcess(L, 1);
  double timeout = HUGE_VAL;
  if (!lua_isnoneornil(L, 2)) {
    timeout = luaL_checknumber(L, 2);
    luaL_argcheck(L, !isnan(timeout) && timeout >= 0, 2, "a non-negative number of seconds");
  }
  if (!p->closed && !communicate(L, p, now_seconds() + timeout)) {
    lua_pushnil(L);
    return 1;
  }
  push_result(L, p);
  return 1;
}

static int check_signal(lua_State *L, int idx) {
  const char *name;
  int i;
  if (lua_isnoneornil(L, idx)) return SIGTERM;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, idx);
    luaL_argcheck(L, n > 0 && n < NSIG, idx, "not a signal number");
    return (int)n;
  }
  name = luaL_checkstring(L, idx);
  if (strncmp(name, "SIG", 3) == 0) name += 3;
  for (i = 1; i < NSIG; i++) {      /* "TERM", "KILL" ... as signal_name prints them */
    const char *abbrev = sigabbrev_np(i);
    if (abbrev != NULL && strcmp(abbrev, name) == 0) return i;
  }
  return luaL_argerror(L, idx, "unknown signal name");
}

/* p:kill([sig]) -> true, or false when it has already exited */
static int process_kill(lua_State *L) {
  Process *p = toProcess(L, 1);
  int sig = check_signal(L, 2);
  if (p->closed || lg_child_try_reap(&p->child)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (lg_child_signal(&p->child, sig) != 0 && errno != ESRCH)
    return lg_raise_os_error(L, errno, "kill", NULL);
  lua_pushboolean(L, 1);
  return 1;
}

static int process_pid(lua_State *L) {
  lua_pushinteger(L, toProcess(L, 1)->child.pid);
  return 1;
}

static int process_tostring(lua_State *L) {
  Process *p = toProcess(L, 1);
  const char *name = push_name(L, 1);
  char sigbuf[32];
  int st;
  lg_child_try_reap(&p->child);   /* first: an exit not yet reaped is read here */
  st = p->child.status;
  if (!p->child.reaped)
    lua_pushfstring(L, "Process(%d %s) <running>", (int)p->child.pid, name);
  else if (st != -1 && WIFEXITED(st))
    lua_pushfstring(L, "Process(%d %s) <exited %d>", (int)p->child.pid, name, WEXITSTATUS(st));
  else if (st != -1 && WIFSIGNALED(st))
    lua_pushfstring(L, "Process(%d %s) <killed %s>", (int)p->child.pid, name,
                    signal_name(WTERMSIG(st), sigbuf, sizeof sigbuf));
  else lua_pushfstring(L, "Process(%d %s) <ended>", (int)p->child.pid, name);
  return 1;
}

static const luaL_Reg process_methods[] = {
  {"wait", process_wait},
  {"kill", process_kill},
  {"pid", process_pid},
  {NULL, NULL}
};

static const luaL_Reg proc_functions[] = {
  {"run", proc_run},
  {"spawn", proc_spawn},
  {NULL, NULL}
};

/* Stack: [-0, +1, m]: the proc table */
void lg_open_process(lua_State *L) {
  lg_open_type(L, LG_PROCESS_MT, process_close, process_tostring, process_methods);
  luaL_newlib(L, proc_functions);
}

/*
** lg_lockfile.c — the LockFile type (lock.dir, lock.LockFile) over lg_lock.
**
** Failures raise rather than return nil, msg: 'local l <close> = lock.dir(p)'
** must never go on without the lock.
*/
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lg_common.h"
#include "lg_guard.h"
#include "lg_lock.h"
#include "lg_lockfile.h"

#define LOCK_BASENAME ".certbot.lock"   /* the file certbot itself locks */
#define WAITING_AFTER 1.0               /* seconds before opts.waiting is called */

/* uservalues: the path, and the constructor's opts.waiting (acquire's default) */
enum { UV_PATH = 1, UV_WAITING, UV_COUNT = UV_WAITING };

typedef struct LockFile {
  lg_lock lock;
  double timeout;           /* default for acquire() */
} LockFile;

#define toLockFile(L, i) ((LockFile *)luaL_checkudata(L, i, LG_LOCKFILE_MT))

/* stack: -> path (the uservalue) */
static const char *lockfile_path(lua_State *L, int idx) {
  lua_getiuservalue(L, idx, UV_PATH);
  return lua_tostring(L, -1);
}

/* opts at idx: nil, or a table whose 'waiting' is nil or callable. Pushes it
** (or 'fallback' when opts has none; nil when fallback is 0). */
static void push_waiting(lua_State *L, int idx, int fallback) {
  int t = LUA_TNIL;
  if (lua_istable(L, idx)) t = lua_getfield(L, idx, "waiting");
  else lua_pushnil(L);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    if (fallback != 0) lua_pushvalue(L, fallback);
    else lua_pushnil(L);
    return;
  }
  if (t != LUA_TFUNCTION && !luaL_getmetafield(L, -1, "__call"))
    luaL_argerror(L, idx, "waiting must be a function");
  if (t != LUA_TFUNCTION) lua_pop(L, 1);   /* the __call */
}

/* opts at idx: nil or {timeout = seconds}; seconds >= 0, math.huge = forever. */
static double check_timeout(lua_State *L, int idx, double fallback) {
  double t;
  if (lua_isnoneornil(L, idx)) return fallback;
  luaL_checktype(L, idx, LUA_TTABLE);
  if (lua_getfield(L, idx, "timeout") == LUA_TNIL) {
    lua_pop(L, 1);
    return fallback;
  }
  if (!lua_isnumber(L, -1))
    luaL_argerror(L, idx, "timeout must be a number of seconds");
  t = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (isnan(t) || t < 0)
    luaL_argerror(L, idx, "timeout must be a non-negative number of seconds");
  return t;
}

static const char *check_path(lua_State *L, int idx) {
  size_t len;
  const char *path = luaL_checklstring(L, idx, &len);
  if (strlen(path) != len)
    lg_raise_os_error(L, EINVAL, path, "path contains a NUL byte");
  return path;
}

/* What the core's wait callbacks need. */
typedef struct wait_context {
  lua_State *L;
  int path, waiting;        /* stack indices */
} wait_context;

/* A signal asks this state to stop (one that arrived during the wait, or
** just before it: the kick cuts the wait short either way). A signal for
** another state's block, or deferred by cleanups, stops nothing here. */
static int wait_interrupted(void *ud) {
  return lg_guard_stop_wanted(((wait_context *)ud)->L);
}

/* Protected: waiting({path = , pid = , waited = }). stack: fn, path, pid, waited */
static int call_waiting(lua_State *L) {
  lua_pushvalue(L, 1);
  lua_createtable(L, 0, 3);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "path");
  if (lua_tointeger(L, 3) > 0) {
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, "pid");
  }
  lua_pushvalue(L, 4);
  lua_setfield(L, -2, "waited");
  lua_call(L, 1, 0);
  return 0;
}

/*
** opts.waiting, once the wait passes WAITING_AFTER. Its error (a SignalExit
** raised in it included) stops the wait and is left on the stack for
** acquire_or_raise to raise again, unchanged.
*/
static int wait_notify(void *ud, pid_t holder, double waited) {
  wait_context *c = (wait_context *)ud;
  lua_State *L = c->L;
  lua_pushcfunction(L, call_waiting);
  lua_pushvalue(L, c->waiting);
  lua_pushvalue(L, c->path);
  lua_pushinteger(L, (lua_Integer)holder);
  lua_pushnumber(L, waited);   /* stack: call_waiting, fn, path, pid, waited */
  return lua_pcall(L, 4, 0, 0) != LUA_OK;   /* error: on the stack */
}

/*
** Acquire the LockFile at idx (path in its uservalue) or raise LockError /
** OSError / SignalExit. The LockError never advises deleting the file: the
** kernel frees the lock when its holder dies, and deleting it breaks exclusion.
*/
static void acquire_or_raise(lua_State *L, int idx, LockFile *lf, double timeout,
                             int waiting_idx) {
  lg_lock_failure why;
  lg_lock_wait wait;
  wait_context context;
  const char *path;
  int err;
  lua_pushvalue(L, waiting_idx);              /* stack: waiting */
  path = lockfile_path(L, idx);               /* stack: waiting, path */
  context.L = L;
  context.path = lua_gettop(L);
  context.waiting = context.path - 1;
  memset(&wait, 0, sizeof wait);
  wait.timeout = timeout;
  wait.interrupted = wait_interrupted;
  if (!lua_isnil(L, context.waiting)) {
    wait.notify_after = WAITING_AFTER;
    wait.waiting = wait_notify;
  }
  wait.ud = &context;
  /* One Lua state runs one thing at a time: a LockFile of the same state
  ** holding this file cannot be released while we wait for it. */
  lf->lock.context = lg_main_thread(L);
  if (lg_lock_acquire_wait(&lf->lock, path, &wait, &why) == 0) {
    lua_pop(L, 2);
    return;
  }
  err = errno;
  if (err == ECANCELED) lua_error(L);         /* opts.waiting's error, on top */
  if (err == EWOULDBLOCK || err == EDEADLK) {
    char waited[32];
    snprintf(waited, sizeof waited, "%.2f", why.waited);
    if (err == EDEADLK)
      lua_pushfstring(L, "could not lock %s: another instance is running "
                      "(another LockFile of this Lua state holds it: waiting would never end)",
                      path);
    else if (why.holder > 0)
      lua_pushfstring(L, "could not lock %s: another instance is running "
                      "(held by process %d; waited %s s)", path, (int)why.holder, waited);
    else
      lua_pushfstring(L, "could not lock %s: another instance is running "
                      "(waited %s s)", path, waited);
    lg_push_error(L, "LockError", lua_tostring(L, -1));
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "path");
    if (why.holder > 0) {
      lua_pushinteger(L, why.holder);
      lua_setfield(L, -2, "pid");
    }
    lua_pushnumber(L, why.waited);
    lua_setfield(L, -2, "waited");
    lua_error(L);
  }
  if (err == EINTR) {
    lg_guard_raise_pending(L);
    lg_raise_os_error(L, EINTR, path, "interrupted while waiting for the lock");
  }
  if (err == ELOOP)
    lg_raise_os_error(L, err, path, "is a symbolic link (a lock file is never followed)");
  if (why.not_regular)
    lg_raise_os_error(L, err, path, "not a regular file");
  lg_raise_os_error(L, err, path, NULL);
}

/* Pushes a released LockFile on path (the closed state comes first, so a
** memory error before the lock is taken leaves nothing half-made). */
static LockFile *new_lockfile(lua_State *L, int path_idx, double timeout, int waiting_idx) {
  LockFile *lf = (LockFile *)lua_newuserdatauv(L, sizeof(LockFile), UV_COUNT);
  lg_lock_init(&lf->lock);
  lf->timeout = timeout;
  luaL_setmetatable(L, LG_LOCKFILE_MT);
  lua_pushvalue(L, path_idx);     /* the same string: no copy */
  lua_setiuservalue(L, -2, UV_PATH);
  lua_pushvalue(L, waiting_idx);
  lua_setiuservalue(L, -2, UV_WAITING);
  return lf;
}

/* lock.LockFile(path [, opts]) -> held LockFile */
int lg_lockfile_new(lua_State *L) {
  double timeout;
  LockFile *lf;
  int waiting;
  check_path(L, 1);
  timeout = check_timeout(L, 2, 0);
  push_waiting(L, 2, 0);
  waiting = lua_gettop(L);
  lf = new_lockfile(L, 1, timeout, waiting);
  acquire_or_raise(L, lua_gettop(L), lf, timeout, waiting);
  return 1;
}

/* lock.dir(dir [, opts]) -> held LockFile on dir/.certbot.lock */
int lg_lock_dir(lua_State *L) {
  size_t len;
  const char *dir = check_path(L, 1);
  double timeout = check_timeout(L, 2, 0);
  LockFile *lf;
  int waiting;
  push_waiting(L, 2, 0);
  waiting = lua_gettop(L);
  len = strlen(dir);
  if (len == 0)   /* not "/": an empty name names no directory (open("") is ENOENT) */
    lg_raise_os_error(L, ENOENT, dir, "empty directory name");
  {                         /* dir .. "/" .. LOCK_BASENAME; lua_pushfstring
                            ** took a fifth of the Lua side of a lock cycle */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, dir, len);
    if (dir[len - 1] != '/') luaL_addchar(&b, '/');
    luaL_addlstring(&b, LOCK_BASENAME, sizeof LOCK_BASENAME - 1);
    luaL_pushresult(&b);    /* stack: dir, [opts,] waiting, path */
  }
  lf = new_lockfile(L, lua_gettop(L), timeout, waiting);
  acquire_or_raise(L, lua_gettop(L), lf, timeout, waiting);
  return 1;
}

static int lockfile_acquire(lua_State *L) {
  LockFile *lf = toLockFile(L, 1);
  double timeout = check_timeout(L, 2, lf->timeout);
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, UV_WAITING);      /* stack: lf, opts, default */
  push_waiting(L, 2, 3);
  acquire_or_raise(L, 1, lf, timeout, lua_gettop(L));
  return 0;
}

/* Shared by release, __close and __gc: idempotent, never raises. A file that
** could not be removed is reported on stderr; the lock is released anyway. */
static int lockfile_release(lua_State *L) {
  LockFile *lf = toLockFile(L, 1);
  const char *path;
  if (lf->lock.fd < 0) return 0;
  path = lockfile_path(L, 1);
  if (lg_lock_release(&lf->lock, path) != 0)
    lg_log("could not remove %s: %s", path, strerror(errno));
  return 0;
}

static int lockfile_is_locked(lua_State *L) {
  lua_pushboolean(L, lg_lock_is_held(&toLockFile(L, 1)->lock));
  return 1;
}

static int lockfile_tostring(lua_State *L) {
  LockFile *lf = toLockFile(L, 1);
  const char *path = lockfile_path(L, 1);
  lua_pushfstring(L, "LockFile(%s) <%s>", path,
                  lg_lock_is_held(&lf->lock) ? "acquired" : "released");
  return 1;
}

static const luaL_Reg lockfile_methods[] = {
  {"acquire", lockfile_acquire},
  {"release", lockfile_release},
  {"is_locked", lockfile_is_locked},
  {NULL, NULL}
};

void lg_open_lockfile(lua_State *L) {
  lg_open_type(L, LG_LOCKFILE_MT, lockfile_release, lockfile_tostring, lockfile_methods);
}

/* See lg_sweep_guards: a LockFile taken while its state was closing. */
void lg_sweep_locks(lua_State *L) {
  int n = lg_lock_release_context(lg_main_thread(L));
  if (n > 0) lg_log("released %d lock(s) taken while the Lua state was closing", n);
}

/*
** lg_lease.c — the LeaseLock type (lock.lease, lock.LeaseLock) over
** lg_etcd.c: the module 'luaguard.lease' (luaguard/lease.so), built apart
** and loaded on first use, so that only lease users load libcurl.
**
** Losing the lease. The keep-alive thread calls on_lost, which asks the
** frames of this Lua state to stop with the lock's own reason (the guard's
** table, lg_guard_api: request_stop). A guarded block then stops as for a
** signal, with this lock's LeaseLost (registered at acquire) for the
** SignalExit: children first, unswallowable in the block, cleanups LIFO,
** and the error goes on. Outside a guard, check(), token() and key() raise
** it; is_locked() is false.
*/
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>

#include "luaguard.h"
#include "lg_common.h"
#include "lg_etcd.h"
#include "lg_guard.h"

#define LG_LEASELOCK_MT "luaguard.LeaseLock"
#define DEFAULT_ENDPOINT "http://127.0.0.1:2379"
#define DEFAULT_PREFIX "luaguard/lock/"
#define DEFAULT_TTL 15
#define MIN_TTL 2

/* uservalues: the name as given; the LeaseLost of the current hold */
enum { UV_NAME = 1, UV_LOST, UV_COUNT = UV_LOST };

typedef struct LeaseLock {
  lg_lease *lease;
  double timeout;           /* acquire()'s default */
  int reason;               /* this lock's stop reason (the guard's number) */
  const void *group;        /* its Lua state, for the guard */
} LeaseLock;

static const lg_guard_api *guard;   /* the core's (luaopen_luaguard_lease) */

#define toLeaseLock(L, i) ((LeaseLock *)luaL_checkudata(L, i, LG_LEASELOCK_MT))

static const char *lease_name(lua_State *L, int idx) {   /* Stack: [-0, +1] */
  lua_getiuservalue(L, idx, UV_NAME);
  return lua_tostring(L, -1);
}


/* ---- errors ---- */

/* EtcdError {endpoint, code, message}; tostring names the endpoint. */
static int raise_etcd_error(lua_State *L, const lg_etcd_error *e) {
  lg_push_error(L, "EtcdError", lua_pushfstring(L, "EtcdError: %s: %s (code %d)",
                                                *e->endpoint ? e->endpoint : "(no endpoint)",
                                                e->message, e->code));
  lua_remove(L, -2);
  lua_getfield(L, -1, "message");
  lua_setfield(L, -2, "text");
  lua_pushstring(L, e->endpoint);
  lua_setfield(L, -2, "endpoint");
  lua_pushinteger(L, e->code);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, e->message);
  lua_setfield(L, -2, "message");
  return lua_error(L);
}

/* LeaseLost {name, key, token}: "LeaseLost: <name> (token N)". Stack: [-0, +1, m] */
static void push_lease_lost(lua_State *L, const char *name, const char *key, lua_Integer token) {
  lg_push_error(L, "LeaseLost", lua_pushfstring(L, "LeaseLost: %s (token %I)", name, token));
  lua_remove(L, -2);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "name");
  lua_pushstring(L, key);
  lua_setfield(L, -2, "key");
  lua_pushinteger(L, token);
  lua_setfield(L, -2, "token");
}


/* ---- options ---- */

static const char *opt_string(lua_State *L, int opts, const char *field) {
  const char *s;
  if (lua_isnoneornil(L, opts) || lua_getfield(L, opts, field) == LUA_TNIL) {
    if (!lua_isnoneornil(L, opts)) lua_pop(L, 1);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_argerror(L, opts, lua_pushfstring(L, "%s must be a string", field));
  s = lua_tostring(L, -1);
  lua_pop(L, 1);            /* still referenced by opts */
  return s;
}

static double check_timeout(lua_State *L, int opts, double fallback) {
  double t;
  if (lua_isnoneornil(L, opts) || lua_getfield(L, opts, "timeout") == LUA_TNIL) {
    if (!lua_isnoneornil(L, opts)) lua_pop(L, 1);
    return fallback;
  }
  if (!lua_isnumber(L, -1)) luaL_argerror(L, opts, "timeout must be a number of seconds");
  t = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (isnan(t) || t < 0) luaL_argerror(L, opts, "timeout must be a non-negative number of seconds");
  return t;
}

static int check_ttl(lua_State *L, int opts) {
  lua_Integer ttl;
  int isint;
  if (lua_isnoneornil(L, opts) || lua_getfield(L, opts, "ttl") == LUA_TNIL) {
    if (!lua_isnoneornil(L, opts)) lua_pop(L, 1);
    return DEFAULT_TTL;
  }
  ttl = lua_tointegerx(L, -1, &isint);
  lua_pop(L, 1);
  if (!isint || ttl < MIN_TTL || ttl > 1000000)
    luaL_argerror(L, opts, "ttl must be a whole number of seconds, at least 2");
  return (int)ttl;
}

static int valid_url(const char *s) {
  return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

/*
** cfg->endpoints from opts.endpoints (a list of URLs), else
** LUAGUARD_ETCD_ENDPOINTS (comma-separated), else the default. The strings
** stay alive on the Lua stack (a table, or a copy of the variable pushed)
** until the core has copied them. Stack: [-0, +1, m]
*/
static void check_endpoints(lua_State *L, int opts, lg_etcd_config *cfg) {
  int t = lua_isnoneornil(L, opts) ? LUA_TNIL : lua_getfield(L, opts, "endpoints");
  if (lua_isnoneornil(L, opts)) lua_pushnil(L);
  cfg->nendpoints = 0;
  if (t == LUA_TTABLE) {
    lua_Integer i, n = luaL_len(L, -1);
    if (n < 1 || n > LG_ETCD_MAX_ENDPOINTS)
      luaL_argerror(L, opts, "endpoints must be a list of 1 to 16 URLs");
    for (i = 1; i <= n; i++) {
      if (lua_rawgeti(L, -1, i) != LUA_TSTRING || !valid_url(lua_tostring(L, -1)))
        luaL_argerror(L, opts, "endpoints must be http:// or https:// URLs");
      cfg->endpoints[cfg->nendpoints++] = lua_tostring(L, -1);
      lua_pop(L, 1);          /* still in the table */
    }
    return;
  }
  if (t != LUA_TNIL) luaL_argerror(L, opts, "endpoints must be a list of URLs");
  lua_pop(L, 1);
  {
    const char *env = getenv("LUAGUARD_ETCD_ENDPOINTS");
    char *copy, *p, *save = NULL;
    if (env == NULL || *env == '\0') env = DEFAULT_ENDPOINT;
    copy = (char *)lua_newuserdatauv(L, strlen(env) + 1, 0);   /* stack: copy */
    strcpy(copy, env);
    for (p = strtok_r(copy, ",", &save); p != NULL && cfg->nendpoints < LG_ETCD_MAX_ENDPOINTS;
         p = strtok_r(NULL, ",", &save)) {
      while (*p == ' ') p++;
      if (*p == '\0') continue;
      if (!valid_url(p))
        luaL_error(L, "LUAGUARD_ETCD_ENDPOINTS: %s is not an http:// or https:// URL", p);
      cfg->endpoints[cfg->nendpoints++] = p;
    }
    if (cfg->nendpoints == 0) luaL_error(L, "LUAGUARD_ETCD_ENDPOINTS names no endpoint");
  }
}


/* ---- losing the lease ---- */

/* The keep-alive thread (or check(), first to see it): no Lua here. */
static void on_lost(void *ud) {
  LeaseLock *ll = (LeaseLock *)ud;
  guard->request_stop(ll->group, ll->reason);
}

/* Raise this lock's LeaseLost: through the guard when a frame of the state
** took the stop (children stopped, unswallowable), else as a plain error. */
static int raise_lost(lua_State *L, int idx) {
  guard->raise_pending(L);
  lua_getiuservalue(L, idx, UV_LOST);
  return lua_error(L);
}

/* A method that needs the lease alive. */
static void check_alive(lua_State *L, int idx, LeaseLock *ll) {
  if (lg_lease_is_held(ll->lease) && !lg_lease_alive(ll->lease)) raise_lost(L, idx);
}


/* ---- acquire, release ---- */

static int stop_wanted(void *ud) { return guard->stop_wanted((lua_State *)ud); }

static int do_acquire(lua_State *L, int idx, LeaseLock *ll, double timeout) {
  lg_lease_wait w;
  lg_etcd_error err;
  double started;
  int rc;
  memset(&err, 0, sizeof err);
  w.timeout = timeout;
  w.interrupted = stop_wanted;
  w.ud = L;
  {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    started = (double)ts.tv_sec + ts.tv_nsec / 1e9;
  }
  ll->reason = guard->new_reason();   /* a stop of an earlier hold is not this one's */
  rc = lg_lease_acquire(ll->lease, &w, on_lost, ll, &err);
  if (rc == LG_LEASE_OK) {
    lease_name(L, idx);                               /* stack: name */
    push_lease_lost(L, lua_tostring(L, -1), lg_lease_key(ll->lease),
                    (lua_Integer)lg_lease_token(ll->lease));
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, idx, UV_LOST);
    guard->set_stop_error(L, ll->reason);
    lua_pop(L, 1);
    return 0;
  }
  if (rc == LG_LEASE_INTERRUPTED) {
    guard->raise_pending(L);
    return lg_raise_os_error(L, EINTR, lease_name(L, idx), "lease wait interrupted");
  }
  if (rc == LG_LEASE_ETCD) return raise_etcd_error(L, &err);
  {                                                   /* LG_LEASE_BUSY */
    struct timespec ts;
    double waited;
    const char *name = lease_name(L, idx), *holder = lg_lease_holder(ll->lease);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    waited = (double)ts.tv_sec + ts.tv_nsec / 1e9 - started;
    lg_push_error(L, "LockError",
                  *holder != '\0'
                    ? lua_pushfstring(L, "LeaseLock(%s): held by %s (lease %s); another instance is running",
                                      name, holder, lg_lease_holder_lease(ll->lease))
                    : lua_pushfstring(L, "LeaseLock(%s): held elsewhere; another instance is running", name));
    lua_remove(L, -2);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, holder);
    lua_setfield(L, -2, "holder");
    lua_pushstring(L, lg_lease_holder_lease(ll->lease));
    lua_setfield(L, -2, "lease");
    lua_pushnumber(L, waited);
    lua_setfield(L, -2, "waited");
    return lua_error(L);
  }
}

/* Shared by release, __close and __gc: idempotent, never raises LeaseLost
** (a <close> must not replace the error on its way). */
static int leaselock_release(lua_State *L) {
  LeaseLock *ll = toLeaseLock(L, 1);
  lg_etcd_error err;
  int was_lost, rc;
  if (ll->lease == NULL || !lg_lease_is_held(ll->lease)) return 0;
  was_lost = lg_lease_lost(ll->lease);
  lua_pushnil(L);
  guard->set_stop_error(L, ll->reason);
  memset(&err, 0, sizeof err);
  rc = lg_lease_release(ll->lease, &err);
  if (rc < 0 && !was_lost)
    lg_log("LeaseLock(%s): revoking the lease failed (%s: %s); it expires by itself",
           lease_name(L, 1), err.endpoint, err.message);
  else if (rc > 0)
    lg_log("LeaseLock(%s): its key was gone at release (deleted, or the lease lost): "
           "the lock ended before it", lease_name(L, 1));
  return 0;
}

static int leaselock_gc(lua_State *L) {
  LeaseLock *ll = toLeaseLock(L, 1);
  leaselock_release(L);
  lg_lease_free(ll->lease);
  ll->lease = NULL;
  return 0;
}


/* lock.LeaseLock(name [, opts]) / lock.lease(name [, opts]) -> held LeaseLock */
static int leaselock_new(lua_State *L) {
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len), *prefix;
  lg_etcd_config cfg;
  LeaseLock *ll;
  int ttl, idx;
  double timeout;
  if (len == 0 || strlen(name) != len) luaL_argerror(L, 1, "a name without NUL bytes expected");
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  memset(&cfg, 0, sizeof cfg);
  ttl = check_ttl(L, 2);
  timeout = check_timeout(L, 2, 0);
  prefix = opt_string(L, 2, "prefix");
  cfg.cacert = opt_string(L, 2, "cacert");
  cfg.cert = opt_string(L, 2, "cert");
  cfg.key = opt_string(L, 2, "key");
  cfg.user = opt_string(L, 2, "user");
  cfg.password = opt_string(L, 2, "password");
  check_endpoints(L, 2, &cfg);                        /* stack: name, opts, endpoints */
  ll = (LeaseLock *)lua_newuserdatauv(L, sizeof *ll, UV_COUNT);
  memset(ll, 0, sizeof *ll);
  luaL_setmetatable(L, LG_LEASELOCK_MT);
  idx = lua_gettop(L);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, idx, UV_NAME);
  lua_pushfstring(L, "%s%s", prefix != NULL ? prefix : DEFAULT_PREFIX, name);
  ll->lease = lg_lease_new(&cfg, lua_tostring(L, -1), ttl);
  lua_pop(L, 1);
  if (ll->lease == NULL) return luaL_error(L, "not enough memory");
  ll->timeout = timeout;
  ll->group = guard->group(L);
  do_acquire(L, idx, ll, timeout);
  lua_settop(L, idx);
  return 1;
}

/* lf:acquire([opts]): nothing when held */
static int leaselock_acquire(lua_State *L) {
  LeaseLock *ll = toLeaseLock(L, 1);
  double timeout = check_timeout(L, 2, ll->timeout);
  if (ll->lease == NULL) return luaL_error(L, "LeaseLock is closed");
  if (lg_lease_is_held(ll->lease) && lg_lease_lost(ll->lease)) leaselock_release(L);
  if (!lg_lease_is_held(ll->lease)) do_acquire(L, 1, ll, timeout);
  return 0;
}

static int leaselock_is_locked(lua_State *L) {
  LeaseLock *ll = toLeaseLock(L, 1);
  lua_pushboolean(L, ll->lease != NULL && lg_lease_is_held(ll->lease) &&
                     lg_lease_alive(ll->lease));
  return 1;
}

/* true while the lease is known alive; raises LeaseLost once it is not */
static int leaselock_check(lua_State *L) {
  LeaseLock *ll = toLeaseLock(L, 1);
  if (ll->lease == NULL || !lg_lease_is_held(ll->lease)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  check_alive(L, 1, ll);
  lua_pushboolean(L, 1);
  return 1;
}

static int leaselock_token(lua_State *L) {
  LeaseLock *ll = toLeaseLock(L, 1);
  if (ll->lease == NULL || !lg_lease_is_held(ll->lease)) return 0;
  check_alive(L, 1, ll);
  lua_pushinteger(L, (lua_Integer)lg_lease_token(ll->lease));
  return 1;
}

static int leaselock_key(lua_State *L) {
  LeaseLock *ll = toLeaseLock(L, 1);
  if (ll->lease == NULL || !lg_lease_is_held(ll->lease)) return 0;
  check_alive(L, 1, ll);
  lua_pushstring(L, lg_lease_key(ll->lease));
  return 1;
}

static int leaselock_tostring(lua_State *L) {
  LeaseLock *ll = toLeaseLock(L, 1);
  const char *name = lease_name(L, 1);
  if (ll->lease != NULL && lg_lease_is_held(ll->lease) && !lg_lease_lost(ll->lease))
    lua_pushfstring(L, "LeaseLock(%s) <acquired %I>", name, (lua_Integer)lg_lease_token(ll->lease));
  else lua_pushfstring(L, "LeaseLock(%s) <released>", name);
  return 1;
}

/* Tests and the benchmark: the HTTP requests this lock has made. */
static int leaselock_requests(lua_State *L) {
  LeaseLock *ll = toLeaseLock(L, 1);
  lua_pushinteger(L, ll->lease != NULL ? (lua_Integer)lg_lease_requests(ll->lease) : 0);
  return 1;
}

static const luaL_Reg leaselock_methods[] = {
  {"acquire", leaselock_acquire},
  {"release", leaselock_release},
  {"is_locked", leaselock_is_locked},
  {"check", leaselock_check},
  {"token", leaselock_token},
  {"key", leaselock_key},
  {"requests", leaselock_requests},
  {NULL, NULL}
};

/* Two names, two functions: an argument error names the one called. */
static int lease_lease(lua_State *L) { return leaselock_new(L); }
static int lease_LeaseLock(lua_State *L) { return leaselock_new(L); }

static const luaL_Reg lease_functions[] = {
  {"lease", lease_lease},
  {"LeaseLock", lease_LeaseLock},
  {NULL, NULL}
};

/* The module's only export (luaguard/lease.so: not in libluaguard). */
LUAGUARD_API int luaopen_luaguard_lease(lua_State *L);

LUAGUARD_API int luaopen_luaguard_lease(lua_State *L) {
  const lg_guard_api *api;
  lua_getfield(L, LUA_REGISTRYINDEX, LG_GUARD_API_KEY);
  api = (const lg_guard_api *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (api == NULL) return luaL_error(L, "luaguard.lease needs luaguard.core, loaded first");
  if (api->version != LG_GUARD_API_VERSION || strcmp(api->luaguard_version, LUAGUARD_VERSION) != 0)
    return luaL_error(L, "luaguard.lease %s does not match luaguard.core %s",
                      LUAGUARD_VERSION, api->luaguard_version);
  guard = api;
  lg_open_errors(L);
  lg_open_type(L, LG_LEASELOCK_MT, leaselock_release, leaselock_tostring, leaselock_methods);
  luaL_getmetatable(L, LG_LEASELOCK_MT);
  lua_pushcfunction(L, leaselock_gc);     /* __gc also frees the core object */
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newlib(L, lease_functions);
  return 1;
}

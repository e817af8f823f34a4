/*
** lg_etcd.c — a lock on etcd v3 held by a lease (see lg_etcd.h).
**
** The requests, all POSTs of JSON to 3.4's gateway (keys base64, int64s as
** strings: a lease ID is about 2^61, so no number here passes through a
** double; cJSON's numbers are never read):
**   lease/grant {TTL}            -> {ID, TTL}
**   lease/keepalive {ID}         -> {result: {ID, TTL}}; no TTL: the lease is gone
**   lease/revoke {ID}            (the lock key goes with its lease)
**   lock/lock {name, lease}      -> {key, header.revision}: blocks until the
**                                   key is the oldest
**   kv/range {key[, range_end, sort, limit, serializable]}
**                                -> {kvs: [{key, create_revision, lease}]}
**   kv/deleterange {key}         (release: the key, then the lease)
**   auth/authenticate {name, password} -> {token}, sent as Authorization
** An uncontended cycle is grant, lock, range (the #11456 read-back: from the
** member's own state when it is no older than the lock's answer), delete,
** revoke: five requests over one kept-alive connection (six with timeout 0,
** which first looks for a holder: lock/lock itself would wait), plus the
** thread's renewals every ttl/3.
**
** Waiting. Every request of the caller's thread runs in a curl multi loop
** that polls at most 50 ms at a time, so the caller's interrupt (a handled
** signal, the kick's EINTR ends curl's poll early) is asked at least that
** often, and a deadline ends it. Ending a lock/lock request closes its
** connection: etcd then cancels the wait and deletes the waiter's key; the
** lease is revoked besides, which deletes it in any case.
**
** Keeping the lease. A thread of its own (all signals blocked: the program's
** handlers run on its threads, never on ours) renews every ttl/3 over a
** connection of its own. The lease's life is counted from when a renewal was
** *sent* (CLOCK_MONOTONIC): alive_until = sent + TTL - margin. A renewal that
** fails is retried on the next endpoint, soon, and never waits past
** alive_until. When a reply says the lease is gone, or alive_until passes
** (the member or the whole process was stopped, say), the lease is lost: the
** thread calls 'lost' once and ends.
*/
#define _GNU_SOURCE
#include "lg_etcd.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#define POLL_MS 50                /* longest wait between interrupt checks */
#define ATTEMPT_S 2.0             /* one request on one endpoint, besides lock/lock */
#define CONNECT_NEXT_MS 1000L     /* a connection (TCP and TLS) with endpoints left */
#define CONNECT_LAST_MS 2000L     /* ... to the last one left: etcdctl's dial timeout */
#define RETRY_S 0.1               /* a failed renewal is tried again this soon */
#define LOCK_MIN_S 0.25           /* a lock/lock request's least time */

/* One connection: not shared between threads. */
typedef struct conn {
  CURL *easy;
  CURLM *multi;
  const lg_etcd_config *cfg;
  int current;                    /* the endpoint that answered last */
  int connected;                  /* its connection is up (the last request got through) */
  char *token;                    /* auth token, or NULL */
  char *body;                     /* the response */
  size_t len, cap;
  long *requests;
} conn;

struct lg_lease {
  pid_t owner;                    /* the process that made it (see forget_in_child) */
  lg_etcd_config cfg;             /* copied strings, freed with the lease */
  char *name;                     /* prefix .. name */
  int ttl;
  conn main;                      /* the caller's thread */
  conn keeper;                    /* the keep-alive thread's */
  long requests;

  int held;
  char *key;
  int64_t token, id;
  char holder[512], holder_lease[32];

  pthread_t thread;
  int thread_running;
  pthread_mutex_t mutex;
  pthread_cond_t wake;
  int stop;                       /* under mutex */
  double alive_until;             /* under mutex */
  volatile int lost;              /* atomic */
  lg_lease_lost_fn lost_fn;
  void *lost_ud;
};

/* Results of post(). */
enum { POST_OK = 0, POST_ETCD = -1, POST_TIMEOUT = -2, POST_INTERRUPTED = -3 };


static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double margin_s(int ttl) { return 0.2 + ttl * 0.1; }


/* ---- base64 (RFC 4648, with padding) ---- */

static const char b64chars[] =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const char *s, size_t n) {
  char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;
  size_t i;
  if (out == NULL) return NULL;
  for (i = 0; i + 2 < n; i += 3) {
    unsigned v = (unsigned char)s[i] << 16 | (unsigned char)s[i + 1] << 8 | (unsigned char)s[i + 2];
    *o++ = b64chars[v >> 18 & 63]; *o++ = b64chars[v >> 12 & 63];
    *o++ = b64chars[v >> 6 & 63];  *o++ = b64chars[v & 63];
  }
  if (i < n) {
    unsigned v = (unsigned char)s[i] << 16 | (i + 1 < n ? (unsigned char)s[i + 1] << 8 : 0);
    *o++ = b64chars[v >> 18 & 63]; *o++ = b64chars[v >> 12 & 63];
    *o++ = i + 1 < n ? b64chars[v >> 6 & 63] : '=';
    *o++ = '=';
  }
  *o = '\0';
  return out;
}

/* NULL on bad input or no memory. */
static char *b64_decode(const char *s) {
  size_t n = strlen(s), i;
  char *out = malloc(n / 4 * 3 + 1), *o = out;
  unsigned v = 0;
  int bits = 0;
  if (out == NULL) return NULL;
  for (i = 0; i < n && s[i] != '='; i++) {
    const char *p = strchr(b64chars, s[i]);
    if (p == NULL) { free(out); return NULL; }
    v = v << 6 | (unsigned)(p - b64chars);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      *o++ = (char)(v >> bits & 0xff);
    }
  }
  *o = '\0';
  return out;
}


/* ---- one connection ---- */

static size_t on_body(char *data, size_t size, size_t n, void *ud) {
  conn *c = (conn *)ud;
  size_t add = size * n;
  if (c->len + add + 1 > c->cap) {
    size_t cap = c->cap == 0 ? 4096 : c->cap;
    char *grown;
    while (cap < c->len + add + 1) cap *= 2;
    if ((grown = realloc(c->body, cap)) == NULL) return 0;   /* curl: write error */
    c->body = grown;
    c->cap = cap;
  }
  memcpy(c->body + c->len, data, add);
  c->len += add;
  c->body[c->len] = '\0';
  return add;
}

static void init_curl_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static int conn_open(conn *c, const lg_etcd_config *cfg, long *requests) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, init_curl_once);
  memset(c, 0, sizeof *c);
  c->cfg = cfg;
  c->requests = requests;
  c->easy = curl_easy_init();
  c->multi = curl_multi_init();
  if (c->easy == NULL || c->multi == NULL) {
    if (c->easy != NULL) curl_easy_cleanup(c->easy);
    if (c->multi != NULL) curl_multi_cleanup(c->multi);
    c->easy = NULL;
    c->multi = NULL;
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

/*
** Idle connections of finished lease locks, kept for the next one with the
** same configuration (a script that takes and releases many locks then talks
** over one kept-alive connection, as curl would): at most POOL_MAX, any
** thread, under pool_mutex. The key is the configuration's strings.
*/
#define POOL_MAX 4
typedef struct pooled {
  conn c;
  char *key;
  pid_t pid;                /* a forked child never uses its parent's sockets */
} pooled;
static pooled pool[POOL_MAX];
static int pool_n;
static pthread_mutex_t pool_mutex = PTHREAD_MUTEX_INITIALIZER;

static char *config_key(const lg_etcd_config *cfg) {
  size_t n = 1;
  int i;
  char *key;
  const char *parts[5];
  parts[0] = cfg->cacert; parts[1] = cfg->cert; parts[2] = cfg->key;
  parts[3] = cfg->user; parts[4] = cfg->password;
  for (i = 0; i < cfg->nendpoints; i++) n += strlen(cfg->endpoints[i]) + 1;
  for (i = 0; i < 5; i++) n += (parts[i] != NULL ? strlen(parts[i]) : 0) + 2;
  if ((key = malloc(n)) == NULL) return NULL;
  key[0] = '\0';
  for (i = 0; i < cfg->nendpoints; i++) { strcat(key, cfg->endpoints[i]); strcat(key, ","); }
  for (i = 0; i < 5; i++) {
    strcat(key, "\n");
    if (parts[i] != NULL) { strcat(key, "="); strcat(key, parts[i]); }
  }
  return key;
}

static void conn_close(conn *c);

/* A pooled connection for cfg into *c (1), or none (0). */
static int pool_take(conn *c, const lg_etcd_config *cfg, long *requests) {
  char *key = config_key(cfg);
  int i, found = 0;
  if (key == NULL) return 0;
  pthread_mutex_lock(&pool_mutex);
  for (i = 0; i < pool_n && !found; i++)
    if (pool[i].pid == getpid() && strcmp(pool[i].key, key) == 0) {
      *c = pool[i].c;
      free(pool[i].key);
      pool[i] = pool[--pool_n];
      found = 1;
    }
  pthread_mutex_unlock(&pool_mutex);
  free(key);
  if (found) {
    c->cfg = cfg;           /* the same strings, the new owner's copy */
    c->requests = requests;
  }
  return found;
}

/*
** The pool goes with the code that made it, at exit (lease.so is linked
** -z nodelete: lua_close's dlclose leaves it, and its pool, for the next
** state; see premake5.lua). A forked child's copies of its parent's
** connections are only forgotten.
*/
static void pool_drain(void) __attribute__((destructor));
static void pool_drain(void) {
  int i;
  pthread_mutex_lock(&pool_mutex);
  for (i = 0; i < pool_n; i++) {
    if (pool[i].pid == getpid()) conn_close(&pool[i].c);
    free(pool[i].key);
  }
  pool_n = 0;
  pthread_mutex_unlock(&pool_mutex);
}

/* Keep c for the next lease lock of its configuration, or close it. */
static void pool_give(conn *c) {
  char *key = c->easy != NULL ? config_key(c->cfg) : NULL;
  if (key != NULL) {
    pthread_mutex_lock(&pool_mutex);
    if (pool_n < POOL_MAX) {
      pool[pool_n].c = *c;
      pool[pool_n].c.cfg = NULL;      /* its owner's copy goes with the owner */
      pool[pool_n].c.requests = NULL;
      pool[pool_n].pid = getpid();
      pool[pool_n++].key = key;
      key = NULL;
      memset(c, 0, sizeof *c);
    }
    pthread_mutex_unlock(&pool_mutex);
    free(key);
  }
  conn_close(c);            /* nothing left when pooled */
}

static void conn_close(conn *c) {
  if (c->easy != NULL) curl_easy_cleanup(c->easy);
  if (c->multi != NULL) curl_multi_cleanup(c->multi);
  free(c->token);
  free(c->body);
  memset(c, 0, sizeof *c);
}

static void set_error(lg_etcd_error *err, const char *endpoint, int code, const char *message) {
  if (err == NULL) return;
  snprintf(err->endpoint, sizeof err->endpoint, "%s", endpoint != NULL ? endpoint : "");
  err->code = code;
  snprintf(err->message, sizeof err->message, "%s", message != NULL ? message : "");
}

/* A curl failure that says nothing of the request: try the next endpoint. */
static int is_connection_error(CURLcode rc) {
  return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
         rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
         rc == CURLE_GOT_NOTHING || rc == CURLE_PARTIAL_FILE;
}

/*
** One request to one endpoint, until 'deadline', connecting (TCP and TLS) for
** at most connect_ms, asking 'interrupted' at least every POLL_MS. POST_OK
** with *rc curl's result and *status the HTTP status, or POST_TIMEOUT /
** POST_INTERRUPTED (the transfer abandoned: its connection closed).
*/
static int perform(conn *c, const char *url, const char *json, struct curl_slist *headers,
                   long connect_ms, double deadline, const lg_lease_wait *w, CURLcode *rc,
                   long *status) {
  CURL *e = c->easy;
  int result = POST_OK, running = 1;
  CURLMsg *msg;
  int left;
  c->len = 0;
  if (c->body != NULL) c->body[0] = '\0';
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, json);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);        /* no SIGALRM of curl's */
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 0L);      /* ours: the loop below */
  if (c->cfg->cacert != NULL) curl_easy_setopt(e, CURLOPT_CAINFO, c->cfg->cacert);
  if (c->cfg->cert != NULL) curl_easy_setopt(e, CURLOPT_SSLCERT, c->cfg->cert);
  if (c->cfg->key != NULL) curl_easy_setopt(e, CURLOPT_SSLKEY, c->cfg->key);
  if (c->requests != NULL) __atomic_add_fetch(c->requests, 1, __ATOMIC_RELAXED);
  curl_multi_add_handle(c->multi, e);
  for (;;) {
    double now;
    long ms;
    curl_multi_perform(c->multi, &running);
    if (running == 0) break;
    if (w != NULL && w->interrupted != NULL && w->interrupted(w->ud)) {
      result = POST_INTERRUPTED;
      break;
    }
    now = now_s();
    if (now >= deadline) {
      result = POST_TIMEOUT;
      break;
    }
    ms = deadline - now > POLL_MS / 1000.0 ? POLL_MS : (long)((deadline - now) * 1000) + 1;
    curl_multi_poll(c->multi, NULL, 0, (int)ms, NULL);   /* EINTR ends it early */
  }
  *rc = CURLE_OK;
  while ((msg = curl_multi_info_read(c->multi, &left)) != NULL)
    if (msg->msg == CURLMSG_DONE) *rc = msg->data.result;
  curl_multi_remove_handle(c->multi, e);
  c->connected = result == POST_OK && *rc == CURLE_OK;   /* else abandoned, or failed */
  *status = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
  return result;
}

static int post(conn *c, const char *path, cJSON *request, cJSON **reply, double deadline,
                double attempt_s, const lg_lease_wait *w, lg_etcd_error *err);

/* auth/authenticate: c->token, or POST_ETCD. */
static int authenticate(conn *c, double deadline, lg_etcd_error *err) {
  cJSON *req = cJSON_CreateObject(), *reply = NULL;
  const cJSON *token;
  int rc;
  const char *user = c->cfg->user, *password = c->cfg->password;
  free(c->token);
  c->token = NULL;
  cJSON_AddStringToObject(req, "name", user);
  cJSON_AddStringToObject(req, "password", password != NULL ? password : "");
  rc = post(c, "/v3/auth/authenticate", req, &reply, deadline, ATTEMPT_S, NULL, err);
  cJSON_Delete(req);
  if (rc != POST_OK) return rc;
  token = cJSON_GetObjectItemCaseSensitive(reply, "token");
  if (cJSON_IsString(token)) c->token = strdup(token->valuestring);
  cJSON_Delete(reply);
  if (c->token == NULL) {
    set_error(err, c->cfg->endpoints[c->current], 0, "authentication gave no token");
    return POST_ETCD;
  }
  return POST_OK;
}

/*
** POST request to 'path', endpoints tried in turn from the one that answered
** last (a connection error, a TLS failure or a silent member moves on; each
** attempt lasts at most attempt_s, or to the deadline). An etcd error reply
** is POST_ETCD with err filled; an expired auth token is renewed once.
*/
static int post(conn *c, const char *path, cJSON *request, cJSON **reply, double deadline,
                double attempt_s, const lg_lease_wait *w, lg_etcd_error *err) {
  char *json = cJSON_PrintUnformatted(request);
  int tried, result = POST_ETCD, reauthed = 0;
  *reply = NULL;
  if (json == NULL) {
    set_error(err, "", 0, "out of memory");
    return POST_ETCD;
  }
  if (c->cfg->user != NULL && c->token == NULL && strcmp(path, "/v3/auth/authenticate") != 0) {
    int rc = authenticate(c, deadline, err);
    if (rc != POST_OK) { free(json); return rc; }
  }
  for (tried = 0; tried < c->cfg->nendpoints; tried++) {
    const char *endpoint = c->cfg->endpoints[c->current];
    char url[1024];
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    /* curl's connect time covers the TLS handshake: a silent member is
    ** passed over in a second, but the last one left gets etcdctl's 2 s (a
    ** slow handshake there is no reason to give up: nothing else is left);
    ** the answer's attempt_s counts from when the connection is up */
    long connect_ms = tried + 1 < c->cfg->nendpoints ? CONNECT_NEXT_MS : CONNECT_LAST_MS;
    double until = now_s() + attempt_s + (c->connected ? 0 : connect_ms / 1000.0);
    CURLcode rc;
    long status;
    int r;
    if (c->token != NULL) {
      char auth[1024];
      snprintf(auth, sizeof auth, "Authorization: %s", c->token);
      headers = curl_slist_append(headers, auth);
    }
    snprintf(url, sizeof url, "%s%s", endpoint, path);
    r = perform(c, url, json, headers, connect_ms, until < deadline ? until : deadline, w,
                &rc, &status);
    curl_slist_free_all(headers);
    if (r == POST_INTERRUPTED || (r == POST_TIMEOUT && now_s() >= deadline)) {
      result = r;
      set_error(err, endpoint, 0, r == POST_TIMEOUT ? "timed out" : "interrupted");
      break;
    }
    if (r == POST_TIMEOUT || rc != CURLE_OK) {     /* this endpoint: the next */
      set_error(err, endpoint, r == POST_TIMEOUT ? CURLE_OPERATION_TIMEDOUT : (int)rc,
                r == POST_TIMEOUT ? "no answer in time" : curl_easy_strerror(rc));
      if (r != POST_TIMEOUT && !is_connection_error(rc) && tried + 1 == c->cfg->nendpoints) break;
      c->current = (c->current + 1) % c->cfg->nendpoints;
      continue;
    }
    *reply = cJSON_Parse(c->body != NULL ? c->body : "");
    if (*reply == NULL) {
      char message[128];
      snprintf(message, sizeof message, "HTTP %ld, not JSON", status);
      set_error(err, endpoint, (int)status, message);
      break;
    }
    if (cJSON_GetObjectItemCaseSensitive(*reply, "error") != NULL || status != 200) {
      const cJSON *code = cJSON_GetObjectItemCaseSensitive(*reply, "code");
      const cJSON *message = cJSON_GetObjectItemCaseSensitive(*reply, "message");
      int icode = cJSON_IsNumber(code) ? code->valueint : (int)status;
      set_error(err, endpoint, icode, cJSON_IsString(message) ? message->valuestring : "error");
      cJSON_Delete(*reply);
      *reply = NULL;
      if (icode == 16 && c->cfg->user != NULL && !reauthed) {   /* Unauthenticated: token expired */
        reauthed = 1;
        if (authenticate(c, deadline, err) == POST_OK) { tried--; continue; }
      }
      break;
    }
    result = POST_OK;
    break;
  }
  free(json);
  return result;
}


/* ---- small JSON helpers: int64s come as strings ---- */

static int64_t int64_field(const cJSON *obj, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
  return cJSON_IsString(v) ? (int64_t)strtoll(v->valuestring, NULL, 10) : 0;
}

static void add_int64(cJSON *obj, const char *name, int64_t v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%lld", (long long)v);
  cJSON_AddStringToObject(obj, name, buf);
}

static void add_b64(cJSON *obj, const char *name, const char *s, size_t n) {
  char *enc = b64_encode(s, n);
  cJSON_AddStringToObject(obj, name, enc != NULL ? enc : "");
  free(enc);
}


/* ---- the lease's requests ---- */

/* lease/grant: *id and the TTL granted, or a POST_* error. */
static int grant(conn *c, int ttl, int64_t *id, int64_t *granted, double deadline,
                 const lg_lease_wait *w, lg_etcd_error *err) {
  cJSON *req = cJSON_CreateObject(), *reply;
  int rc;
  add_int64(req, "TTL", ttl);
  rc = post(c, "/v3/lease/grant", req, &reply, deadline, ATTEMPT_S, w, err);
  cJSON_Delete(req);
  if (rc != POST_OK) return rc;
  *id = int64_field(reply, "ID");
  *granted = int64_field(reply, "TTL");
  cJSON_Delete(reply);
  if (*id == 0 || *granted <= 0) {
    set_error(err, c->cfg->endpoints[c->current], 0, "lease/grant gave no lease");
    return POST_ETCD;
  }
  return POST_OK;
}

/* POST {"ID": id} to path (keepalive, revoke). */
static int post_id(conn *c, const char *path, int64_t id, cJSON **reply, double deadline,
                   double attempt_s, lg_etcd_error *err) {
  cJSON *req = cJSON_CreateObject();
  int rc;
  add_int64(req, "ID", id);
  rc = post(c, path, req, reply, deadline, attempt_s, NULL, err);
  cJSON_Delete(req);
  return rc;
}

/* lease/keepalive: *ttl left (0: the lease is gone), or a POST_* error. */
static int keepalive(conn *c, int64_t id, int64_t *ttl, double deadline, double attempt_s,
                     lg_etcd_error *err) {
  cJSON *reply;
  const cJSON *result;
  int rc = post_id(c, "/v3/lease/keepalive", id, &reply, deadline, attempt_s, err);
  if (rc != POST_OK) return rc;
  result = cJSON_GetObjectItemCaseSensitive(reply, "result");
  *ttl = result != NULL ? int64_field(result, "TTL") : 0;
  cJSON_Delete(reply);
  return POST_OK;
}

static int lease_revoke(conn *c, int64_t id, double deadline, lg_etcd_error *err) {
  cJSON *reply;
  int rc = post_id(c, "/v3/lease/revoke", id, &reply, deadline, ATTEMPT_S, err);
  if (rc == POST_OK) cJSON_Delete(reply);
  else if (rc == POST_ETCD && err != NULL && err->code == 5) rc = POST_OK;   /* NotFound: gone already */
  return rc;
}

/* kv/deleterange of the one key; *deleted: how many went (0: it was gone). */
static int key_delete(conn *c, const char *key, int64_t *deleted, double deadline,
                      lg_etcd_error *err) {
  cJSON *req = cJSON_CreateObject(), *reply;
  int rc;
  add_b64(req, "key", key, strlen(key));
  rc = post(c, "/v3/kv/deleterange", req, &reply, deadline, ATTEMPT_S, NULL, err);
  cJSON_Delete(req);
  if (rc == POST_OK) {
    *deleted = int64_field(reply, "deleted");
    cJSON_Delete(reply);
  }
  return rc;
}

/* lock/lock: *key (malloc'd, decoded) and the revision of the answer, or a
** POST_* error. */
static int lock_wait(conn *c, const char *name, int64_t id, char **key, int64_t *revision,
                     double deadline, const lg_lease_wait *w, lg_etcd_error *err) {
  cJSON *req = cJSON_CreateObject(), *reply;
  const cJSON *k;
  int rc;
  add_b64(req, "name", name, strlen(name));
  add_int64(req, "lease", id);
  rc = post(c, "/v3/lock/lock", req, &reply, deadline, HUGE_VAL, w, err);
  cJSON_Delete(req);
  if (rc != POST_OK) return rc;
  k = cJSON_GetObjectItemCaseSensitive(reply, "key");
  *key = cJSON_IsString(k) ? b64_decode(k->valuestring) : NULL;
  *revision = int64_field(cJSON_GetObjectItemCaseSensitive(reply, "header"), "revision");
  cJSON_Delete(reply);
  if (*key == NULL) {
    set_error(err, c->cfg->endpoints[c->current], 0, "lock/lock gave no key");
    return POST_ETCD;
  }
  return POST_OK;
}

/*
** kv/range over [from, to) (to NULL: the one key), oldest create revision
** first, one key: *found 0 when none; its key, create revision and lease.
** min_rev > 0: a state at least that new is enough, so the member answers
** from its own (serializable: no round of the cluster's), unless it is
** behind it (another member after a rotation, say): then linearizable.
*/
static int range_first(conn *c, const char *from, const char *to, int64_t min_rev, int *found,
                       char *key, size_t keysize, int64_t *create_rev, char *lease,
                       size_t leasesize, double deadline, const lg_lease_wait *w,
                       lg_etcd_error *err) {
  cJSON *req = cJSON_CreateObject(), *reply;
  const cJSON *kvs, *kv;
  int rc;
  add_b64(req, "key", from, strlen(from));
  if (to != NULL) {
    add_b64(req, "range_end", to, strlen(to));
    cJSON_AddStringToObject(req, "sort_order", "ASCEND");
    cJSON_AddStringToObject(req, "sort_target", "CREATE");
    add_int64(req, "limit", 1);
  }
  if (min_rev > 0) cJSON_AddTrueToObject(req, "serializable");
  rc = post(c, "/v3/kv/range", req, &reply, deadline, ATTEMPT_S, w, err);
  if (rc == POST_OK && min_rev > 0 &&
      int64_field(cJSON_GetObjectItemCaseSensitive(reply, "header"), "revision") < min_rev) {
    cJSON_Delete(reply);
    cJSON_DeleteItemFromObjectCaseSensitive(req, "serializable");
    rc = post(c, "/v3/kv/range", req, &reply, deadline, ATTEMPT_S, w, err);
  }
  cJSON_Delete(req);
  if (rc != POST_OK) return rc;
  kvs = cJSON_GetObjectItemCaseSensitive(reply, "kvs");
  kv = cJSON_IsArray(kvs) ? cJSON_GetArrayItem(kvs, 0) : NULL;
  *found = kv != NULL;
  if (kv != NULL) {
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(kv, "key");
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(kv, "lease");
    char *decoded = cJSON_IsString(k) ? b64_decode(k->valuestring) : NULL;
    if (key != NULL) snprintf(key, keysize, "%s", decoded != NULL ? decoded : "");
    free(decoded);
    if (create_rev != NULL) *create_rev = int64_field(kv, "create_revision");
    if (lease != NULL) snprintf(lease, leasesize, "%s", cJSON_IsString(l) ? l->valuestring : "");
  }
  cJSON_Delete(reply);
  return POST_OK;
}


/* ---- the keep-alive thread ---- */

/* Once, from whichever thread sees it first; the callback is read under
** the mutex (acquire sets it there) and called outside it. */
static void mark_lost(lg_lease *ls) {
  lg_lease_lost_fn fn;
  void *ud;
  if (__atomic_exchange_n(&ls->lost, 1, __ATOMIC_ACQ_REL) != 0) return;
  pthread_mutex_lock(&ls->mutex);
  fn = ls->lost_fn;
  ud = ls->lost_ud;
  pthread_mutex_unlock(&ls->mutex);
  if (fn != NULL) fn(ud);
}

/* Whether the lease is alive by our own count (sent + TTL - margin), now:
** what the thread would find if it looked. */
static int alive_by_count(lg_lease *ls) {
  double until;
  pthread_mutex_lock(&ls->mutex);
  until = ls->alive_until;
  pthread_mutex_unlock(&ls->mutex);
  return now_s() < until;
}

static void *keeper(void *arg) {
  lg_lease *ls = (lg_lease *)arg;
  double next = now_s() + ls->ttl / 3.0;
  pthread_mutex_lock(&ls->mutex);
  while (!ls->stop) {
    double now = now_s(), sent, until;
    int64_t left = 0;
    int rc;
    if (now >= ls->alive_until) break;                  /* lost (a stopped process, say) */
    if (now < next) {
      double wake = next < ls->alive_until ? next : ls->alive_until;
      struct timespec ts;
      ts.tv_sec = (time_t)wake;
      ts.tv_nsec = (long)((wake - (double)ts.tv_sec) * 1e9);
      pthread_cond_timedwait(&ls->wake, &ls->mutex, &ts);
      continue;
    }
    until = ls->alive_until;
    pthread_mutex_unlock(&ls->mutex);
    sent = now_s();
    rc = keepalive(&ls->keeper, ls->id, &left, until, ls->ttl / 3.0, NULL);
    pthread_mutex_lock(&ls->mutex);
    if (rc == POST_OK && left <= 0) break;             /* the lease is gone */
    if (rc == POST_OK) {
      double alive = sent + (double)left - margin_s(ls->ttl);
      if (alive > ls->alive_until) ls->alive_until = alive;
      next = sent + ls->ttl / 3.0;
    }
    else next = now_s() + RETRY_S;                     /* the next endpoint, soon */
  }
  if (!ls->stop) {
    pthread_mutex_unlock(&ls->mutex);
    mark_lost(ls);
    return NULL;
  }
  pthread_mutex_unlock(&ls->mutex);
  return NULL;
}

static int start_keeper(lg_lease *ls) {
  sigset_t all, old;
  int rc;
  pthread_mutex_lock(&ls->mutex);
  ls->stop = 0;
  pthread_mutex_unlock(&ls->mutex);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);    /* the thread inherits the mask */
  rc = pthread_create(&ls->thread, NULL, keeper, ls);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    errno = rc;
    return -1;
  }
  ls->thread_running = 1;
  return 0;
}

static void stop_keeper(lg_lease *ls) {
  if (!ls->thread_running) return;
  pthread_mutex_lock(&ls->mutex);
  ls->stop = 1;
  pthread_cond_signal(&ls->wake);
  pthread_mutex_unlock(&ls->mutex);
  pthread_join(ls->thread, NULL);
  ls->thread_running = 0;
}


/* ---- the lease lock ---- */

static char *dup_or_null(const char *s) { return s != NULL ? strdup(s) : NULL; }

lg_lease *lg_lease_new(const lg_etcd_config *cfg, const char *name, int ttl) {
  lg_lease *ls = calloc(1, sizeof *ls);
  int i;
  pthread_condattr_t ca;
  if (ls == NULL) return NULL;
  for (i = 0; i < cfg->nendpoints && i < LG_ETCD_MAX_ENDPOINTS; i++)
    ls->cfg.endpoints[i] = strdup(cfg->endpoints[i]);
  ls->cfg.nendpoints = i;
  ls->cfg.cacert = dup_or_null(cfg->cacert);
  ls->cfg.cert = dup_or_null(cfg->cert);
  ls->cfg.key = dup_or_null(cfg->key);
  ls->cfg.user = dup_or_null(cfg->user);
  ls->cfg.password = dup_or_null(cfg->password);
  ls->name = strdup(name);
  ls->ttl = ttl;
  ls->owner = getpid();
  pthread_mutex_init(&ls->mutex, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&ls->wake, &ca);
  pthread_condattr_destroy(&ca);
  if (ls->name == NULL) {
    lg_lease_free(ls);
    errno = ENOMEM;
    return NULL;
  }
  return ls;
}

/*
** A process forked from the holder (no exec) inherits the lease's memory but
** not its thread, and shares its sockets: it must neither revoke the
** parent's lease, nor join a thread it does not have, nor close (for TLS:
** shut down) connections the parent still uses. It forgets them; their
** memory stays with the child until it exits or execs.
*/
static int forget_in_child(lg_lease *ls) {
  if (ls->owner == getpid()) return 0;
  ls->held = 0;
  ls->thread_running = 0;
  memset(&ls->main, 0, sizeof ls->main);
  memset(&ls->keeper, 0, sizeof ls->keeper);
  return 1;
}

void lg_lease_free(lg_lease *ls) {
  int i, child;
  if (ls == NULL) return;
  child = forget_in_child(ls);
  if (ls->held) lg_lease_release(ls, NULL);
  stop_keeper(ls);
  pool_give(&ls->main);
  conn_close(&ls->keeper);
  for (i = 0; i < ls->cfg.nendpoints; i++) free((char *)ls->cfg.endpoints[i]);
  free((char *)ls->cfg.cacert);
  free((char *)ls->cfg.cert);
  free((char *)ls->cfg.key);
  free((char *)ls->cfg.user);
  free((char *)ls->cfg.password);
  free(ls->name);
  free(ls->key);
  if (!child) {             /* a copy may have a waiter that is not here: it */
    pthread_mutex_destroy(&ls->mutex);   /* would wait for it forever */
    pthread_cond_destroy(&ls->wake);
  }
  free(ls);
}

/* The key after every key that starts with p (etcd's prefix range end). */
static void prefix_end(const char *p, char *out, size_t size) {
  size_t n = strlen(p);
  snprintf(out, size, "%s", p);
  while (n > 0 && (unsigned char)out[n - 1] == 0xff) out[--n] = '\0';
  if (n > 0) out[n - 1]++;
}

/* Who holds 'name' now: the oldest key under name/ (best effort). */
static void note_holder(lg_lease *ls, double deadline) {
  char from[600], to[600];
  int found = 0;
  ls->holder[0] = ls->holder_lease[0] = '\0';
  snprintf(from, sizeof from, "%s/", ls->name);
  prefix_end(from, to, sizeof to);
  if (range_first(&ls->main, from, to, 0, &found, ls->holder, sizeof ls->holder, NULL,
                  ls->holder_lease, sizeof ls->holder_lease, deadline, NULL, NULL) != POST_OK ||
      !found)
    ls->holder[0] = ls->holder_lease[0] = '\0';
}

/* Give up the lease (and its key) of a failed attempt. */
static void drop_lease(lg_lease *ls) {
  stop_keeper(ls);
  conn_close(&ls->keeper);
  if (ls->id != 0) lease_revoke(&ls->main, ls->id, now_s() + ATTEMPT_S, NULL);
  ls->id = 0;
}

static int acquire(lg_lease *ls, const lg_lease_wait *w, lg_lease_lost_fn lost, void *ud,
                   lg_etcd_error *err);

/* The caller's connection is the pool's between holds (see pool_take). */
int lg_lease_acquire(lg_lease *ls, const lg_lease_wait *w, lg_lease_lost_fn lost, void *ud,
                     lg_etcd_error *err) {
  int rc;
  if (ls->held) return LG_LEASE_OK;
  forget_in_child(ls);
  ls->owner = getpid();     /* a child may take a lease of its own */
  if (ls->main.easy == NULL && !pool_take(&ls->main, &ls->cfg, &ls->requests) &&
      conn_open(&ls->main, &ls->cfg, &ls->requests) != 0) {
    set_error(err, "", 0, "out of memory");
    return LG_LEASE_ETCD;
  }
  rc = acquire(ls, w, lost, ud, err);
  if (rc != LG_LEASE_OK) pool_give(&ls->main);
  return rc;
}

static int acquire(lg_lease *ls, const lg_lease_wait *w, lg_lease_lost_fn lost, void *ud,
                   lg_etcd_error *err) {
  double start = now_s();
  double deadline = isinf(w->timeout) || w->timeout > 1e9 ? HUGE_VAL : start + w->timeout;
  ls->holder[0] = ls->holder_lease[0] = '\0';
  for (;;) {
    int64_t granted = 0, create_rev = 0, locked_at = 0;
    char *key = NULL;
    int rc, found = 0;
    double sent = now_s();
    /* setting up never counts against a timeout of 0: it means "do not wait" */
    double setup_deadline = sent + 10 * ATTEMPT_S;
    rc = grant(&ls->main, ls->ttl, &ls->id, &granted, setup_deadline, w, err);
    if (rc != POST_OK) return rc == POST_INTERRUPTED ? LG_LEASE_INTERRUPTED : LG_LEASE_ETCD;
    __atomic_store_n(&ls->lost, 0, __ATOMIC_RELEASE);
    pthread_mutex_lock(&ls->mutex);
    ls->lost_fn = NULL;
    pthread_mutex_unlock(&ls->mutex);
    ls->alive_until = sent + (double)granted - margin_s(ls->ttl);
    if (conn_open(&ls->keeper, &ls->cfg, &ls->requests) != 0 || start_keeper(ls) != 0) {
      set_error(err, "", 0, "could not start the keep-alive thread");
      drop_lease(ls);
      return LG_LEASE_ETCD;
    }
    /* lock/lock only returns once the lock is ours. With timeout 0 a key
    ** already under name/ (a holder, or an older waiter) fails at once; one
    ** that comes just after this look is waited for a moment. A short
    ** timeout still gives a free lock time for its one request. */
    if (w->timeout <= 0) {
      char from[600], to[600];
      snprintf(from, sizeof from, "%s/", ls->name);
      prefix_end(from, to, sizeof to);
      rc = range_first(&ls->main, from, to, 0, &found, NULL, 0, NULL, NULL, 0, setup_deadline, w, err);
      if (rc == POST_OK && found) rc = POST_TIMEOUT;
    }
    if (rc == POST_OK)
      rc = lock_wait(&ls->main, ls->name, ls->id, &key, &locked_at,
                     deadline > now_s() + LOCK_MIN_S ? deadline : now_s() + LOCK_MIN_S, w, err);
    if (rc == POST_TIMEOUT || rc == POST_INTERRUPTED) {
      drop_lease(ls);       /* the waiter's key goes with its lease */
      if (rc == POST_INTERRUPTED) return LG_LEASE_INTERRUPTED;
      note_holder(ls, now_s() + ATTEMPT_S);
      return LG_LEASE_BUSY;
    }
    if (rc != POST_OK) {
      drop_lease(ls);
      return LG_LEASE_ETCD;
    }
    /* etcd-io/etcd#11456: lock/lock may answer a waiter whose lease expired
    ** meanwhile. The key must still be there, and be ours, in a state no
    ** older than the answer (the expiry, if any, came before it). */
    rc = range_first(&ls->main, key, NULL, locked_at, &found, NULL, 0,
                     &create_rev, NULL, 0, setup_deadline, w, err);
    if (rc == POST_OK && found && create_rev > 0 && !lg_lease_lost(ls) && alive_by_count(ls)) {
      pthread_mutex_lock(&ls->mutex);
      ls->lost_fn = lost;   /* from now on a loss is the holder's to hear */
      ls->lost_ud = ud;
      pthread_mutex_unlock(&ls->mutex);
      free(ls->key);
      ls->key = key;
      ls->token = create_rev;
      ls->held = 1;
      return LG_LEASE_OK;
    }
    free(key);
    drop_lease(ls);
    if (rc == POST_INTERRUPTED) return LG_LEASE_INTERRUPTED;
    if (rc != POST_OK) return LG_LEASE_ETCD;
    if (now_s() >= deadline) {                         /* no lock, and no time left */
      note_holder(ls, now_s() + ATTEMPT_S);
      return LG_LEASE_BUSY;
    }
  }
}

int lg_lease_release(lg_lease *ls, lg_etcd_error *err) {
  int rc = POST_OK, gone = 0;
  if (!ls->held || forget_in_child(ls)) return 0;
  ls->held = 0;
  stop_keeper(ls);
  conn_close(&ls->keeper);
  /* The key first: its deletion is what hands the lock on (a waiter's
  ** lock/lock returns on it), and a delete is a cheaper write for etcd than
  ** a revoke (about 2 ms less here); then the lease, which would otherwise
  ** linger for its TTL. Released once the key is gone, by either. A lost
  ** lease has expired by our count: asking a silent member would only hold
  ** the caller up. A key already gone (nothing deleted) means the lock ended
  ** before its release: the caller is told (1). */
  if (!lg_lease_lost(ls)) {
    double deadline = now_s() + 3 * ATTEMPT_S;
    int64_t count = 0;
    int deleted = key_delete(&ls->main, ls->key, &count, deadline, err) == POST_OK;
    rc = lease_revoke(&ls->main, ls->id, deadline, err);
    if (deleted) rc = POST_OK;
    gone = deleted && count == 0;
  }
  ls->id = 0;
  free(ls->key);
  ls->key = NULL;
  pool_give(&ls->main);
  return rc != POST_OK ? -1 : gone ? 1 : 0;
}

int lg_lease_is_held(const lg_lease *ls) { return ls->held; }

int lg_lease_lost(const lg_lease *ls) { return __atomic_load_n(&ls->lost, __ATOMIC_ACQUIRE); }

int lg_lease_alive(lg_lease *ls) {
  if (!ls->held || lg_lease_lost(ls)) return 0;
  if (alive_by_count(ls)) return 1;
  mark_lost(ls);            /* before the thread saw it: the same once-only call */
  return 0;
}

const char *lg_lease_key(const lg_lease *ls) { return ls->held ? ls->key : NULL; }
int64_t lg_lease_token(const lg_lease *ls) { return ls->token; }
int64_t lg_lease_id(const lg_lease *ls) { return ls->id; }
const char *lg_lease_holder(const lg_lease *ls) { return ls->holder; }
const char *lg_lease_holder_lease(const lg_lease *ls) { return ls->holder_lease; }
long lg_lease_requests(const lg_lease *ls) { return ls->requests; }

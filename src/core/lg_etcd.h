/*
** lg_etcd.h — a lock on etcd v3 (3.4's JSON gateway) held by a lease that a
** thread of its own keeps alive. Pure C (libcurl, cJSON), no Lua headers.
** The protocol is etcd's own lock service (lock/lock, the algorithm of
** clientv3's concurrency.Mutex: key NAME/<lease hex>, the oldest create
** revision holds), so `etcdctl lock NAME` and this exclude each other.
*/
#ifndef LG_ETCD_H
#define LG_ETCD_H

#include <stdint.h>

#define LG_ETCD_MAX_ENDPOINTS 16

typedef struct lg_etcd_config {
  const char *endpoints[LG_ETCD_MAX_ENDPOINTS];   /* URLs, tried in turn */
  int nendpoints;
  const char *cacert, *cert, *key;                /* TLS (PEM files), or NULL */
  const char *user, *password;                    /* etcd auth, or NULL */
} lg_etcd_config;

/* What went wrong, for EtcdError {endpoint, code, message}. */
typedef struct lg_etcd_error {
  char endpoint[256];       /* the last endpoint tried */
  int code;                 /* etcd's gRPC code, else the HTTP status, else curl's error */
  char message[512];
} lg_etcd_error;

/* Why lg_lease_acquire failed (0 with errno: out of memory). */
enum {
  LG_LEASE_OK = 0,
  LG_LEASE_BUSY,            /* the wait ran out: holder/holder_lease say who */
  LG_LEASE_INTERRUPTED,     /* interrupted() asked to stop */
  LG_LEASE_ETCD             /* the cluster: err says */
};

typedef struct lg_lease lg_lease;

/* Called from the keep-alive thread (all signals blocked there, no Lua)
** once, when the lease is gone or can no longer be known alive. */
typedef void (*lg_lease_lost_fn)(void *ud);
/* Polled while a request waits (about every 50 ms, and at EINTR): nonzero
** ends the wait (LG_LEASE_INTERRUPTED). */
typedef int (*lg_lease_interrupt_fn)(void *ud);

typedef struct lg_lease_wait {
  double timeout;                     /* seconds; 0 once, HUGE_VAL forever */
  lg_lease_interrupt_fn interrupted;  /* may be NULL */
  void *ud;
} lg_lease_wait;

/* A lease lock on 'name' (the full key prefix: prefix .. name), not held.
** The config is copied. NULL with errno (ENOMEM). */
lg_lease *lg_lease_new(const lg_etcd_config *cfg, const char *name, int ttl);
/* Release if held, stop the thread, free. */
void lg_lease_free(lg_lease *ls);

/*
** Grant a lease (its keep-alive thread starts at once, so a long wait keeps
** it), wait for the lock, then read the key back: a key that is gone (the
** lease expired while waiting: etcd-io/etcd#11456) is no lock, and the wait
** goes on with a new lease while time is left. On a run-out wait the lease
** is revoked: the waiter's key goes with it. 'lost' is called at most once,
** from the thread, if the lease is lost while held.
*/
int lg_lease_acquire(lg_lease *ls, const lg_lease_wait *w, lg_lease_lost_fn lost, void *ud,
                     lg_etcd_error *err);
/* Stop the thread, delete the key and revoke the lease. 0; 1 when the key
** was gone already (deleted behind our back, or the lease lost unnoticed:
** the lock ended before its release); or -1 with err filled (the lease then
** expires by itself within its ttl). */
int lg_lease_release(lg_lease *ls, lg_etcd_error *err);

int lg_lease_is_held(const lg_lease *ls);
/* Held and known alive now: the last renewal's reply came back and its TTL,
** counted from when it was sent, minus a margin, has not run out. */
int lg_lease_alive(lg_lease *ls);
/* Nonzero once a held lease was lost (until the next acquire). */
int lg_lease_lost(const lg_lease *ls);

const char *lg_lease_key(const lg_lease *ls);        /* NULL when not held */
int64_t lg_lease_token(const lg_lease *ls);          /* create revision; 0 when never held */
int64_t lg_lease_id(const lg_lease *ls);
/* After LG_LEASE_BUSY: the holder's key and lease, "" when unknown. */
const char *lg_lease_holder(const lg_lease *ls);
const char *lg_lease_holder_lease(const lg_lease *ls);
/* The HTTP requests made since lg_lease_new (the benchmark counts them). */
long lg_lease_requests(const lg_lease *ls);

#endif

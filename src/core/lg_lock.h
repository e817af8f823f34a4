/*
** lg_lock.h — exclusive lock files, certbot-compatible. Pure C, no Lua.
** One interface, two mechanisms: lg_lock.c (POSIX) and lg_lock_win32.c.
*/
#ifndef LG_LOCK_H
#define LG_LOCK_H

#include <sys/types.h>

typedef struct lg_lock {
  int fd;                     /* the locked file; -1 when not held */
  int dirfd;                  /* its directory, open while held (POSIX) */
  pid_t owner;                /* process that took it */
  dev_t dev;                  /* identity of the locked file */
  ino_t ino;
  struct lg_lock *next_held;  /* in-process table of held locks (POSIX) */
  const char *path;           /* as given to acquire; must outlive the hold */
  const void *context;        /* who waits for it: one single-threaded caller
                              ** (a Lua state); NULL when unknown */
  void *os_handle;            /* the Windows HANDLE */
} lg_lock;

/* Extra detail of a failed acquire. */
typedef struct lg_lock_failure {
  pid_t holder;               /* pid holding the lock, 0 when it cannot be known */
  double waited;              /* seconds spent waiting */
  int not_regular;            /* errno EINVAL because the path is not a regular file */
  int same_context;           /* errno EDEADLK: held by a lock of the same context */
} lg_lock_failure;

/* Polled while waiting: nonzero stops the wait (errno EINTR). */
typedef int (*lg_lock_interrupted_fn)(void *ud);

/* Called once when a wait passes notify_after seconds, with the holder's pid
** (0 when it cannot be known) and the seconds waited: nonzero stops the wait
** (errno ECANCELED). */
typedef int (*lg_lock_waiting_fn)(void *ud, pid_t holder, double waited);

/* How to wait for a lock held elsewhere. */
typedef struct lg_lock_wait {
  double timeout;                   /* seconds: 0 one try; HUGE_VAL forever */
  lg_lock_interrupted_fn interrupted;  /* NULL: never */
  double notify_after;              /* seconds; 0: no 'waiting' call */
  lg_lock_waiting_fn waiting;
  void *ud;                         /* for both callbacks */
} lg_lock_wait;

void lg_lock_init(lg_lock *lk);

/*
** Take the lock on path, waiting up to w->timeout seconds. 0 when held. -1
** with errno:
**   EWOULDBLOCK  held elsewhere (failure->holder, failure->waited)
**   EINTR        the wait was stopped by 'interrupted'
**   ECANCELED    the wait was stopped by 'waiting'
**   EDEADLK      held by another lock with the same non-NULL context: that
**                caller cannot release it while it waits, so no wait at all
**   EINVAL       a negative or NaN timeout
**   other        the system's reason (ENOENT, ENOTDIR, EACCES, ELOOP for a
**                symlink at path, EINVAL with failure->not_regular ...)
** Nothing is left behind on failure: no descriptor, no file created.
** Acquire on a held lock does nothing.
**
** A lock held by another process is waited for in the kernel (POSIX: F_SETLKW,
** woken by the holder's unlock; a timer ends it at the deadline), one held in
** this process by polling (the kernel's locks are per process).
*/
int lg_lock_acquire_wait(lg_lock *lk, const char *path, const lg_lock_wait *w,
                         lg_lock_failure *failure);

/* The same with a timeout and an interrupt only. */
static inline int lg_lock_acquire(lg_lock *lk, const char *path, double timeout,
                                  lg_lock_interrupted_fn interrupted, void *ud,
                                  lg_lock_failure *failure) {
  lg_lock_wait w;
  w.timeout = timeout;
  w.interrupted = interrupted;
  w.notify_after = 0;
  w.waiting = 0;
  w.ud = ud;
  return lg_lock_acquire_wait(lk, path, &w, failure);
}

/*
** Locks still held when the process calls exit() are released by an atexit
** handler (registered at the first acquire), so their path strings and
** lg_lock structs must stay valid until then or be released first.
**
** Release: remove the file, then unlock and close. In a process other than the one that took it (fork
** without exec) it only closes. Does nothing when not held. 0, or -1 with errno when the file
** could not be removed (the lock is released all the same).
*/
int lg_lock_release(lg_lock *lk, const char *path);

int lg_lock_is_held(const lg_lock *lk);

#ifndef _WIN32
/* Release every lock this process holds whose context is 'context' (a Lua
** state being closed). Returns how many were released. */
int lg_lock_release_context(const void *context);

/* 1 when no thread is inside the lock table (its mutex is free): every call
** above leaves it so. A check for tests, which would otherwise only hang at
** the next call. */
int lg_lock_table_free(void);
#endif

#endif

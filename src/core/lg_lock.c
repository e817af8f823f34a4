/*
** lg_lock.c — the POSIX lock mechanism (certbot's _UnixLockMechanism, made
** stronger). The Windows one lives in lg_lock_win32.c behind lg_lock.h.
**
** Why a classic fcntl record lock plus an in-process table, and not an
** open-file-description lock (F_OFD_SETLK):
**  - certbot takes a classic lock (Python's fcntl.lockf); both kinds conflict
**    across processes, so either interoperates.
**  - F_GETLK reports a classic holder's pid for free; an OFD holder reports
**    -1, so OFD would need the pid written into the file: one more write and
**    a data block per lock cycle (measured 1.47x the syscall floor).
**  - What classic locks lack is exclusion inside one process (they are per
**    process, and closing *any* descriptor of the file drops them). A table of
**    the files this process holds, by device and inode, gives it back: a
**    second LockFile on a held file is refused before it opens the file, so
**    its refusal never closes a descriptor of a locked file.
*/
#ifndef _WIN32

#define _GNU_SOURCE   /* SIGEV_THREAD_ID: the wait's timer aims at the waiting thread */
#include "lg_lock.h"
#include "lg_pid.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifdef O_PATH
#define DIR_OPEN_FLAGS (O_PATH | O_DIRECTORY | O_CLOEXEC)  /* needs no read right */
#else
#define DIR_OPEN_FLAGS (O_RDONLY | O_DIRECTORY | O_CLOEXEC)
#endif
/* O_NONBLOCK: opening a planted FIFO for writing must not hang. */
#define LOCK_OPEN_FLAGS (O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)

/* Naps, where a wait cannot block in the kernel (a lock of this process): */
#define WAIT_FIRST_NS 500000L   /* 0.5 ms, doubling ... */
#define WAIT_MAX_NS 4000000L    /* ... up to 4 ms */

/* A descriptor of a file this process holds, opened by a racing acquire: it
** may only be closed once that file's lock is gone. */
typedef struct parked_fd {
  dev_t dev;
  ino_t ino;
  int fd;
  struct parked_fd *next;
} parked_fd;

static pthread_mutex_t table_mutex = PTHREAD_MUTEX_INITIALIZER;
static lg_lock *held_locks;
static parked_fd *parked_fds;


void lg_lock_init(lg_lock *lk) {
  memset(lk, 0, sizeof *lk);
  lk->fd = -1;
  lk->dirfd = -1;
}

int lg_lock_is_held(const lg_lock *lk) {
  return lk->fd >= 0 && lk->owner == lg_pid();
}

static lg_lock *find_held(dev_t dev, ino_t ino) {
  lg_lock *h;
  for (h = held_locks; h != NULL; h = h->next_held)
    if (h->dev == dev && h->ino == ino) return h;
  return NULL;
}

static void forget_held(lg_lock *lk) {
  lg_lock **p = &held_locks;
  while (*p != NULL && *p != lk) p = &(*p)->next_held;
  if (*p != NULL) *p = lk->next_held;
  lk->next_held = NULL;
}

/* Keep fd open until (dev, ino) is released; without memory, keep it forever
** rather than drop a held lock by closing it. */
static void park_fd(dev_t dev, ino_t ino, int fd) {
  parked_fd *p = malloc(sizeof *p);
  if (p == NULL) return;
  p->dev = dev;
  p->ino = ino;
  p->fd = fd;
  p->next = parked_fds;
  parked_fds = p;
}

static void close_parked(dev_t dev, ino_t ino) {
  parked_fd **p = &parked_fds;
  while (*p != NULL) {
    if ((*p)->dev == dev && (*p)->ino == ino) {
      parked_fd *gone = *p;
      *p = gone->next;
      close(gone->fd);
      free(gone);
    }
    else p = &(*p)->next;
  }
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
** Split path into its directory (opened) and last component. A path ending
** in '/' names a directory, never a lock file: EISDIR. The directory is
** opened for absolute paths too, and release unlinks through it: a chdir(),
** a renamed directory or a re-pointed symlink while the lock is held cannot
** make the release remove a file elsewhere (someone else's live lock file).
*/
static int open_parent(const char *path, const char **base) {
  const char *slash = strrchr(path, '/');
  char small[256], *dir;
  size_t len;
  int fd, err;
  if (*path == '\0') { errno = ENOENT; return -1; }
  if (slash == NULL) {
    *base = path;
    return open(".", DIR_OPEN_FLAGS);
  }
  *base = slash + 1;
  if (**base == '\0') { errno = EISDIR; return -1; }
  len = slash == path ? 1 : (size_t)(slash - path);
  dir = len < sizeof small ? small : malloc(len + 1);
  if (dir == NULL) return -1;
  memcpy(dir, path, len);
  dir[len] = '\0';
  fd = open(dir, DIR_OPEN_FLAGS);
  err = errno;
  if (dir != small) free(dir);
  errno = err;
  return fd;
}

/* The pid holding a conflicting classic lock on fd, 0 if it cannot be known
** (an OFD holder reports -1; the lock may also be gone already). */
static pid_t holder_of(int fd) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (fcntl(fd, F_GETLK, &fl) != 0 || fl.l_type == F_UNLCK || fl.l_pid <= 0)
    return 0;
  return fl.l_pid;
}

/* Release this process's held locks of 'context' (all of them when
** all_contexts); how many. */
static int release_matching(const void *context, int all_contexts) {
  int released = 0;
  for (;;) {
    lg_lock *lk;
    pthread_mutex_lock(&table_mutex);
    for (lk = held_locks; lk != NULL; lk = lk->next_held)
      if ((all_contexts || lk->context == context) && lk->owner == lg_pid()) break;
    pthread_mutex_unlock(&table_mutex);
    if (lk == NULL) return released;
    lg_lock_release(lk, lk->path);   /* unlinks it from held_locks */
    released++;
  }
}


/*
** A lock left held when the process calls exit() (os.exit(n) does not close
** the Lua state) is released too, files removed, as certbot's atexit hook
** does for its locks. Death by a signal skips this; the kernel still frees
** the lock, and only the file stays.
*/
static void release_at_exit(void) {
  int err = errno;
  release_matching(NULL, 1);
  errno = err;
}

static void register_exit_release(void) {
  static int registered;   /* under table_mutex */
  if (!registered) registered = atexit(release_at_exit) == 0;
}

enum { TRY_LOCKED, TRY_BUSY, TRY_AGAIN, TRY_VANISHED, TRY_ERROR };

/* How many times in a row O_CREAT may be refused (EACCES) for a file that is
** then not there: once or twice is another user's file released in between;
** more is a directory we may not create in, which no retry will change. */
#define MAX_VANISHED 3
/* How many times in a row the file may vanish between our lock and our check
** (each time a holder released it) before the attempt counts as busy: then
** the timeout and the interrupt decide, as for a held lock. */
#define MAX_AGAIN 100

/* A lock of this process on (dev, ino): the caller's attempt is busy. */
static int held_here(lg_lock *lk, dev_t dev, ino_t ino, lg_lock_failure *failure) {
  lg_lock *holder = find_held(dev, ino);
  if (holder == NULL) return 0;
  failure->holder = lg_pid();
  failure->same_context = lk->context != NULL && holder->context == lk->context;
  return 1;
}

/*
** First half of an attempt (under table_mutex): open the lock file without
** following a link, creating it 0600, and refuse anything but a regular
** file. *fd gets the descriptor and *st its identity; TRY_AGAIN means "go
** on to lock it"; any other outcome has closed what it opened.
*/
static int open_lock_file(lg_lock *lk, int dirfd, const char *base, int *fd,
                          struct stat *st, lg_lock_failure *failure) {
  if (held_locks != NULL && fstatat(dirfd, base, st, AT_SYMLINK_NOFOLLOW) == 0 &&
      held_here(lk, st->st_dev, st->st_ino, failure))
    return TRY_BUSY;        /* refused before opening: no descriptor of it closed */
  *fd = openat(dirfd, base, LOCK_OPEN_FLAGS | O_CREAT, 0600);
  if (*fd < 0 && errno == EACCES) {
    /* fs.protected_regular: in a sticky world-writable directory another
    ** user's existing file refuses O_CREAT but may still be opened. */
    *fd = openat(dirfd, base, LOCK_OPEN_FLAGS);
    if (*fd < 0) {
      if (errno == ENOENT) return TRY_VANISHED;  /* gone since: start over */
      errno = EACCES;
    }
  }
  if (*fd < 0) {
    if (errno == ENXIO) {     /* a FIFO with no reader */
      failure->not_regular = 1;
      errno = EINVAL;
    }
    return TRY_ERROR;
  }
  if (fstat(*fd, st) != 0) {
    int err = errno;
    close(*fd);
    errno = err;
    return TRY_ERROR;
  }
  if (!S_ISREG(st->st_mode)) {
    close(*fd);
    failure->not_regular = 1;
    errno = EINVAL;
    return TRY_ERROR;
  }
  if (held_here(lk, st->st_dev, st->st_ino, failure)) {   /* raced into our own file */
    park_fd(st->st_dev, st->st_ino, *fd);
    return TRY_BUSY;
  }
  return TRY_AGAIN;
}

/* F_SETLK or F_SETLKW on the whole file, as certbot's fcntl.lockf(fd, LOCK_EX). */
static int lock_whole(int fd, int cmd) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  return fcntl(fd, cmd, &fl);
}

/* Close fd (an attempt's, found busy) unless this process holds its file
** through another lg_lock meanwhile: closing would drop that lock too, so
** park it. Takes table_mutex; errno is kept. */
static void drop_fd(int fd, const struct stat *st) {
  int err = errno;
  pthread_mutex_lock(&table_mutex);
  if (find_held(st->st_dev, st->st_ino) != NULL) park_fd(st->st_dev, st->st_ino, fd);
  else close(fd);
  pthread_mutex_unlock(&table_mutex);
  errno = err;
}

/*
** The kernel's lock on fd is ours (under table_mutex): check the path still
** names the file we locked. A holder that released in between unlinked it,
** and a lock on an unlinked file excludes nobody. ENOENT or another inode:
** TRY_AGAIN. Any other error of that check (EIO, ESTALE on NFS) is the
** caller's error: a lock we cannot check is no lock. fd is closed unless held.
*/
static int recheck_and_hold(lg_lock *lk, int dirfd, const char *base, int fd,
                            const struct stat *st) {
  struct stat at_path;
  if (fstatat(dirfd, base, &at_path, AT_SYMLINK_NOFOLLOW) != 0) {
    int err = errno;
    close(fd);              /* drops the lock */
    errno = err;
    return err == ENOENT ? TRY_AGAIN : TRY_ERROR;
  }
  if (at_path.st_dev != st->st_dev || at_path.st_ino != st->st_ino) {
    close(fd);              /* drops the lock on the stale file */
    return TRY_AGAIN;
  }
  lk->fd = fd;
  lk->dev = st->st_dev;
  lk->ino = st->st_ino;
  lk->owner = lg_pid();
  lk->next_held = held_locks;
  held_locks = lk;
  register_exit_release();
  return TRY_LOCKED;
}

/*
** Second half of an attempt (under table_mutex): one F_SETLK. Busy: the
** holder's pid is noted and *fd is closed (-1), unless 'keep' asks to wait
** on it in the kernel (the holder is another process: the open-time check
** saw no lock of ours on it).
*/
static int lock_and_recheck(lg_lock *lk, int dirfd, const char *base, int *fd,
                            const struct stat *st, lg_lock_failure *failure, int keep) {
  if (lock_whole(*fd, F_SETLK) != 0) {
    int err = errno;
    if (err == EAGAIN || err == EACCES) {
      failure->holder = holder_of(*fd);
      if (!keep) {
        close(*fd);
        *fd = -1;
      }
      return TRY_BUSY;
    }
    close(*fd);
    *fd = -1;
    errno = err;
    return TRY_ERROR;
  }
  return recheck_and_hold(lk, dirfd, base, *fd, st);
}


/* ---- waiting in the kernel ---- */

#define WAIT_TICK_NS 50000000L  /* a blocked wait looks up at least this often */

enum { TRY_NAP = TRY_ERROR + 1 };   /* the kernel would not wait: poll instead */

/*
** A blocked F_SETLKW ends when the holder unlocks (the kernel wakes us: a
** hand-off in microseconds), or when a signal with a handler lands on the
** waiting thread. The deadline (and the 'waiting' call) needs such a signal:
** while any thread waits, a real-time signal whose disposition is SIG_DFL is
** borrowed (lowest first; the signal core's kick takes the highest) with an
** empty handler and no SA_RESTART, and a timer aimed at the waiting thread
** sends it. The timer also ticks every WAIT_TICK_NS: an expiry or a handled
** signal that lands just before the call blocks interrupts nothing, and a
** handler installed with SA_RESTART restarts the call; the tick bounds what
** either costs (one wake-up and F_SETLKW again). Without a timer, waits poll.
*/
typedef struct wait_timer {
  int signal;               /* 0: no timer */
  timer_t id;
} wait_timer;

static pthread_mutex_t wait_mutex = PTHREAD_MUTEX_INITIALIZER;
static int wait_signal;     /* borrowed while wait_users > 0 */
static int wait_users;
static struct sigaction wait_saved;

static void on_wait_timer(int sig) { (void)sig; }   /* its arrival is the point: EINTR */

static int borrow_wait_signal(void) {
  int sig;
  pthread_mutex_lock(&wait_mutex);
  if (wait_users == 0) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_wait_timer;
    sigemptyset(&sa.sa_mask);
    wait_signal = 0;
    for (sig = SIGRTMIN; sig <= SIGRTMAX; sig++) {
      if (sigaction(sig, &sa, &wait_saved) != 0) continue;
      if (wait_saved.sa_handler == SIG_DFL && !(wait_saved.sa_flags & SA_SIGINFO)) {
        wait_signal = sig;
        break;
      }
      sigaction(sig, &wait_saved, NULL);    /* the program's: put back */
    }
  }
  if (wait_signal != 0) wait_users++;
  sig = wait_signal;
  pthread_mutex_unlock(&wait_mutex);
  return sig;
}

/* The last waiter gives the signal back (unless the program took it meanwhile). */
static void return_wait_signal(void) {
  pthread_mutex_lock(&wait_mutex);
  if (--wait_users == 0) {
    struct sigaction now;
    if (sigaction(wait_signal, &wait_saved, &now) == 0 && now.sa_handler != on_wait_timer)
      sigaction(wait_signal, &now, NULL);
    wait_signal = 0;
  }
  pthread_mutex_unlock(&wait_mutex);
}

static void wait_timer_stop(wait_timer *t) {
  sigset_t pending;
  if (t->signal == 0) return;
  timer_delete(t->id);
  /* Only a thread that blocks the signal can have an expiry still pending;
  ** take it, or it would meet SIG_DFL once given back. */
  if (sigpending(&pending) == 0 && sigismember(&pending, t->signal)) {
    sigset_t only;
    struct timespec none = {0, 0};
    sigemptyset(&only);
    sigaddset(&only, t->signal);
    sigtimedwait(&only, NULL, &none);
  }
  return_wait_signal();
  t->signal = 0;
}

/* A timer for this thread; -1 when none can be had (then the wait polls). */
static int wait_timer_start(wait_timer *t) {
#ifdef SIGEV_THREAD_ID
  struct sigevent ev;
  sigset_t mask;
  int sig = borrow_wait_signal();
  if (sig == 0) return -1;
  if (pthread_sigmask(SIG_BLOCK, NULL, &mask) != 0 || sigismember(&mask, sig)) {
    return_wait_signal();   /* blocked here: it would interrupt nothing */
    return -1;
  }
  memset(&ev, 0, sizeof ev);
  ev.sigev_signo = sig;
  ev.sigev_notify = SIGEV_THREAD_ID;
#ifdef sigev_notify_thread_id
  ev.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
#else
  ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);   /* glibc before 2.41 */
#endif
  if (timer_create(CLOCK_MONOTONIC, &ev, &t->id) != 0) {
    return_wait_signal();
    return -1;
  }
  t->signal = sig;
  return 0;
#else
  (void)t;
  return -1;
#endif
}

/* Expiries every WAIT_TICK_NS, the first at most 'seconds' from now. */
static void wait_timer_set(wait_timer *t, double seconds) {
  struct itimerspec when;
  if (seconds < 1e-6) seconds = 1e-6;
  if (seconds > WAIT_TICK_NS / 1e9) seconds = WAIT_TICK_NS / 1e9;
  when.it_value.tv_sec = (time_t)seconds;
  when.it_value.tv_nsec = (long)((seconds - (double)when.it_value.tv_sec) * 1e9);
  when.it_interval.tv_sec = 0;
  when.it_interval.tv_nsec = WAIT_TICK_NS;
  timer_settime(t->id, 0, &when, NULL);
}

/*
** Wait in the kernel for the lock on fd (opened, found held by another
** process) until 'until' (then the timer's EINTR), or until 'interrupted'.
** The timer's ticks in between only re-enter the wait. Woken holding it, the
** path is checked as after any lock. fd is always consumed: held, closed, or
** parked when this process took its file meanwhile through another lg_lock
** (the kernel then granted what the process already held: in-process busy).
*/
static int block_on(lg_lock *lk, int dirfd, const char *base, int fd,
                    const struct stat *st, wait_timer *t, const lg_lock_wait *w,
                    double until, lg_lock_failure *failure) {
  int outcome, err;
  double now = now_seconds();
  for (;;) {
    wait_timer_set(t, until - now);
    if (lock_whole(fd, F_SETLKW) == 0) break;
    err = errno;
    now = now_seconds();
    if (err == EINTR && now < until && (w->interrupted == NULL || !w->interrupted(w->ud)))
      continue;             /* a tick, or a signal that stops nothing */
    drop_fd(fd, st);
    if (err == EINTR) return TRY_BUSY;    /* the caller decides */
    if (err == EDEADLK) return TRY_NAP;   /* the kernel saw a cycle of waiters */
    errno = err;
    return TRY_ERROR;
  }
  pthread_mutex_lock(&table_mutex);
  if (held_here(lk, st->st_dev, st->st_ino, failure)) {
    park_fd(st->st_dev, st->st_ino, fd);
    outcome = TRY_BUSY;
  }
  else outcome = recheck_and_hold(lk, dirfd, base, fd, st);
  pthread_mutex_unlock(&table_mutex);
  return outcome;
}

/* Sleep up to 'remaining' seconds, the nap growing each time. */
static void nap(long *sleep_ns, double remaining) {
  struct timespec ts;
  double seconds = (double)*sleep_ns / 1e9;
  if (seconds > remaining) seconds = remaining;
  ts.tv_sec = (time_t)seconds;
  ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
  nanosleep(&ts, NULL);     /* EINTR: the loop asks 'interrupted' */
  if (*sleep_ns < WAIT_MAX_NS) *sleep_ns *= 2;
  if (*sleep_ns > WAIT_MAX_NS) *sleep_ns = WAIT_MAX_NS;
}

/*
** Every loop here is bounded: a vanishing file MAX_VANISHED times, a file
** replaced under us MAX_AGAIN times in a row (then it counts as busy), and a
** busy lock by the timeout; each asks 'interrupted' before it goes round.
** A lock held by another process is waited for in F_SETLKW (block_on); one
** held in this process, or with no timer to be had, by naps.
*/
int lg_lock_acquire_wait(lg_lock *lk, const char *path, const lg_lock_wait *w,
                         lg_lock_failure *failure) {
  static const lg_lock_wait no_wait;
  lg_lock_failure unused;
  wait_timer timer = {0};
  const char *base;
  double start;
  long sleep_ns = WAIT_FIRST_NS;
  int dirfd, outcome, vanished = 0, again = 0, no_timer = 0, notified;
  if (w == NULL) w = &no_wait;
  if (failure == NULL) failure = &unused;
  memset(failure, 0, sizeof *failure);
  if (lg_lock_is_held(lk)) return 0;
  if (lk->fd >= 0) lg_lock_release(lk, path);  /* a forked child's copy: drop it */
  if (isnan(w->timeout) || w->timeout < 0) { errno = EINVAL; return -1; }
  notified = w->waiting == NULL || !(w->notify_after > 0);
  dirfd = open_parent(path, &base);
  if (dirfd == -1) return -1;
  start = now_seconds();
  for (;;) {
    struct stat st;
    double next;
    int fd = -1;
    pthread_mutex_lock(&table_mutex);
    outcome = open_lock_file(lk, dirfd, base, &fd, &st, failure);
    if (outcome == TRY_AGAIN)
      outcome = lock_and_recheck(lk, dirfd, base, &fd, &st, failure,
                                 w->timeout > 0 && !no_timer);
    pthread_mutex_unlock(&table_mutex);
    if (outcome == TRY_LOCKED) break;
    if (outcome == TRY_ERROR) break;
    if (outcome == TRY_VANISHED) {
      if (++vanished < MAX_VANISHED) continue;
      errno = EACCES;
      outcome = TRY_ERROR;
      break;
    }
    /* busy (fd open when another process holds it), or replaced under us */
    if (w->interrupted != NULL && w->interrupted(w->ud)) errno = EINTR;
    else if (outcome == TRY_AGAIN && ++again < MAX_AGAIN) continue;
    else if (failure->same_context) errno = EDEADLK;  /* it would wait on itself */
    else {
      again = 0;
      failure->waited = now_seconds() - start;
      next = w->timeout - failure->waited;
      if (next <= 0) errno = EWOULDBLOCK;
      else if (!notified && failure->waited >= w->notify_after) {
        notified = 1;
        if (fd >= 0) drop_fd(fd, &st);
        if (!w->waiting(w->ud, failure->holder, failure->waited)) continue;
        errno = ECANCELED;
        outcome = TRY_ERROR;
        break;
      }
      else {
        if (!notified && w->notify_after - failure->waited < next)
          next = w->notify_after - failure->waited;
        if (fd >= 0 && timer.signal == 0 && wait_timer_start(&timer) != 0) no_timer = 1;
        if (fd >= 0 && !no_timer) {
          outcome = block_on(lk, dirfd, base, fd, &st, &timer, w,
                             start + failure->waited + next, failure);
          if (outcome == TRY_LOCKED || outcome == TRY_ERROR) break;
          if (outcome == TRY_NAP) nap(&sleep_ns, next);
          continue;
        }
        if (fd >= 0) drop_fd(fd, &st);
        nap(&sleep_ns, next);
        continue;
      }
    }
    /* giving up: errno says why */
    if (fd >= 0) drop_fd(fd, &st);
    outcome = TRY_ERROR;
    break;
  }
  {
    int err = errno;
    wait_timer_stop(&timer);
    if (outcome == TRY_LOCKED) {
      lk->dirfd = dirfd;
      lk->path = path;
      return 0;
    }
    close(dirfd);
    errno = err;
  }
  return -1;
}

/*
** Unlink, then unlock: the other order lets a third process lock the file
** just before it vanishes, while a fourth creates and locks a new one — two
** holders (certbot documents this race).
**
** The unlink goes through the directory we locked in, and only while the
** name there still names our file: if the directory was renamed, or our file
** deleted by hand and the name taken by another process's live lock file, the
** name is left alone (removing it would let a third process lock while the
** other holds). One fstatat more than certbot's cycle (scripts/bench, "lock
** cycle"); what is left is the window between that check and the unlink, in
** which only a process that deletes our held file by hand can act.
*/
int lg_lock_release(lg_lock *lk, const char *path) {
  const char *base = strrchr(path, '/');
  int rc = 0, err = 0;
  if (lk->fd < 0) return 0;
  base = base == NULL ? path : base + 1;
  pthread_mutex_lock(&table_mutex);
  if (lk->owner == lg_pid()) {
    struct stat at_path;
    if (fstatat(lk->dirfd, base, &at_path, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) { rc = -1; err = errno; }
    }
    else if (at_path.st_dev == lk->dev && at_path.st_ino == lk->ino &&
             unlinkat(lk->dirfd, base, 0) != 0) {
      rc = -1;
      err = errno;
    }
  }
  /* else: a forked child; the lock is its parent's, only the copy goes */
  close(lk->fd);            /* drops this process's lock on the file */
  close(lk->dirfd);
  forget_held(lk);
  if (lk->owner == lg_pid()) close_parked(lk->dev, lk->ino);
  pthread_mutex_unlock(&table_mutex);
  lk->fd = -1;
  lk->dirfd = -1;
  if (rc != 0) errno = err;
  return rc;
}

int lg_lock_table_free(void) {
  if (pthread_mutex_trylock(&table_mutex) != 0) return 0;
  pthread_mutex_unlock(&table_mutex);
  return 1;
}


int lg_lock_release_context(const void *context) {
  return release_matching(context, 0);
}

#endif /* !_WIN32 */

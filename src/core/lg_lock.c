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

#include "lg_lock.h"
#include "lg_pid.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef O_PATH
#define DIR_OPEN_FLAGS (O_PATH | O_DIRECTORY | O_CLOEXEC)  /* needs no read right */
#else
#define DIR_OPEN_FLAGS (O_RDONLY | O_DIRECTORY | O_CLOEXEC)
#endif
/* O_NONBLOCK: opening a planted FIFO for writing must not hang. */
#define LOCK_OPEN_FLAGS (O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)

#define WAIT_FIRST_NS 500000L   /* 0.5 ms, doubling ... */
#define WAIT_MAX_NS 4000000L    /* ... up to 4 ms: hand-off within a few ms */

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

/*
** Second half (under table_mutex): lock the whole file (as certbot's
** fcntl.lockf(fd, LOCK_EX)), then check the path still names the file we
** locked: a holder that released in between unlinked it, and a lock on an
** unlinked file excludes nobody. ENOENT or another inode: TRY_AGAIN. Any
** other error of that check (EIO, ESTALE on NFS) is the caller's error: a
** lock we cannot check is no lock.
*/
static int lock_and_recheck(lg_lock *lk, int dirfd, const char *base, int fd,
                            const struct stat *st, lg_lock_failure *failure) {
  struct stat at_path;
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (fcntl(fd, F_SETLK, &fl) != 0) {
    int err = errno;
    if (err == EAGAIN || err == EACCES) {
      failure->holder = holder_of(fd);
      close(fd);
      return TRY_BUSY;
    }
    close(fd);
    errno = err;
    return TRY_ERROR;
  }
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

static int try_once(lg_lock *lk, int dirfd, const char *base, lg_lock_failure *failure) {
  struct stat st;
  int fd = -1, outcome = open_lock_file(lk, dirfd, base, &fd, &st, failure);
  if (outcome != TRY_AGAIN) return outcome;
  return lock_and_recheck(lk, dirfd, base, fd, &st, failure);
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
*/
int lg_lock_acquire(lg_lock *lk, const char *path, double timeout,
                    lg_lock_interrupted_fn interrupted, void *ud,
                    lg_lock_failure *failure) {
  lg_lock_failure unused;
  const char *base;
  double start;
  long sleep_ns = WAIT_FIRST_NS;
  int dirfd, outcome, vanished = 0, again = 0;
  if (failure == NULL) failure = &unused;
  memset(failure, 0, sizeof *failure);
  if (lg_lock_is_held(lk)) return 0;
  if (lk->fd >= 0) lg_lock_release(lk, path);  /* a forked child's copy: drop it */
  if (isnan(timeout) || timeout < 0) { errno = EINVAL; return -1; }
  dirfd = open_parent(path, &base);
  if (dirfd == -1) return -1;
  start = now_seconds();
  for (;;) {
    pthread_mutex_lock(&table_mutex);
    outcome = try_once(lk, dirfd, base, failure);
    pthread_mutex_unlock(&table_mutex);
    if (outcome == TRY_LOCKED) {
      lk->dirfd = dirfd;
      lk->path = path;
      return 0;
    }
    if (outcome == TRY_ERROR) break;
    if (outcome == TRY_VANISHED) {
      if (++vanished < MAX_VANISHED) continue;
      errno = EACCES;
      break;
    }
    if (interrupted != NULL && interrupted(ud)) { errno = EINTR; break; }
    if (outcome == TRY_AGAIN && ++again < MAX_AGAIN) continue;
    again = 0;
    if (failure->same_context) { errno = EDEADLK; break; }  /* it would wait on itself */
    failure->waited = now_seconds() - start;
    if (timeout - failure->waited <= 0) { errno = EWOULDBLOCK; break; }
    nap(&sleep_ns, timeout - failure->waited);
  }
  {
    int err = errno;
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


int lg_lock_release_context(const void *context) {
  return release_matching(context, 0);
}

#endif /* !_WIN32 */

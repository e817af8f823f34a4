/*
** test_lock_core — the POSIX lock core in C alone: in-process exclusion that
** keeps the first lock, a forked child that never unlinks or unlocks its
** parent's lock, the holder's pid, timeouts, interruption, symlinks, and no
** descriptor left behind by any failure; the wait in the kernel (F_SETLKW):
** its deadline timer, the 'waiting' call, the real-time signal it borrows and
** gives back, and in-process exclusion between threads it wakes together.
*/
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "lg_lock.h"
#include "tap.h"

static char dir[256], path[512];

static int exists(const char *p) {
  struct stat st;
  return lstat(p, &st) == 0;
}

/* From a fresh process: is path locked, and by whom? (-1 if not locked) */
static long probe_holder(const char *p) {
  int fds[2];
  long holder = -2;
  pid_t child;
  if (pipe(fds) != 0) return -3;
  child = test_fork_limited(20);
  if (child == 0) {
    struct flock fl;
    long result = -1;
    int fd = open(p, O_WRONLY);
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fd >= 0 && fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) result = fl.l_pid;
    if (write(fds[1], &result, sizeof result) != (ssize_t)sizeof result) _exit(1);
    _exit(0);
  }
  if (read(fds[0], &holder, sizeof holder) != (ssize_t)sizeof holder) holder = -4;
  waitpid(child, NULL, 0);
  close(fds[0]);
  close(fds[1]);
  return holder;
}

static int stop_now(void *ud) { (void)ud; return 1; }

/*
** The core's fstatat, through the linker (-Wl,--wrap=fstatat in
** premake5.lua): while miss_fstatat is set, the next call says ENOENT, as
** if the file appeared just after the look before opening it.
*/
int __real_fstatat(int dirfd, const char *name, struct stat *st, int flags);
int __wrap_fstatat(int dirfd, const char *name, struct stat *st, int flags);
static int miss_fstatat;

int __wrap_fstatat(int dirfd, const char *name, struct stat *st, int flags) {
  if (miss_fstatat) {
    miss_fstatat = 0;
    errno = ENOENT;
    return -1;
  }
  return __real_fstatat(dirfd, name, st, flags);
}

/* The core's timer_create, through the linker (-Wl,--wrap=timer_create):
** while fail_timer_create is set, it fails as when the process is out of
** timers (EAGAIN). */
int __real_timer_create(clockid_t clock, struct sigevent *ev, timer_t *id);
int __wrap_timer_create(clockid_t clock, struct sigevent *ev, timer_t *id);
static int fail_timer_create;

int __wrap_timer_create(clockid_t clock, struct sigevent *ev, timer_t *id) {
  if (fail_timer_create) {
    errno = EAGAIN;
    return -1;
  }
  return __real_timer_create(clock, ev, id);
}

/* The core's fcntl, through the linker (-Wl,--wrap=fcntl): while
** fail_setlk is set, taking a lock fails with that errno, as on a file
** system that keeps no locks (ENOLCK). */
int __real_fcntl(int fd, int cmd, ...);
int __wrap_fcntl(int fd, int cmd, ...);
static int fail_setlk;

int __wrap_fcntl(int fd, int cmd, ...) {
  va_list ap;
  void *arg;
  va_start(ap, cmd);
  arg = va_arg(ap, void *);   /* as glibc's own: one word, used or not */
  va_end(ap);
  if (fail_setlk && (cmd == F_SETLK || cmd == F_SETLKW)) {
    errno = fail_setlk;
    return -1;
  }
  return __real_fcntl(fd, cmd, arg);
}

/* The core's openat, through the linker (-Wl,--wrap=openat): vanish_opens
** times, the lock file is "another user's" under fs.protected_regular (the
** open with O_CREAT says EACCES) and is gone by the open without it
** (ENOENT), as when its holder released it in between. */
int __real_openat(int dirfd, const char *name, int flags, ...);
int __wrap_openat(int dirfd, const char *name, int flags, ...);
static int vanish_opens, vanish_next;

int __wrap_openat(int dirfd, const char *name, int flags, ...) {
  va_list ap;
  mode_t mode;
  va_start(ap, flags);
  mode = (flags & O_CREAT) ? (mode_t)va_arg(ap, int) : 0;
  va_end(ap);
  if (vanish_opens > 0 && (flags & O_CREAT)) {
    vanish_next = 1;
    errno = EACCES;
    return -1;
  }
  if (vanish_next) {
    vanish_next = 0;
    vanish_opens--;
    errno = ENOENT;
    return -1;
  }
  return __real_openat(dirfd, name, flags, mode);
}

/* A lock file that vanishes between the two opens is looked for again, a
** bounded number of times (3), then the error is the first open's. */
static void test_vanishing_lock_file(void) {
  lg_lock a;
  int fds_before = test_count_fds();
  lg_lock_init(&a);
  vanish_opens = 2;
  CHECK_INT(0, lg_lock_acquire(&a, path, 0, NULL, NULL, NULL), "vanishing twice: taken at the third try");
  CHECK_INT(0, vanish_opens, "vanishing twice: both vanishings seen");
  lg_lock_release(&a, path);
  vanish_opens = 3;
  errno = 0;
  CHECK_INT(-1, lg_lock_acquire(&a, path, 5, NULL, NULL, NULL), "vanishing three times: it gives up");
  CHECK_INT(EACCES, errno, "vanishing three times: with the open's EACCES");
  vanish_opens = 0;
  CHECK(!exists(path) && !lg_lock_is_held(&a), "vanishing: nothing held, nothing made");
  CHECK_INT(fds_before, test_count_fds(), "vanishing: no descriptor left");
}

/* A lock the file system refuses (not held elsewhere): an error with the
** kernel's errno, and no descriptor left behind. (The file stays: unlocked,
** it may be another process's by now, and is never removed unlocked.) */
static void test_lock_refused_by_the_file_system(void) {
  lg_lock a;
  lg_lock_failure why;
  int fds_before = test_count_fds();
  lg_lock_init(&a);
  fail_setlk = ENOLCK;
  errno = 0;
  CHECK_INT(-1, lg_lock_acquire(&a, path, 0, NULL, NULL, &why), "no locks to be had: acquire fails");
  CHECK_INT(ENOLCK, errno, "no locks to be had: with the kernel's errno");
  CHECK_INT(-1, lg_lock_acquire(&a, path, 0.2, NULL, NULL, &why), "no locks to be had: a wait fails too");
  CHECK_INT(ENOLCK, errno, "no locks to be had: the wait with the kernel's errno");
  fail_setlk = 0;
  CHECK(!lg_lock_is_held(&a), "no locks to be had: not held");
  CHECK_INT(fds_before, test_count_fds(), "no locks to be had: no descriptor left");
  CHECK(lg_lock_table_free(), "no locks to be had: the lock table free");
  CHECK_INT(0, lg_lock_acquire(&a, path, 0, NULL, NULL, NULL), "no locks to be had: taken once it can be");
  lg_lock_release(&a, path);
}

static void test_basic(void) {
  lg_lock a;
  struct stat st;
  lg_lock_init(&a);
  CHECK_INT(0, lg_lock_acquire(&a, path, 0, NULL, NULL, NULL), "acquire");
  CHECK(lg_lock_table_free(), "acquire leaves the lock table free");
  CHECK(lg_lock_is_held(&a), "held");
  CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "mode 0600");
  CHECK_INT(getpid(), probe_holder(path), "another process sees us as the holder");
  CHECK(fcntl(a.fd, F_GETFD) & FD_CLOEXEC, "not inherited across exec");
  CHECK(fcntl(a.dirfd, F_GETFD) & FD_CLOEXEC, "its directory's descriptor neither");
  CHECK_INT(0, lg_lock_release(&a, path), "release");
  CHECK(lg_lock_table_free(), "release leaves the lock table free");
  CHECK(!exists(path), "file removed on release");
  CHECK_INT(0, lg_lock_release(&a, path), "release again does nothing");
}

/* Release the lock at 'ud' 1.5 s (0.6 s) after the thread starts. */
static void *release_after(void *ud, long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
  lg_lock_release((lg_lock *)ud, path);
  return NULL;
}
static void *release_later(void *ud) { return release_after(ud, 1500); }
static void *release_soon(void *ud) { return release_after(ud, 600); }

static void test_in_process(void) {
  lg_lock a, b;
  lg_lock_failure why;
  int fds_before, fds_at_start = test_count_fds();
  lg_lock_init(&a);
  lg_lock_init(&b);
  lg_lock_acquire(&a, path, 0, NULL, NULL, NULL);
  fds_before = test_count_fds();
  errno = 0;
  CHECK_INT(-1, lg_lock_acquire(&b, path, 0, NULL, NULL, &why), "second lock in one process refused");
  CHECK_INT(EWOULDBLOCK, errno, "as held elsewhere");
  CHECK_INT(getpid(), why.holder, "holder is this process");
  CHECK_INT(fds_before, test_count_fds(), "no descriptor left by the refusal");
  miss_fstatat = 1;         /* the look before opening misses: found once opened */
  errno = 0;
  CHECK_INT(-1, lg_lock_acquire(&b, path, 0, NULL, NULL, &why),
            "refused too when this process's own file is only recognised once opened");
  CHECK(errno == EWOULDBLOCK && why.holder == getpid() && !lg_lock_is_held(&b), "as held here");
  miss_fstatat = 0;
  CHECK(lg_lock_table_free(), "refusals leave the lock table free");
  CHECK_INT(getpid(), probe_holder(path), "the first lock survived the refusals");
  {
    /* a wait that outlived its timeout would get the lock once another
    ** thread releases it, 1.5 s later: it must have ended first */
    pthread_t releaser;
    int started = pthread_create(&releaser, NULL, release_later, &a) == 0;
    double t0 = test_now();
    CHECK_INT(-1, lg_lock_acquire(&b, path, 0.05, NULL, NULL, &why), "and after a wait");
    CHECK(why.waited >= 0.05 && test_now() - t0 < 1.4, "it waited, and stopped at its timeout");
    if (started) pthread_join(releaser, NULL);
    else lg_lock_release(&a, path);
  }
  {
    /* a wait on a lock of this process naps (the kernel would grant it at
    ** once): it gets the lock a few ms after the release, 0.6 s in, not at
    ** the end of some long nap */
    pthread_t releaser;
    int started;
    double t0;
    CHECK_INT(0, lg_lock_acquire(&a, path, 0, NULL, NULL, NULL), "the first taken again");
    started = pthread_create(&releaser, NULL, release_soon, &a) == 0;
    t0 = test_now();
    CHECK_INT(0, lg_lock_acquire(&b, path, 10, NULL, NULL, &why), "a wait in process gets it once released");
    CHECK(test_now() - t0 < 1.3, "within 0.7 s of the release (its naps stay short)");
    if (started) pthread_join(releaser, NULL);
    lg_lock_release(&b, path);
  }
  CHECK_INT(0, lg_lock_acquire(&b, path, 0, NULL, NULL, NULL), "free once the first is released");
  lg_lock_release(&b, path);
  /* the descriptors of attempts that opened the held file were kept open
  ** while it was held (closing one would drop the lock), not for ever */
  CHECK_INT(fds_at_start, test_count_fds(), "no descriptor left once both are released");
}

/* A caller that holds the lock itself must not wait for it (EDEADLK). */
static void test_same_context(void) {
  static const char context = 0, other = 0;
  lg_lock a, b;
  lg_lock_failure why;
  lg_lock_init(&a);
  lg_lock_init(&b);
  a.context = &context;
  b.context = &context;
  lg_lock_acquire(&a, path, 0, NULL, NULL, NULL);
  errno = 0;
  CHECK_INT(-1, lg_lock_acquire(&b, path, 30, NULL, NULL, &why), "same context: refused");
  CHECK_INT(EDEADLK, errno, "at once, as a deadlock");
  CHECK(why.same_context && why.waited < 1, "without waiting");
  b.context = &other;
  CHECK_INT(-1, lg_lock_acquire(&b, path, 0.02, NULL, NULL, &why), "another context waits");
  CHECK_INT(EWOULDBLOCK, errno, "then gives up as held elsewhere");
  lg_lock_release(&a, path);
}

static void test_fork(void) {
  lg_lock a;
  int status;
  pid_t child;
  lg_lock_init(&a);
  lg_lock_acquire(&a, path, 0, NULL, NULL, NULL);
  child = test_fork_limited(20);
  if (child == 0) {
    /* the child inherited the object: releasing it, or re-acquiring, must
    ** never unlink or unlock the parent's lock */
    if (lg_lock_is_held(&a)) _exit(10);
    lg_lock_release(&a, path);
    _exit(exists(path) ? 0 : 11);
  }
  waitpid(child, &status, 0);
  CHECK_INT(0, WEXITSTATUS(status), "a forked child's release leaves the file");
  child = test_fork_limited(20);
  if (child == 0) {
    /* acquire on the inherited object: the copy is dropped first, and the
    ** lock is found held by another process, the parent */
    lg_lock_failure why;
    if (lg_lock_acquire(&a, path, 0, NULL, NULL, &why) != -1 || errno != EWOULDBLOCK) _exit(12);
    _exit(why.holder == getppid() && exists(path) ? 0 : 13);
  }
  waitpid(child, &status, 0);
  CHECK_INT(0, WEXITSTATUS(status),
            "a forked child's acquire on the inherited object: held by the parent (its pid)");
  CHECK(exists(path), "file still there in the parent");
  CHECK_INT(getpid(), probe_holder(path), "and still locked by the parent");
  child = test_fork_limited(20);
  if (child == 0) _exit(0);     /* a child that just exits */
  waitpid(child, &status, 0);
  CHECK_INT(getpid(), probe_holder(path), "a child's exit leaves the parent's lock held");
  child = test_fork_limited(20);
  if (child == 0) exit(0);      /* exit() runs the atexit release: not ours to do */
  waitpid(child, &status, 0);
  CHECK(exists(path), "a child's exit() leaves the parent's file");
  CHECK_INT(getpid(), probe_holder(path), "and its lock");
  lg_lock_release(&a, path);
  CHECK(!exists(path), "the parent's release removes it");
}

/* A holder child waits for the parent's go, 10 s at most: a wait in the
** parent that should have ended but goes on gets the lock then, and its check
** fails, rather than the test waiting for its alarm. 0 on go. */
static int wait_for_go(int fd) {
  struct pollfd go;
  char c;
  go.fd = fd;
  go.events = POLLIN;
  go.revents = 0;
  if (poll(&go, 1, 10000) != 1) return -1;
  return read(fd, &c, 1) == 1 ? 0 : -1;
}

static void test_other_process(void) {
  lg_lock a;
  lg_lock_failure why;
  int ready[2], go[2], fds_before;
  char c = 0;
  pid_t child;
  if (pipe(ready) != 0 || pipe(go) != 0) return;
  child = test_fork_limited(20);
  if (child == 0) {
    lg_lock mine;
    lg_lock_init(&mine);
    lg_lock_acquire(&mine, path, 0, NULL, NULL, NULL);
    if (write(ready[1], "r", 1) != 1) _exit(1);
    wait_for_go(go[0]);
    lg_lock_release(&mine, path);
    _exit(0);
  }
  if (read(ready[0], &c, 1) != 1) return;
  lg_lock_init(&a);
  fds_before = test_count_fds();
  CHECK_INT(-1, lg_lock_acquire(&a, path, 0.2, NULL, NULL, &why), "held by another process");
  CHECK_INT(child, why.holder, "holder's pid known");
  CHECK(why.waited >= 0.2 && why.waited < 1.5, "waited about the timeout");
  CHECK_INT(-1, lg_lock_acquire(&a, path, HUGE_VAL, stop_now, NULL, &why), "an interrupted wait stops");
  CHECK_INT(EINTR, errno, "with EINTR");
  CHECK_INT(fds_before, test_count_fds(), "no descriptor left by failures");
  if (write(go[1], "g", 1) != 1) return;
  CHECK_INT(0, lg_lock_acquire(&a, path, 5, NULL, NULL, NULL), "acquired once the holder releases");
  lg_lock_release(&a, path);
  waitpid(child, NULL, 0);
  close(ready[0]); close(ready[1]); close(go[0]); close(go[1]);
}

/* A holder in a child process: holds path until a byte arrives on go[0]
** (10 s at most: wait_for_go), then releases it after 'linger' seconds. */
typedef struct holder_process { pid_t pid; int go[2]; } holder_process;

/* A holder of path in a child process: it lets go 'linger' seconds after
** 'go' (end_holder). As an lg_lock, removing the file first; or, with
** leaves_file, as a plain fcntl holder (another program) that only unlocks. */
static int start_holder_as(holder_process *h, double linger, int leaves_file) {
  int ready[2];
  char c;
  if (pipe(ready) != 0 || pipe(h->go) != 0) return -1;
  h->pid = test_fork_limited(20);
  if (h->pid == 0) {
    lg_lock mine;
    struct flock whole;
    struct timespec ts;
    int fd = -1;
    ts.tv_sec = (time_t)linger;
    ts.tv_nsec = (long)((linger - (double)ts.tv_sec) * 1e9);
    lg_lock_init(&mine);
    memset(&whole, 0, sizeof whole);
    whole.l_type = F_WRLCK;
    whole.l_whence = SEEK_SET;
    if (leaves_file) {
      if ((fd = open(path, O_RDWR | O_CREAT, 0600)) < 0 || fcntl(fd, F_SETLK, &whole) != 0) _exit(1);
    }
    else if (lg_lock_acquire(&mine, path, 0, NULL, NULL, NULL) != 0) _exit(1);
    if (write(ready[1], "r", 1) != 1) _exit(1);
    wait_for_go(h->go[0]);
    nanosleep(&ts, NULL);
    if (leaves_file) {
      whole.l_type = F_UNLCK;
      fcntl(fd, F_SETLK, &whole);
    }
    else lg_lock_release(&mine, path);
    _exit(0);
  }
  close(ready[1]);
  if (read(ready[0], &c, 1) != 1) return -1;
  close(ready[0]);
  return 0;
}

static int start_holder(holder_process *h, double linger) {
  return start_holder_as(h, linger, 0);
}

static int end_holder(holder_process *h) {
  int status = -1;
  if (write(h->go[1], "g", 1) != 1) return -1;
  waitpid(h->pid, &status, 0);
  close(h->go[0]);
  close(h->go[1]);
  return status;
}

/* The disposition of every real-time signal, to compare before and after. */
static int rt_handlers_changed(void (**before)(int)) {
  int sig, changed = 0;
  for (sig = SIGRTMIN; sig <= SIGRTMAX; sig++) {
    struct sigaction now;
    sigaction(sig, NULL, &now);
    changed += now.sa_handler != before[sig - SIGRTMIN];
  }
  return changed;
}

static void save_rt_handlers(void (**out)(int)) {
  int sig;
  for (sig = SIGRTMIN; sig <= SIGRTMAX; sig++) {
    struct sigaction now;
    sigaction(sig, NULL, &now);
    out[sig - SIGRTMIN] = now.sa_handler;
  }
}

typedef struct waiting_log { int calls; pid_t holder; double waited; int answer; } waiting_log;

static int note_waiting(void *ud, pid_t holder, double waited) {
  waiting_log *log = (waiting_log *)ud;
  log->calls++;
  log->holder = holder;
  log->waited = waited;
  return log->answer;
}

static void fill_rt(sigset_t *rt) {
  int sig;
  sigemptyset(rt);
  for (sig = SIGRTMIN; sig <= SIGRTMAX; sig++) sigaddset(rt, sig);
}

/* note_waiting, after blocking every real-time signal (the borrowed one
** included) on this thread, as a program's 'waiting' may. */
static int block_rt_and_note(void *ud, pid_t holder, double waited) {
  sigset_t rt;
  fill_rt(&rt);
  pthread_sigmask(SIG_BLOCK, &rt, NULL);
  return note_waiting(ud, holder, waited);
}

/* Real-time signals pending on this thread, taken so none meets SIG_DFL. */
static int take_pending_rt(void) {
  sigset_t pending, one;
  struct timespec none = {0, 0};
  int sig, n = 0;
  if (sigpending(&pending) != 0) return -1;
  for (sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
    if (sigismember(&pending, sig)) {
      sigemptyset(&one);
      sigaddset(&one, sig);
      while (sigtimedwait(&one, NULL, &none) == sig) n++;
    }
  return n;
}

/* 'waiting' that counts the real-time dispositions changed since 'before'
** (the one the wait borrowed, if any), then stops the wait. */
typedef struct borrow_count { void (**before)(int); int changed; } borrow_count;
static int note_borrowed(void *ud, pid_t holder, double waited) {
  borrow_count *b = (borrow_count *)ud;
  (void)holder; (void)waited;
  b->changed = rt_handlers_changed(b->before);
  return 1;
}

static volatile sig_atomic_t program_rt_calls, usr1_seen;
static void program_rt_handler(int sig) { (void)sig; program_rt_calls++; }

/* A wait of up to 10 s that 'waiting' (called after 0.05 s) is to stop. */
static lg_lock_wait stopped_by(lg_lock_waiting_fn waiting, void *ud) {
  lg_lock_wait w;
  memset(&w, 0, sizeof w);
  w.timeout = 10;
  w.notify_after = 0.05;
  w.waiting = waiting;
  w.ud = ud;
  return w;
}

/* 'waiting' as a program that installs its own handler on the signal the wait
** borrowed (the one changed since 'before'), then stops the wait. */
typedef struct take_borrowed { void (**before)(int); int sig; } take_borrowed;
static int program_takes_borrowed(void *ud, pid_t holder, double waited) {
  take_borrowed *t = (take_borrowed *)ud;
  struct sigaction now;
  int sig;
  (void)holder; (void)waited;
  for (sig = SIGRTMIN; sig <= SIGRTMAX && t->sig == 0; sig++)
    if (sigaction(sig, NULL, &now) == 0 && now.sa_handler != t->before[sig - SIGRTMIN]) t->sig = sig;
  if (t->sig != 0) {
    memset(&now, 0, sizeof now);
    now.sa_handler = program_rt_handler;
    sigemptyset(&now.sa_mask);
    sigaction(t->sig, &now, NULL);
  }
  return 1;
}
static void on_usr1(int sig) { (void)sig; usr1_seen = 1; }
static int usr1_interrupts(void *ud) { (void)ud; return usr1_seen; }

static void test_kernel_wait(void) {
  void (*before[64])(int);
  lg_lock a;
  lg_lock_wait w;
  lg_lock_failure why;
  waiting_log log;
  holder_process h;
  struct sigaction program, saved;
  int fds_before;
  double t0;
  if (start_holder(&h, 0.3) != 0) return;
  save_rt_handlers(before);
  fds_before = test_count_fds();
  lg_lock_init(&a);

  /* the deadline: the timer ends a wait no unlock ends */
  t0 = test_now();
  CHECK_INT(-1, lg_lock_acquire(&a, path, 0.2, NULL, NULL, &why), "kernel wait: times out");
  CHECK_INT(EWOULDBLOCK, errno, "kernel wait: as held elsewhere");
  CHECK(why.waited >= 0.2 && test_now() - t0 < 1.5, "kernel wait: ended by its timer, about on time");
  CHECK_INT(h.pid, why.holder, "kernel wait: the holder's pid");
  CHECK_INT(0, rt_handlers_changed(before), "kernel wait: the borrowed real-time signal is given back");

  /* 'waiting' once, then the caller may stop the wait */
  memset(&w, 0, sizeof w);
  memset(&log, 0, sizeof log);
  log.answer = 1;
  w.timeout = 10;
  w.notify_after = 0.1;
  w.waiting = note_waiting;
  w.ud = &log;
  CHECK_INT(-1, lg_lock_acquire_wait(&a, path, &w, &why), "waiting: a nonzero answer stops the wait");
  CHECK_INT(ECANCELED, errno, "waiting: with ECANCELED");
  CHECK(log.calls == 1 && log.holder == h.pid && log.waited >= 0.1 && log.waited < 2,
        "waiting: called once, after notify_after, with the holder and the time waited");
  CHECK_INT(fds_before, test_count_fds(), "waiting: no descriptor left");
  CHECK_INT(0, rt_handlers_changed(before), "waiting: no disposition left changed");

  /* a program's handler on a real-time signal is neither replaced nor called */
  memset(&program, 0, sizeof program);
  program.sa_handler = program_rt_handler;
  sigemptyset(&program.sa_mask);
  sigaction(SIGRTMIN, &program, &saved);
  CHECK_INT(-1, lg_lock_acquire(&a, path, 0.15, NULL, NULL, &why), "program's signal: the wait still times out");
  {
    struct sigaction now;
    sigaction(SIGRTMIN, NULL, &now);
    CHECK(now.sa_handler == program_rt_handler && program_rt_calls == 0,
          "program's signal: its handler stays, never called by the wait");
  }
  {
    /* and the program's own signal, sent during a wait, still reaches it */
    pid_t sender = test_fork_limited(10);
    if (sender == 0) {
      struct timespec ts = {0, 50000000L};
      nanosleep(&ts, NULL);
      kill(getppid(), SIGRTMIN);
      _exit(0);
    }
    CHECK_INT(-1, lg_lock_acquire(&a, path, 0.3, NULL, NULL, &why), "program's signal sent during a wait");
    waitpid(sender, NULL, 0);
    CHECK_INT(1, program_rt_calls, "program's signal: its handler got it (the wait borrowed another)");
  }
  sigaction(SIGRTMIN, &saved, NULL);

  /* a thread that blocks every real-time signal waits by polling, on time */
  {
    sigset_t rt, old;
    struct timespec cpu0, cpu1;
    double cpu;
    fill_rt(&rt);
    pthread_sigmask(SIG_BLOCK, &rt, &old);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu0);
    t0 = test_now();
    CHECK_INT(-1, lg_lock_acquire(&a, path, 0.3, NULL, NULL, &why), "signals blocked: the wait still times out");
    CHECK(test_now() - t0 < 1.5, "signals blocked: on time");
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu1);
    cpu = (double)(cpu1.tv_sec - cpu0.tv_sec) + (double)(cpu1.tv_nsec - cpu0.tv_nsec) / 1e9;
    /* naps of 0.5 ms doubling to 4 ms: about 80 tries, 2-6 ms of CPU here; a
    ** loop whose naps are 0 (nanosleep's slack only) takes 70-90 ms */
    CHECK(cpu < 0.03, "signals blocked: the poll naps (CPU time a tenth of the wait's at most)");
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }

  /* no timer to be had (timer_create fails): the wait naps, and still ends
  ** at its timeout, not when the holder lets go */
  {
    double began;
    fail_timer_create = 1;
    began = test_now();
    CHECK_INT(-1, lg_lock_acquire(&a, path, 0.3, NULL, NULL, &why), "no timer to be had: the wait still times out");
    CHECK(test_now() - began < 1.5, "no timer to be had: on time");
    fail_timer_create = 0;
  }

  /* every real-time signal the program's: the wait polls; once they are
  ** given back, the next wait borrows one again */
  {
    struct sigaction program_all, saved_rt[64];
    lg_lock_wait bw;
    borrow_count count = {before, -1};
    int sig;
    memset(&program_all, 0, sizeof program_all);
    program_all.sa_handler = program_rt_handler;
    sigemptyset(&program_all.sa_mask);
    for (sig = SIGRTMIN; sig <= SIGRTMAX; sig++) sigaction(sig, &program_all, &saved_rt[sig - SIGRTMIN]);
    CHECK_INT(-1, lg_lock_acquire(&a, path, 0.1, NULL, NULL, &why), "no signal to borrow: the wait times out");
    for (sig = SIGRTMIN; sig <= SIGRTMAX; sig++) sigaction(sig, &saved_rt[sig - SIGRTMIN], NULL);
    bw = stopped_by(note_borrowed, &count);
    CHECK_INT(-1, lg_lock_acquire_wait(&a, path, &bw, &why), "signals given back: the next wait stopped by 'waiting'");
    CHECK_INT(1, count.changed, "signals given back: the next wait borrows one again");
    CHECK_INT(0, rt_handlers_changed(before), "and gives it back");
  }

  /* the program takes the borrowed signal during the wait: the wait ends
  ** with the program's handler left on it, not the one from before */
  {
    lg_lock_wait tw;
    take_borrowed take = {before, 0};
    struct sigaction now;
    tw = stopped_by(program_takes_borrowed, &take);
    CHECK_INT(-1, lg_lock_acquire_wait(&a, path, &tw, &why), "program takes the borrowed signal: the wait stopped");
    CHECK(take.sig != 0 && sigaction(take.sig, NULL, &now) == 0 && now.sa_handler == program_rt_handler,
          "program takes the borrowed signal: its handler is left in place");
    if (take.sig != 0) signal(take.sig, SIG_DFL);
  }

  /* a signal handled with SA_RESTART (as the guard's is) stops a blocked wait
  ** at the timer's next tick, through 'interrupted' */
  {
    struct sigaction usr1;
    pid_t sender;
    memset(&usr1, 0, sizeof usr1);
    usr1.sa_handler = on_usr1;
    usr1.sa_flags = SA_RESTART;
    sigemptyset(&usr1.sa_mask);
    sigaction(SIGUSR1, &usr1, &saved);
    usr1_seen = 0;
    sender = test_fork_limited(20);
    if (sender == 0) {
      struct timespec ts = {0, 100000000L};
      nanosleep(&ts, NULL);
      kill(getppid(), SIGUSR1);
      _exit(0);
    }
    t0 = test_now();
    CHECK_INT(-1, lg_lock_acquire(&a, path, 30, usr1_interrupts, NULL, &why), "restarted signal: the wait stops");
    CHECK_INT(EINTR, errno, "restarted signal: with EINTR");
    CHECK(test_now() - t0 < 2, "restarted signal: long before the timeout");
    waitpid(sender, NULL, 0);
    sigaction(SIGUSR1, &saved, NULL);
  }

  /* woken by the unlock: the holder releases 0.3 s after 'go'. The 'waiting'
  ** call blocks the real-time signals: the timer's ticks from then on stay
  ** pending, and the wait must take them before it gives its signal back
  ** (kernels before 6.13 keep a deleted timer's queued expiry; later ones
  ** drop it, and this check then only sees a timer left running) */
  memset(&log, 0, sizeof log);
  w.waiting = block_rt_and_note;
  t0 = test_now();
  if (write(h.go[1], "g", 1) != 1) return;
  {
    sigset_t old;
    pthread_sigmask(SIG_BLOCK, NULL, &old);
    CHECK_INT(0, lg_lock_acquire_wait(&a, path, &w, &why), "kernel wait: acquired when the holder releases");
    CHECK_INT(0, take_pending_rt(), "kernel wait: no timer expiry left pending where 'waiting' blocked it");
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  CHECK(test_now() - t0 >= 0.3 && test_now() - t0 < 5, "kernel wait: after the holder's release");
  CHECK_INT(1, log.calls, "kernel wait: 'waiting' called once on the way");
  CHECK(exists(path) && probe_holder(path) == getpid(), "kernel wait: the path names the file we hold");
  lg_lock_release(&a, path);
  CHECK_INT(fds_before, test_count_fds(), "kernel wait: no descriptor left");
  waitpid(h.pid, NULL, 0);
  close(h.go[0]);
  close(h.go[1]);
  CHECK_INT(0, rt_handlers_changed(before), "kernel wait: dispositions as before");
}

/* Two threads of one process, woken together by the kernel (its locks are per
** process): exactly one holds; the other goes on waiting until it releases. */
typedef struct waiter_thread {
  lg_lock lock;
  int context;
  int rc;
  double got;
} waiter_thread;

static void *wait_in_thread(void *arg) {
  waiter_thread *t = (waiter_thread *)arg;
  lg_lock_init(&t->lock);
  t->lock.context = &t->context;
  t->rc = lg_lock_acquire(&t->lock, path, 10, NULL, NULL, NULL);
  t->got = test_now();
  return NULL;
}

/* leaves_file: the holder only unlocks (another program's plain fcntl lock),
** so both threads wake on the one file: the second, finding it held by this
** process, keeps its descriptor open until the first releases (closing it
** would drop the first's lock), then closes it. */
#define THREADS_MSG(m) (leaves_file ? "threads, the holder another program: " m : "threads: " m)
static void threads_woken_together(int leaves_file) {
  waiter_thread t[2];
  pthread_t id[2];
  holder_process h;
  int i, first, fds_before = test_count_fds();
  struct timespec settle = {0, 200000000L};
  if (start_holder_as(&h, 0.1, leaves_file) != 0) return;
  memset(t, 0, sizeof t);
  for (i = 0; i < 2; i++) pthread_create(&id[i], NULL, wait_in_thread, &t[i]);
  nanosleep(&settle, NULL);     /* both blocked in the kernel */
  if (end_holder(&h) != 0) return;
  nanosleep(&settle, NULL);
  first = t[0].got != 0 ? 0 : 1;
  CHECK(t[first].got != 0 && t[1 - first].got == 0,
        THREADS_MSG("after the release one thread holds, the other still waits"));
  CHECK(lg_lock_is_held(&t[first].lock) && probe_holder(path) == getpid(),
        THREADS_MSG("the holder's lock is the process's"));
  lg_lock_release(&t[first].lock, path);
  pthread_join(id[1 - first], NULL);
  pthread_join(id[first], NULL);
  CHECK_INT(0, t[1 - first].rc, THREADS_MSG("the other takes it once the first releases"));
  CHECK(t[1 - first].got > t[first].got && lg_lock_is_held(&t[1 - first].lock),
        THREADS_MSG("and only then"));
  lg_lock_release(&t[1 - first].lock, path);
  CHECK(!exists(path), THREADS_MSG("nothing left"));
  /* the other's descriptor, woken holding what the first held, was kept
  ** open (closing it would drop the first's lock) until that release */
  CHECK_INT(fds_before, test_count_fds(), THREADS_MSG("no descriptor left"));
}

#undef THREADS_MSG

static void test_threads_woken_together(void) {
  threads_woken_together(0);
  threads_woken_together(1);
}

static void test_bad_paths(void) {
  lg_lock a;
  lg_lock_failure why;
  char link_path[600], target[600], fifo[600], missing[600];
  int fds_before = test_count_fds();
  lg_lock_init(&a);
  snprintf(link_path, sizeof link_path, "%s/link.lock", dir);
  snprintf(target, sizeof target, "%s/target", dir);
  snprintf(fifo, sizeof fifo, "%s/fifo.lock", dir);
  snprintf(missing, sizeof missing, "%s/missing/x.lock", dir);
  if (symlink(target, link_path) != 0) return;
  CHECK_INT(-1, lg_lock_acquire(&a, link_path, 0, NULL, NULL, &why), "symlink refused");
  CHECK_INT(ELOOP, errno, "with ELOOP");
  CHECK(!exists(target), "its target not created");
  mkfifo(fifo, 0600);
  CHECK_INT(-1, lg_lock_acquire(&a, fifo, 0, NULL, NULL, &why), "FIFO refused without hanging");
  CHECK(why.not_regular, "as not a regular file");
  CHECK_INT(-1, lg_lock_acquire(&a, missing, 0, NULL, NULL, &why), "missing directory");
  CHECK_INT(ENOENT, errno, "with ENOENT");
  CHECK_INT(-1, lg_lock_acquire(&a, dir, 0, NULL, NULL, &why), "a directory as the lock file");
  CHECK_INT(-1, lg_lock_acquire(&a, path, -1, NULL, NULL, &why), "negative timeout");
  CHECK_INT(EINVAL, errno, "with EINVAL");
  CHECK_INT(-1, lg_lock_acquire(&a, path, NAN, NULL, NULL, &why), "NaN timeout");
  CHECK_INT(fds_before, test_count_fds(), "no descriptor left");
  unlink(link_path);
  unlink(fifo);
}

/*
** A directory we may not create in: EACCES at once. (The protected_regular
** retry once looped here forever: O_CREAT refused, then no file to open.)
** As root, a child drops to nobody; otherwise the directory loses its w bit.
*/
static void test_no_permission(void) {
  int status;
  pid_t child;
  chmod(dir, 0755);
  if (getuid() != 0) chmod(dir, 0555);
  child = test_fork_limited(20);
  if (child == 0) {
    lg_lock a;
    if (getuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(10);
    lg_lock_init(&a);
    alarm(5);   /* a loop ends in SIGALRM, not in a hung suite */
    if (lg_lock_acquire(&a, path, 0, NULL, NULL, NULL) != -1) _exit(11);
    _exit(errno == EACCES ? 0 : 12);
  }
  waitpid(child, &status, 0);
  chmod(dir, 0700);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "no permission to create the lock file: EACCES at once");
  CHECK(!exists(path), "and nothing created");
}

/* A lock still held at exit() is released, its file removed. */
static void test_exit_release(void) {
  int status;
  pid_t child = test_fork_limited(20);
  if (child == 0) {
    static lg_lock held;         /* static: still valid when atexit runs */
    lg_lock_init(&held);
    if (lg_lock_acquire(&held, path, 0, NULL, NULL, NULL) != 0) _exit(10);
    exit(0);
  }
  waitpid(child, &status, 0);
  CHECK_INT(0, WEXITSTATUS(status), "a child took the lock and called exit()");
  CHECK(!exists(path), "its exit released the lock and removed the file");
}

int main(void) {
  char tmpl[] = "/tmp/lg_lock_test.XXXXXX";
  tap_deadline(30);
  if (mkdtemp(tmpl) == NULL) return 2;
  snprintf(dir, sizeof dir, "%s", tmpl);
  snprintf(path, sizeof path, "%s/.certbot.lock", dir);
  test_basic();
  test_lock_refused_by_the_file_system();
  test_vanishing_lock_file();
  test_in_process();
  test_same_context();
  test_fork();
  test_other_process();
  test_kernel_wait();
  test_threads_woken_together();
  test_bad_paths();
  test_exit_release();
  test_no_permission();
  rmdir(dir);
  return tap_done();
}

/*
** test_lock_core — the POSIX lock core in C alone: in-process exclusion that
** keeps the first lock, a forked child that never unlinks or unlocks its
** parent's lock, the holder's pid, timeouts, interruption, symlinks, and no
** descriptor left behind by any failure.
*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
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
  child = fork();
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

static void test_basic(void) {
  lg_lock a;
  struct stat st;
  lg_lock_init(&a);
  CHECK_INT(0, lg_lock_acquire(&a, path, 0, NULL, NULL, NULL), "acquire");
  CHECK(lg_lock_is_held(&a), "held");
  CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "mode 0600");
  CHECK_INT(getpid(), probe_holder(path), "another process sees us as the holder");
  CHECK(fcntl(a.fd, F_GETFD) & FD_CLOEXEC, "not inherited across exec");
  CHECK_INT(0, lg_lock_release(&a, path), "release");
  CHECK(!exists(path), "file removed on release");
  CHECK_INT(0, lg_lock_release(&a, path), "release again does nothing");
}

static void test_in_process(void) {
  lg_lock a, b;
  lg_lock_failure why;
  int fds_before;
  lg_lock_init(&a);
  lg_lock_init(&b);
  lg_lock_acquire(&a, path, 0, NULL, NULL, NULL);
  fds_before = test_count_fds();
  errno = 0;
  CHECK_INT(-1, lg_lock_acquire(&b, path, 0, NULL, NULL, &why), "second lock in one process refused");
  CHECK_INT(EWOULDBLOCK, errno, "as held elsewhere");
  CHECK_INT(getpid(), why.holder, "holder is this process");
  CHECK_INT(fds_before, test_count_fds(), "no descriptor left by the refusal");
  CHECK_INT(-1, lg_lock_acquire(&b, path, 0.05, NULL, NULL, &why), "and after a wait");
  CHECK(why.waited >= 0.05, "it waited");
  CHECK_INT(getpid(), probe_holder(path), "the first lock survived the refusals");
  lg_lock_release(&a, path);
  CHECK_INT(0, lg_lock_acquire(&b, path, 0, NULL, NULL, NULL), "free once the first is released");
  lg_lock_release(&b, path);
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
  child = fork();
  if (child == 0) {
    /* the child inherited the object: releasing it, or re-acquiring, must
    ** never unlink or unlock the parent's lock */
    if (lg_lock_is_held(&a)) _exit(10);
    lg_lock_release(&a, path);
    _exit(exists(path) ? 0 : 11);
  }
  waitpid(child, &status, 0);
  CHECK_INT(0, WEXITSTATUS(status), "a forked child's release leaves the file");
  CHECK(exists(path), "file still there in the parent");
  CHECK_INT(getpid(), probe_holder(path), "and still locked by the parent");
  child = fork();
  if (child == 0) _exit(0);     /* a child that just exits */
  waitpid(child, &status, 0);
  CHECK_INT(getpid(), probe_holder(path), "a child's exit leaves the parent's lock held");
  child = fork();
  if (child == 0) exit(0);      /* exit() runs the atexit release: not ours to do */
  waitpid(child, &status, 0);
  CHECK(exists(path), "a child's exit() leaves the parent's file");
  CHECK_INT(getpid(), probe_holder(path), "and its lock");
  lg_lock_release(&a, path);
  CHECK(!exists(path), "the parent's release removes it");
}

static void test_other_process(void) {
  lg_lock a;
  lg_lock_failure why;
  int ready[2], go[2], fds_before;
  char c = 0;
  pid_t child;
  if (pipe(ready) != 0 || pipe(go) != 0) return;
  child = fork();
  if (child == 0) {
    lg_lock mine;
    lg_lock_init(&mine);
    lg_lock_acquire(&mine, path, 0, NULL, NULL, NULL);
    if (write(ready[1], "r", 1) != 1) _exit(1);
    if (read(go[0], &c, 1) != 1) _exit(1);
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
  child = fork();
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
  pid_t child = fork();
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
  alarm(120);   /* a test that waits forever fails (SIGALRM) instead of hanging the suite */
  if (mkdtemp(tmpl) == NULL) return 2;
  snprintf(dir, sizeof dir, "%s", tmpl);
  snprintf(path, sizeof path, "%s/.certbot.lock", dir);
  test_basic();
  test_in_process();
  test_same_context();
  test_fork();
  test_other_process();
  test_bad_paths();
  test_exit_release();
  test_no_permission();
  rmdir(dir);
  return tap_done();
}

/*
** lg_child.c — child processes (see lg_child.h).
**
** The list. Every child started here is linked in one process-wide list
** until its owner forgets it, so that a stop (a handled signal ending a
** guarded block: lg_children_stop) and exit() (an atexit hook: os.exit(n)
** closes no Lua state) can reach every child still running. A child of the
** process that started it only: a forked copy of us (no exec) never signals
** or reaps its parent's children (the owner-pid check, as lg_lock.c's).
**
** Waiting. A pidfd (pidfd_open, Linux 5.3) becomes readable when its process
** exits, so poll() waits for children and pipes at once with no SIGCHLD
** handler; without it the wait polls waitpid(WNOHANG) with short naps.
** waitpid is only ever asked about our own pids.
*/
#define _GNU_SOURCE   /* posix_spawn_file_actions_addchdir_np / addclosefrom_np */
#include "lg_child.h"
#include "lg_pid.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define KILL_WAIT 5.0            /* seconds for SIGKILLed groups to go */
#define NAP_FIRST_NS 200000L     /* the fallback wait: 0.2 ms, doubling ... */
#define NAP_MAX_NS 10000000L     /* ... to 10 ms */

static pthread_mutex_t list_mutex = PTHREAD_MUTEX_INITIALIZER;
static lg_child *live;           /* newest first */
static int exit_hook;            /* under list_mutex */

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap(long ns) {
  struct timespec ts = {0, ns};
  nanosleep(&ts, NULL);
}

static int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  return (int)syscall(SYS_pidfd_open, pid, 0);   /* close-on-exec by itself */
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

/* os.exit(n) closes no Lua state, so no Process is collected: stop what runs. */
static void stop_at_exit(void) {
  int err = errno;
  lg_children_stop(NULL, SIGTERM);
  errno = err;
}

static void link_child(lg_child *c) {
  pthread_mutex_lock(&list_mutex);
  c->prev = NULL;
  c->next = live;
  if (live != NULL) live->prev = c;
  live = c;
  if (!exit_hook) exit_hook = atexit(stop_at_exit) == 0;
  pthread_mutex_unlock(&list_mutex);
}

static void unlink_child(lg_child *c) {
  pthread_mutex_lock(&list_mutex);
  if (c->prev != NULL) c->prev->next = c->next;
  else if (live == c) live = c->next;
  if (c->next != NULL) c->next->prev = c->prev;
  c->next = c->prev = NULL;
  pthread_mutex_unlock(&list_mutex);
}

static void close_ends(int ends[3][2]) {
  int i, j;
  for (i = 0; i < 3; i++)
    for (j = 0; j < 2; j++)
      if (ends[i][j] >= 0) close(ends[i][j]);
}

/* The file actions: pipes and /dev/null on 0-2, the directory, nothing else. */
static int add_actions(posix_spawn_file_actions_t *fa, const lg_spawn_options *o,
                       int ends[3][2]) {
  int i, rc = 0;
  for (i = 0; i < 3 && rc == 0; i++) {
    switch (o->stream[i]) {
      case LG_STREAM_PIPE:
        rc = posix_spawn_file_actions_adddup2(fa, ends[i][0], i);
        break;
      case LG_STREAM_NULL:
        rc = posix_spawn_file_actions_addopen(fa, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
        break;
      case LG_STREAM_STDOUT:
        if (i == 2) rc = posix_spawn_file_actions_adddup2(fa, 1, 2);
        break;
      default:
        break;
    }
  }
  if (rc == 0 && o->cwd != NULL) rc = posix_spawn_file_actions_addchdir_np(fa, o->cwd);
  if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(fa, 3);
  return rc;
}

/* Whether p (relative to cwd, when given) can be exec'd: 0, or -1 with errno. */
static int runnable(const char *cwd, const char *p) {
  char joined[PATH_MAX];
  struct stat st;
  if (cwd != NULL && p[0] != '/') {
    if ((size_t)snprintf(joined, sizeof joined, "%s/%s", cwd, p) >= sizeof joined) {
      errno = ENAMETOOLONG;
      return -1;
    }
    p = joined;
  }
  if (stat(p, &st) != 0) return -1;
  if (!S_ISREG(st.st_mode)) { errno = EACCES; return -1; }
  return access(p, X_OK);
}

/* Whether dir is a directory we may enter: 0, or -1 with errno. */
static int enterable(const char *dir) {
  struct stat st;
  if (stat(dir, &st) != 0) return -1;
  if (!S_ISDIR(st.st_mode)) { errno = ENOTDIR; return -1; }
  return access(dir, X_OK);
}

/*
** execvp's search, done before the spawn so that a command that cannot run is
** an error of the spawn itself everywhere (glibc's posix_spawnp reports a
** failed exec too, but not when its clone is run as a fork: under valgrind).
** ENOENT when found nowhere, EACCES when found but not runnable.
*/
static int check_command(const char *file, const char *cwd) {
  const char *path, *dir;
  int denied = 0;
  if (*file == '\0') { errno = ENOENT; return -1; }
  if (strchr(file, '/') != NULL) return runnable(cwd, file);
  path = getenv("PATH");
  if (path == NULL) path = "/bin:/usr/bin";
  for (dir = path;; dir++) {
    const char *end = strchr(dir, ':');
    size_t len = end != NULL ? (size_t)(end - dir) : strlen(dir);
    char candidate[PATH_MAX];
    if (len + strlen(file) + 2 <= sizeof candidate) {
      snprintf(candidate, sizeof candidate, "%.*s/%s", (int)(len > 0 ? len : 1),
               len > 0 ? dir : ".", file);
      if (runnable(cwd, candidate) == 0) return 0;
      if (errno == EACCES) denied = 1;
    }
    if (end == NULL) break;
    dir = end;
  }
  errno = denied ? EACCES : ENOENT;
  return -1;
}

/*
** posix_spawnp reports a failed exec as its result (glibc's child shares our
** memory until it execs, and is reaped before the call returns): a missing
** command leaves no zombie. ends[i][0] is the child's end, [1] ours.
*/
int lg_child_spawn(lg_child *c, char *const argv[], const lg_spawn_options *o) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  int ends[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
  sigset_t empty;
  pid_t pid;
  int i, rc;
  memset(c, 0, sizeof *c);
  c->pidfd = -1;
  for (i = 0; i < 3; i++) c->pipe[i] = -1;
  /* a cwd that cannot be entered is said as such, not as a missing command
  ** (the search below, or the child's chdir, would fail with ENOENT) */
  if (o->cwd != NULL && enterable(o->cwd) != 0) {
    c->cwd_failed = 1;
    return -1;
  }
  if (check_command(argv[0], o->cwd) != 0) return -1;
  for (i = 0; i < 3; i++) {
    int p[2];
    if (o->stream[i] != LG_STREAM_PIPE) continue;
    if (pipe2(p, O_CLOEXEC) != 0) {
      int err = errno;
      close_ends(ends);
      errno = err;
      return -1;
    }
    ends[i][0] = i == 0 ? p[0] : p[1];
    ends[i][1] = i == 0 ? p[1] : p[0];
  }
  if ((rc = posix_spawn_file_actions_init(&fa)) != 0) {
    close_ends(ends);
    errno = rc;
    return -1;
  }
  if ((rc = posix_spawnattr_init(&at)) != 0) {
    posix_spawn_file_actions_destroy(&fa);
    close_ends(ends);
    errno = rc;
    return -1;
  }
  sigemptyset(&empty);
  rc = add_actions(&fa, o, ends);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&at, &empty);
  if (rc == 0 && !o->terminal) rc = posix_spawnattr_setpgroup(&at, 0);
  if (rc == 0)
    rc = posix_spawnattr_setflags(&at, (short)(POSIX_SPAWN_SETSIGMASK |
                                               (o->terminal ? 0 : POSIX_SPAWN_SETPGROUP)));
  if (rc == 0)
    rc = posix_spawnp(&pid, argv[0], &fa, &at, argv, o->envp != NULL ? o->envp : environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  for (i = 0; i < 3; i++)
    if (ends[i][0] >= 0) {
      close(ends[i][0]);
      ends[i][0] = -1;
    }
  if (rc != 0) {
    close_ends(ends);
    if (o->cwd != NULL && enterable(o->cwd) != 0) c->cwd_failed = 1;   /* gone meanwhile */
    else errno = rc;
    return -1;
  }
  c->pid = pid;
  c->linked = 1;
  c->owner = lg_pid();
  c->own_group = !o->terminal;
  c->pidfd = open_pidfd(pid);
  c->grace = 10;
  for (i = 0; i < 3; i++) {
    c->pipe[i] = ends[i][1];
    if (c->pipe[i] >= 0) fcntl(c->pipe[i], F_SETFL, fcntl(c->pipe[i], F_GETFL) | O_NONBLOCK);
  }
  link_child(c);
  return 0;
}

/* waitpid(c, options): 1 when reaped (now or before), 0 when it runs. */
static int reap(lg_child *c, int options) {
  int status;
  pid_t r;
  if (c->reaped) return 1;
  if (c->pid <= 0 || c->owner != lg_pid()) return 1;   /* not ours to reap */
  do r = waitpid(c->pid, &status, options); while (r < 0 && errno == EINTR);
  if (r == 0) return 0;
  c->reaped = 1;
  c->status = r == c->pid ? status : -1;   /* ECHILD: a program's handler reaped it */
  if (c->pidfd >= 0) {
    close(c->pidfd);
    c->pidfd = -1;
  }
  return 1;
}

int lg_child_try_reap(lg_child *c) { return reap(c, WNOHANG); }

int lg_child_signal(lg_child *c, int sig) {
  if (!c->linked || c->owner != lg_pid()) { errno = ESRCH; return -1; }   /* given up: the pid may be another's */
  if (c->own_group) return kill(-c->pid, sig);   /* its group: its own children too */
  if (c->reaped) { errno = ESRCH; return -1; }   /* the pid may be someone else's now */
  return kill(c->pid, sig);
}

/*
** Whether a process of group pgid runs. kill(-pgid, 0) also counts zombies:
** a grandchild SIGKILLed after its parent (our child) exited belongs to init
** now, which reaps it when it will (seen here: seconds). So when kill says
** yes, /proc says whether any member is more than a zombie.
*/
static int group_runs(pid_t pgid) {
  DIR *d;
  struct dirent *e;
  int runs = 0;
  if (kill(-pgid, 0) != 0 && errno != EPERM) return 0;
  if ((d = opendir("/proc")) == NULL) return 1;
  while (!runs && (e = readdir(d)) != NULL) {
    char path[300], stat[512];
    const char *after;
    char state;
    long pgrp;
    FILE *f;
    size_t n;
    if (!isdigit((unsigned char)e->d_name[0])) continue;
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    if ((f = fopen(path, "re")) == NULL) continue;
    n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = '\0';
    after = strrchr(stat, ')');   /* the name may hold spaces and parentheses */
    if (after != NULL && sscanf(after + 1, " %c %*d %ld", &state, &pgrp) == 2 &&
        pgrp == (long)pgid && state != 'Z' && state != 'X')
      runs = 1;
  }
  closedir(d);
  return runs;
}

int lg_child_group_alive(const lg_child *c) {
  if (!c->linked || c->owner != lg_pid()) return 0;
  if (!c->own_group) return !c->reaped;
  if (!c->reaped) return 1;
  return group_runs(c->pid);
}

/* Gone: reaped, and nothing left of its group. */
static int gone(lg_child *c) {
  return lg_child_try_reap(c) && !lg_child_group_alive(c);
}

/*
** Until every child in cs is gone or 'until' passes. poll() on the pidfds of
** the leaders still running; a leader gone with its group alive (or no
** pidfd) is polled with naps. Signals (EINTR) only go round again.
*/
static void wait_gone(lg_child **cs, int n, double until) {
  struct pollfd fds[64];
  long nap_ns = NAP_FIRST_NS;
  for (;;) {
    int i, nfds = 0, napping = 0, left = 0;
    double remaining;
    for (i = 0; i < n; i++) {
      if (gone(cs[i])) continue;
      left++;
      if (!cs[i]->reaped && cs[i]->pidfd >= 0 && nfds < 64) {
        fds[nfds].fd = cs[i]->pidfd;
        fds[nfds].events = POLLIN;
        nfds++;
      }
      else napping = 1;
    }
    remaining = until - now_seconds();
    if (left == 0 || remaining <= 0) return;
    if (napping || nfds == 0) {
      long ns = nap_ns;
      if ((double)ns / 1e9 > remaining) ns = (long)(remaining * 1e9) + 1;
      nap(ns);
      if (nap_ns < NAP_MAX_NS) nap_ns *= 2;
    }
    else poll(fds, (nfds_t)nfds, (int)(remaining * 1000) + 1);
  }
}

/* A child in our process group (terminal) gets the terminal's SIGINT and
** SIGQUIT itself, with us: a forwarded copy would be a second one. */
static int terminal_sent(const lg_child *c, int sig) {
  return !c->own_group && (sig == SIGINT || sig == SIGQUIT);
}

/* One stop for cs: sig once each, one grace, SIGKILL, reap. */
static void stop_all(lg_child **cs, int n, int sig, double grace) {
  int i;
  for (i = 0; i < n; i++) {
    if (!cs[i]->signalled && !gone(cs[i]) && !terminal_sent(cs[i], sig))
      lg_child_signal(cs[i], sig);
    cs[i]->signalled = 1;
  }
  wait_gone(cs, n, now_seconds() + grace);
  for (i = 0; i < n; i++)
    if (!gone(cs[i])) lg_child_signal(cs[i], SIGKILL);
  wait_gone(cs, n, now_seconds() + KILL_WAIT);
  for (i = 0; i < n; i++) reap(cs[i], 0);   /* a leader SIGKILL has not ended yet */
}

void lg_child_stop(lg_child *c, int sig) {
  if (c->pid <= 0 || gone(c)) return;
  stop_all(&c, 1, sig, c->grace);
}

/* Whether c is stopped by lg_children_stop(context): ours, running, not a
** cleanup's, not signalled yet. Under list_mutex. */
static int to_stop(const lg_child *c, const void *context, pid_t me) {
  if (!c->linked || c->owner != me || c->signalled) return 0;
  if (context != NULL && (c->from_cleanup || c->context != context)) return 0;
  return !c->reaped || lg_child_group_alive(c);
}

int lg_children_stop(const void *context, int sig) {
  lg_child *c, **cs = NULL;
  int n = 0, cap = 0;
  double grace = 0;
  pthread_mutex_lock(&list_mutex);
  for (c = live; c != NULL; c = c->next) {
    if (!to_stop(c, context, lg_pid())) continue;
    if (n == cap) {
      lg_child **more = realloc(cs, (size_t)(cap = cap ? 2 * cap : 8) * sizeof *cs);
      if (more == NULL) break;
      cs = more;
    }
    cs[n++] = c;
    if (c->grace > grace) grace = c->grace;
  }
  pthread_mutex_unlock(&list_mutex);
  if (n > 0) stop_all(cs, n, sig, grace);
  free(cs);
  return n;
}

void lg_child_forget(lg_child *c) {
  int i;
  for (i = 0; i < 3; i++)
    if (c->pipe[i] >= 0) {
      close(c->pipe[i]);
      c->pipe[i] = -1;
    }
  if (c->pidfd >= 0) {
    close(c->pidfd);
    c->pidfd = -1;
  }
  if (c->linked) unlink_child(c);
  c->linked = 0;
  if (!c->reaped) {         /* given up: never signalled or waited for again */
    c->reaped = 1;
    c->status = -1;
  }
}

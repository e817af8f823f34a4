/*
** soak_signals — the signal soak (issue 5). Runs tests/soak/victim.lua in the
** host many times and sends each run one or two random signals out of the six
** handled ones, at random moments: in the body (four kinds of body), and while
** the cleanups run. Every run must show each cleanup exactly once, last
** registered first, the lock file gone, nothing on stderr, and death by one of
** the signals sent (a shell would see 128+N).
**
**   soak_signals HOST VICTIM RUNS [SEED]
**
** SOAK_HOST_WRAPPER, when set, is put before HOST (valgrind and its options).
** SOAK_MODES, when set, names the bodies to use (default: all four).
** Prints one line per violation ("# run ...") and a TAP line with the counts;
** exits 1 when any run broke a rule.
*/
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static const int handled[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGXCPU, SIGXFSZ };
static const char *const modes[] = { "lua", "read", "pcall", "wait" };
#define NHANDLED (int)(sizeof handled / sizeof handled[0])
#define NMODES (int)(sizeof modes / sizeof modes[0])

static const char *signal_name(int sig) {
  switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGHUP: return "SIGHUP";
    case SIGQUIT: return "SIGQUIT";
    case SIGXCPU: return "SIGXCPU";
    case SIGXFSZ: return "SIGXFSZ";
    default: return "another signal";
  }
}

static void nap(double seconds) {
  struct timespec ts;
  ts.tv_sec = (time_t)seconds;
  ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static double uniform(double lo, double hi) {
  return lo + (hi - lo) * ((double)rand() / ((double)RAND_MAX + 1.0));
}

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

static off_t size_of(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? st.st_size : 0;
}

static size_t read_file(const char *path, char *buf, size_t cap) {
  size_t n = 0;
  FILE *f = fopen(path, "rb");
  buf[0] = '\0';
  if (f == NULL) return 0;
  n = fread(buf, 1, cap - 1, f);
  buf[n] = '\0';
  fclose(f);
  return n;
}

/* Wait up to 'limit' seconds for pid; -1 when it is still running. */
static int wait_status(pid_t pid, double limit) {
  double deadline = test_now() + limit;
  int status;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -2;
    if (test_now() > deadline) return -1;
    nap(0.001);
  }
}

static void remove_tree(const char *dir) {
  static const char *const names[] = { "log", "err", "ready", "ready.tmp",
                                       ".certbot.lock", "busy.lock" };
  char path[4096];
  size_t i;
  for (i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    unlink(path);
  }
  rmdir(dir);
}

/*
** Start the victim with the six signals at their defaults and unblocked (the
** driver may have been started as a background job, with SIGINT ignored),
** stdin a pipe nobody writes to, stderr into DIR/err.
*/
static pid_t start_victim(const char *host, const char *victim, const char *dir,
                          const char *mode, int *stdin_writer) {
  int fds[2];
  pid_t pid;
  if (pipe(fds) != 0) return -1;
  pid = fork();
  if (pid == 0) {
    char err_path[4096];
    sigset_t none;
    int i, fd;
    for (i = 0; i < NHANDLED; i++) signal(handled[i], SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    dup2(fds[0], 0);
    close(fds[0]);
    close(fds[1]);
    snprintf(err_path, sizeof err_path, "%s/err", dir);
    fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) { dup2(fd, 2); close(fd); }
    if (getenv("SOAK_HOST_WRAPPER") != NULL) {   /* e.g. valgrind and its options */
      char script[4096];
      snprintf(script, sizeof script, "exec %s \"$@\"", getenv("SOAK_HOST_WRAPPER"));
      execl("/bin/sh", "sh", "-c", script, "sh", host, victim, dir, mode, (char *)NULL);
    }
    else execl(host, host, victim, dir, mode, (char *)NULL);
    _exit(127);
  }
  close(fds[0]);
  if (pid < 0) { close(fds[1]); return -1; }
  *stdin_writer = fds[1];
  return pid;
}

typedef struct run_result {
  int violation;
  int two_signals;
  int second_in_cleanup;     /* the second was sent after the first cleanup began */
  char detail[1024];
} run_result;

/* SOAK_MODES (e.g. "lua pcall wait") limits the bodies; all four otherwise. */
static const char *pick_mode(void) {
  const char *allowed = getenv("SOAK_MODES");
  for (;;) {
    const char *mode = modes[rand() % NMODES];
    if (allowed == NULL || strstr(allowed, mode) != NULL) return mode;
  }
}

/* How long a victim may take to die after the last signal (seconds): it
** takes milliseconds; longer under valgrind (SOAK_HOST_WRAPPER). */
static double run_limit = 10;

/* A broken build gives a violation a run (and a hang each): the soak ends
** after this many, with what it found, instead of waiting out every run. */
#define MAX_VIOLATIONS 5

static void one_run(const char *host, const char *victim, int run, run_result *res) {
  char dir[] = "/tmp/luaguard-soak-XXXXXX";
  char path[4096], log[256], err[512];
  const char *mode = pick_mode();
  int sent[2], nsent = 0, stdin_writer = -1, busy_fd = -1, status, i, ok_signal = 0;
  pid_t pid;
  double deadline;
  memset(res, 0, sizeof *res);
  if (mkdtemp(dir) == NULL) {
    res->violation = 1;
    snprintf(res->detail, sizeof res->detail, "mkdtemp: %s", strerror(errno));
    return;
  }
  if (strcmp(mode, "wait") == 0) {     /* hold DIR/busy.lock for the body to wait on */
    struct flock fl;
    snprintf(path, sizeof path, "%s/busy.lock", dir);
    busy_fd = open(path, O_RDWR | O_CREAT, 0600);
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (busy_fd < 0 || fcntl(busy_fd, F_SETLK, &fl) != 0) {
      res->violation = 1;
      snprintf(res->detail, sizeof res->detail, "cannot hold busy.lock: %s", strerror(errno));
      remove_tree(dir);
      return;
    }
  }
  pid = start_victim(host, victim, dir, mode, &stdin_writer);
  if (pid < 0) {
    res->violation = 1;
    snprintf(res->detail, sizeof res->detail, "fork: %s", strerror(errno));
    remove_tree(dir);
    return;
  }
  snprintf(path, sizeof path, "%s/ready", dir);
  deadline = test_now() + 20;
  while (!exists(path) && test_now() < deadline && waitpid(pid, &status, WNOHANG) == 0) nap(0.0005);

  /* first signal: somewhere in the body, 0 to 20 ms after it started */
  nap(uniform(0, 0.020));
  sent[nsent++] = handled[rand() % NHANDLED];
  kill(pid, sent[0]);
  if (rand() % 2) {
    res->two_signals = 1;
    if (rand() % 2) {
      /* during the cleanups: once the first one has logged, 0 to 10 ms in */
      snprintf(path, sizeof path, "%s/log", dir);
      deadline = test_now() + 10;
      while (size_of(path) == 0 && test_now() < deadline) nap(0.0002);
      res->second_in_cleanup = 1;
      nap(uniform(0, 0.010));
    }
    else {
      nap(uniform(0, 0.005));   /* body or cleanup, wherever it lands */
    }
    sent[nsent++] = handled[rand() % NHANDLED];
    kill(pid, sent[1]);
  }

  status = wait_status(pid, run_limit);
  if (status == -1) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    res->violation = 1;
    snprintf(res->detail, sizeof res->detail, "run %d (%s): hung, SIGKILLed", run, mode);
  }
  close(stdin_writer);
  if (busy_fd >= 0) close(busy_fd);

  snprintf(path, sizeof path, "%s/log", dir);
  read_file(path, log, sizeof log);
  snprintf(path, sizeof path, "%s/err", dir);
  read_file(path, err, sizeof err);
  for (i = 0; i < nsent; i++)
    if (WIFSIGNALED(status) && WTERMSIG(status) == sent[i]) ok_signal = 1;
  snprintf(path, sizeof path, "%s/.certbot.lock", dir);
  if (!res->violation) {
    /* the host reports the SignalExit that ended the script, like lua.c an
    ** error: one line, "<progname>: SignalExit: SIGxxx" */
    char expected_end[64] = "";
    size_t err_len = strlen(err), end_len;
    const char *why = NULL;
    int err_ok;
    if (WIFSIGNALED(status))
      snprintf(expected_end, sizeof expected_end, ": SignalExit: %s\n",
               signal_name(WTERMSIG(status)));
    end_len = strlen(expected_end);
    err_ok = end_len > 0 && err_len > end_len && strchr(err, '\n') == err + err_len - 1 &&
             strcmp(err + err_len - end_len, expected_end) == 0;
    if (strcmp(log, "5\n4\n3\n2\n1\n") != 0) why = "cleanups not exactly once, LIFO";
    else if (!ok_signal) why = "not dead by a signal that was sent";
    else if (exists(path)) why = "lock file left behind";
    else if (!err_ok) why = "stderr other than the host's report";
    if (why != NULL) {
      char order[256];
      size_t k;
      snprintf(order, sizeof order, "%s", log);
      for (k = 0; order[k]; k++) if (order[k] == '\n') order[k] = ' ';
      res->violation = 1;
      snprintf(res->detail, sizeof res->detail,
               "run %d (%s): %s; sent %s%s%s, status %s %d, cleanups [%.60s], stderr: %.200s",
               run, mode, why, signal_name(sent[0]), nsent > 1 ? " then " : "",
               nsent > 1 ? signal_name(sent[1]) : "",
               WIFSIGNALED(status) ? "signal" : "exit",
               WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), order, err);
    }
  }
  remove_tree(dir);
}

int main(int argc, char **argv) {
  int runs, run, violations = 0, two = 0, in_cleanup = 0;
  unsigned seed;
  double start;
  if (argc < 4) {
    fprintf(stderr, "usage: %s HOST VICTIM RUNS [SEED]\n", argv[0]);
    return 2;
  }
  runs = atoi(argv[3]);
  seed = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 10) : (unsigned)time(NULL) ^ (unsigned)getpid();
  srand(seed);
  signal(SIGPIPE, SIG_IGN);
  if (getenv("SOAK_HOST_WRAPPER") != NULL && getenv("SOAK_HOST_WRAPPER")[0] != '\0') run_limit = 60;
  start = test_now();
  for (run = 1; run <= runs && violations < MAX_VIOLATIONS; run++) {
    run_result res;
    one_run(argv[1], argv[2], run, &res);
    two += res.two_signals;
    in_cleanup += res.second_in_cleanup;
    if (res.violation) {
      printf("# %s\n", res.detail);
      fflush(stdout);
      ++violations;
    }
  }
  if (violations == MAX_VIOLATIONS && run <= runs)
    printf("# stopped after %d violations, at run %d of %d\n", violations, run - 1, runs);
  printf("# signal soak: %d runs (%d with two signals, %d of them sent during the cleanups), "
         "%d violations, %.1f s, seed %u\n", run - 1, two, in_cleanup, violations, test_now() - start, seed);
  printf("%s 1 - signal soak: %d runs, %d violations\n", violations ? "not ok" : "ok",
         run - 1, violations);
  return violations ? 1 : 0;
}

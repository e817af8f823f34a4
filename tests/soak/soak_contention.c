/*
** soak_contention — the lock contention soak (issue 5). Starts PROCS
** participants (tests/soak/participant.lua in the host, or certbot's
** participant.py) that each do CYCLES read-increment-write cycles of one
** counter file under the directory's lock; SIGKILLs up to KILLS of them right
** after they took the lock, and starts them again. At the end the counter must
** hold exactly PROCS x CYCLES increments, each participant's own share intact,
** and the event stream ("H id pid" once holding, "R id pid" just before releasing)
** must never show two participants inside at once.
**
**   soak_contention [--expect-loss] NAME PROCS CYCLES KILLS SEED CMD [CMD ...]
**
** Participant i runs CMD number (i-1) mod count, through /bin/sh, with DIR, ID
** and CYCLES appended. --expect-loss inverts the verdict: the run must see a
** lost update or an overlap (the harness's own check, with no lock).
** Prints the hand-off latency (holder releasing -> another holding, as the
** driver reads the events) and a TAP line; exits 1 on a failed verdict.
*/
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define MAX_PROCS 64
#define MAX_HANDOFFS 100000
#define TIME_LIMIT 600.0

typedef struct participant {
  pid_t pid;
  const char *command;
  int done;             /* exited 0 */
  int killed;           /* SIGKILLed by us, not yet restarted */
  int restarts;
} participant;

static participant procs[MAX_PROCS + 1];
static double handoffs[MAX_HANDOFFS];
static int nhandoffs;

static pid_t start(int id, const char *dir, int cycles, int events_writer, int events_reader) {
  pid_t pid = fork();
  if (pid == 0) {
    char id_text[16], cycles_text[16], err_path[4096], script[4096];
    int fd;
    snprintf(id_text, sizeof id_text, "%d", id);
    snprintf(cycles_text, sizeof cycles_text, "%d", cycles);
    snprintf(err_path, sizeof err_path, "%s/err.%d", dir, id);
    snprintf(script, sizeof script, "exec %s \"$@\"", procs[id].command);
    close(events_reader);
    dup2(events_writer, 1);
    close(events_writer);
    fd = open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) { dup2(fd, 2); close(fd); }
    execl("/bin/sh", "sh", "-c", script, "sh", dir, id_text, cycles_text, (char *)NULL);
    _exit(127);
  }
  return pid;
}

static int id_of(pid_t pid, int nprocs) {
  int i;
  for (i = 1; i <= nprocs; i++) if (procs[i].pid == pid) return i;
  return 0;
}

/* total and per-participant counts from DIR/counter; -1 when unreadable */
static long read_counter(const char *dir, long counts[], int nprocs) {
  char path[4096], name[32];
  long total, count;
  FILE *f;
  int i;
  for (i = 1; i <= nprocs; i++) counts[i] = 0;
  snprintf(path, sizeof path, "%s/counter", dir);
  f = fopen(path, "r");
  if (f == NULL || fscanf(f, "%ld", &total) != 1) {
    if (f != NULL) fclose(f);
    return -1;
  }
  while (fscanf(f, "%31s %ld", name, &count) == 2) {
    i = atoi(name);
    if (i >= 1 && i <= nprocs) counts[i] = count;
  }
  fclose(f);
  return total;
}

static void print_stderr_of(const char *dir, int id) {
  char path[4096], text[1024];
  size_t n;
  FILE *f;
  snprintf(path, sizeof path, "%s/err.%d", dir, id);
  f = fopen(path, "r");
  if (f == NULL) return;
  n = fread(text, 1, sizeof text - 1, f);
  text[n] = '\0';
  fclose(f);
  if (n > 0) printf("# participant %d said: %s", id, text);
}

int main(int argc, char **argv) {
  int expect_loss = 0, argi = 1, nprocs, cycles, kills, ncommands, i, events[2];
  int inside = 0, last_release_id = 0, overlaps = 0, failures = 0, kills_sent = 0;
  int remaining, lost = 0, verdict_ok;
  unsigned seed;
  double start_time, last_release_t = 0, kill_probability;
  char dir[] = "/tmp/luaguard-contention-XXXXXX", line[64], buffer[4096];
  size_t line_len = 0;
  const char *name;
  long total, counts[MAX_PROCS + 1];

  if (argc > 1 && strcmp(argv[1], "--expect-loss") == 0) { expect_loss = 1; argi++; }
  if (argc - argi < 6) {
    fprintf(stderr, "usage: %s [--expect-loss] NAME PROCS CYCLES KILLS SEED CMD [CMD ...]\n", argv[0]);
    return 2;
  }
  name = argv[argi];
  nprocs = atoi(argv[argi + 1]);
  cycles = atoi(argv[argi + 2]);
  kills = atoi(argv[argi + 3]);
  seed = (unsigned)strtoul(argv[argi + 4], NULL, 10);
  if (seed == 0) seed = (unsigned)time(NULL) ^ (unsigned)getpid();
  ncommands = argc - (argi + 5);
  if (nprocs < 1 || nprocs > MAX_PROCS || cycles < 1 || kills < 0) {
    fprintf(stderr, "soak_contention: bad PROCS, CYCLES or KILLS\n");
    return 2;
  }
  srand(seed);
  signal(SIGPIPE, SIG_IGN);
  if (mkdtemp(dir) == NULL || pipe(events) != 0) { perror("soak_contention"); return 2; }
  fcntl(events[0], F_SETFL, O_NONBLOCK);

  /* spread the kills over the run: about twice the needed rate, capped */
  kill_probability = kills > 0 ? 2.0 * kills / ((double)nprocs * cycles) : 0;
  start_time = test_now();
  for (i = 1; i <= nprocs; i++) {
    procs[i].command = argv[argi + 5 + (i - 1) % ncommands];
    procs[i].pid = start(i, dir, cycles, events[1], events[0]);
  }
  remaining = nprocs;

  while (remaining > 0 && test_now() - start_time < TIME_LIMIT) {
    struct pollfd pfd;
    ssize_t n;
    int status;
    pid_t pid;
    pfd.fd = events[0];
    pfd.events = POLLIN;
    poll(&pfd, 1, 5);
    while ((n = read(events[0], buffer, sizeof buffer)) > 0) {
      double t = test_now();
      ssize_t k;
      for (k = 0; k < n; k++) {
        char kind;
        int id, pid_of_event;
        if (buffer[k] != '\n') {
          if (line_len < sizeof line - 1) line[line_len++] = buffer[k];
          continue;
        }
        line[line_len] = '\0';
        line_len = 0;
        if (sscanf(line, "%c %d %d", &kind, &id, &pid_of_event) != 3 || id < 1 || id > nprocs)
          continue;
        /* An incarnation we decided to kill may still have released, taken
        ** the lock again and said so before SIGKILL landed: its lines are
        ** stale (it dies holding nothing that outlives it), so skip them. */
        if (procs[id].killed || pid_of_event != (int)procs[id].pid) continue;
        if (kind == 'H') {
          if (inside != 0 && inside != id) {
            if (++overlaps <= 10) printf("# participants %d and %d both inside\n", inside, id);
          }
          inside = id;
          if (last_release_id != 0 && last_release_id != id && nhandoffs < MAX_HANDOFFS)
            handoffs[nhandoffs++] = t - last_release_t;
          last_release_id = 0;
          if (kills_sent < kills && (double)rand() / RAND_MAX < kill_probability) {
            kill(procs[id].pid, SIGKILL);    /* holding, mid read-increment-write */
            procs[id].killed = 1;
            kills_sent++;
            inside = 0;                      /* the kernel frees its lock as it dies */
          }
        }
        else if (kind == 'R' && inside == id) {
          inside = 0;
          last_release_id = id;
          last_release_t = t;
        }
      }
    }
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      int id = id_of(pid, nprocs);
      if (id == 0) continue;
      if (procs[id].killed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
        procs[id].killed = 0;
        procs[id].restarts++;
        procs[id].pid = start(id, dir, cycles, events[1], events[0]);
      }
      else {
        remaining--;
        procs[id].done = 1;
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
          failures++;
          printf("# participant %d ended with %s %d\n", id,
                 WIFSIGNALED(status) ? "signal" : "status",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
          print_stderr_of(dir, id);
        }
      }
    }
  }
  if (remaining > 0) {
    printf("# timed out after %.0f s with %d participants running\n", TIME_LIMIT, remaining);
    for (i = 1; i <= nprocs; i++) if (!procs[i].done) kill(procs[i].pid, SIGKILL);
    while (wait(NULL) > 0) {}
    failures += remaining;
  }

  total = read_counter(dir, counts, nprocs);
  for (i = 1; i <= nprocs; i++) lost += cycles - (int)counts[i];
  if (total >= 0 && total != (long)nprocs * cycles)
    printf("# the counter holds %ld increments, expected %ld\n", total, (long)nprocs * cycles);
  printf("# %s: %d processes x %d cycles in %.1f s, %d SIGKILLed while holding and restarted, "
         "counter %ld of %ld, %d overlaps, %d failed participants, seed %u\n",
         name, nprocs, cycles, test_now() - start_time, kills_sent, total, (long)nprocs * cycles,
         overlaps, failures, seed);
  if (nhandoffs > 0) {
    qsort(handoffs, (size_t)nhandoffs, sizeof handoffs[0], test_compare_doubles);
    printf("# %s: hand-off, holder releasing -> another holding (as the driver reads it): "
           "median %.2f ms, p90 %.2f ms, max %.2f ms over %d hand-offs\n", name,
           handoffs[nhandoffs / 2] * 1e3, handoffs[nhandoffs * 9 / 10] * 1e3,
           handoffs[nhandoffs - 1] * 1e3, nhandoffs);
  }
  if (expect_loss)
    verdict_ok = overlaps > 0 || failures > 0 || total != (long)nprocs * cycles;
  else
    verdict_ok = overlaps == 0 && failures == 0 && lost == 0 && total == (long)nprocs * cycles;
  printf("%s 1 - %s: %s\n", verdict_ok ? "ok" : "not ok", name,
         expect_loss ? "the harness sees lost updates when there is no lock"
                     : "no increment lost, never two inside");

  {
    char command[4200];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    if (system(command) != 0) fprintf(stderr, "soak_contention: could not remove %s\n", dir);
  }
  return verdict_ok ? 0 : 1;
}

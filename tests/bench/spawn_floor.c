/*
** bench_spawn_floor — the floor of proc.run({"true"}): a plain C loop of
** posix_spawnp + waitpid, N times. scripts/bench sets luaguard's proc.run
** against it (and against os.execute, which adds a shell), each run as one
** whole command timed from outside (wall time).
**
**   bench_spawn_floor N
*/
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
  char *child[] = {"true", NULL};
  int n = argc > 1 ? atoi(argv[1]) : 1000, i;
  for (i = 0; i < n; i++) {
    pid_t pid;
    int status;
    if (posix_spawnp(&pid, child[0], NULL, NULL, child, environ) != 0) return 2;
    if (waitpid(pid, &status, 0) != pid || status != 0) return 3;
  }
  return 0;
}

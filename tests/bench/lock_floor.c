/*
** bench_lock_floor — the syscall floor of a lock cycle: what any lock file
** must do (open creating, lock, stat the path, fstat the file, unlink, close),
** in a plain C loop. scripts/bench sets luaguard's lock.dir(d):release()
** against it. Prints CPU seconds per cycle (user + system), as the Lua side
** measures itself with os.clock.
**
**   bench_lock_floor DIR N
*/
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  char path[4096];
  long n, i;
  double start;
  if (argc != 3) {
    fprintf(stderr, "usage: %s DIR N\n", argv[0]);
    return 2;
  }
  snprintf(path, sizeof path, "%s/.certbot.lock", argv[1]);
  n = atol(argv[2]);
  start = cpu_seconds();
  for (i = 0; i < n; i++) {
    struct stat st, at_path;
    struct flock fl;
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600);
    if (fd < 0) return 1;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd, F_SETLK, &fl) != 0) return 1;
    if (fstat(fd, &st) != 0 || stat(path, &at_path) != 0) return 1;
    if (unlink(path) != 0) return 1;
    close(fd);
  }
  printf("%.9f\n", (cpu_seconds() - start) / (double)n);
  return 0;
}

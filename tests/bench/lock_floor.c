/*
** bench_lock_floor — the syscall floor of a lock cycle, in a plain C loop.
** scripts/bench sets luaguard's lock.dir(d):release() against both:
**   plain    what certbot's cycle does: open creating, lock, fstat the file,
**            stat the path, unlink, close (6 calls)
**   guarded  what luaguard's does: open the directory, open the file in it,
**            fstat, lock, stat the name (the re-check), stat it again at
**            release (still ours?), unlink through the directory, close both
**            (9 calls)
** Prints CPU seconds per cycle (user + system), as the Lua side measures
** itself with os.clock.
**
**   bench_lock_floor DIR N [plain|guarded]
*/
#define _GNU_SOURCE   /* O_PATH */
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
  int guarded;
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: %s DIR N [plain|guarded]\n", argv[0]);
    return 2;
  }
  snprintf(path, sizeof path, "%s/.certbot.lock", argv[1]);
  n = atol(argv[2]);
  guarded = argc == 4 && strcmp(argv[3], "guarded") == 0;
  start = cpu_seconds();
  for (i = 0; guarded && i < n; i++) {
    struct stat st, at_path;
    struct flock fl;
    int dir = open(argv[1], O_PATH | O_DIRECTORY | O_CLOEXEC), fd;
    if (dir < 0) return 1;
    fd = openat(dir, ".certbot.lock", O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600);
    if (fd < 0 || fstat(fd, &st) != 0) return 1;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd, F_SETLK, &fl) != 0) return 1;
    if (fstatat(dir, ".certbot.lock", &at_path, AT_SYMLINK_NOFOLLOW) != 0) return 1;
    if (fstatat(dir, ".certbot.lock", &at_path, AT_SYMLINK_NOFOLLOW) != 0) return 1;
    if (unlinkat(dir, ".certbot.lock", 0) != 0) return 1;
    close(fd);
    close(dir);
  }
  for (i = 0; !guarded && i < n; i++) {
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

/*
** lock_probe — a deliberately naive lock participant for the counter harness
** (tests/lock_spec.lua): it takes the same fcntl lock on dir/.certbot.lock but
** skips the inode re-check after locking, so it can lock a file its previous
** holder has just unlinked while another process locks the new one. The
** harness must report overlaps when such participants run, or it proves
** nothing about the real lock.
**
**   lock_probe naive-counter DIR N     prints the overlaps it saw
*/
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static long read_counter(const char *path) {
  FILE *f = fopen(path, "r");
  long v = 0;
  if (f != NULL) {
    if (fscanf(f, "%ld", &v) != 1) v = 0;
    fclose(f);
  }
  return v;
}

static void write_counter(const char *dir, long v) {
  char tmp[4096], path[4096];
  FILE *f;
  snprintf(tmp, sizeof tmp, "%s/counter.tmp.%d", dir, (int)getpid());
  snprintf(path, sizeof path, "%s/counter", dir);
  f = fopen(tmp, "w");
  if (f == NULL) { perror(tmp); exit(2); }
  fprintf(f, "%ld\n", v);
  fclose(f);
  rename(tmp, path);
}

int main(int argc, char **argv) {
  char lockpath[4096], inside[4096], counter[4096];
  long i, n, overlaps = 0;
  if (argc != 4 || strcmp(argv[1], "naive-counter") != 0) {
    fprintf(stderr, "usage: lock_probe naive-counter DIR N\n");
    return 2;
  }
  n = atol(argv[3]);
  snprintf(lockpath, sizeof lockpath, "%s/.certbot.lock", argv[2]);
  snprintf(inside, sizeof inside, "%s/inside", argv[2]);
  snprintf(counter, sizeof counter, "%s/counter", argv[2]);
  for (i = 0; i < n; i++) {
    struct flock fl;
    int fd = open(lockpath, O_CREAT | O_WRONLY, 0600);
    if (fd < 0) { perror(lockpath); return 2; }
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    while (fcntl(fd, F_SETLKW, &fl) != 0)
      if (errno != EINTR) { perror("fcntl"); return 2; }
    /* naive: no check that lockpath still names the file we locked */
    if (mkdir(inside, 0700) != 0) overlaps++;
    write_counter(argv[2], read_counter(counter) + 1);
    rmdir(inside);
    unlink(lockpath);
    close(fd);
  }
  printf("%ld\n", overlaps);
  return 0;
}

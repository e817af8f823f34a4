/*
** fuzz_lock_path — libFuzzer target over the C core's lock path handling
** (lg_lock_acquire / lg_lock_release) with arbitrary path bytes, inside a
** sandbox directory of fixtures: a directory, a file, a dangling symlink, a
** symlink to a directory, a FIFO. Whatever the path, afterwards:
**   - no descriptor is left open,
**   - the sandbox holds exactly the fixtures (a failed acquire creates
**     nothing; a release removes the lock file),
**   - a held lock refuses a second lock of the same context (EDEADLK).
** (A fixture file that gets locked is removed by its release, as certbot's
** lock does, and put back.) A broken invariant aborts (a finding). Paths with a ".." component are
** skipped: they would leave the sandbox.
**   input: byte 0 = flags (1: absolute path, 2: wait 1 ms, 4: re-acquire),
**          bytes 1.. = the path, up to the first NUL
*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "fuzz_target.h"
#include "lg_lock.h"

static char sandbox[] = "/tmp/lg_fuzz_lock.XXXXXX";
static char initial_listing[4096];

static void fail(const char *what, const char *path) {
  fprintf(stderr, "fuzz_lock_path: %s (path \"%.200s\")\n", what, path);
  abort();
}

/* names in the sandbox and in its sub/, sorted, as one string */
static int compare_names(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void listing(char *out, size_t cap) {
  static const char *const dirs[] = { ".", "sub" };
  char names[64][300];
  const char *sorted[64];
  size_t i, n = 0, used = 0;
  for (i = 0; i < 2; i++) {
    char where[4200];
    DIR *d;
    struct dirent *e;
    snprintf(where, sizeof where, "%s/%s", sandbox, dirs[i]);
    d = opendir(where);
    while (d != NULL && (e = readdir(d)) != NULL && n < 64) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      snprintf(names[n], sizeof names[n], "%s/%s", dirs[i], e->d_name);
      sorted[n] = names[n];
      n++;
    }
    if (d != NULL) closedir(d);
  }
  qsort(sorted, n, sizeof sorted[0], compare_names);
  out[0] = '\0';
  for (i = 0; i < n && used + strlen(sorted[i]) + 2 < cap; i++) {
    used += (size_t)snprintf(out + used, cap - used, "%s;", sorted[i]);
  }
}

static void remove_sandbox(void) {
  char command[200];
  snprintf(command, sizeof command, "rm -rf '%s'", sandbox);
  if (system(command) != 0) fprintf(stderr, "could not remove %s\n", sandbox);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char path[200];
  FILE *f;
  (void)argc;
  (void)argv;
  if (mkdtemp(sandbox) == NULL) fail("mkdtemp", sandbox);
  atexit(remove_sandbox);
  snprintf(path, sizeof path, "%s/sub", sandbox);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/file", sandbox);
  f = fopen(path, "w");
  if (f != NULL) { fputs("data\n", f); fclose(f); }
  snprintf(path, sizeof path, "%s/sub/file", sandbox);
  f = fopen(path, "w");
  if (f != NULL) fclose(f);
  snprintf(path, sizeof path, "%s/link", sandbox);
  if (symlink("sub/target", path) != 0) fail("symlink", path);
  snprintf(path, sizeof path, "%s/dirlink", sandbox);
  if (symlink("sub", path) != 0) fail("symlink", path);
  snprintf(path, sizeof path, "%s/fifo", sandbox);
  if (mkfifo(path, 0600) != 0) fail("mkfifo", path);
  listing(initial_listing, sizeof initial_listing);
  return 0;
}

static int back_home(int here) {
  if (fchdir(here) != 0) fail("fchdir", "");
  close(here);
  return 0;
}

static int leaves_sandbox(const char *p) {
  const char *c = p;
  while (*c != '\0') {
    size_t len = strcspn(c, "/");
    if (len == 2 && c[0] == '.' && c[1] == '.') return 1;
    c += len;
    while (*c == '/') c++;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char context = 0;
  char *relative, *path, now_listing[4096];
  lg_lock a, b;
  lg_lock_failure why;
  int flags, fds, rc, existed, here;
  size_t len;
  if (size < 1) return 0;
  flags = data[0];
  /* relative paths resolve in the sandbox; libFuzzer's own cwd is given back */
  here = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (here < 0 || chdir(sandbox) != 0) fail("chdir", sandbox);
  relative = calloc(size, 1);
  if (relative == NULL) return 0;
  memcpy(relative, data + 1, size - 1);   /* stops at the first NUL, as C does */
  len = strlen(relative);
  path = malloc(len + sizeof sandbox + 2);
  if (leaves_sandbox(relative) || relative[0] == '/' || path == NULL) {
    free(relative);
    free(path);
    return back_home(here);
  }
  if (flags & 1) sprintf(path, "%s/%s", sandbox, relative);
  else strcpy(path, relative);
  free(relative);

  {
    struct stat before;   /* locking an existing file removes it on release: */
    existed = lstat(path, &before) == 0 && S_ISREG(before.st_mode);  /* put it back */
  }
  fds = test_count_fds();
  lg_lock_init(&a);
  lg_lock_init(&b);
  a.context = b.context = &context;
  errno = 0;
  rc = lg_lock_acquire(&a, path, (flags & 2) ? 0.001 : 0, NULL, NULL, &why);
  if (rc == 0) {
    struct stat st;
    if (!lg_lock_is_held(&a)) fail("acquired but not held", path);
    if (lg_lock_acquire(&b, path, 0.001, NULL, NULL, &why) != -1 || errno != EDEADLK)
      fail("a second lock of the same context was not refused with EDEADLK", path);
    if (flags & 4) {
      if (lg_lock_release(&a, path) != 0) fail("release failed", path);
      if (lg_lock_acquire(&a, path, 0, NULL, NULL, &why) != 0) fail("re-acquire failed", path);
    }
    if (lg_lock_release(&a, path) != 0) fail("release failed", path);
    if (lg_lock_is_held(&a)) fail("held after release", path);
    if (lstat(path, &st) == 0) fail("lock file left after release", path);
    if (existed) {
      FILE *f = fopen(path, "w");
      if (f != NULL) fclose(f);
    }
  }
  else {
    if (errno == 0) fail("failed without errno", path);
    if (lg_lock_is_held(&a)) fail("failed but held", path);
  }
  if (test_count_fds() != fds) fail("descriptor leaked", path);
  listing(now_listing, sizeof now_listing);
  if (strcmp(now_listing, initial_listing) != 0) fail("sandbox changed", path);
  free(path);
  return back_home(here);
}

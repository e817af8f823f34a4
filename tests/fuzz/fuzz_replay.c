/*
** fuzz_replay.c — main() for a fuzz target built without libFuzzer: runs
** LLVMFuzzerTestOneInput over each file named on the command line (or each
** file of each directory named), so the corpus in tests/fuzz/corpus/ is a
** regression test of every ordinary build, sanitizer build included.
** Prints a TAP line per directory or file. Built with libFuzzer
** (-DLG_LIBFUZZER), libFuzzer's own main is used instead.
*/
#ifndef LG_LIBFUZZER
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_target.h"

static int replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  unsigned char *data;
  long size;
  if (f == NULL) return -1;
  fseek(f, 0, SEEK_END);
  size = ftell(f);
  fseek(f, 0, SEEK_SET);
  data = malloc(size > 0 ? (size_t)size : 1);
  if (data == NULL || fread(data, 1, (size_t)size, f) != (size_t)size) {
    free(data);
    fclose(f);
    return -1;
  }
  fclose(f);
  LLVMFuzzerTestOneInput(data, (size_t)size);
  free(data);
  return 0;
}

int main(int argc, char **argv) {
  int i, n = 0, failed = 0;
  LLVMFuzzerInitialize(&argc, &argv);
  for (i = 1; i < argc; i++) {
    struct stat st;
    int count = 0, bad = 0;
    if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
      DIR *dir = opendir(argv[i]);
      struct dirent *e;
      while (dir != NULL && (e = readdir(dir)) != NULL) {
        char path[4096];
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
        if (replay_file(path) != 0) bad++;
        count++;
      }
      if (dir != NULL) closedir(dir);
      else bad++;
    }
    else {
      bad = replay_file(argv[i]) != 0;
      count = 1;
    }
    n++;
    failed += bad != 0 || count == 0;
    /* a crash or a broken invariant aborts before this line */
    printf("%s %d - %s: %d inputs replayed, no crash, invariants held\n",
           bad || count == 0 ? "not ok" : "ok", n, argv[i], count);
  }
  printf("1..%d\n", n);
  return failed ? 1 : 0;
}
#endif

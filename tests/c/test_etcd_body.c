/*
** test_etcd_body — the etcd client's reply buffer (lg_etcd.c on_body, a
** libcurl write callback), compiled in here: whatever the chunks, the body
** keeps room for its terminating NUL (cap > len) and holds the bytes given.
** A reply of exactly 4096 or 8192 bytes is rare from a real cluster, so this
** is where a buffer one byte short would show, in the release build too.
*/
#include "../../src/core/lg_etcd.c"

#include "tap.h"

/* Feed 'sizes' (0-terminated) as chunks of a pattern; check after each. */
static void feed(const size_t *sizes, const char *what) {
  static char chunk[20000];
  conn c;
  size_t i, k, total = 0;
  int ok = 1;
  memset(&c, 0, sizeof c);
  for (i = 0; sizes[i] != 0; i++) {
    for (k = 0; k < sizes[i]; k++) chunk[k] = (char)('a' + (total + k) % 26);
    if (on_body(chunk, 1, sizes[i], &c) != sizes[i]) ok = 0;
    total += sizes[i];
    if (c.len != total || c.cap <= c.len || c.body[c.len] != '\0') ok = 0;
  }
  for (k = 0; ok && k < total; k++)
    if (c.body[k] != (char)('a' + k % 26)) ok = 0;
  CHECK(ok, what);
  free(c.body);
}

int main(void) {
  static const size_t one_4095_then_1[] = {4095, 1, 0};
  static const size_t exact_4096[] = {4096, 0};
  static const size_t to_8192[] = {4000, 96, 4095, 1, 0};
  static const size_t big[] = {1, 12000, 4383, 0};
  feed(one_4095_then_1, "4095 bytes then 1: room for the NUL after 4096");
  feed(exact_4096, "one chunk of exactly 4096 bytes");
  feed(to_8192, "chunks reaching exactly 4096, then exactly 8192");
  feed(big, "a chunk larger than twice the buffer");
  return tap_done();
}

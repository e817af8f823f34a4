/*
** bench_lease_floor — the floor for a lock.lease cycle: the same HTTP requests
** luaguard makes for an uncontended lease(name) + release(), with libcurl over
** one kept-alive connection and nothing else (no thread, no checks, no Lua):
** lease/grant, kv/range (is anyone there: timeout 0), lock/lock, kv/range
** (the read-back, serializable), kv/deleterange (the key), lease/revoke.
**
**   bench_lease_floor ENDPOINT NAME N
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

static char body[65536];
static size_t body_len;

static size_t on_body(char *data, size_t size, size_t n, void *ud) {
  size_t add = size * n;
  (void)ud;
  if (body_len + add >= sizeof body) return 0;
  memcpy(body + body_len, data, add);
  body_len += add;
  body[body_len] = '\0';
  return add;
}

static const char b64chars[] =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64(const char *s, char *out) {
  size_t n = strlen(s), i;
  for (i = 0; i + 2 < n; i += 3) {
    unsigned v = (unsigned char)s[i] << 16 | (unsigned char)s[i + 1] << 8 | (unsigned char)s[i + 2];
    *out++ = b64chars[v >> 18 & 63]; *out++ = b64chars[v >> 12 & 63];
    *out++ = b64chars[v >> 6 & 63];  *out++ = b64chars[v & 63];
  }
  if (i < n) {
    unsigned v = (unsigned char)s[i] << 16 | (i + 1 < n ? (unsigned char)s[i + 1] << 8 : 0);
    *out++ = b64chars[v >> 18 & 63]; *out++ = b64chars[v >> 12 & 63];
    *out++ = i + 1 < n ? b64chars[v >> 6 & 63] : '=';
    *out++ = '=';
  }
  *out = '\0';
}

/* POST json to endpoint/path; the reply in body. */
static void post(CURL *e, const char *endpoint, const char *path, const char *json) {
  char url[512];
  snprintf(url, sizeof url, "%s%s", endpoint, path);
  body_len = 0;
  body[0] = '\0';
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, json);
  if (curl_easy_perform(e) != CURLE_OK) {
    fprintf(stderr, "bench_lease_floor: %s failed\n", path);
    exit(1);
  }
}

/* the string value of "field":"..." in body */
static void field(const char *name, char *out, size_t size) {
  char pattern[64];
  const char *p, *end;
  snprintf(pattern, sizeof pattern, "\"%s\":\"", name);
  if ((p = strstr(body, pattern)) == NULL || (end = strchr(p += strlen(pattern), '"')) == NULL) {
    fprintf(stderr, "bench_lease_floor: no %s in %s\n", name, body);
    exit(1);
  }
  snprintf(out, size, "%.*s", (int)(end - p), p);
}

int main(int argc, char **argv) {
  const char *endpoint;
  char name[256], from[256], to[256], json[2048], id[32], key[512];
  long i, n;
  CURL *e;
  struct curl_slist *headers;
  if (argc != 4) {
    fprintf(stderr, "usage: bench_lease_floor ENDPOINT NAME N\n");
    return 2;
  }
  endpoint = argv[1];
  n = atol(argv[3]);
  snprintf(json, sizeof json, "luaguard/lock/%s", argv[2]);
  b64(json, name);
  snprintf(json, sizeof json, "luaguard/lock/%s/", argv[2]);
  b64(json, from);
  snprintf(json, sizeof json, "luaguard/lock/%s0", argv[2]);
  b64(json, to);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  e = curl_easy_init();
  headers = curl_slist_append(NULL, "Content-Type: application/json");
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  for (i = 0; i < n; i++) {
    post(e, endpoint, "/v3/lease/grant", "{\"TTL\":\"15\"}");
    field("ID", id, sizeof id);
    snprintf(json, sizeof json, "{\"key\":\"%s\",\"range_end\":\"%s\",\"sort_order\":\"ASCEND\","
             "\"sort_target\":\"CREATE\",\"limit\":\"1\"}", from, to);
    post(e, endpoint, "/v3/kv/range", json);
    snprintf(json, sizeof json, "{\"name\":\"%s\",\"lease\":\"%s\"}", name, id);
    post(e, endpoint, "/v3/lock/lock", json);
    field("key", key, sizeof key);
    snprintf(json, sizeof json, "{\"key\":\"%s\",\"serializable\":true}", key);
    post(e, endpoint, "/v3/kv/range", json);
    snprintf(json, sizeof json, "{\"key\":\"%s\"}", key);
    post(e, endpoint, "/v3/kv/deleterange", json);
    snprintf(json, sizeof json, "{\"ID\":\"%s\"}", id);
    post(e, endpoint, "/v3/lease/revoke", json);
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(e);
  curl_global_cleanup();
  return 0;
}

/*
** lg_lock_win32.c — the Windows lock mechanism, certbot's
** _WindowsLockMechanism behind lg_lock.h: open read-write (creating it),
** lock the first byte without waiting — a held lock is EWOULDBLOCK — then
** truncate; release = unlock, close, then remove the file, where a failure to
** remove is only reported (-1/errno: the binding logs it). The file is opened
** sharing read and write but not delete, as Python's os.open does for
** certbot: a second process opens it and is refused by the lock, and cannot
** remove it while it is held. Windows has no signals of ours: 'interrupted'
** is still polled while waiting. A second lock in the same process is refused
** too (byte-range locks belong to the handle). Cross-built with mingw-w64 and
** tested under wine: scripts/build --windows, tests/c/test_lock_win32.c.
*/
#ifdef _WIN32

#include "lg_lock.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#define WAIT_FIRST_MS 1
#define WAIT_MAX_MS 4

void lg_lock_init(lg_lock *lk) {
  memset(lk, 0, sizeof *lk);
  lk->fd = -1;
  lk->dirfd = -1;
}

int lg_lock_is_held(const lg_lock *lk) {
  return lk->os_handle != NULL;
}

static int errno_of(DWORD error) {
  switch (error) {
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
    case ERROR_INVALID_DRIVE: return ENOENT;
    case ERROR_ACCESS_DENIED: return EACCES;
    case ERROR_SHARING_VIOLATION:
    case ERROR_LOCK_VIOLATION: return EWOULDBLOCK;
    case ERROR_FILENAME_EXCED_RANGE: return ENAMETOOLONG;
    case ERROR_DIRECTORY: return ENOTDIR;
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY: return ENOMEM;
    default: return EIO;
  }
}

/* UTF-8 path to a malloc'd wide string, or NULL with errno. */
static wchar_t *wide_path(const char *path) {
  int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, NULL, 0);
  wchar_t *w;
  if (n <= 0) { errno = EINVAL; return NULL; }
  w = malloc((size_t)n * sizeof *w);
  if (w == NULL) { errno = ENOMEM; return NULL; }
  MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, w, n);
  return w;
}

/* One attempt: 0 held, 1 held elsewhere, -1 error (errno). */
static int try_once(lg_lock *lk, const wchar_t *wpath) {
  OVERLAPPED first_byte;
  HANDLE h = CreateFileW(wpath, GENERIC_READ | GENERIC_WRITE,
                         FILE_SHARE_READ | FILE_SHARE_WRITE,
                         NULL, OPEN_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
  if (h == INVALID_HANDLE_VALUE) {
    DWORD error = GetLastError();
    if (error == ERROR_SHARING_VIOLATION || error == ERROR_LOCK_VIOLATION) return 1;
    errno = errno_of(error);
    return -1;
  }
  memset(&first_byte, 0, sizeof first_byte);
  if (!LockFileEx(h, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0,
                  &first_byte)) {
    DWORD error = GetLastError();
    CloseHandle(h);
    if (error == ERROR_LOCK_VIOLATION || error == ERROR_IO_PENDING) return 1;
    errno = errno_of(error);
    return -1;
  }
  SetEndOfFile(h);          /* certbot opens with O_TRUNC */
  lk->os_handle = h;
  lk->owner = (pid_t)GetCurrentProcessId();
  return 0;
}

/* Polls: Windows has no blocking wait with a deadline on LockFileEx that a
** signal can cut short. */
int lg_lock_acquire_wait(lg_lock *lk, const char *path, const lg_lock_wait *w,
                         lg_lock_failure *failure) {
  static const lg_lock_wait no_wait;
  lg_lock_failure unused;
  wchar_t *wpath;
  ULONGLONG start;
  DWORD nap = WAIT_FIRST_MS;
  int outcome, notified;
  if (w == NULL) w = &no_wait;
  if (failure == NULL) failure = &unused;
  memset(failure, 0, sizeof *failure);
  if (lg_lock_is_held(lk)) return 0;
  if (isnan(w->timeout) || w->timeout < 0) { errno = EINVAL; return -1; }
  notified = w->waiting == NULL || !(w->notify_after > 0);
  if ((wpath = wide_path(path)) == NULL) return -1;
  start = GetTickCount64();
  for (;;) {
    outcome = try_once(lk, wpath);
    if (outcome <= 0) break;
    failure->waited = (double)(GetTickCount64() - start) / 1000.0;
    if (failure->waited >= w->timeout) { errno = EWOULDBLOCK; outcome = -1; break; }
    if (w->interrupted != NULL && w->interrupted(w->ud)) { errno = EINTR; outcome = -1; break; }
    if (!notified && failure->waited >= w->notify_after) {
      notified = 1;
      if (w->waiting(w->ud, 0, failure->waited)) { errno = ECANCELED; outcome = -1; break; }
    }
    Sleep(nap);
    if (nap < WAIT_MAX_MS) nap *= 2;
  }
  {
    int err = errno;
    free(wpath);
    errno = err;
  }
  return outcome == 0 ? 0 : -1;
}

int lg_lock_release(lg_lock *lk, const char *path) {
  OVERLAPPED first_byte;
  wchar_t *wpath;
  int rc = 0;
  if (lk->os_handle == NULL) return 0;
  memset(&first_byte, 0, sizeof first_byte);
  UnlockFileEx((HANDLE)lk->os_handle, 0, 1, 0, &first_byte);
  CloseHandle((HANDLE)lk->os_handle);
  lk->os_handle = NULL;
  /* Removing may fail: another process may be taking the lock right now. */
  if ((wpath = wide_path(path)) == NULL) return -1;
  if (!DeleteFileW(wpath)) {
    errno = errno_of(GetLastError());
    rc = -1;
  }
  free(wpath);
  return rc;
}

#endif /* _WIN32 */

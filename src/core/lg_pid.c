/*
** lg_pid.c — the cached pid (see lg_pid.h).
**
** fork() from any Lua binding goes through libc's fork, which runs the atfork
** child handler: the cache is right in the child before any code of ours runs
** there. A raw clone() without libc would not refresh it; nothing we support
** does that.
*/
#include "lg_pid.h"

#include <pthread.h>
#include <unistd.h>

static pid_t cached_pid;
static void (*fork_hook)(void);
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void refresh(void) {
  cached_pid = getpid();
  if (fork_hook != NULL) fork_hook();
}

static void register_atfork(void) { pthread_atfork(NULL, NULL, refresh); }

pid_t lg_pid(void) {
  pthread_once(&atfork_once, register_atfork);
  if (cached_pid == 0) cached_pid = getpid();
  return cached_pid;
}

void lg_pid_on_fork(void (*hook)(void)) {
  lg_pid();
  fork_hook = hook;
}

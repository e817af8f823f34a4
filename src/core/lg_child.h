/*
** lg_child.h — child processes that never outlive what started them. Pure C,
** no Lua. A child runs without a shell (posix_spawnp), in a process group of
** its own, with an empty signal mask, the dispositions from before luaguard
** (a caught signal is reset by exec; an ignored one stays ignored) and only
** descriptors 0, 1 and 2. Waiting uses a pidfd (pidfd_open) and poll, never a
** SIGCHLD handler, and reaps only its own children: os.execute and io.popen
** keep their statuses.
*/
#ifndef LG_CHILD_H
#define LG_CHILD_H

#include <sys/types.h>

/* What a standard stream of the child is. */
enum {
  LG_STREAM_INHERIT,          /* luaguard's own */
  LG_STREAM_NULL,             /* /dev/null */
  LG_STREAM_PIPE,             /* a pipe to us: fed (stdin) or captured */
  LG_STREAM_STDOUT            /* stderr only: the same as stdout */
};

typedef struct lg_spawn_options {
  const char *cwd;            /* NULL: ours */
  char *const *envp;          /* NULL: ours */
  int stream[3];              /* LG_STREAM_* for 0, 1, 2 */
  int terminal;               /* our process group (the terminal's signals reach it) */
} lg_spawn_options;

typedef struct lg_child {
  pid_t pid;                  /* 0: not started */
  pid_t owner;                /* the process that started it: a forked copy
                              ** of us never signals or reaps it */
  int pidfd;                  /* -1 without pidfd_open (then waits poll) */
  int pipe[3];                /* our ends, -1 when none or closed */
  int own_group;              /* its group is its pid (else it shares ours) */
  int from_cleanup;           /* started while cleanups ran: never signalled */
  int reaped;
  int status;                 /* the wait status, once reaped */
  int signalled;              /* a stop was forwarded to it (once) */
  int linked;                 /* in the process's list (until forgotten) */
  int cwd_failed;             /* a failed spawn's errno is about opts' cwd */
  double grace;               /* seconds between a stop's signal and SIGKILL */
  const void *context;        /* its owner (a Lua state); lg_children_stop's key */
  struct lg_child *next, *prev;   /* the process's live children */
} lg_child;

/* Start argv[0] (PATH searched as execvp does) with argv. 0, or -1 with errno
** (ENOENT, EACCES ...: the exec failed, nothing is left, no zombie; with
** c->cwd_failed set when o->cwd is what could not be entered). The child is
** linked in the process's list until lg_child_forget. */
int lg_child_spawn(lg_child *c, char *const argv[], const lg_spawn_options *o);

/* Reap c if it has exited: 1 when reaped (now or before), 0 when it runs. */
int lg_child_try_reap(lg_child *c);

/* Send sig to c's group (or to c alone when it shares ours). 0, or -1. */
int lg_child_signal(lg_child *c, int sig);

/* Whether any process of c's group still runs (its leader reaped or not). */
int lg_child_group_alive(const lg_child *c);

/*
** Stop c: sig to its group, up to c->grace seconds for the group to go,
** SIGKILL to what is left, reap. Signals arriving meanwhile do not cut the
** grace short. Returns when c is reaped.
*/
void lg_child_stop(lg_child *c, int sig);

/*
** Stop every live child of 'context' that was not started by a cleanup and
** not signalled yet: sig once to each group, newest first, one grace for all
** (the longest of theirs), SIGKILL to the groups that remain, reap. NULL
** context: every child of the process. Returns how many were stopped.
*/
int lg_children_stop(const void *context, int sig);

/* Close our pipe ends and unlink c (after it was reaped, or to give it up:
** then it counts as reaped; its pid and status stay readable). */
void lg_child_forget(lg_child *c);

#endif

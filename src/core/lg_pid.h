/*
** lg_pid.h — this process's pid, cached: arming a frame and checking a lock's
** owner must cost no system call. Pure C, no Lua.
*/
#ifndef LG_PID_H
#define LG_PID_H

#include <sys/types.h>

/* getpid(), cached; refreshed in a forked child (pthread_atfork), so an
** owner check made with it tells a forked child from the process it copies. */
pid_t lg_pid(void);

/* Called in a forked child after the cache is refreshed (one hook: the
** signal core's, which drops the parent's timer state). */
void lg_pid_on_fork(void (*hook)(void));

#endif

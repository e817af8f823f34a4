/*
** lg_binding.h — shared between the binding's files (not installed).
*/
#ifndef LG_BINDING_H
#define LG_BINDING_H

#include <lua.h>

#include "lg_lock.h"

#define LG_ERROR_MT "luaguard.Error"
#define LG_LOCKFILE_MT "luaguard.LockFile"
#define LG_HANDLER_MT "luaguard.Handler"

/* Nonzero when LUAGUARD_DEBUG is set to something other than "" or "0". */
int lg_debug_enabled(void);
/* Writes "luaguard: <text>\n" on stderr. */
void lg_log(const char *fmt, ...);

/* Pushes a new error object {kind = kind, message = message} whose
** __tostring gives the message. Stack: [-0, +1, m] */
void lg_push_error(lua_State *L, const char *kind, const char *message);

/* Pushes an OSError for errno 'err' on 'path' and raises it. */
int lg_raise_os_error(lua_State *L, int err, const char *path, const char *reason);

/* Registers the types' metatables; pushes nothing. */
void lg_open_lockfile(lua_State *L);
void lg_open_handler(lua_State *L);

/* The Lua state L belongs to (its main thread), as an identity. */
const void *lg_state_of(lua_State *L);
/* At lua_close, after every other finalizer: close what was made too late to
** be finalized (lg_module.c's sentinel calls these). */
void lg_sweep_handlers(const void *state);
void lg_sweep_locks(const void *state);

/* Module functions. */
int lg_lock_dir(lua_State *L);
int lg_lockfile_new(lua_State *L);
int lg_error_handler_new(lua_State *L);
int lg_exit_handler_new(lua_State *L);

/* If a handled signal is pending for a guard armed on L, raise its SignalExit
** now (as the hook would at the next instruction); otherwise return 0. */
int lg_raise_pending_signal(lua_State *L);
/* Nonzero when a wait started at 'since' (lg_signal_arrivals) should stop. */
int lg_signal_wait_interrupted(unsigned long since);

#endif

/*
** lg_common.h — helpers every binding file uses: the debug log, error
** objects, metatable names. Implemented in lg_common.c, which uses nothing
** else of the binding (so the binding's files import each other in no circle:
** common <- guard <- handler, lockfile <- module).
*/
#ifndef LG_COMMON_H
#define LG_COMMON_H

#include <lauxlib.h>
#include <lua.h>

#define LG_ERROR_MT "luaguard.Error"
#define LG_LOCKFILE_MT "luaguard.LockFile"
#define LG_HANDLER_MT "luaguard.Handler"

/* Nonzero when LUAGUARD_DEBUG is set to something other than "" or "0". */
int lg_debug_enabled(void);
/* Writes "luaguard: <text>\n" on stderr. */
void lg_log(const char *fmt, ...);

/* Registers the error metatable. Stack: [-0, +0, m] */
void lg_open_errors(lua_State *L);
/* Pushes a new error object {kind = kind, message = message} whose
** __tostring gives the message. Stack: [-0, +1, m] */
void lg_push_error(lua_State *L, const char *kind, const char *message);
/* Pushes an OSError for errno 'err' on 'path' and raises it. */
int lg_raise_os_error(lua_State *L, int err, const char *path, const char *reason);

/* Registers a userdata type, once per state: the metatable 'name' with
** __index (a table of 'methods'), __tostring, and one idempotent close
** function as both __close and __gc (liolib's shape). Stack: [-0, +0, m] */
void lg_open_type(lua_State *L, const char *name, lua_CFunction close,
                  lua_CFunction tostring, const luaL_Reg *methods);

/* The Lua state L belongs to (its main thread), as an identity. */
lua_State *lg_main_thread(lua_State *L);

#endif

/*
** lg_lockfile.h — the LockFile type's entry points, for the module's opener.
*/
#ifndef LG_LOCKFILE_H
#define LG_LOCKFILE_H

#include <lua.h>

/* Registers the LockFile metatable. Stack: [-0, +0, m] */
void lg_open_lockfile(lua_State *L);
/* lock.dir(dir [, opts]) and lock.LockFile(path [, opts]): a held LockFile. */
int lg_lock_dir(lua_State *L);
int lg_lockfile_new(lua_State *L);
/* At lua_close, last: release what was taken too late to be finalized. */
void lg_sweep_locks(lua_State *L);

#endif

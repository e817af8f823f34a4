/*
** lg_process.h — proc.run, proc.spawn and the Process type (lg_process.c).
*/
#ifndef LG_PROCESS_H
#define LG_PROCESS_H

#include <lua.h>

#define LG_PROCESS_MT "luaguard.Process"

/* Registers the Process type and pushes the proc table. Stack: [-0, +1, m] */
void lg_open_process(lua_State *L);

#endif

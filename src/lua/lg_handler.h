/*
** lg_handler.h — the Handler type's entry points, for the module's opener.
*/
#ifndef LG_HANDLER_H
#define LG_HANDLER_H

#include <lua.h>

/* Registers the Handler metatable and what its guards need. Stack: [-0, +0, m] */
void lg_open_handler(lua_State *L);
/* ErrorHandler([fn, ...]) and ExitHandler([fn, ...]): an armed handler. */
int lg_error_handler_new(lua_State *L);
int lg_exit_handler_new(lua_State *L);

#endif

/*
** luaguard.h — the public C API of luaguard.
**
** luaguard gives Lua 5.4 directory locks (lock.dir, LockFile) and cleanup
** guards (ErrorHandler, ExitHandler) whose cleanups run last-registered-first
** on error or on a termination signal, with signals deferred while they run,
** and child processes (proc.run, proc.spawn) stopped before any cleanup runs.
**
**   #include <luaguard.h>
**   luaL_openlibs(L);
**   luaL_requiref(L, "luaguard", luaopen_luaguard, 1);  // global 'luaguard'
**   lua_pop(L, 1);
**
** Link with -lluaguard (pkg-config luaguard). The Lua layer is compiled into
** the library: no file on disk is needed. The library needs Lua's base and
** package libraries open (luaL_openlibs does both).
**
** Signals: while a handler is armed, luaguard owns the dispositions of SIGTERM,
** SIGINT, SIGHUP, SIGQUIT, SIGXCPU and SIGXFSZ (those not SIG_IGN at arming);
** when the last handler closes it restores exactly what was there and
** re-delivers what it received. Handlers may be closed in any order and
** live in several Lua states; each state is run by one thread at a time.
**
** Allocator: the first use of luaguard in a state wraps the state's
** allocator (lua_setallocf) to know its coroutines, so that a signal also
** stops a coroutine running inside a guarded block; the wrapper calls the
** allocator that was there, and the original is put back when the state
** closes. A program that installs its own allocator afterwards keeps
** working; only that coroutine tracking stops.
*/
#ifndef LUAGUARD_H
#define LUAGUARD_H

#include <lua.h>

#define LUAGUARD_VERSION "0.1.0"

#if defined(_WIN32)
#define LUAGUARD_API __declspec(dllexport)
#else
#define LUAGUARD_API __attribute__((visibility("default")))
#endif

/*
** Opens the module 'luaguard': pushes the table {lock = {dir, LockFile},
** ErrorHandler, ExitHandler, proc = {run, spawn}, _VERSION}. Sets no global. Raises on memory
** errors only. Also stores 'luaguard.core' in package.loaded.
** Stack: [-0, +1, m]
*/
LUAGUARD_API int luaopen_luaguard(lua_State *L);

/*
** What the luaguard program does before a script: opens 'luaguard' (into
** package.loaded, so require returns the same objects) and sets the globals
** lock, ErrorHandler, ExitHandler and proc. For hosts that want to be the luaguard
** program's twin; a module never does this. Stack: [-0, +0, m]
*/
LUAGUARD_API void luaguard_open_globals(lua_State *L);

/*
** Opens the C core module 'luaguard.core' (what lua/luaguard/init.lua wraps;
** stock lua5.4 loads it from luaguard/core.so). Stack: [-0, +1, m]
*/
LUAGUARD_API int luaopen_luaguard_core(lua_State *L);

/*
** The outermost frame of a host (what the luaguard program does around a
** script, the way lua.c arms SIGINT around docall):
**
**   luaguard_outer_arm(L);          // before running the script
**   status = docall(...);           // a handled signal stops the script with
**                                   // a SignalExit error; <close> vars close
**   luaguard_outer_defer(L);        // signals from here on are only recorded
**   fflush(NULL); lua_close(L);
**   luaguard_outer_close();         // restore dispositions; re-deliver: with
**                                   // default dispositions the process dies
**                                   // here by that signal (128+N)
**
** luaguard_outer_arm returns 0, or -1 with errno (sigaction failed).
** luaguard_outer_close returns 0 if there was nothing to re-deliver (or every
** re-delivered signal returned), -1 with errno if a disposition could not be
** restored. One outer frame per process.
*/
LUAGUARD_API int luaguard_outer_arm(lua_State *L);
LUAGUARD_API void luaguard_outer_defer(lua_State *L);
LUAGUARD_API int luaguard_outer_close(void);

/*
** For a host that runs chunks one after another (a REPL): call it after each
** chunk and whenever a blocking read was interrupted. If a handled signal
** has reached an armed handler of L's state (its SignalExit may have been
** caught and reported instead of ending the process), every armed handler of
** the state is closed as by that signal, newest first, and the last close
** re-delivers it: with default dispositions the process dies there. Returns
** 1 if it closed handlers (and the process lived on), 0 if nothing was
** pending. Stack: [-0, +0, e]
*/
LUAGUARD_API int luaguard_stop_pending(lua_State *L);

#endif

/*
** luaguard.c — the host: lua.c's twin, with luaguard's globals and an
** outermost guard frame around the script.
**
** Same options, arg table, LUA_INIT handling, messages and exit statuses as
** lua5.4; in addition -h/--help and --version, a luaguard line before -v's,
** and signals: a handled signal stops the script with a SignalExit, its
** pending <close> variables close (locks released, cleanups run), the state
** is closed and stdio flushed, and the process dies by that same signal.
**
** Called as luaguard-lock (a link to it), it runs that command instead: a
** Lua script compiled in (lua/luaguard/lock_command.lua), same state, same
** guard.
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "luaguard.h"

#define PROMPT "> "
#define PROMPT2 ">> "
#define EOF_MARK "<eof>"

extern const unsigned char lg_embedded_lock_command[];
extern const size_t lg_embedded_lock_command_size;

static const char *progname = "luaguard";
static int interactive;           /* in the REPL: SIGINT works as in lua.c */
static lua_State *repl_state;
static volatile sig_atomic_t in_repl_line;   /* a REPL line runs (docall) */


static void print_usage(const char *badoption) {
  FILE *out = badoption != NULL ? stderr : stdout;
  if (badoption != NULL) {
    fprintf(stderr, "%s: ", progname);
    if (badoption[1] == 'e' || badoption[1] == 'l')
      fprintf(stderr, "'%s' needs argument\n", badoption);
    else
      fprintf(stderr, "unrecognized option '%s'\n", badoption);
  }
  fprintf(out,
    "usage: %s [options] [script [args]]\n"
    "Available options are:\n"
    "  -e stat   execute string 'stat'\n"
    "  -i        enter interactive mode after executing 'script'\n"
    "  -l mod    require library 'mod' into global 'mod'\n"
    "  -l g=mod  require library 'mod' into global 'g'\n"
    "  -v        show version information\n"
    "  -E        ignore environment variables\n"
    "  -W        turn warnings on\n"
    "  --        stop handling options\n"
    "  -         stop handling options and execute stdin\n"
    "  -h, --help  show this help and exit\n"
    "  --version   show version information and exit\n",
    progname);
  fflush(out);
}

/* "progname: msg" on stderr (no progname in the REPL, as lua.c). */
static void message(const char *pname, const char *msg) {
  if (pname) fprintf(stderr, "%s: ", pname);
  fprintf(stderr, "%s\n", msg);
  fflush(stderr);
}

/* Report a failed status: the message is on the top of the stack. */
static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    message(progname, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return status;
}

/* lua.c's message handler: a traceback, unless the object has __tostring. */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* In the REPL with no handler armed, Ctrl-C interrupts the line as in lua.c
** (while one is armed SIGINT is luaguard's, and stops the handlers). */
static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

/*
** lua.c's Ctrl-C, for a line. A handler armed by a line saves it as SIGINT's
** disposition from before, and puts it back when it closes, later perhaps:
** then, outside a line, or for the SIGINT luaguard itself delivers again
** after a stop's cleanups (sent by this very process), it is SIGINT's
** default: the process ends by it, as a stop in the REPL must.
*/
static void on_repl_interrupt(int sig, siginfo_t *info, void *context) {
  (void)context;
  signal(sig, SIG_DFL);     /* a second Ctrl-C ends the process */
  if (!in_repl_line || (info->si_code == SI_USER && info->si_pid == getpid())) {
    raise(sig);             /* blocked until we return, then it ends the process */
    return;
  }
  lua_sethook(repl_state, stop_hook,
              LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

static int is_repl_sigint(const struct sigaction *sa) {
  return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == on_repl_interrupt;
}

/* Put lua.c's SIGINT handler in place if SIGINT is at its default; *before
** gets what was there, to be put back by put_back_repl_sigint. 1 if set. */
static int set_repl_sigint(struct sigaction *before) {
  struct sigaction sa;
  if (sigaction(SIGINT, NULL, before) != 0 || before->sa_handler != SIG_DFL ||
      (before->sa_flags & SA_SIGINFO))
    return 0;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_repl_interrupt;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  return 1;
}

/* After the line: unless the line put a disposition of its own in (a handler
** it armed has SIGINT now, and the prompt must leave it so). Only ours is
** replaced: 'before' is SIG_DFL, so SIG_DFL now (a Ctrl-C reset it) stays. */
static void put_back_repl_sigint(const struct sigaction *before) {
  struct sigaction now;
  if (sigaction(SIGINT, NULL, &now) == 0 && is_repl_sigint(&now))
    sigaction(SIGINT, before, NULL);
}

/* Call the function under narg args with the message handler below it. */
static int docall(lua_State *L, int narg, int nres) {
  int status, base = lua_gettop(L) - narg, repl_sigint = 0;
  struct sigaction before;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  if (interactive) {
    repl_state = L;
    repl_sigint = set_repl_sigint(&before);
    in_repl_line = 1;
  }
  status = lua_pcall(L, narg, nres, base);
  in_repl_line = 0;
  if (repl_sigint) put_back_repl_sigint(&before);
  lua_remove(L, base);
  return status;
}

static void print_version(void) {
  printf("luaguard %s\n%s\n", LUAGUARD_VERSION, LUA_COPYRIGHT);
  fflush(stdout);
}

/*
** arg: script name at 0, its arguments at 1.., interpreter and options at
** negative indices.
*/
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
  int i, narg;
  if (script == argc) script = 0;   /* no script: index 0 is the interpreter */
  narg = argc - (script + 1);
  lua_createtable(L, narg, script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

static int dochunk(lua_State *L, int status) {
  if (status == LUA_OK) status = docall(L, 0, 0);
  return report(L, status);
}

static int dofile(lua_State *L, const char *name) {
  return dochunk(L, luaL_loadfile(L, name));
}

static int dostring(lua_State *L, const char *s, const char *name) {
  return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* -l mod, or -l g=mod: global g = require(mod). */
static int dolibrary(lua_State *L, char *globname) {
  int status;
  char *modname = strchr(globname, '=');
  if (modname == NULL) modname = globname;
  else *modname++ = '\0';
  lua_getglobal(L, "require");
  lua_pushstring(L, modname);
  status = docall(L, 1, 1);
  if (status == LUA_OK) lua_setglobal(L, globname);
  return report(L, status);
}

/* Push the script's arguments (arg[1..n]); returns n. */
static int pushargs(lua_State *L) {
  int i, n;
  if (lua_getglobal(L, "arg") != LUA_TTABLE)
    luaL_error(L, "'arg' is not a table");
  n = (int)luaL_len(L, -1);
  luaL_checkstack(L, n + 3, "too many arguments to script");
  for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -i);
  return n;
}

static int handle_script(lua_State *L, char **argv) {
  int status;
  const char *fname = argv[0];
  if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0)
    fname = NULL;           /* stdin */
  status = luaL_loadfile(L, fname);
  if (status == LUA_OK) status = docall(L, pushargs(L), LUA_MULTRET);
  return report(L, status);
}

#define HAS_ERROR 1
#define HAS_I 2
#define HAS_V 4
#define HAS_E 8
#define HAS_BIG_E 16
#define HAS_HELP 32
#define HAS_VERSION 64

/*
** Scan the options; *first gets the index of the script (argc if none) or of
** the bad option.
*/
static int collect_args(char **argv, int *first) {
  int args = 0, i;
  if (argv[0] == NULL) {
    *first = -1;
    return 0;
  }
  for (i = 1; argv[i] != NULL; i++) {
    *first = i;
    if (argv[i][0] != '-') return args;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
      return args | HAS_HELP;
    if (strcmp(argv[i], "--version") == 0) return args | HAS_VERSION;
    switch (argv[i][1]) {
      case '-':
        if (argv[i][2] != '\0') return HAS_ERROR;
        *first = i + 1;
        return args;
      case '\0':
        return args;
      case 'E':
        if (argv[i][2] != '\0') return HAS_ERROR;
        args |= HAS_BIG_E;
        break;
      case 'W':
        if (argv[i][2] != '\0') return HAS_ERROR;
        break;
      case 'i':
        args |= HAS_I;      /* -i implies -v */
        /* FALLTHROUGH */
      case 'v':
        if (argv[i][2] != '\0') return HAS_ERROR;
        args |= HAS_V;
        break;
      case 'e':
        args |= HAS_E;
        /* FALLTHROUGH */
      case 'l':
        if (argv[i][2] == '\0') {
          i++;
          if (argv[i] == NULL || argv[i][0] == '-') return HAS_ERROR;
        }
        break;
      default:
        return HAS_ERROR;
    }
  }
  *first = i;
  return args;
}

/* Run -e, -l and -W in order; 0 on the first failure. */
static int run_args(lua_State *L, char **argv, int n) {
  int i;
  for (i = 1; i < n; i++) {
    int option = argv[i][1];
    switch (option) {
      case 'e':
      case 'l': {
        char *extra = argv[i] + 2;
        int status;
        if (*extra == '\0') extra = argv[++i];
        status = option == 'e' ? dostring(L, extra, "=(command line)")
                               : dolibrary(L, extra);
        if (status != LUA_OK) return 0;
        break;
      }
      case 'W':
        lua_warning(L, "@on", 0);
        break;
    }
  }
  return 1;
}

static int handle_luainit(lua_State *L) {
  const char *name = "=LUA_INIT_5_4";
  const char *init = getenv(name + 1);
  if (init == NULL) {
    name = "=LUA_INIT";
    init = getenv(name + 1);
  }
  if (init == NULL) return LUA_OK;
  if (init[0] == '@') return dofile(L, init + 1);
  return dostring(L, init, name);
}


/* ---- the interactive loop (lua.c's doREPL) ---- */

static const char *get_prompt(lua_State *L, int firstline) {
  if (lua_getglobal(L, firstline ? "_PROMPT" : "_PROMPT2") == LUA_TNIL)
    return firstline ? PROMPT : PROMPT2;   /* the nil stays: the caller pops */
  {
    const char *p = luaL_tolstring(L, -1, NULL);
    lua_remove(L, -2);
    return p;
  }
}

/* A syntax error at <eof>: the statement goes on on the next line. */
static int incomplete(lua_State *L, int status) {
  if (status == LUA_ERRSYNTAX) {
    size_t lmsg, lmark = sizeof(EOF_MARK) - 1;
    const char *msg = lua_tolstring(L, -1, &lmsg);
    if (lmsg >= lmark && strcmp(msg + lmsg - lmark, EOF_MARK) == 0) {
      lua_pop(L, 1);
      return 1;
    }
  }
  return 0;
}

static int pushline(lua_State *L, int firstline) {
  const char *prompt = get_prompt(L, firstline);
  char *line = readline(prompt);
  size_t len;
  if (line == NULL) return 0;
  lua_pop(L, 1);            /* the prompt */
  len = strlen(line);
  if (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
  if (firstline && line[0] == '=')          /* 5.2's '=expr' */
    lua_pushfstring(L, "return %s", line + 1);
  else
    lua_pushlstring(L, line, len);
  free(line);
  return 1;
}

static int addreturn(lua_State *L) {
  const char *line = lua_tostring(L, -1);
  const char *retline = lua_pushfstring(L, "return %s;", line);
  int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
  if (status == LUA_OK) {
    lua_remove(L, -2);
    if (line[0] != '\0') add_history(line);
  }
  else lua_pop(L, 2);
  return status;
}

static int multiline(lua_State *L) {
  for (;;) {
    size_t len;
    const char *line = lua_tolstring(L, 1, &len);
    int status = luaL_loadbuffer(L, line, len, "=stdin");
    if (!incomplete(L, status) || !pushline(L, 0)) {
      add_history(line);
      return status;
    }
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
    lua_concat(L, 3);
  }
}

static int loadline(lua_State *L) {
  int status;
  lua_settop(L, 0);
  if (!pushline(L, 1)) return -1;
  if ((status = addreturn(L)) != LUA_OK) status = multiline(L);
  lua_remove(L, 1);
  return status;
}

static void print_results(lua_State *L) {
  int n = lua_gettop(L);
  if (n > 0) {
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    lua_getglobal(L, "print");
    lua_insert(L, 1);
    if (lua_pcall(L, n, 0, 0) != LUA_OK)
      message(progname, lua_pushfstring(L, "error calling 'print' (%s)",
                                        lua_tostring(L, -1)));
  }
}

static int stop_pending(lua_State *L) {
  luaguard_stop_pending(L);
  return 0;
}

/*
** A handled signal that reached an armed handler (at the prompt, or during a
** line whose SignalExit was just reported) closes the armed handlers as by
** the signal, and the process ends by it. Protected: cleanups run Lua.
*/
static void repl_check_signals(lua_State *L) {
  int top = lua_gettop(L);
  lua_pushcfunction(L, stop_pending);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) report(L, LUA_ERRRUN);
  lua_settop(L, top);
}

/* readline calls this when a read at the prompt was interrupted by a signal
** it does not handle itself (the kick, or ours once readline re-raised it).
** We are inside readline(), with readline's own handlers installed: they
** come off first, or closing the handlers would find readline's SIGTERM
** handler in place, leave it as "the program's", and re-deliver to it. */
static int repl_signal_event(void) {
  rl_clear_signals();
  repl_check_signals(repl_state);
  rl_set_signals();         /* the process lived on: readline's are back */
  return 0;
}

/*
** The REPL is not guarded by the outer frame: with no handler armed, a line
** is interrupted by Ctrl-C the way lua5.4 does it, and the session goes on.
** Handlers armed by -e or by a line stay armed across lines.
*/
static void do_repl(lua_State *L) {
  int status;
  const char *oldprogname = progname;
  luaguard_outer_defer(L);
  luaguard_outer_close();   /* signals recorded so far go on (or are re-delivered) */
  progname = NULL;
  interactive = 1;
  repl_state = L;
  rl_readline_name = "luaguard";
  rl_signal_event_hook = repl_signal_event;
  for (;;) {
    repl_check_signals(L);
    if ((status = loadline(L)) == -1) break;
    if (status == LUA_OK) status = docall(L, 0, LUA_MULTRET);
    if (status == LUA_OK) print_results(L);
    else report(L, status);
  }
  repl_check_signals(L);
  rl_signal_event_hook = NULL;
  interactive = 0;
  lua_settop(L, 0);
  fputs("\n", stdout);
  fflush(stdout);
  progname = oldprogname;
}


/* luaguard-lock: its script (compiled in) with arg[0] the command's name. */
static int lock_command_main(lua_State *L, int argc, char **argv) {
  int status;
  luaL_openlibs(L);
  luaguard_open_globals(L);
  create_arg_table(L, argv, argc, 0);
  status = luaL_loadbufferx(L, (const char *)lg_embedded_lock_command,
                            lg_embedded_lock_command_size, "=luaguard-lock", "t");
  if (status == LUA_OK) status = docall(L, pushargs(L), 0);
  lua_pushboolean(L, report(L, status) == LUA_OK);
  return 1;
}

static int called_as(const char *argv0, const char *name) {
  const char *base = argv0 != NULL ? strrchr(argv0, '/') : NULL;
  return argv0 != NULL && strcmp(base != NULL ? base + 1 : argv0, name) == 0;
}

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  int script;
  int args;
  luaL_checkversion(L);
  if (called_as(argv[0], "luaguard-lock")) return lock_command_main(L, argc, argv);
  args = collect_args(argv, &script);
  if (args & HAS_HELP) {
    print_usage(NULL);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (args & HAS_VERSION) {
    print_version();
    lua_pushboolean(L, 1);
    return 1;
  }
  if (args == HAS_ERROR) {
    print_usage(argv[script]);
    return 0;
  }
  if (args & HAS_V) print_version();
  if (args & HAS_BIG_E) {   /* libraries ignore environment variables */
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  luaL_openlibs(L);
  luaguard_open_globals(L);   /* require "luaguard" gives the same objects */
  create_arg_table(L, argv, argc, script);
  lua_gc(L, LUA_GCGEN, 0, 0);
  if (!(args & HAS_BIG_E) && handle_luainit(L) != LUA_OK) return 0;
  if (!run_args(L, argv, script)) return 0;
  if (script < argc && handle_script(L, argv + script) != LUA_OK) return 0;
  if (args & HAS_I) do_repl(L);
  else if (script == argc && !(args & (HAS_E | HAS_V))) {
    if (isatty(0)) {
      print_version();
      do_repl(L);
    }
    else dofile(L, NULL);   /* stdin as a script */
  }
  lua_pushboolean(L, 1);
  return 1;
}

int main(int argc, char **argv) {
  int status, result;
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    message(argv[0], "cannot create state: not enough memory");
    return EXIT_FAILURE;
  }
  if (argv[0] && argv[0][0]) progname = argv[0];
  if (luaguard_outer_arm(L) != 0) {
    message(progname, strerror(errno));
    lua_close(L);
    return EXIT_FAILURE;
  }
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  status = lua_pcall(L, 2, 1, 0);
  result = lua_toboolean(L, -1);
  report(L, status);
  fflush(NULL);             /* as lua5.4: a closed stdout may end it here */
  /* Signals from here on are only recorded: closing the state closes what
  ** is still open (locks, handlers) uninterrupted; then, if a signal ended
  ** the script, the process dies by it (in lua_close, where the module's
  ** sentinel closes this frame last; the close below is for hosts without
  ** the module). */
  luaguard_outer_defer(L);
  lua_close(L);
  luaguard_outer_close();
  return (result && status == LUA_OK) ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* lmp [options] [script [args]]: the command line of lua5.4, with lmp
 * loaded and its event loop turning. It runs what lua5.4 would run (the
 * same flags, LUA_INIT, the arg table, an interactive prompt), then turns
 * the loop until every pending callback has fired, closes the pools and
 * exits. At the interactive prompt the loop turns while it waits for a
 * line, so callbacks arrive between lines. The runner is a worker
 * executable too. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lmp.h"

#define PROGNAME "lmp"

static const char *progname = PROGNAME;

static void print_usage(FILE *to, const char *badoption) {
  if (badoption != NULL) {
    if (badoption[1] == 'e' || badoption[1] == 'l')
      fprintf(to, "%s: '%s' needs argument\n", progname, badoption);
    else
      fprintf(to, "%s: unrecognized option '%s'\n", progname, badoption);
  }
  fprintf(to,
          "usage: %s [options] [script [args]]\n"
          "Available options are:\n"
          "  -e stat   execute string 'stat'\n"
          "  -i        enter interactive mode after executing 'script'\n"
          "  -l mod    require library 'mod' into global 'mod'\n"
          "  -l g=mod  require library 'mod' into global 'g'\n"
          "  -v        show version information\n"
          "  -E        ignore environment variables\n"
          "  -W        turn warnings on\n"
          "  --help    show this help and exit\n"
          "  --version show the versions of lmp, Lua and libuv and exit\n"
          "  --        stop handling options\n"
          "  -         stop handling options and execute stdin\n"
          "The script runs with lmp loaded; when it returns, %s delivers every\n"
          "pending callback, closes the pools and exits.\n",
          progname, progname);
  fflush(to);
}

/* Prints an error message, prefixed with the program's name outside the
 * interactive prompt (as lua5.4 does). */
static void message(const char *prefix, const char *msg) {
  if (prefix) fprintf(stderr, "%s: ", prefix);
  fprintf(stderr, "%s\n", msg);
  fflush(stderr);
}

static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    message(progname, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return status;
}

/* How an lmp error that nobody caught is shown: its line, the task's own
 * frames from the worker's traceback, and the script's frames that led to
 * the call (map, get ...) that raised it. lmp's own frames, on either
 * side, tell the reader nothing and are left out. */
static const char uncaught_source[] =
    "local err, main_traceback = ...\n"
    "local function internal(line) return line:find('lmp/[%w_]+%.lua:%d') ~= nil end\n"
    "local out = {tostring(err)}\n"
    "local worker = rawget(err, 'traceback')\n"
    "if type(worker) == 'string' then\n"
    "  local frames, started = {}, false\n"
    "  for line in worker:gmatch('[^\\n]+') do\n"
    "    if started then\n"
    "      if internal(line) then break end\n"
    "      frames[#frames + 1] = line\n"
    "    elseif line == 'stack traceback:' then\n"
    "      started = true\n"
    "    end\n"
    "  end\n"
    "  if frames[#frames] == \"\\t[C]: in function 'xpcall'\" then frames[#frames] = nil end\n"
    "  if #frames > 0 then\n"
    "    out[#out + 1] = ('in the worker (process %s):'):format(tostring(rawget(err, 'pid')))\n"
    "    for _, line in ipairs(frames) do out[#out + 1] = line end\n"
    "  end\n"
    "end\n"
    "local lines = {}\n"
    "for line in main_traceback:gmatch('[^\\n]+') do lines[#lines + 1] = line end\n"
    "local dropped = false\n"
    "for i, line in ipairs(lines) do\n"
    "  local raised_by_lmp = line:find('^\\t%[C%]: in function') and lines[i + 1] and internal(lines[i + 1])\n"
    "  local after_lmp = dropped and line == '\\t(...tail calls...)'\n"
    "  dropped = internal(line) or raised_by_lmp or after_lmp\n"
    "  if not dropped then out[#out + 1] = line end\n"
    "end\n"
    "return table.concat(out, '\\n')\n";

static int is_lmp_error(lua_State *L, int idx) {
  int yes;
  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
  lua_getfield(L, -1, "__name");
  yes = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "lmp.Error") == 0;
  lua_pop(L, 2);
  return yes;
}

/* Adds a traceback to a string error; an lmp error is shown with the
 * task's frames too; any other error object with its __tostring, or by
 * its type (as lua5.4 does). */
static int message_handler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL && is_lmp_error(L, 1) &&
      luaL_loadbuffer(L, uncaught_source, sizeof uncaught_source - 1, "=(lmp error)") == LUA_OK) {
    lua_pushvalue(L, 1);
    luaL_traceback(L, L, NULL, 1);
    if (lua_pcall(L, 2, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) return 1;
    lua_pop(L, 1);
  }
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int docall(lua_State *L, int nargs, int nresults) {
  int base = lua_gettop(L) - nargs, status;
  lua_pushcfunction(L, message_handler);
  lua_insert(L, base);
  status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  return status;
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

/* -l mod or -l g=mod: global g (or mod) = require(mod). */
static int dolibrary(lua_State *L, char *spec) {
  int status;
  char *equals = strchr(spec, '=');
  const char *global = spec, *module = spec;
  if (equals != NULL) {
    *equals = '\0';
    module = equals + 1;
  }
  lua_getglobal(L, "require");
  lua_pushstring(L, module);
  status = docall(L, 1, 1);
  if (status == LUA_OK) lua_setglobal(L, global);
  return report(L, status);
}

/* ---- the command line ------------------------------------------------- */

enum { HAS_ERROR = 1, HAS_I = 2, HAS_V = 4, HAS_E = 8, HAS_UPPER_E = 16 };

/* Reads the options up to the script, as lua5.4 does. Returns the flags
 * seen, and in *first the index of the script (argc when there is none). */
static int collect_arguments(char **argv, int *first) {
  int flags = 0, i;
  for (i = 1; argv[i] != NULL; i++) {
    *first = i;
    if (argv[i][0] != '-') return flags; /* the script */
    switch (argv[i][1]) {
      case '-':
        if (argv[i][2] != '\0') return HAS_ERROR; /* --help, --version handled before */
        *first = i + 1; /* the script, if any, comes after -- */
        return flags;
      case '\0': return flags;                   /* "-": standard input */
      case 'E':
        if (argv[i][2] != '\0') return HAS_ERROR;
        flags |= HAS_UPPER_E;
        break;
      case 'W':
        if (argv[i][2] != '\0') return HAS_ERROR;
        break;
      case 'i':
        flags |= HAS_I; /* -i implies -v */
        /* fall through */
      case 'v':
        if (argv[i][2] != '\0') return HAS_ERROR;
        flags |= HAS_V;
        break;
      case 'e':
        flags |= HAS_E;
        /* fall through */
      case 'l':
        if (argv[i][2] == '\0') {
          i++;
          if (argv[i] == NULL || argv[i][0] == '-') return HAS_ERROR;
        }
        break;
      default: return HAS_ERROR;
    }
  }
  *first = i;
  return flags;
}

/* Runs -e, -l and -W in the order given. */
static int run_arguments(lua_State *L, char **argv, int script) {
  int i;
  for (i = 1; i < script; i++) {
    char option = argv[i][1];
    switch (option) {
      case 'e':
      case 'l': {
        char *extra = argv[i] + 2;
        if (*extra == '\0') extra = argv[++i];
        if ((option == 'e' ? dostring(L, extra, "=(command line)") : dolibrary(L, extra)) != LUA_OK)
          return 0;
        break;
      }
      case 'W': lua_warning(L, "@on", 0); break;
    }
  }
  return 1;
}

/* LUA_INIT_5_4, else LUA_INIT: a chunk to run first, or @file. */
static int run_init(lua_State *L) {
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

/* arg: the script at 0, its arguments after, the runner and options before. */
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
  int i;
  if (script == argc) script = 0; /* no script: arg[0] is the runner */
  lua_createtable(L, argc - script - 1, script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

static int run_script(lua_State *L, char **argv) {
  int status, n, i;
  const char *name = argv[0];
  if (strcmp(name, "-") == 0 && strcmp(argv[-1], "--") != 0) name = NULL; /* stdin */
  status = luaL_loadfile(L, name);
  if (status == LUA_OK) {
    lua_getglobal(L, "arg");
    n = (int)luaL_len(L, -1);
    luaL_checkstack(L, n + 3, "too many arguments to script");
    for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
    lua_remove(L, -i);
    status = docall(L, n, LUA_MULTRET);
  }
  return report(L, status);
}

/* ---- the interactive prompt -------------------------------------------- */

/* Written in Lua: it reads lines as lua5.4's prompt does (an expression is
 * printed, an incomplete statement asks for more), and waits for each line
 * with lmp's loop turning. Errors are shown without the program's name. */
static const char repl_source[] =
    "local wait_for_input = ...\n"
    "local function prompt(first)\n"
    "  local p = _G[first and '_PROMPT' or '_PROMPT2']\n"
    "  if p == nil then p = first and '> ' or '>> ' end\n"
    "  io.stdout:write(tostring(p)); io.stdout:flush()\n"
    "  wait_for_input()\n"
    "  return io.stdin:read('L')\n"
    "end\n"
    "local function handler(e)\n"
    "  if type(e) ~= 'string' then\n"
    "    local mt = getmetatable(e)\n"
    "    if mt and mt.__tostring then local ok, s = pcall(tostring, e); if ok then return s end end\n"
    "    return ('(error object is a %s value)'):format(type(e))\n"
    "  end\n"
    "  local tb = debug.traceback(e, 2)\n"
    "  local cut = tb:find('\\n\\t%[C%]: in function \\'xpcall\\'')\n"
    "  return cut and tb:sub(1, cut) .. '\\t[C]: in ?' or tb\n"
    "end\n"
    "local function incomplete(err) return err:sub(-5) == '<eof>' end\n"
    "while true do\n"
    "  local line = prompt(true)\n"
    "  if line == nil then break end\n"
    "  line = line:gsub('\\n$', '')\n"
    "  if line:sub(1, 1) == '=' then line = 'return ' .. line:sub(2) end\n"
    "  local chunk, err = load('return ' .. line, '=stdin')\n"
    "  if not chunk then\n"
    "    chunk, err = load(line, '=stdin')\n"
    "    while not chunk and incomplete(err) do\n"
    "      local more = prompt(false)\n"
    "      if more == nil then break end\n"
    "      line = line .. '\\n' .. more:gsub('\\n$', '')\n"
    "      chunk, err = load(line, '=stdin')\n"
    "    end\n"
    "  end\n"
    "  if chunk then\n"
    "    local results = table.pack(xpcall(chunk, handler))\n"
    "    if results[1] then\n"
    "      if results.n > 1 then\n"
    "        local ok, e = pcall(print, table.unpack(results, 2, results.n))\n"
    "        if not ok then io.stderr:write(\"error calling 'print' (\", tostring(e), ')\\n') end\n"
    "      end\n"
    "    else\n"
    "      io.stderr:write(tostring(results[2]), '\\n'); io.stderr:flush()\n"
    "    end\n"
    "  else\n"
    "    io.stderr:write(err, '\\n'); io.stderr:flush()\n"
    "  end\n"
    "end\n"
    "io.stdout:write('\\n'); io.stdout:flush()\n";

static uv_poll_t stdin_watch;
static int stdin_watched, stdin_readable;

static void on_stdin(uv_poll_t *handle, int status, int events) {
  (void)status;
  (void)events;
  stdin_readable = 1;
  uv_poll_stop(handle);
}

static int stdin_is_readable(lua_State *L) {
  lua_pushboolean(L, stdin_readable);
  return 1;
}

/* Waits until standard input has a line to read, turning lmp's loop
 * meanwhile (lmp's blocking wait), so that callbacks and coroutines run at
 * the prompt. Before lmp has a loop, or when standard input cannot be
 * watched (a regular file), the read just blocks. */
static int wait_for_input(lua_State *L) {
  uv_loop_t *loop = lmp_get_loop(L);
  if (loop == NULL) return 0;
  if (!stdin_watched) {
    if (uv_poll_init(loop, &stdin_watch, STDIN_FILENO) != 0) return 0;
    stdin_watched = 1;
  }
  stdin_readable = 0;
  if (uv_poll_start(&stdin_watch, UV_READABLE | UV_DISCONNECT, on_stdin) != 0) return 0;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp.loop");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "wait");
  lua_pushcfunction(L, stdin_is_readable);
  lua_call(L, 1, 0);
  return 0;
}

static void do_repl(lua_State *L) {
  const char *saved = progname;
  progname = NULL;
  /* Lines are waited for on the descriptor: none may sit unread in stdio's
   * buffer meanwhile. */
  setvbuf(stdin, NULL, _IONBF, 0);
  if (luaL_loadbuffer(L, repl_source, sizeof repl_source - 1, "=(lmp prompt)") == LUA_OK) {
    lua_pushcfunction(L, wait_for_input);
    report(L, docall(L, 1, 0));
  } else {
    report(L, LUA_ERRSYNTAX);
  }
  progname = saved;
}

static void print_version(void) {
  printf("%s\n", LUA_COPYRIGHT);
  fflush(stdout);
}

static void print_versions(void) {
  printf("lmp %s, %s, libuv %s\n", LMP_VERSION, LUA_RELEASE, uv_version_string());
  fflush(stdout);
}

/* Turns the loop until every pending callback has fired, then closes the
 * pools: what the runner adds to lua5.4. */
static int finish(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "_finish");
  lua_call(L, 0, 0);
  return 0;
}

/* Everything runs in protected mode, as in lua5.4: returns true on success. */
static int protected_main(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  int script = argc, flags;
  char self[PATH_MAX];
  ssize_t n;
  flags = collect_arguments(argv, &script);
  if (flags & HAS_ERROR) {
    print_usage(stderr, argv[script]);
    return 0;
  }
  if (flags & HAS_V) print_version();
  if (flags & HAS_UPPER_E) { /* package ignores LUA_PATH and LUA_CPATH */
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  luaL_openlibs(L);
  n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    lmp_set_worker_executable(L, self);
  }
  luaL_requiref(L, "lmp", luaopen_lmp, 0);
  lua_pop(L, 1);
  create_arg_table(L, argv, argc, script);
  /* Under mpiexec every rank but 0 serves as a pool worker and runs no
   * script (lmp.mpi). */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp.mpi");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "enter");
  lua_call(L, 0, 1);
  if (lua_toboolean(L, -1)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pop(L, 2);
  lua_gc(L, LUA_GCRESTART);
  lua_gc(L, LUA_GCGEN, 0, 0);
  if (!(flags & HAS_UPPER_E) && run_init(L) != LUA_OK) return 0;
  if (!run_arguments(L, argv, script)) return 0;
  if (script < argc && run_script(L, argv + script) != LUA_OK) return 0;
  if (flags & HAS_I) {
    do_repl(L);
  } else if (script == argc && !(flags & (HAS_E | HAS_V))) {
    if (isatty(STDIN_FILENO)) {
      print_version();
      do_repl(L);
    } else if (dofile(L, NULL) != LUA_OK) {
      return 0;
    }
  }
  if (stdin_watched) {
    uv_close((uv_handle_t *)&stdin_watch, NULL);
    stdin_watched = 0;
  }
  lua_pushcfunction(L, finish);
  if (report(L, docall(L, 0, 0)) != LUA_OK) return 0;
  lua_pushboolean(L, 1);
  return 1;
}

int main(int argc, char **argv) {
  lua_State *L;
  int status, ok;
  status = lmp_worker_main(argc, argv, NULL, NULL);
  if (status >= 0) return status;
  if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
    print_usage(stdout, NULL);
    return EXIT_SUCCESS;
  }
  if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
    print_versions();
    return EXIT_SUCCESS;
  }
  L = luaL_newstate();
  if (L == NULL) {
    message(progname, "cannot create state: not enough memory");
    return EXIT_FAILURE;
  }
  lmp_use_huge_pages(L);
  lua_pushcfunction(L, protected_main);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  status = lua_pcall(L, 2, 1, 0);
  ok = lua_toboolean(L, -1);
  report(L, status);
  lua_close(L);
  return (ok && status == LUA_OK) ? EXIT_SUCCESS : EXIT_FAILURE;
}

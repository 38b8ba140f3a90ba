/* The terminal a progress bar draws on: its size, read at every redraw so
 * that the bar follows a resize, and the scroll region that keeps the bar
 * on the bottom line while everything else written to the terminal (the
 * script's output and its workers', who share it) scrolls above it. The
 * region must never outlive the bar: however the process ends (a return,
 * os.exit, Ctrl-C, an error), an exit handler gives the terminal back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "transport.h"

/* The descriptor whose terminal has a region set, or -1, and the process
 * that set it: a forked worker inherits both, and must not reset the
 * region of its parent's bar when it exits. */
static int region_fd = -1;
static pid_t region_owner;
static int exit_handler_installed;

/* Save the cursor, reset the region (which homes the cursor), restore it. */
static const char reset_region[] = "\0337\033[r\0338";

static void give_back_terminal(void) {
  if (region_fd < 0 || region_owner != getpid()) return;
  if (write(region_fd, reset_region, sizeof reset_region - 1) < 0) {
    /* Nothing more can be done for a terminal that is gone. */
  }
  region_fd = -1;
}

/* core.terminal_size(fd) -> columns, rows; nil when fd is no terminal. */
static int core_terminal_size(lua_State *L) {
  struct winsize size;
  int fd = (int)luaL_checkinteger(L, 1);
  if (ioctl(fd, TIOCGWINSZ, &size) != 0 || size.ws_col == 0 || size.ws_row == 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, size.ws_col);
  lua_pushinteger(L, size.ws_row);
  return 2;
}

/* core.terminal_region(fd, rows): keeps rows 1 .. rows - 1 scrolling and
 * the bottom row for the bar; core.terminal_region(fd, nil) gives the
 * whole terminal back. The caller has put the cursor inside the region. */
static int core_terminal_region(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  char sequence[32];
  int n;
  if (lua_isnoneornil(L, 2)) {
    if (region_fd == fd) give_back_terminal();
    return 0;
  }
  n = (int)luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 2 && n <= 10000, 2, "rows out of range");
  if (!exit_handler_installed) {
    if (atexit(give_back_terminal) != 0) return luaL_error(L, "lmp: cannot register an exit handler");
    exit_handler_installed = 1;
  }
  n = snprintf(sequence, sizeof sequence, "\0337\033[1;%dr\0338", n - 1);
  if (write(fd, sequence, (size_t)n) != n) {
    lua_pushboolean(L, 0);
    return 1;
  }
  region_fd = fd;
  region_owner = getpid();
  lua_pushboolean(L, 1);
  return 1;
}

static int core_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

static const luaL_Reg terminal_functions[] = {
    {"isatty", core_isatty},
    {"terminal_size", core_terminal_size},
    {"terminal_region", core_terminal_region},
    {NULL, NULL}};

void lmp__open_terminal(lua_State *L) {
  luaL_setfuncs(L, terminal_functions, 0);
}

# lmp: build, test, install. See README.md.
PKG_CONFIG ?= pkg-config
LUA_PKG ?= lua5.4
LUA ?= lua5.4
CC ?= cc
PREFIX ?= /usr/local
DESTDIR ?=
BUILD ?= build
# `make` alone builds everything, whatever rule comes first below.
.DEFAULT_GOAL := all

# The flags are asked of pkg-config when a recipe first needs them, not when
# make reads this file: `make setup example` on a new machine installs the
# packages (and pkg-config itself) before anything is compiled. Each is
# computed once, then kept.
lazy = $(eval $(1) := $$(shell $(2)))$($(1))
LUA_CFLAGS = $(call lazy,LUA_CFLAGS,$(PKG_CONFIG) --cflags $(LUA_PKG))
LUA_LIBS = $(call lazy,LUA_LIBS,$(PKG_CONFIG) --libs $(LUA_PKG))
UV_CFLAGS = $(call lazy,UV_CFLAGS,$(PKG_CONFIG) --cflags libuv)
# The runner and the worker carry their own copy of the interpreter, as
# lua5.4 does, when Lua's static library is installed: the interpreter of
# the shared library is compiled as position-independent code, and a
# spawned worker ran the same Lua function 3-9% slower in it than lua5.4 or
# a Lanes lane did (the same instruction count, more cycles). They export
# Lua's API (runtime/main/lua_api.list) to the C modules they load, as
# lua5.4 does. `make LUA_ARCHIVE=` links the shared library instead.
LUA_LIB_NAME = $(firstword $(patsubst -l%,%,$(filter -l%,$(LUA_LIBS))))
LUA_ARCHIVE_PATH = $(call lazy,LUA_ARCHIVE_PATH,$(CC) -print-file-name=lib$(LUA_LIB_NAME).a)
LUA_ARCHIVE = $(filter /%,$(wildcard $(LUA_ARCHIVE_PATH)))
LUA_STATIC_LIBS = -Wl,--dynamic-list=runtime/main/lua_api.list \
                  -Wl,--whole-archive $(LUA_ARCHIVE) -Wl,--no-whole-archive
LUA_PROGRAM_LIBS = $(if $(LUA_ARCHIVE),$(LUA_STATIC_LIBS),$(LUA_LIBS))
UV_LIBS = $(call lazy,UV_LIBS,$(PKG_CONFIG) --libs libuv)

OPTFLAGS ?= -O2 -g
SANFLAGS ?=
# CI (which sets CI=true) turns warnings into errors; users' builds do not
# break on a newer compiler's new warning.
WERROR = $(if $(filter true 1 yes,$(CI)),-Werror)
CFLAGS_ALL = -std=c99 -Wall -Wextra $(WERROR) -fPIC -D_GNU_SOURCE $(OPTFLAGS) $(SANFLAGS) \
             $(LUA_CFLAGS) $(UV_CFLAGS) $(MPI_CFLAGS) $(MPI_DEFINE) -Iruntime -I$(BUILD)/gen $(CFLAGS)
# Symbols are bound when the program is loaded, not at their first call: a
# worker made by fork would otherwise write the first call's binding into
# its copy of the program's table of addresses, a copy-on-write fault per
# page of it, each worker again.
LDFLAGS_ALL = -Wl,-z,now $(SANFLAGS) $(LDFLAGS)

# The runtime: one file per concern, in layers (docs/architecture.md), listed
# bottom up; a file uses only files of its own layer listed before it and
# those of the layers below (tools/layers.sh checks the graph has no cycle).
#   memory and buffers | frames and inbox | the value format | the loop |
#   transports and OS objects | worker and Ctrl-C | the Lua binding and
#   embedding
RUNTIME := memory buffer \
           inbox \
           error names table_peek numbers encode decode descriptors payload cursor \
           loop timer stop_signals \
           close_from sigpipe digest tracker terminal shared futex ring waiter sync feeder fd_passing channel_ring channel process_ring process_send process spawn forkserver relay server_reply server watch listener \
           worker map_numbers interrupt \
           core embed
# `make MPI=1` adds the MPI transport (runtime/mpi.c), compiled with the
# flags of pkg-config's ompi (Open MPI) or mpich; MPI_PKG picks one
# (`make MPI=1 MPI_PKG=mpich`: MPICH even where Open MPI is installed too).
MPI ?=
MPI_PKG ?= $(shell $(PKG_CONFIG) --exists ompi && echo ompi || echo mpich)
ifneq ($(filter 1 yes true,$(MPI)),)
RUNTIME += mpi
MPI_CFLAGS = $(call lazy,MPI_CFLAGS,$(PKG_CONFIG) --cflags $(MPI_PKG))
MPI_LIBS = $(call lazy,MPI_LIBS,$(PKG_CONFIG) --libs $(MPI_PKG))
MPI_DEFINE = -DLMP_MPI
endif
OBJECTS := $(RUNTIME:%=$(BUILD)/obj/%.o) $(BUILD)/obj/lua_sources.o
# core.c opens the MPI transport or not: it is compiled again when MPI=
# changes between two builds in one directory.
MPI_SETTING := $(if $(filter 1 yes true,$(MPI)),1,0)
$(BUILD)/gen/mpi_setting: FORCE | $(BUILD)/obj
	@echo $(MPI_SETTING) | cmp -s - $@ || echo $(MPI_SETTING) > $@
$(BUILD)/obj/core.o: $(BUILD)/gen/mpi_setting
FORCE:
LUA_MODULES := $(wildcard lua/lmp/*.lua)

all: $(BUILD)/lmp/core.so $(BUILD)/liblmp.a $(BUILD)/bin/lmp $(BUILD)/bin/lmp-worker

# Each object records the headers it includes (-MMD), so a changed header
# rebuilds exactly what uses it.
$(BUILD)/obj/%.o: runtime/%.c | $(BUILD)/obj
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

-include $(RUNTIME:%=$(BUILD)/obj/%.d)

# A number array costs a few Lua API calls a value, each into the
# interpreter that loaded lmp: calling through the GOT instead of the PLT
# saves a jump on every one (about a tenth of dumps of a million numbers).
$(BUILD)/obj/numbers.o: CFLAGS_ALL += -fno-plt

# The Lua half is compiled into the library too, so that workers, the
# runner and embedding hosts never depend on package.path to find it.
$(BUILD)/gen/lua_sources.c: $(LUA_MODULES) tools/embed_lua.lua | $(BUILD)/obj
	$(LUA) tools/embed_lua.lua $@ $(LUA_MODULES)

$(BUILD)/obj/lua_sources.o: $(BUILD)/gen/lua_sources.c
	$(CC) $(CFLAGS_ALL) -c $< -o $@

# When setup is asked for in the same run, it comes before any compiling,
# even under make -j.
$(BUILD)/obj: | $(filter setup,$(MAKECMDGOALS))
	mkdir -p $(BUILD)/obj $(BUILD)/gen $(BUILD)/lmp $(BUILD)/bin

# The Lua module links libuv but takes Lua's symbols from the interpreter.
$(BUILD)/lmp/core.so: $(OBJECTS)
	$(CC) -shared $(LDFLAGS_ALL) -o $@ $(OBJECTS) $(UV_LIBS) $(MPI_LIBS)

$(BUILD)/liblmp.a: $(OBJECTS)
	rm -f $@ && ar rcs $@ $(OBJECTS)

$(BUILD)/bin/lmp: runtime/main/lmp.c $(BUILD)/liblmp.a runtime/main/lua_api.list
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(BUILD)/liblmp.a $(LUA_PROGRAM_LIBS) $(UV_LIBS) $(MPI_LIBS) -lm -ldl

$(BUILD)/bin/lmp-worker: runtime/main/lmp_worker.c $(BUILD)/liblmp.a runtime/main/lua_api.list
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(BUILD)/liblmp.a $(LUA_PROGRAM_LIBS) $(UV_LIBS) $(MPI_LIBS) -lm -ldl

# ---- set-up and a first run -----------------------------------------------
SETUP ?= tools/setup.sh
setup:
	$(SETUP)

example: all
	$(BUILD)/bin/lmp examples/count_primes.lua

# ---- tests ---------------------------------------------------------------
# A C module that crashes on purpose, for the failure tests.
$(BUILD)/test/crash.so: tests/c/crash.c runtime/ring.h
	mkdir -p $(BUILD)/test
	$(CC) $(CFLAGS_ALL) -shared $(LDFLAGS_ALL) -o $@ $< -lpthread

# Preloaded by tests/security_spec.lua: a server's client records cannot
# be allocated, the first few times.
$(BUILD)/test/no_client_memory.so: tests/c/no_client_memory.c runtime/server.h
	mkdir -p $(BUILD)/test
	$(CC) $(CFLAGS_ALL) -shared $(LDFLAGS_ALL) -o $@ $<

# The futex primitives alone, without Lua or a loop (run by tests/sync_spec.lua).
$(BUILD)/test/futex_test: tests/c/futex_test.c $(BUILD)/obj/futex.o
	mkdir -p $(BUILD)/test
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(BUILD)/obj/futex.o

# Where Open MPI or MPICH is installed, the suite also builds the MPI
# transport against each beside the default build, for tests/mpi_spec.lua
# (which runs its tests under each one's mpiexec).
MPI_BUILD ?= $(BUILD)-mpi
MPICH_BUILD ?= $(BUILD)-mpich
absolute = $(if $(filter /%,$(1)),,$(CURDIR)/)$(1)
test: all $(BUILD)/test/crash.so $(BUILD)/test/futex_test $(BUILD)/examples/embed-host
	@if $(PKG_CONFIG) --exists ompi; then $(MAKE) -s MPI=1 MPI_PKG=ompi BUILD=$(MPI_BUILD) all; fi
	@if $(PKG_CONFIG) --exists mpich; then $(MAKE) -s MPI=1 MPI_PKG=mpich BUILD=$(MPICH_BUILD) all; fi
	LMP_MPI_BUILD=$(call absolute,$(MPI_BUILD)) LMP_MPICH_BUILD=$(call absolute,$(MPICH_BUILD)) \
	  tests/run.sh $(BUILD)

# AddressSanitizer + UBSan: the whole suite against the instrumented module,
# runner and workers (lua5.4 gets the sanitizer runtimes preloaded). Leaks
# are valgrind's job (make valgrind): LeakSanitizer would flag every
# uninstrumented tool the tests start.
asan:
	$(MAKE) BUILD=build-asan OPTFLAGS="-O1 -g -fno-omit-frame-pointer" \
	  SANFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" all \
	  build-asan/test/crash.so build-asan/test/futex_test build-asan/examples/embed-host
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:handle_segv=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  LMP_SANITIZED=1 tests/run.sh build-asan

# The MPI transport under AddressSanitizer + UBSan: tests/mpi_spec.lua with
# runners built with MPI=1 and the sanitizers (Open MPI in build-asan-mpi,
# MPICH in build-asan-mpich, each where installed); every rank and worker
# is instrumented. MPI libraries keep memory until exit: leaks are not
# checked here either.
ASAN_FLAGS = OPTFLAGS="-O1 -g -fno-omit-frame-pointer" \
  SANFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
asan-mpi: all
	@if $(PKG_CONFIG) --exists ompi; then \
	  $(MAKE) -s MPI=1 MPI_PKG=ompi BUILD=build-asan-mpi $(ASAN_FLAGS) all; fi
	@if $(PKG_CONFIG) --exists mpich; then \
	  $(MAKE) -s MPI=1 MPI_PKG=mpich BUILD=build-asan-mpich $(ASAN_FLAGS) all; fi
	LMP_MPI_BUILD=$(CURDIR)/build-asan-mpi LMP_MPICH_BUILD=$(CURDIR)/build-asan-mpich \
	  ASAN_OPTIONS=detect_leaks=0:handle_segv=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  LMP_SANITIZED=1 LMP_SPECS=tests/mpi_spec.lua tests/run.sh $(BUILD)

# valgrind: the suite with the main process under valgrind, then the pool
# specs again with every worker under valgrind too (tools/valgrind-worker.sh).
VALGRIND = valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
valgrind: all $(BUILD)/test/crash.so $(BUILD)/test/futex_test $(BUILD)/examples/embed-host
	LMP_TEST_LUA="$(VALGRIND) $(BUILD)/bin/lmp" tests/run.sh $(BUILD)
	rm -rf $(BUILD)/valgrind && mkdir -p $(BUILD)/valgrind
	LMP_WORKER=$(CURDIR)/tools/valgrind-worker.sh LMP_VALGRIND_LOGS=$(CURDIR)/$(BUILD)/valgrind \
	  LMP_VALGRIND_WORKER=$(CURDIR)/$(BUILD)/bin/lmp-worker \
	  LMP_SPECS="tests/pool_spec.lua tests/executor_spec.lua tests/value_spec.lua tests/pipe_spec.lua tests/process_spec.lua tests/sync_spec.lua tests/shared_spec.lua tests/manager_spec.lua tests/security_spec.lua" \
	  LMP_TEST_LUA="$(VALGRIND) $(BUILD)/bin/lmp" tests/run.sh $(BUILD)
	@if grep -l "definitely lost\|Invalid\|uninitialised\|ERROR SUMMARY: [1-9]" $(BUILD)/valgrind/*.log; then \
	  echo "valgrind: errors in the worker logs above"; exit 1; fi
	@echo "valgrind: $$(ls $(BUILD)/valgrind | wc -l) worker logs clean"

fuzz:
	tests/fuzz/run.sh $(FUZZ_SECONDS)

bench: all
	@if $(PKG_CONFIG) --exists ompi; then \
	  $(MAKE) -s MPI=1 MPI_PKG=ompi BUILD=$(MPI_BUILD) all && tests/bench/mpi_bench.sh $(MPI_BUILD); fi
	tests/bench/run.sh $(BUILD)
	tests/bench/pool_bench.sh $(BUILD)
	tests/bench/workloads_bench.sh $(BUILD)
	tests/bench/sync_bench.sh $(BUILD)
	-$(BUILD)/bin/lmp tests/bench/queue_wait.lua

# ---- install -------------------------------------------------------------
# The standard Lua layout under PREFIX. Each directory can be set on its
# own: rockspec/lmp-scm-1.rockspec maps LuaRocks' directories onto them.
# core.so finds the worker at <CMODDIR>/lmp/../../../../bin/lmp-worker, so
# keep CMODDIR and BINDIR in the shape below when moving them.
LMP_VERSION := $(shell sed -n 's/^\#define LMP_VERSION "\(.*\)"/\1/p' runtime/lmp.h)
LUADIR = $(PREFIX)/share/lua/5.4
CMODDIR = $(PREFIX)/lib/lua/5.4
BINDIR = $(PREFIX)/bin
INCDIR = $(PREFIX)/include
LIBDIR = $(PREFIX)/lib
PKGCONFIGDIR = $(LIBDIR)/pkgconfig
install: all
	install -d $(DESTDIR)$(LUADIR)/lmp $(DESTDIR)$(CMODDIR)/lmp $(DESTDIR)$(BINDIR) \
	  $(DESTDIR)$(INCDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 $(LUA_MODULES) $(DESTDIR)$(LUADIR)/lmp/
	install -m 755 $(BUILD)/lmp/core.so $(DESTDIR)$(CMODDIR)/lmp/core.so
	install -m 755 $(BUILD)/bin/lmp $(BUILD)/bin/lmp-worker $(DESTDIR)$(BINDIR)/
	install -m 644 runtime/lmp.h $(DESTDIR)$(INCDIR)/lmp.h
	install -m 644 $(BUILD)/liblmp.a $(DESTDIR)$(LIBDIR)/liblmp.a
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@INCDIR@|$(INCDIR)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	  -e 's|@LUA_PKG@|$(LUA_PKG)|' -e 's|@VERSION@|$(LMP_VERSION)|' rockspec/lmp.pc.in \
	  > $(DESTDIR)$(PKGCONFIGDIR)/lmp.pc

# ---- the embedding example (examples/embed, docs/reference.md) -------------
# A host program that links liblmp.a and serves as its own worker executable.
$(BUILD)/examples/embed-host: examples/embed/host.c runtime/lmp.h $(BUILD)/liblmp.a
	mkdir -p $(BUILD)/examples
	$(CC) -std=c99 -Wall -Wextra $(OPTFLAGS) $(SANFLAGS) -Iruntime $(LUA_CFLAGS) $(UV_CFLAGS) \
	  $(CFLAGS) $(LDFLAGS_ALL) -o $@ examples/embed/host.c $(BUILD)/liblmp.a \
	  $(LUA_LIBS) $(UV_LIBS) -lm -ldl

.PHONY: embed-example
embed-example: $(BUILD)/examples/embed-host
	$(BUILD)/examples/embed-host examples/embed/script.lua

clean:
	rm -rf build build-asan build-asan-mpi build-asan-mpich build-fuzz build-mpi build-mpich

.PHONY: setup example all test asan asan-mpi valgrind fuzz bench install clean FORCE

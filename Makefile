# lmp: build, test, install. See README.md.
PKG_CONFIG ?= pkg-config
LUA_PKG ?= lua5.4
LUA ?= lua5.4
CC ?= cc
PREFIX ?= /usr/local
DESTDIR ?=
BUILD ?= build

LUA_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(LUA_PKG))
LUA_LIBS := $(shell $(PKG_CONFIG) --libs $(LUA_PKG))
UV_CFLAGS := $(shell $(PKG_CONFIG) --cflags libuv)
UV_LIBS := $(shell $(PKG_CONFIG) --libs libuv)

OPTFLAGS ?= -O2 -g
SANFLAGS ?=
CFLAGS_ALL = -std=c99 -Wall -Wextra -fPIC -D_GNU_SOURCE $(OPTFLAGS) $(SANFLAGS) \
             $(LUA_CFLAGS) $(UV_CFLAGS) -Iruntime -I$(BUILD)/gen $(CFLAGS)
LDFLAGS_ALL = $(SANFLAGS) $(LDFLAGS)

# The runtime: one file per concern (see README "Architecture").
RUNTIME := buffer value names error loop process channel worker interrupt embed core
OBJECTS := $(RUNTIME:%=$(BUILD)/obj/%.o) $(BUILD)/obj/lua_sources.o
LUA_MODULES := $(wildcard lua/lmp/*.lua)

all: $(BUILD)/lmp/core.so $(BUILD)/liblmp.a $(BUILD)/bin/lmp $(BUILD)/bin/lmp-worker

$(BUILD)/obj/%.o: runtime/%.c runtime/*.h | $(BUILD)/obj
	$(CC) $(CFLAGS_ALL) -c $< -o $@

# The Lua half is compiled into the library too, so that workers, the
# runner and embedding hosts never depend on package.path to find it.
$(BUILD)/gen/lua_sources.c: $(LUA_MODULES) tools/embed_lua.lua | $(BUILD)/obj
	$(LUA) tools/embed_lua.lua $@ $(LUA_MODULES)

$(BUILD)/obj/lua_sources.o: $(BUILD)/gen/lua_sources.c
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/obj:
	mkdir -p $(BUILD)/obj $(BUILD)/gen $(BUILD)/lmp $(BUILD)/bin

# The Lua module links libuv but takes Lua's symbols from the interpreter.
$(BUILD)/lmp/core.so: $(OBJECTS)
	$(CC) -shared $(LDFLAGS_ALL) -o $@ $(OBJECTS) $(UV_LIBS)

$(BUILD)/liblmp.a: $(OBJECTS)
	rm -f $@ && ar rcs $@ $(OBJECTS)

$(BUILD)/bin/lmp: runtime/main/lmp.c $(BUILD)/liblmp.a
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(BUILD)/liblmp.a $(LUA_LIBS) $(UV_LIBS) -lm -ldl

$(BUILD)/bin/lmp-worker: runtime/main/lmp_worker.c $(BUILD)/liblmp.a
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(BUILD)/liblmp.a $(LUA_LIBS) $(UV_LIBS) -lm -ldl

# ---- set-up and a first run -----------------------------------------------
setup:
	tools/setup.sh

example: all
	$(BUILD)/bin/lmp examples/count_primes.lua

# ---- tests ---------------------------------------------------------------
# A C module that crashes on purpose, for the failure tests.
$(BUILD)/test/crash.so: tests/c/crash.c
	mkdir -p $(BUILD)/test
	$(CC) $(CFLAGS_ALL) -shared $(LDFLAGS_ALL) -o $@ $<

test: all $(BUILD)/test/crash.so
	tests/run.sh $(BUILD)

# AddressSanitizer + UBSan: the whole suite, run by the instrumented runner.
asan:
	$(MAKE) BUILD=build-asan OPTFLAGS="-O1 -g -fno-omit-frame-pointer" \
	  SANFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" all build-asan/test/crash.so
	LMP_TEST_LUA="build-asan/bin/lmp" ASAN_OPTIONS=detect_leaks=1 tests/run.sh build-asan

valgrind: all $(BUILD)/test/crash.so
	LMP_TEST_LUA="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite build/bin/lmp" \
	  tests/run.sh $(BUILD)

fuzz:
	tests/fuzz/run.sh $(FUZZ_SECONDS)

bench: all
	tests/bench/run.sh $(BUILD)

# ---- install -------------------------------------------------------------
LUADIR = $(PREFIX)/share/lua/5.4
CMODDIR = $(PREFIX)/lib/lua/5.4
install: all
	install -d $(DESTDIR)$(LUADIR)/lmp $(DESTDIR)$(CMODDIR)/lmp $(DESTDIR)$(PREFIX)/bin \
	  $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 $(LUA_MODULES) $(DESTDIR)$(LUADIR)/lmp/
	install -m 755 $(BUILD)/lmp/core.so $(DESTDIR)$(CMODDIR)/lmp/core.so
	install -m 755 $(BUILD)/bin/lmp $(BUILD)/bin/lmp-worker $(DESTDIR)$(PREFIX)/bin/
	install -m 644 runtime/lmp.h $(DESTDIR)$(PREFIX)/include/lmp.h
	install -m 644 $(BUILD)/liblmp.a $(DESTDIR)$(PREFIX)/lib/liblmp.a
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LUA_PKG@|$(LUA_PKG)|' rockspec/lmp.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/lmp.pc

clean:
	rm -rf build build-asan build-fuzz

.PHONY: setup example all test asan valgrind fuzz bench install clean

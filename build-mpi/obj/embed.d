build-mpi/obj/embed.o: runtime/embed.c /usr/include/lua5.4/lauxlib.h \
 /usr/include/lua5.4/luaconf.h /usr/include/lua5.4/lua.h \
 /usr/include/lua5.4/lualib.h runtime/embed.h runtime/lmp.h \
 /usr/include/lua5.4/lua.h runtime/worker.h runtime/transport.h \
 runtime/loop.h runtime/value.h runtime/buffer.h
/usr/include/lua5.4/lauxlib.h:
/usr/include/lua5.4/luaconf.h:
/usr/include/lua5.4/lua.h:
/usr/include/lua5.4/lualib.h:
runtime/embed.h:
runtime/lmp.h:
/usr/include/lua5.4/lua.h:
runtime/worker.h:
runtime/transport.h:
runtime/loop.h:
runtime/value.h:
runtime/buffer.h:

build-mpi/obj/worker.o: runtime/worker.c /usr/include/lua5.4/lualib.h \
 /usr/include/lua5.4/lua.h /usr/include/lua5.4/luaconf.h \
 runtime/channel.h /usr/include/lua5.4/lua.h runtime/inbox.h \
 runtime/buffer.h runtime/worker.h runtime/transport.h runtime/loop.h \
 runtime/value.h /usr/include/lua5.4/lauxlib.h
/usr/include/lua5.4/lualib.h:
/usr/include/lua5.4/lua.h:
/usr/include/lua5.4/luaconf.h:
runtime/channel.h:
/usr/include/lua5.4/lua.h:
runtime/inbox.h:
runtime/buffer.h:
runtime/worker.h:
runtime/transport.h:
runtime/loop.h:
runtime/value.h:
/usr/include/lua5.4/lauxlib.h:

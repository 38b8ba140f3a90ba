build-mpi/obj/core.o: runtime/core.c runtime/lmp.h \
 /usr/include/lua5.4/lua.h /usr/include/lua5.4/luaconf.h \
 runtime/channel.h runtime/inbox.h runtime/buffer.h runtime/worker.h \
 runtime/transport.h runtime/loop.h runtime/value.h \
 /usr/include/lua5.4/lauxlib.h /usr/include/lua5.4/lua.h
runtime/lmp.h:
/usr/include/lua5.4/lua.h:
/usr/include/lua5.4/luaconf.h:
runtime/channel.h:
runtime/inbox.h:
runtime/buffer.h:
runtime/worker.h:
runtime/transport.h:
runtime/loop.h:
runtime/value.h:
/usr/include/lua5.4/lauxlib.h:
/usr/include/lua5.4/lua.h:

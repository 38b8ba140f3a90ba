build-mpi/obj/relay.o: runtime/relay.c runtime/process.h runtime/inbox.h \
 /usr/include/lua5.4/lua.h /usr/include/lua5.4/luaconf.h runtime/buffer.h \
 runtime/transport.h runtime/loop.h runtime/value.h \
 /usr/include/lua5.4/lauxlib.h /usr/include/lua5.4/lua.h
runtime/process.h:
runtime/inbox.h:
/usr/include/lua5.4/lua.h:
/usr/include/lua5.4/luaconf.h:
runtime/buffer.h:
runtime/transport.h:
runtime/loop.h:
runtime/value.h:
/usr/include/lua5.4/lauxlib.h:
/usr/include/lua5.4/lua.h:

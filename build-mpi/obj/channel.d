build-mpi/obj/channel.o: runtime/channel.c runtime/channel.h \
 /usr/include/lua5.4/lua.h /usr/include/lua5.4/luaconf.h runtime/inbox.h \
 runtime/buffer.h runtime/transport.h runtime/loop.h runtime/value.h \
 /usr/include/lua5.4/lauxlib.h /usr/include/lua5.4/lua.h
runtime/channel.h:
/usr/include/lua5.4/lua.h:
/usr/include/lua5.4/luaconf.h:
runtime/inbox.h:
runtime/buffer.h:
runtime/transport.h:
runtime/loop.h:
runtime/value.h:
/usr/include/lua5.4/lauxlib.h:
/usr/include/lua5.4/lua.h:

build-mpi/obj/digest.o: runtime/digest.c runtime/transport.h \
 runtime/loop.h runtime/value.h /usr/include/lua5.4/lua.h \
 /usr/include/lua5.4/luaconf.h /usr/include/lua5.4/lauxlib.h \
 /usr/include/lua5.4/lua.h runtime/buffer.h
runtime/transport.h:
runtime/loop.h:
runtime/value.h:
/usr/include/lua5.4/lua.h:
/usr/include/lua5.4/luaconf.h:
/usr/include/lua5.4/lauxlib.h:
/usr/include/lua5.4/lua.h:
runtime/buffer.h:

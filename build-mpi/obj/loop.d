build-mpi/obj/loop.o: runtime/loop.c runtime/lmp.h \
 /usr/include/lua5.4/lua.h /usr/include/lua5.4/luaconf.h runtime/loop.h \
 runtime/value.h /usr/include/lua5.4/lauxlib.h /usr/include/lua5.4/lua.h \
 runtime/buffer.h
runtime/lmp.h:
/usr/include/lua5.4/lua.h:
/usr/include/lua5.4/luaconf.h:
runtime/loop.h:
runtime/value.h:
/usr/include/lua5.4/lauxlib.h:
/usr/include/lua5.4/lua.h:
runtime/buffer.h:

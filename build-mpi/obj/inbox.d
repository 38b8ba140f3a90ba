build-mpi/obj/inbox.o: runtime/inbox.c runtime/inbox.h \
 /usr/include/lua5.4/lua.h /usr/include/lua5.4/luaconf.h runtime/buffer.h \
 /usr/include/lua5.4/lauxlib.h /usr/include/lua5.4/lua.h
runtime/inbox.h:
/usr/include/lua5.4/lua.h:
/usr/include/lua5.4/luaconf.h:
runtime/buffer.h:
/usr/include/lua5.4/lauxlib.h:
/usr/include/lua5.4/lua.h:

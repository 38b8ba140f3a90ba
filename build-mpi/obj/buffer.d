build-mpi/obj/buffer.o: runtime/buffer.c runtime/buffer.h \
 runtime/memory.h /usr/include/lua5.4/lua.h /usr/include/lua5.4/luaconf.h
runtime/buffer.h:
runtime/memory.h:
/usr/include/lua5.4/lua.h:
/usr/include/lua5.4/luaconf.h:

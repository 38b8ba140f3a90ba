build-mpi/obj/memory.o: runtime/memory.c runtime/memory.h \
 /usr/include/lua5.4/lua.h /usr/include/lua5.4/luaconf.h runtime/lmp.h
runtime/memory.h:
/usr/include/lua5.4/lua.h:
/usr/include/lua5.4/luaconf.h:
runtime/lmp.h:

build-mpi/obj/mpi.o: runtime/mpi.c \
 /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h \
 /usr/lib/x86_64-linux-gnu/openmpi/include/mpi_portable_platform.h \
 runtime/process.h runtime/inbox.h /usr/include/lua5.4/lua.h \
 /usr/include/lua5.4/luaconf.h runtime/buffer.h runtime/transport.h \
 runtime/loop.h runtime/value.h /usr/include/lua5.4/lauxlib.h \
 /usr/include/lua5.4/lua.h
/usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h:
/usr/lib/x86_64-linux-gnu/openmpi/include/mpi_portable_platform.h:
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

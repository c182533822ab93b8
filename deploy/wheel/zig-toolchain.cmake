# A CMake toolchain for the manylinux wheel: zig's clang (the ziglang PyPI package) through the
# wrappers beside this file. The target is this machine's architecture with an old glibc, so
# nothing here cross-compiles; CMAKE_SYSTEM_NAME stays unset and find_package works as usual.
set(CMAKE_CXX_COMPILER "${CMAKE_CURRENT_LIST_DIR}/zig-c++")
set(CMAKE_AR "${CMAKE_CURRENT_LIST_DIR}/zig-ar" CACHE FILEPATH "zig's ar")
set(CMAKE_RANLIB "${CMAKE_CURRENT_LIST_DIR}/zig-ranlib" CACHE FILEPATH "zig's ranlib")

# Cross-compiling for 64-bit ARM Linux with Debian's g++-aarch64-linux-gnu; tests then run
# under qemu-aarch64 (CMAKE_CROSSCOMPILING_EMULATOR), which ctest uses automatically.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
# Eigen, xsimd and nlohmann_json are header-only and installed for the host; their CMake
# packages are architecture-independent, so they may come from the host.
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
# Debian installs xsimd's package under the host's multiarch directory, which a cross build
# does not search.
if(NOT DEFINED xsimd_DIR)
  file(GLOB _xsimd_dirs /usr/lib/*-linux-gnu*/cmake/xsimd)
  if(_xsimd_dirs)
    list(GET _xsimd_dirs 0 _xsimd_dir)
    set(xsimd_DIR "${_xsimd_dir}" CACHE PATH "xsimd's CMake package directory")
  endif()
endif()
find_program(_qemu_aarch64 qemu-aarch64)
if(_qemu_aarch64)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${_qemu_aarch64};-L;/usr/aarch64-linux-gnu")
endif()

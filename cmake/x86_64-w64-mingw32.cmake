# Cross-compiling OrtFlash for 64-bit Windows (win-x64) with Debian's MinGW-w64 toolchain (posix threads:
# g++-mingw-w64-x86-64-posix), its tests run under Wine (wine64) where that is installed:
#   cmake -S . -B build/win-x64 --toolchain cmake/x86_64-w64-mingw32.cmake -DORT_INCLUDE_DIR=... \
#         -DORT_LIBRARY_DIR=<ONNX Runtime package>/runtimes/win-x64/native -DORTFLASH_CUDA=OFF
# tests/run.sh does this when both tools are present (tests/cross.sh win-x64). The op library comes out as ortflash.dll, linked
# statically against the MinGW runtime (libstdc++, libgcc, winpthread): it needs only Windows' own DLLs.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR AMD64)
set(ORTFLASH_CROSS_TRIPLE x86_64-w64-mingw32)
set(CMAKE_C_COMPILER ${ORTFLASH_CROSS_TRIPLE}-gcc-posix)
set(CMAKE_CXX_COMPILER ${ORTFLASH_CROSS_TRIPLE}-g++-posix)
set(CMAKE_RC_COMPILER ${ORTFLASH_CROSS_TRIPLE}-windres)

# Programs (the tests) link the MinGW runtime statically too, so that Wine needs no MinGW DLLs beside them.
set(CMAKE_EXE_LINKER_FLAGS_INIT -static)

set(CMAKE_FIND_ROOT_PATH /usr/${ORTFLASH_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# CTest (and gtest_discover_tests) run the target's programs under Wine.
find_program(ORTFLASH_WINE64 NAMES wine64 PATHS /usr/lib/wine NO_DEFAULT_PATH)
find_program(ORTFLASH_WINE64 NAMES wine64 wine)
if(ORTFLASH_WINE64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${ORTFLASH_WINE64})
endif()

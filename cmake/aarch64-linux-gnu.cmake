# Cross-compiling OrtFlash for 64-bit ARM Linux (linux-arm64) with Debian's cross toolchain
# (g++-aarch64-linux-gnu), its tests run through qemu-user (qemu-aarch64) where that is installed:
#   cmake -S . -B build/arm64 --toolchain cmake/aarch64-linux-gnu.cmake -DORT_INCLUDE_DIR=... \
#         -DORT_LIBRARY_DIR=<ONNX Runtime package>/runtimes/linux-arm64/native -DORTFLASH_CUDA=OFF
# tests/run.sh does this when both tools are present (tests/cross.sh linux-arm64).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(ORTFLASH_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${ORTFLASH_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${ORTFLASH_CROSS_TRIPLE}-g++)

# The target's libraries and headers: Debian's cross sysroot (libc6-arm64-cross and friends).
set(ORTFLASH_CROSS_SYSROOT /usr/${ORTFLASH_CROSS_TRIPLE} CACHE PATH "Folder with the target's lib/ and include/")
set(CMAKE_FIND_ROOT_PATH ${ORTFLASH_CROSS_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# CTest (and gtest_discover_tests) run the target's programs through the emulator.
find_program(ORTFLASH_QEMU_AARCH64 qemu-aarch64)
if(ORTFLASH_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${ORTFLASH_QEMU_AARCH64} -L ${ORTFLASH_CROSS_SYSROOT})
endif()

# The CUDA kernels' real sources, compiled by the host compiler against the simt emulator
# (tests/native/simt), and the CUDA test suite (cuda_attention_test.cc) run on it: every kernel
# path is executed and checked against the double-precision reference on machines without a GPU or
# even nvcc. Included from tests/native/CMakeLists.txt.
set(ORTFLASH_SIMT_DIR ${CMAKE_CURRENT_LIST_DIR})
set(ORTFLASH_CUDA_SOURCE_DIR ${PROJECT_SOURCE_DIR}/customop/src/cuda)

add_library(ortflash_simt STATIC ${ORTFLASH_SIMT_DIR}/simt.cc)
# The shim headers (cuda_runtime_api.h, cuda_fp16.h, cuda_bf16.h) come before any installed CUDA headers.
target_include_directories(ortflash_simt BEFORE PUBLIC ${ORTFLASH_SIMT_DIR}/include)
target_compile_definitions(ortflash_simt PUBLIC ORTFLASH_SIMT=1)
target_compile_options(ortflash_simt PRIVATE ${ORTFLASH_WARNINGS} -O2)
target_link_libraries(ortflash_simt PUBLIC Threads::Threads)

# The .cu files as C++ translation units (g++ does not take the .cu extension).
set(ORTFLASH_SIMT_UNITS "")
foreach(unit flash_attention_cuda fwd_hdim32 fwd_hdim64 fwd_hdim96 fwd_hdim128 fwd_hdim256 fwd_float32 fwd_float32_tf32 fwd_hopper64 fwd_hopper96 fwd_hopper128 fwd_hopper256 generic_launch tiled_launch)
  set(wrapper ${CMAKE_CURRENT_BINARY_DIR}/simt_units/${unit}.cc)
  file(CONFIGURE OUTPUT ${wrapper} CONTENT "#include \"${ORTFLASH_CUDA_SOURCE_DIR}/${unit}.cu\"\n")
  list(APPEND ORTFLASH_SIMT_UNITS ${wrapper})
endforeach()
include(${ORTFLASH_CUDA_SOURCE_DIR}/tiles.cmake)
add_library(ortflash_cuda_simt STATIC ${ORTFLASH_SIMT_UNITS})
ortflash_apply_cuda_tiles(ortflash_cuda_simt)
# The emulator always has the Hopper (wgmma) kernel, whatever nvcc (if any) the machine has.
target_compile_definitions(ortflash_cuda_simt PRIVATE ORTFLASH_HAVE_HOPPER=1)
target_include_directories(ortflash_cuda_simt PUBLIC ${PROJECT_SOURCE_DIR}/customop/include PRIVATE ${ORTFLASH_CUDA_SOURCE_DIR})
target_link_libraries(ortflash_cuda_simt PUBLIC ortflash_simt)
target_compile_options(ortflash_cuda_simt PRIVATE ${ORTFLASH_WARNINGS} -Wno-pedantic -Wno-unknown-pragmas -O2)

add_executable(ortflash_cuda_simt_tests ${CMAKE_CURRENT_LIST_DIR}/../cuda_attention_test.cc)
target_link_libraries(ortflash_cuda_simt_tests PRIVATE ortflash_cuda_simt GTest::gtest GTest::gtest_main)
target_compile_options(ortflash_cuda_simt_tests PRIVATE ${ORTFLASH_WARNINGS} -O2)
gtest_discover_tests(ortflash_cuda_simt_tests TEST_PREFIX "ortflash_cuda_simt_tests." DISCOVERY_TIMEOUT 60
                     PROPERTIES TIMEOUT 1800)

# The Hopper instructions' wrappers on their own (also built for a GPU where nvcc >= 12.3: tests/native/cuda.cmake).
set(ORTFLASH_SIMT_HOPPER_KERNELS ${CMAKE_CURRENT_BINARY_DIR}/simt_units/hopper_primitives_kernels.cc)
file(CONFIGURE OUTPUT ${ORTFLASH_SIMT_HOPPER_KERNELS}
     CONTENT "#include \"${CMAKE_CURRENT_LIST_DIR}/../hopper_primitives_kernels.cu\"\n")
add_executable(ortflash_simt_hopper_tests ${CMAKE_CURRENT_LIST_DIR}/../hopper_primitives_test.cc ${ORTFLASH_SIMT_HOPPER_KERNELS})
target_include_directories(ortflash_simt_hopper_tests PRIVATE ${CMAKE_CURRENT_LIST_DIR}/.. ${ORTFLASH_CUDA_SOURCE_DIR}
                           ${PROJECT_SOURCE_DIR}/customop/include)
target_link_libraries(ortflash_simt_hopper_tests PRIVATE ortflash_simt GTest::gtest GTest::gtest_main)
target_compile_options(ortflash_simt_hopper_tests PRIVATE ${ORTFLASH_WARNINGS} -Wno-pedantic -Wno-unknown-pragmas -O2)
gtest_discover_tests(ortflash_simt_hopper_tests TEST_PREFIX "ortflash_simt_hopper_tests." DISCOVERY_TIMEOUT 60)

add_executable(ortflash_simt_tests ${ORTFLASH_SIMT_DIR}/simt_test.cc)
target_link_libraries(ortflash_simt_tests PRIVATE ortflash_simt GTest::gtest GTest::gtest_main)
target_compile_options(ortflash_simt_tests PRIVATE ${ORTFLASH_WARNINGS} -Wno-pedantic -O2)
gtest_discover_tests(ortflash_simt_tests TEST_PREFIX "ortflash_simt_tests." DISCOVERY_TIMEOUT 60)

# The kernels' plain global-memory accesses (bias, keep, outputs, split scratch) under AddressSanitizer
# and UndefinedBehaviorSanitizer: device allocations are heap blocks, so an access outside them is
# reported, as compute-sanitizer's memcheck would on a GPU. The subset meant for sanitizers.
if(ORTFLASH_SANITIZER_TESTS)
  add_library(ortflash_simt_sanitized STATIC ${ORTFLASH_SIMT_DIR}/simt.cc)
  target_include_directories(ortflash_simt_sanitized BEFORE PUBLIC ${ORTFLASH_SIMT_DIR}/include)
  target_compile_definitions(ortflash_simt_sanitized PUBLIC ORTFLASH_SIMT=1)
  target_compile_options(ortflash_simt_sanitized PRIVATE ${ORTFLASH_WARNINGS} ${ORTFLASH_SANITIZE_FLAGS} -O1 -g)
  target_link_libraries(ortflash_simt_sanitized PUBLIC Threads::Threads)
  target_link_options(ortflash_simt_sanitized PUBLIC -fsanitize=address,undefined)

  add_library(ortflash_cuda_simt_sanitized STATIC ${ORTFLASH_SIMT_UNITS})
  ortflash_apply_cuda_tiles(ortflash_cuda_simt_sanitized)
  target_compile_definitions(ortflash_cuda_simt_sanitized PRIVATE ORTFLASH_HAVE_HOPPER=1)
  target_include_directories(ortflash_cuda_simt_sanitized PUBLIC ${PROJECT_SOURCE_DIR}/customop/include
                             PRIVATE ${ORTFLASH_CUDA_SOURCE_DIR})
  target_link_libraries(ortflash_cuda_simt_sanitized PUBLIC ortflash_simt_sanitized)
  target_compile_options(ortflash_cuda_simt_sanitized PRIVATE ${ORTFLASH_WARNINGS} -Wno-pedantic -Wno-unknown-pragmas
                         ${ORTFLASH_SANITIZE_FLAGS} -O1 -g)

  add_executable(ortflash_cuda_simt_tests_sanitized ${CMAKE_CURRENT_LIST_DIR}/../cuda_attention_test.cc)
  target_link_libraries(ortflash_cuda_simt_tests_sanitized PRIVATE ortflash_cuda_simt_sanitized GTest::gtest GTest::gtest_main)
  target_compile_options(ortflash_cuda_simt_tests_sanitized PRIVATE ${ORTFLASH_WARNINGS} ${ORTFLASH_SANITIZE_FLAGS} -O1 -g)
  gtest_discover_tests(ortflash_cuda_simt_tests_sanitized TEST_PREFIX "ortflash_cuda_simt_tests_sanitized."
                       TEST_FILTER "CudaSanitizerSubset.*:*GroupedHeadsOfOne*:*BiasIsAdded*:*KeepMask*:*RowsWithoutVisibleKeys*"
                       DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 1800)
  # The TMA Hopper kernel under the sanitizers (the subset: every variant once, masks included): its stores.
  add_test(NAME ortflash_cuda_simt_tests_sanitized.hopper2
           COMMAND ortflash_cuda_simt_tests_sanitized --gtest_filter=CudaSanitizerSubset.*)
  set_tests_properties(ortflash_cuda_simt_tests_sanitized.hopper2 PROPERTIES ENVIRONMENT "ORTFLASH_CUDA_HOPPER=2" TIMEOUT 1800)
endif()

# The suite with a Hopper (wgmma) kernel selected (ORTFLASH_CUDA_HOPPER=1 or 2; 2 is what a GPU runs by default
# from 256 keys) on the emulated H100: every plain-variant prefill call of the reference tests runs on it. The
# work-count tests of the mma.sync kernels are left out (they count that kernel's instructions); without an
# ORTFLASH_CUDA_HOPPER the emulator's suite runs the mma.sync kernel (kEmulatorPinsKernels).
foreach(variant 1 2)  # 1: cp.async loads; 2: TMA loads by a producer warpgroup, mbarriers
  add_test(NAME ortflash_cuda_simt_tests.hopper${variant}
           COMMAND ortflash_cuda_simt_tests --gtest_filter=CudaAttention.*:CudaSanitizerSubset.*:CudaHopperWork.*)
  set_tests_properties(ortflash_cuda_simt_tests.hopper${variant} PROPERTIES ENVIRONMENT "ORTFLASH_CUDA_HOPPER=${variant}"
                       TIMEOUT 1800)
endforeach()

# The same suite on an emulated Turing GPU (compute capability 7.5, as a T4): no tensor-core kernel,
# so 16-bit calls run on the tiled SIMT kernel (head dims up to 128) or the generic one, and blocks may
# use 64 KiB of shared memory (the tiled kernel's smaller key tiles). Left out: the longest test, and the
# one whose generic-kernel head dims (to 3000) need more than 64 KiB.
add_test(NAME ortflash_cuda_simt_tests.compute_capability_7
         COMMAND ortflash_cuda_simt_tests --gtest_filter=CudaAttention.*:CudaSanitizerSubset.*:-CudaAttention.SingleQueryDecodingSplitsLongKeyRanges:CudaAttention.SharedMemoryOptInIsRememberedAndOnlyGrows)
set_tests_properties(ortflash_cuda_simt_tests.compute_capability_7 PROPERTIES ENVIRONMENT "SIMT_CC_MAJOR=7" TIMEOUT 1800)

# The suite with float32 prefill calls on the tensor-core kernel in 3xTF32 as a GPU runs them by default
# (ORTFLASH_CUDA_FLOAT32_TENSOR_CORES=2, K and V split once per block): every float32 reference test of more than 64
# query rows per head runs on it (=1, every warp splitting its fragments, runs in
# Float32OnTensorCoresMatchesTheReference).
add_test(NAME ortflash_cuda_simt_tests.float32_tensor_cores
         COMMAND ortflash_cuda_simt_tests --gtest_filter=CudaAttention.*:CudaSanitizerSubset.*:CudaAttentionWork.PaddedKeyTilesAreSkipped)
set_tests_properties(ortflash_cuda_simt_tests.float32_tensor_cores PROPERTIES
                     ENVIRONMENT "ORTFLASH_CUDA_FLOAT32_TENSOR_CORES=2" TIMEOUT 1800)

# The float32 split-tile variant where a block may have only 99 KiB (sm_86/sm_89): head dim 128's tiles (96 KiB,
# 108 with the masks) fit without its masks only.
add_test(NAME ortflash_cuda_simt_tests.float32_split_tiles_99_kib
         COMMAND ortflash_cuda_simt_tests --gtest_filter=CudaAttentionWork.Float32*:CudaAttention.Float32*)
set_tests_properties(ortflash_cuda_simt_tests.float32_split_tiles_99_kib PROPERTIES ENVIRONMENT "SIMT_SMEM_OPTIN_KIB=99"
                     TIMEOUT 1800)

# GPU tests of the CUDA kernels (included from customop/src/cuda/cuda.cmake). They run against a
# double-precision host reference; without a CUDA device every test reports itself skipped.

# GoogleTest: the installed package, or (on machines without one, e.g. the GPU image) its sources
# passed as ORTFLASH_GTEST_SOURCE_DIR (a copy of /usr/src/googletest).
set(ORTFLASH_GTEST_SOURCE_DIR "" CACHE PATH "GoogleTest sources to build when no installed GTest is found")
find_package(GTest QUIET)
if(NOT GTest_FOUND AND EXISTS "${ORTFLASH_GTEST_SOURCE_DIR}/CMakeLists.txt")
  set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
  set(BUILD_GMOCK OFF CACHE BOOL "" FORCE)
  add_subdirectory(${ORTFLASH_GTEST_SOURCE_DIR} ${CMAKE_BINARY_DIR}/googletest EXCLUDE_FROM_ALL)
  if(NOT TARGET GTest::gtest)
    add_library(GTest::gtest ALIAS gtest)
    add_library(GTest::gtest_main ALIAS gtest_main)
  endif()
endif()
if(NOT TARGET GTest::gtest)
  message(WARNING "GoogleTest not found (set ORTFLASH_GTEST_SOURCE_DIR): the CUDA tests are not built")
  return()
endif()
include(GoogleTest)
enable_testing()

add_executable(ortflash_cuda_tests ${CMAKE_CURRENT_LIST_DIR}/cuda_attention_test.cc)
target_link_libraries(ortflash_cuda_tests PRIVATE ortflash_cuda CUDA::cudart_static GTest::gtest GTest::gtest_main)
option(ORTFLASH_CUDA_TESTS_WERROR "Treat warnings in the CUDA tests as errors (off on other toolchains, e.g. the GPU image)" ON)
target_compile_options(ortflash_cuda_tests PRIVATE -Wall -Wextra -Wshadow $<$<BOOL:${ORTFLASH_CUDA_TESTS_WERROR}>:-Werror>)
gtest_discover_tests(ortflash_cuda_tests TEST_PREFIX "ortflash_cuda_tests." DISCOVERY_MODE PRE_TEST
                     DISCOVERY_TIMEOUT 60)
# The reference tests once more with float32 prefill calls on the tiled SIMT kernel (0) and on the tensor cores with
# the fragments split by every warp (1); by default they run on the tensor cores in 3xTF32 with K and V split once per
# block (2).
foreach(variant 0 1)
  if(variant)
    set(name ortflash_cuda_tests.float32_per_warp)
  else()
    set(name ortflash_cuda_tests.float32_simt)
  endif()
  add_test(NAME ${name} COMMAND ortflash_cuda_tests --gtest_filter=CudaAttention.*:CudaSanitizerSubset.*)
  set_tests_properties(${name} PROPERTIES ENVIRONMENT "ORTFLASH_CUDA_FLOAT32_TENSOR_CORES=${variant}"
                       SKIP_REGULAR_EXPRESSION "no CUDA device"
                       TIMEOUT 600)
endforeach()
# With the Hopper (wgmma) kernels built (nvcc >= 12.3), an H100/H200 runs the TMA one by default from 256 keys; the
# reference tests once more with each kernel named for every length (0: the mma.sync kernel; elsewhere as above).
if(ORTFLASH_CUDA_HOPPER)
  # The sm_90a instructions' wrappers on their own (hopper_primitives_test.cc; also run on the emulator).
  add_executable(ortflash_hopper_primitives_tests ${CMAKE_CURRENT_LIST_DIR}/hopper_primitives_test.cc
                 ${CMAKE_CURRENT_LIST_DIR}/hopper_primitives_kernels.cu)
  set_target_properties(ortflash_hopper_primitives_tests PROPERTIES CUDA_ARCHITECTURES OFF CUDA_STANDARD 17
                        CUDA_STANDARD_REQUIRED ON)
  target_compile_options(ortflash_hopper_primitives_tests PRIVATE
                         $<$<COMPILE_LANGUAGE:CUDA>:-gencode=arch=compute_90a,code=sm_90a>)
  target_include_directories(ortflash_hopper_primitives_tests PRIVATE ${ORTFLASH_ROOT}/customop/src/cuda
                             ${ORTFLASH_ROOT}/customop/include)
  target_link_libraries(ortflash_hopper_primitives_tests PRIVATE CUDA::cudart_static GTest::gtest GTest::gtest_main
                        ${CMAKE_DL_LIBS})
  gtest_discover_tests(ortflash_hopper_primitives_tests TEST_PREFIX "ortflash_hopper_primitives_tests."
                       DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60)
  foreach(variant 0 1 2)  # 0: mma.sync; 1: wgmma, cp.async loads; 2: wgmma, TMA loads by a producer warpgroup
    add_test(NAME ortflash_cuda_tests.hopper${variant}
             COMMAND ortflash_cuda_tests --gtest_filter=CudaAttention.*:CudaSanitizerSubset.*)
    set_tests_properties(ortflash_cuda_tests.hopper${variant} PROPERTIES ENVIRONMENT "ORTFLASH_CUDA_HOPPER=${variant}"
                         TIMEOUT 600)
  endforeach()
endif()

# compute-sanitizer (memcheck, racecheck) over a small subset; skipped at test time without a GPU.
find_program(ORTFLASH_COMPUTE_SANITIZER compute-sanitizer
             HINTS ${CUDAToolkit_BIN_DIR} ${CUDAToolkit_BIN_DIR}/../compute-sanitizer)
if(ORTFLASH_COMPUTE_SANITIZER)
  add_executable(ortflash_cuda_device_probe ${CMAKE_CURRENT_LIST_DIR}/cuda_device_probe.cc)
  target_link_libraries(ortflash_cuda_device_probe PRIVATE CUDA::cudart_static)
  foreach(tool memcheck racecheck)
    foreach(hopper 0 1 2)
      set(name ortflash_cuda_tests.compute_sanitizer_${tool})
      if(hopper)
        if(NOT ORTFLASH_CUDA_HOPPER)
          continue()
        endif()
        set(name ${name}_hopper${hopper})
      endif()
      add_test(NAME ${name}
               COMMAND ${CMAKE_COMMAND} -E env ORTFLASH_CUDA_HOPPER=${hopper}
                       ${CMAKE_COMMAND} -DSANITIZER=${ORTFLASH_COMPUTE_SANITIZER} -DTOOL=${tool}
                       -DPROBE=$<TARGET_FILE:ortflash_cuda_device_probe>
                       -DTEST_BINARY=$<TARGET_FILE:ortflash_cuda_tests>
                       -P ${CMAKE_CURRENT_LIST_DIR}/cuda_sanitizer.cmake)
      set_tests_properties(${name} PROPERTIES SKIP_REGULAR_EXPRESSION "ORTFLASH_SANITIZER_SKIPPED" TIMEOUT 1800)
    endforeach()
  endforeach()
endif()

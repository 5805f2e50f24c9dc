# OrtFlash CUDA kernels. Included by the top-level CMakeLists.txt when nvcc is found, or by the
# kernels-only project benchmarks/cuda/CMakeLists.txt (GPU machines without ONNX Runtime headers).
# Defines:
#   ortflash_cuda     static, PIC, CUDA runtime linked statically (linked into libortflash.so)
#   ortflash_kernels  shared, extern "C" ortflash_attention_forward for benchmarks (ctypes)
#   ortflash_cuda_tests (+ compute-sanitizer entries) when ORTFLASH_TESTS is on
# Nothing here needs ONNX Runtime headers.

enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

get_filename_component(ORTFLASH_ROOT "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(ORTFLASH_CUDA_DIR "${CMAKE_CURRENT_LIST_DIR}")

# nvcc 11.8 is the first with sm_89; 90-virtual adds PTX so later GPUs JIT the sm_90 code. sm_75
# (Turing: T4) runs the SIMT kernels (tiled, generic, combine); the tensor-core kernel needs sm_80.
# nvcc >= 12.3 also builds the Hopper kernels (wgmma, TMA) for sm_90a: fwd_hopper*.cu, compiled for that target
# alone (ORTFLASH_CUDA_HOPPER, on by default where nvcc allows it).
if(CMAKE_CUDA_COMPILER_VERSION VERSION_LESS 11.8)
  message(FATAL_ERROR "OrtFlash CUDA kernels need nvcc >= 11.8 (found ${CMAKE_CUDA_COMPILER_VERSION})")
endif()
set(ORTFLASH_CUDA_ARCHITECTURES "75-real;80-real;86-real;89-real;90-real;90-virtual" CACHE STRING
    "CUDA architectures of the OrtFlash kernels (CMake CUDA_ARCHITECTURES syntax)")
option(ORTFLASH_CUDA_PTXAS_VERBOSE "Print ptxas register/shared-memory/spill usage per kernel" OFF)
message(STATUS "OrtFlash: nvcc ${CMAKE_CUDA_COMPILER_VERSION}, host compiler "
               "'${CMAKE_CUDA_HOST_COMPILER}', architectures ${ORTFLASH_CUDA_ARCHITECTURES}")

set(ORTFLASH_CUDA_FLAGS
    --Werror default-stream-launch  # every launch names the caller's stream
    -Xptxas=-warn-spills,-warn-lmem-usage
    -lineinfo                       # source lines in compute-sanitizer reports; no runtime cost
    -Xcompiler=-fvisibility=hidden
    -Xcompiler=-Wall,-Wextra)
if(ORTFLASH_CUDA_PTXAS_VERBOSE)
  list(APPEND ORTFLASH_CUDA_FLAGS -Xptxas=-v)
endif()

function(ortflash_cuda_target name)
  set_target_properties(${name} PROPERTIES
    CUDA_ARCHITECTURES "${ORTFLASH_CUDA_ARCHITECTURES}"
    CUDA_STANDARD 17
    CUDA_STANDARD_REQUIRED ON
    CUDA_RUNTIME_LIBRARY Static
    POSITION_INDEPENDENT_CODE ON)
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${ORTFLASH_CUDA_FLAGS}>)
endfunction()

add_library(ortflash_cuda STATIC
  ${ORTFLASH_CUDA_DIR}/flash_attention_cuda.cu
  ${ORTFLASH_CUDA_DIR}/fwd_hdim32.cu
  ${ORTFLASH_CUDA_DIR}/fwd_hdim64.cu
  ${ORTFLASH_CUDA_DIR}/fwd_hdim96.cu
  ${ORTFLASH_CUDA_DIR}/fwd_hdim128.cu
  ${ORTFLASH_CUDA_DIR}/fwd_hdim256.cu
  ${ORTFLASH_CUDA_DIR}/fwd_float32.cu
  ${ORTFLASH_CUDA_DIR}/fwd_float32_tf32.cu
  ${ORTFLASH_CUDA_DIR}/generic_launch.cu
  ${ORTFLASH_CUDA_DIR}/tiled_launch.cu)
ortflash_cuda_target(ortflash_cuda)
include(${ORTFLASH_CUDA_DIR}/tiles.cmake)
ortflash_apply_cuda_tiles(ortflash_cuda)

# The sm_90a translation unit: its own object library, since an architecture-specific target ("90a") needs
# nvcc >= 12.3 and CMake spells it only from 3.28 on; -gencode works with any CMake.
if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.3)
  option(ORTFLASH_CUDA_HOPPER "Build the sm_90a (wgmma) forward kernel" ON)
else()
  set(ORTFLASH_CUDA_HOPPER OFF)
endif()
if(ORTFLASH_CUDA_HOPPER)
  add_library(ortflash_cuda_hopper OBJECT ${ORTFLASH_CUDA_DIR}/fwd_hopper64.cu ${ORTFLASH_CUDA_DIR}/fwd_hopper96.cu
              ${ORTFLASH_CUDA_DIR}/fwd_hopper128.cu ${ORTFLASH_CUDA_DIR}/fwd_hopper256.cu)
  ortflash_cuda_target(ortflash_cuda_hopper)
  set_target_properties(ortflash_cuda_hopper PROPERTIES CUDA_ARCHITECTURES OFF)
  target_compile_options(ortflash_cuda_hopper PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-gencode=arch=compute_90a,code=sm_90a>)
  ortflash_apply_cuda_tiles(ortflash_cuda_hopper)
  target_include_directories(ortflash_cuda_hopper PRIVATE ${ORTFLASH_ROOT}/customop/include)
  target_sources(ortflash_cuda PRIVATE $<TARGET_OBJECTS:ortflash_cuda_hopper>)
  target_compile_definitions(ortflash_cuda PRIVATE ORTFLASH_HAVE_HOPPER=1)
  target_link_libraries(ortflash_cuda PUBLIC ${CMAKE_DL_LIBS})  # dlopen of the driver for cuTensorMapEncodeTiled
  message(STATUS "OrtFlash: building the sm_90a (wgmma) kernel")
endif()
target_include_directories(ortflash_cuda PUBLIC ${ORTFLASH_ROOT}/customop/include)
# Consumers linked by the host compiler (libortflash.so) need the static runtime too; it loads
# libcuda.so lazily, so the op library still loads where there is no driver.
target_link_libraries(ortflash_cuda PUBLIC CUDA::cudart_static)

add_library(ortflash_kernels SHARED ${ORTFLASH_CUDA_DIR}/ortflash_kernels_api.cu)
ortflash_cuda_target(ortflash_kernels)
target_include_directories(ortflash_kernels PUBLIC ${ORTFLASH_CUDA_DIR})
target_link_libraries(ortflash_kernels PRIVATE ortflash_cuda)
target_link_options(ortflash_kernels PRIVATE -Wl,--exclude-libs,ALL -Wl,--no-undefined)

if(ORTFLASH_TESTS)
  include(${ORTFLASH_ROOT}/tests/native/cuda.cmake)
endif()

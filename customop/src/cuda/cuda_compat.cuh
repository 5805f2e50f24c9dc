// OrtFlash CUDA — the two spellings that differ between nvcc and the host emulator the tests use
// where there is no GPU (tests/native/simt, built with ORTFLASH_SIMT): dynamic shared memory and
// kernel launches. Under nvcc they are the usual `extern __shared__` array and `<<<...>>>`.
#pragma once

#if defined(ORTFLASH_SIMT)
#include <cuda_runtime_api.h>  // the emulator's shim: keywords, built-ins, simt::launch

#define ORTFLASH_DYNAMIC_SMEM(type, name) type* const name = static_cast<type*>(::simt::dynamic_shared_memory())
#define ORTFLASH_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  ::simt::launch(__func__, kernel, grid, block, smem_bytes, stream, __VA_ARGS__)
#else
#define ORTFLASH_DYNAMIC_SMEM(type, name) extern __shared__ __align__(16) type name[]
#define ORTFLASH_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  kernel<<<grid, block, smem_bytes, stream>>>(__VA_ARGS__)
#endif

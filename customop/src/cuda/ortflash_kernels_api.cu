// OrtFlash kernels C API (see ortflash_kernels_api.h).
#include "ortflash_kernels_api.h"

#include <cuda_runtime_api.h>

#include <string>

#include "ortflash/flash_attention_cuda.h"

namespace {

void* allocate_on_stream(void* stream, size_t bytes) {
  void* ptr = nullptr;
  return cudaMallocAsync(&ptr, bytes, static_cast<cudaStream_t>(stream)) == cudaSuccess ? ptr : nullptr;
}

void release_on_stream(void* stream, void* ptr) { cudaFreeAsync(ptr, static_cast<cudaStream_t>(stream)); }

}  // namespace

extern "C" const char* ortflash_attention_forward(const ortflash::AttentionParams* params, void* stream) {
  thread_local std::string last_error;
  if (params == nullptr) {
    last_error = "ortflash_attention_forward: params is null";
    return last_error.c_str();
  }
  const ortflash::CudaScratch scratch{allocate_on_stream, release_on_stream, stream};
  last_error = ortflash::flash_attention_cuda(*params, stream, scratch);
  return last_error.empty() ? nullptr : last_error.c_str();
}

extern "C" size_t ortflash_attention_params_size(void) { return sizeof(ortflash::AttentionParams); }

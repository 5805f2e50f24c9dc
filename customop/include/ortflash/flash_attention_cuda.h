// OrtFlash CUDA kernel entry points. Free of ONNX Runtime types and of CUDA headers, so the
// ONNX Runtime adapter compiles with the host compiler alone.
#pragma once

#include <cstddef>
#include <string>

#include "ortflash/attention_params.h"

namespace ortflash {

// Device scratch memory lent by the caller (ONNX Runtime's allocator in the op). Blocks are
// released with `release` after the work on the stream that uses them has been enqueued; the
// allocator is stream-ordered (ONNX Runtime's arena is), so reuse is safe.
struct CudaScratch {
  void* (*allocate)(void* self, size_t bytes) = nullptr;
  void (*release)(void* self, void* ptr) = nullptr;
  void* self = nullptr;
};

// Enqueues the attention described by `params` (device pointers) on `stream` (a cudaStream_t).
// Never uses the legacy default stream, never synchronises. Returns an empty string on success,
// otherwise a message saying what is unsupported or which CUDA call failed.
// Per-session choices of the CUDA kernels (the op reads them from the session's config entries).
struct CudaOptions {
  // float32 prefill on the tensor cores in 3xTF32: 0 no (the tiled SIMT kernel), 1 with the fragments split by every
  // warp, 2 with K and V split once per block, 3 in one TF32 pass instead (about 1e-3 relative: asked for only); -1: as
  // the environment variable ORTFLASH_CUDA_FLOAT32_TENSOR_CORES says, and 2 without it.
  int float32_tensor_cores = -1;
};

std::string flash_attention_cuda(const AttentionParams& params, void* stream, const CudaScratch& scratch,
                                 const CudaOptions& options = CudaOptions{});

}  // namespace ortflash

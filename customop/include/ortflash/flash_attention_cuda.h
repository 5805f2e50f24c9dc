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
std::string flash_attention_cuda(const AttentionParams& params, void* stream, const CudaScratch& scratch);

}  // namespace ortflash

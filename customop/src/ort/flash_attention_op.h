// ONNX Runtime adapter of com.ortflash::FlashAttention: reads attributes and tensors, validates
// them against the op contract, builds AttentionParams and calls the CPU or CUDA kernel.
#pragma once

#include "onnxruntime_cxx_api.h"

namespace ortflash {

inline constexpr const char* kDomain = "com.ortflash";
inline constexpr const char* kOpName = "FlashAttention";

// The lowest ONNX Runtime C API the library uses: KernelContext_ParallelFor and custom-op shape
// inference arrived with version 17 (ONNX Runtime 1.17). Registering asks the runtime for this
// version, not the one of the headers, so the library also loads into older runtimes.
inline constexpr uint32_t kMinOrtApiVersion = 17;

// The session config entry that puts float32 prefill calls on the tensor cores in 3xTF32 ("0", "1" or "2"; see
// CudaOptions in ortflash/flash_attention_cuda.h). Read when a session creates its kernels (ONNX Runtime 1.24+).
inline constexpr const char* kFloat32TensorCoresKey = "ortflash.cuda.float32_tensor_cores";

// Adds every overload (CPU always; CUDA when built with nvcc) of FlashAttention to `domain`.
void AddFlashAttentionOps(Ort::CustomOpDomain& domain);

// The runtime registering the library (RegisterCustomOps' OrtApiBase): kernels ask it for later API versions.
void SetOrtApiBase(const OrtApiBase* base);

}  // namespace ortflash

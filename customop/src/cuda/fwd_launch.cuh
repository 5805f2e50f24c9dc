// OrtFlash CUDA — launch configuration of the forward kernels (grid, block, shared memory), kept
// apart from the kernel bodies. Included only by the instantiation files.
#pragma once

#include <cuda_runtime_api.h>

#include <climits>
#include <cstdint>
#include <string>

#include "combine_kernel.cuh"
#include "fwd_kernel.cuh"
#include "fwd_launch.h"
#include "generic_kernel.cuh"

namespace ortflash::cuda {

inline std::string cuda_failure(const char* what, cudaError_t status) {
  return std::string(what) + " failed: " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")";
}

// Checks the launch just enqueued (configuration errors surface here, not at the next sync).
inline std::string check_launch(const char* kernel_name) {
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess ? std::string() : cuda_failure(kernel_name, status);
}

// Raises a kernel's dynamic shared memory limit to `bytes` when its current limit is lower. The
// default limit is 48 KiB minus the kernel's static shared memory, not 48 KiB: nvcc's sm_90 code
// carries 1 KiB of static shared memory even without a __shared__ variable (cuobjdump
// --dump-resource-usage: SHARED:1024), so head dim 128's exactly 48 KiB may need the opt-in there.
// Asking the driver for the limit it will check holds on every architecture.
template <class Kernel>
std::string allow_dynamic_smem(Kernel kernel, size_t bytes, const char* kernel_name) {
  cudaFuncAttributes attributes;
  cudaError_t status = cudaFuncGetAttributes(&attributes, kernel);  // also fails where no cubin fits the GPU
  if (status != cudaSuccess) return cuda_failure((std::string(kernel_name) + ": cudaFuncGetAttributes").c_str(), status);
  if (bytes <= static_cast<size_t>(attributes.maxDynamicSharedSizeBytes)) return {};
  status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (status != cudaSuccess) {
    return cuda_failure((std::string(kernel_name) + ": reserving " + std::to_string(bytes) + " bytes of shared memory").c_str(),
                        status);
  }
  return {};
}

template <class Tr>
std::string launch_flash_fwd(const FwdParams& p, cudaStream_t stream) {
  const int64_t m_blocks = (p.q_len + Tr::kBlockM - 1) / Tr::kBlockM;
  const int64_t blocks = m_blocks * p.num_splits * p.q_heads * p.batch;
  if (blocks > INT_MAX) return "flash_fwd_kernel: " + std::to_string(blocks) + " thread blocks exceed the grid limit";
  auto kernel = &flash_fwd_kernel<Tr>;
  if (auto error = allow_dynamic_smem(kernel, Tr::kSmemBytes, "flash_fwd_kernel"); !error.empty()) return error;
  kernel<<<static_cast<unsigned>(blocks), Tr::kThreads, Tr::kSmemBytes, stream>>>(p);
  return check_launch("flash_fwd_kernel launch");
}

template <class T>
std::string launch_generic_fwd(const FwdParams& p, cudaStream_t stream) {
  const int64_t rows = int64_t(p.batch) * p.q_heads * p.q_len;
  const int64_t blocks = (rows + kGenericWarps - 1) / kGenericWarps;
  if (blocks > INT_MAX) return "generic_fwd_kernel: " + std::to_string(blocks) + " thread blocks exceed the grid limit";
  const size_t smem = generic_smem_bytes(p);
  auto kernel = &generic_fwd_kernel<T>;
  if (auto error = allow_dynamic_smem(kernel, smem, "generic_fwd_kernel"); !error.empty()) return error;
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(p.num_splits));
  kernel<<<grid, kGenericWarps * 32, smem, stream>>>(p);
  return check_launch("generic_fwd_kernel launch");
}

template <class T>
std::string launch_combine_splits(const FwdParams& p, cudaStream_t stream) {
  const int64_t rows = int64_t(p.batch) * p.q_heads * p.q_len;
  if (rows > INT_MAX) return "combine_splits_kernel: " + std::to_string(rows) + " rows exceed the grid limit";
  combine_splits_kernel<T><<<static_cast<unsigned>(rows), kCombineThreads, 0, stream>>>(p);
  return check_launch("combine_splits_kernel launch");
}

}  // namespace ortflash::cuda

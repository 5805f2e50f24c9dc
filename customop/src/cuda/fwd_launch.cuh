// OrtFlash CUDA — launch configuration of the forward kernels (grid, block, shared memory), kept
// apart from the kernel bodies. Included only by the instantiation files.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <mutex>
#include <string>

#include "combine_kernel.cuh"
#include "fwd_kernel.cuh"
#include "fwd_launch.h"
#include "generic_kernel.cuh"
#include "tiled_kernel.cuh"

namespace ortflash::cuda {

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
//
// One object per kernel (the variable templates below) remembers the limit on each device,
// so the attribute calls (driver calls, a few microseconds each) run on the kernel's first launch on a
// device and when a launch needs more than before, not on every launch. Function attributes belong
// to the device's primary context; a cudaDeviceReset would drop them behind this cache's back (nothing
// in ONNX Runtime's CUDA provider resets the device).
class DynamicSmemLimit {
 public:
  template <class Kernel>
  std::string allow(Kernel kernel, size_t bytes, const char* kernel_name) {
    int device = 0;
    const cudaError_t status = cudaGetDevice(&device);
    if (status != cudaSuccess) return cuda_failure((std::string(kernel_name) + ": cudaGetDevice").c_str(), status);
    const bool cached = device >= 0 && device < kCachedDevices;
    // Lock-free when the limit is known and high enough: every launch but the first few.
    if (cached && bytes < known_[device].load(std::memory_order_acquire)) return {};
    // Serialised, so that one launch can never set a lower limit over the higher one another just set.
    const std::lock_guard<std::mutex> lock(raising_);
    const size_t known = cached ? known_[device].load(std::memory_order_relaxed) : 0;
    size_t limit = known != 0 ? known - 1 : 0;
    if (known == 0) {
      cudaFuncAttributes attributes;
      const cudaError_t read = cudaFuncGetAttributes(&attributes, kernel);  // also fails where no cubin fits the GPU
      if (read != cudaSuccess) return cuda_failure((std::string(kernel_name) + ": cudaFuncGetAttributes").c_str(), read);
      limit = static_cast<size_t>(attributes.maxDynamicSharedSizeBytes);
    }
    if (bytes > limit) {
      cudaError_t raised = cudaErrorInvalidValue;  // more than an int holds: no device has that much
      if (bytes <= size_t(INT_MAX))
        raised = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
      if (raised != cudaSuccess) {
        return cuda_failure(
            (std::string(kernel_name) + ": reserving " + std::to_string(bytes) + " bytes of shared memory").c_str(), raised);
      }
      limit = bytes;
    }
    if (cached) known_[device].store(limit + 1, std::memory_order_release);
    return {};
  }

 private:
  static constexpr int kCachedDevices = 64;
  std::atomic<size_t> known_[kCachedDevices] = {};  // per device: the limit + 1, or 0 until read
  std::mutex raising_;
};

// At namespace scope: as function-local statics of the launchers, nvcc 11.8 flags them (#550-D,
// "set but never used").
template <class Tr>
inline DynamicSmemLimit flash_fwd_smem_limit;
template <class T>
inline DynamicSmemLimit generic_fwd_smem_limit;
template <class Tr>
inline DynamicSmemLimit tiled_fwd_smem_limit;

// Launches a tiled forward kernel over its blocks: one per Tr::kBlockM query rows of every (split, head,
// batch), `threads` threads and `smem` bytes of dynamic shared memory each; `args` follow the params.
template <class Tr, class Kernel, class... Args>
std::string launch_row_blocks(Kernel kernel, DynamicSmemLimit& limit, const char* name, int threads, size_t smem,
                              const FwdParams& p, cudaStream_t stream, const Args&... args) {
  const int64_t m_blocks = (p.q_len + Tr::kBlockM - 1) / Tr::kBlockM;
  const int64_t blocks = m_blocks * p.num_splits * p.q_heads * p.batch;
  if (blocks > INT_MAX) return std::string(name) + ": " + std::to_string(blocks) + " thread blocks exceed the grid limit";
  if (auto error = limit.allow(kernel, smem, name); !error.empty()) return error;
#if defined(ORTFLASH_SIMT)
  ::simt::launch(name, kernel, static_cast<unsigned>(blocks), threads, smem, stream, p, args...);  // named in its messages
#else
  ORTFLASH_LAUNCH(kernel, static_cast<unsigned>(blocks), threads, smem, stream, p, args...);
#endif
  return check_launch((std::string(name) + " launch").c_str());
}

template <class Tr>
std::string launch_flash_fwd(const FwdParams& p, cudaStream_t stream) {
  return launch_row_blocks<Tr>(&flash_fwd_kernel<Tr>, flash_fwd_smem_limit<Tr>, "flash_fwd_kernel", Tr::kThreads,
                               Tr::kSmemBytes, p, stream);
}

template <class Tr>
std::string launch_tiled_fwd(const FwdParams& p, cudaStream_t stream) {
  return launch_row_blocks<Tr>(&tiled_fwd_kernel<Tr>, tiled_fwd_smem_limit<Tr>, "tiled_fwd_kernel", Tr::kThreads,
                               Tr::kSmemBytes, p, stream);
}

template <class T>
std::string launch_generic_fwd(const FwdParams& p, cudaStream_t stream) {
  const int64_t rows = int64_t(p.batch) * p.q_heads * p.q_len;
  const int64_t blocks = (rows + kGenericWarps - 1) / kGenericWarps;
  if (blocks > INT_MAX) return "generic_fwd_kernel: " + std::to_string(blocks) + " thread blocks exceed the grid limit";
  const size_t smem = generic_smem_bytes(p);
  auto kernel = &generic_fwd_kernel<T>;
  if (auto error = generic_fwd_smem_limit<T>.allow(kernel, smem, "generic_fwd_kernel"); !error.empty()) return error;
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(p.num_splits));
  ORTFLASH_LAUNCH(kernel, grid, kGenericWarps * 32, smem, stream, p);
  return check_launch("generic_fwd_kernel launch");
}

template <class T>
std::string launch_combine_splits(const FwdParams& p, cudaStream_t stream) {
  const int64_t rows = int64_t(p.batch) * p.q_heads * p.q_len;
  if (rows > INT_MAX) return "combine_splits_kernel: " + std::to_string(rows) + " rows exceed the grid limit";
  ORTFLASH_LAUNCH(combine_splits_kernel<T>, static_cast<unsigned>(rows), kCombineThreads, 0, stream, p);
  return check_launch("combine_splits_kernel launch");
}

}  // namespace ortflash::cuda

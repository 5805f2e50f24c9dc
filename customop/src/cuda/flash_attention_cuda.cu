// OrtFlash CUDA entry point: validates the call, picks the kernel path, the split-KV factor and the
// compile-time instantiation (the one runtime → compile-time dispatch of the CUDA kernels), and
// enqueues the work on the caller's stream.
#include "ortflash/flash_attention_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "fwd_launch.h"
#include "live_keys.cuh"
#include "live_rows.cuh"
#include "mask_repack.cuh"

namespace ortflash {
namespace {

using cuda::cuda_failure;
using cuda::FwdParams;

constexpr int64_t kMaxLength = int64_t(1) << 30;  // keeps row/column index arithmetic in 32 bits
constexpr double kLog2e = 1.4426950408889634;

std::string validate(const AttentionParams& a) {
  if (a.dtype != DType::kFloat32 && a.dtype != DType::kFloat16 && a.dtype != DType::kBFloat16) {
    return "flash_attention_cuda: unknown dtype " + std::to_string(static_cast<int>(a.dtype));
  }
  const int64_t sizes[] = {a.batch, a.q_heads, a.kv_heads, a.q_len, a.kv_len, a.head_dim, a.v_head_dim};
  const char* names[] = {"batch", "q_heads", "kv_heads", "q_len", "kv_len", "head_dim", "v_head_dim"};
  for (int i = 0; i < 7; ++i) {
    if (sizes[i] < 0 || sizes[i] > kMaxLength) {
      return std::string("flash_attention_cuda: ") + names[i] + " = " + std::to_string(sizes[i]) + " is out of range [0, 2^30]";
    }
  }
  // Keeps every flat index (rows of the output, elements of the split-KV scratch) in int64.
  if (double(a.batch) * double(a.q_heads) * double(a.q_len) * double(std::max<int64_t>(a.v_head_dim, 1)) > 1e18) {
    return "flash_attention_cuda: the output (batch x q_heads x q_len x v_head_dim) is too large";
  }
  if (a.kv_heads == 0 || a.q_heads % a.kv_heads != 0) {
    return "flash_attention_cuda: q_heads (" + std::to_string(a.q_heads) + ") is not a multiple of kv_heads (" +
           std::to_string(a.kv_heads) + ")";
  }
  if (a.causal != CausalAlignment::kNone && a.causal != CausalAlignment::kUpperLeft &&
      a.causal != CausalAlignment::kLowerRight) {
    return "flash_attention_cuda: unknown causal alignment " + std::to_string(static_cast<int>(a.causal));
  }
  if (a.masked_rows != MaskedRows::kZero && a.masked_rows != MaskedRows::kNaN) {
    return "flash_attention_cuda: unknown masked_rows policy " + std::to_string(static_cast<int>(a.masked_rows));
  }
  return {};
}

// Pointers only matter when there is an output to write.
std::string validate_pointers(const AttentionParams& a) {
  if (a.q == nullptr || a.out == nullptr) return "flash_attention_cuda: null query or output pointer";
  if (a.kv_len > 0 && ((a.head_dim > 0 && a.k == nullptr) || (a.v_head_dim > 0 && a.v == nullptr))) {
    return "flash_attention_cuda: null key or value pointer";
  }
  return {};
}

FwdParams make_fwd_params(const AttentionParams& a) {
  FwdParams p;
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.out = a.out;
  p.bias = a.bias;
  p.keep = reinterpret_cast<const uint8_t*>(a.keep);
  p.batch = static_cast<int>(a.batch);
  p.q_heads = static_cast<int>(a.q_heads);
  p.kv_heads = static_cast<int>(a.kv_heads);
  p.group = static_cast<int>(a.q_heads / a.kv_heads);
  p.q_len = static_cast<int>(a.q_len);
  p.kv_len = static_cast<int>(a.kv_len);
  p.head_dim = static_cast<int>(a.head_dim);
  p.v_head_dim = static_cast<int>(a.v_head_dim);
  std::copy(a.q_stride, a.q_stride + 3, p.q_stride);
  std::copy(a.k_stride, a.k_stride + 3, p.k_stride);
  std::copy(a.v_stride, a.v_stride + 3, p.v_stride);
  std::copy(a.out_stride, a.out_stride + 3, p.out_stride);
  std::copy(a.bias_stride, a.bias_stride + 4, p.bias_stride);
  std::copy(a.keep_stride, a.keep_stride + 4, p.keep_stride);
  // Rows of whole 16-byte chunks: aligned start, every row (and batch/head) offset a multiple of 16
  // bytes, keys contiguous.
  const auto rows_in_chunks = [](const void* base, const int64_t* stride, int64_t elem_bytes) {
    const int64_t elems = 16 / elem_bytes;
    return base != nullptr && reinterpret_cast<uintptr_t>(base) % 16 == 0 && stride[3] == 1 && stride[0] % elems == 0 &&
           stride[1] % elems == 0 && stride[2] % elems == 0;
  };
  p.bias_chunks = rows_in_chunks(a.bias, a.bias_stride, a.dtype == DType::kFloat32 ? 4 : 2);
  p.keep_chunks = rows_in_chunks(a.keep, a.keep_stride, 1);
  p.scale = a.scale;
  p.scale_log2 = static_cast<float>(double(a.scale) * kLog2e);
  p.inv_scale = 1.0f / a.scale;
  p.softcap = a.softcap;
  p.softcap_inv = a.softcap > 0.0f ? 1.0f / a.softcap : 0.0f;
  p.causal = a.causal != CausalAlignment::kNone;
  p.causal_offset = a.causal == CausalAlignment::kLowerRight ? static_cast<int>(a.kv_len - a.q_len) : 0;
  p.masked_rows_nan = a.masked_rows == MaskedRows::kNaN;
  return p;
}

struct DeviceInfo {
  int sm_count = 0;
  int major = 0;
  int smem_optin = 0;  // bytes of shared memory a block may opt into (64 KiB on Turing, 99-227 KiB later)
};

// The properties of each device, read on the first call that runs on it: they never change, and a
// decode step (one query row) is short enough for per-call driver queries to show. Devices past
// kCachedDevices are read on every call.
constexpr int kCachedDevices = 64;

// smem_optin << 40 | major << 32 | sm_count per device id (24, 8 and 32 bits); 0 until read. A race
// only reads the same values twice.
std::atomic<uint64_t> cached_device_info[kCachedDevices];

std::string query_device(DeviceInfo& info) {
  int device = 0;
  cudaError_t status = cudaGetDevice(&device);  // the calling thread's current device: cheap, and may differ per call
  if (status != cudaSuccess) return cuda_failure("flash_attention_cuda: querying the device", status);
  const bool cacheable = device >= 0 && device < kCachedDevices;
  if (cacheable) {
    if (const uint64_t packed = cached_device_info[device].load(std::memory_order_acquire); packed != 0) {
      info.sm_count = static_cast<int>(packed & 0xffffffffu);
      info.major = static_cast<int>((packed >> 32) & 0xffu);
      info.smem_optin = static_cast<int>(packed >> 40);
      return {};
    }
  }
  status = cudaDeviceGetAttribute(&info.sm_count, cudaDevAttrMultiProcessorCount, device);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&info.major, cudaDevAttrComputeCapabilityMajor, device);
  if (status == cudaSuccess) {
    status = cudaDeviceGetAttribute(&info.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  }
  if (status != cudaSuccess) return cuda_failure("flash_attention_cuda: querying the device", status);
  if (cacheable && info.sm_count > 0 && info.major > 0 && info.major < 256 && info.smem_optin > 0 &&
      info.smem_optin < (1 << 24)) {
    const uint64_t packed = (uint64_t(uint32_t(info.smem_optin)) << 40) | (uint64_t(uint32_t(info.major)) << 32) |
                            uint32_t(info.sm_count);
    cached_device_info[device].store(packed, std::memory_order_release);
  }
  return {};
}

// Decoding with grouped heads (one query row, q_heads = group x kv_heads): the `group` query heads
// that read one key/value head become the query rows of a single head, so every key/value tile is
// loaded once per group instead of once per query head — decoding is bound by reading K and V.
// Exact: only strides change (row r of head k is query head k * group + r), and lower-right
// causality hides no key from a single query row. Upper-left causality (only key 0 visible) keeps
// the per-head layout.
AttentionParams fold_query_heads_into_rows(const AttentionParams& a) {
  const int64_t group = a.q_heads / a.kv_heads;
  if (a.q_len != 1 || group == 1 || a.causal == CausalAlignment::kUpperLeft) return a;
  AttentionParams f = a;
  f.q_heads = a.kv_heads;
  f.q_len = group;
  f.causal = CausalAlignment::kNone;
  const auto fold = [group](int64_t* stride) {  // {batch, head, row}: the old head stride becomes the row stride
    stride[2] = stride[1];
    stride[1] *= group;
  };
  fold(f.q_stride);
  fold(f.out_stride);
  fold(f.bias_stride);  // {batch, head, query, key}: the same three leading entries
  fold(f.keep_stride);
  return f;
}

// Kernel families: tensor cores (16-bit, sm_80+, aligned rows), the tiled SIMT kernel (everything
// else with head dims up to 128: float32 decoding, and float32 prefill the tensor cores do not take or are told not
// to), the generic kernel (the rest). Within the tensor-core family, the Hopper kernel (wgmma, KernelChoice::hopper) takes the plain and
// masks-in-accumulator variants' prefill calls on compute capability 9 when the build has it (see use_hopper).
// kFloat32TensorCores: float32 prefill on the tensor-core kernel in 3xTF32 (sm_80+; see below).
enum class FwdPath { kTensorCoreSm80, kFloat32TensorCores, kTiled, kGeneric };

// Smallest capacity of `capacities` that holds both head dims, or 0 when none does.
template <size_t N>
int head_dim_capacity(const int (&capacities)[N], int64_t head_dim, int64_t v_head_dim) {
  for (int capacity : capacities) {
    if (std::max(head_dim, v_head_dim) <= capacity) return capacity;
  }
  return 0;
}

int head_dim_capacity(FwdPath path, int64_t head_dim, int64_t v_head_dim) {
  switch (path) {
    case FwdPath::kTensorCoreSm80: return head_dim_capacity(cuda::kTensorCoreHeadDims, head_dim, v_head_dim);
    case FwdPath::kFloat32TensorCores: return head_dim_capacity(cuda::kFloat32TensorCoreHeadDims, head_dim, v_head_dim);
    case FwdPath::kTiled: return head_dim_capacity(cuda::kTiledHeadDims, head_dim, v_head_dim);
    case FwdPath::kGeneric: return 0;
  }
  return 0;
}

// A switch read from the environment on every call (a getenv next to a launch of microseconds, so that a benchmark can
// time each setting in one process): its single digit when that is 0..max_digit, else -1 (unset or any other value:
// the caller's default).
int digit_setting(const char* name, int max_digit) {
  const char* value = std::getenv(name);
  if (value == nullptr || value[0] < '0' || value[0] > '0' + max_digit || value[1] != '\0') return -1;
  return value[0] - '0';
}

bool is_aligned(const void* ptr, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

// cp.async moves 16-byte chunks: every row of q/k/v must start on a 16-byte boundary (strides in elements of
// `element_bytes`).
bool rows_in_16_byte_chunks(const void* base, const int64_t* stride, int64_t element_bytes) {
  const int64_t per_chunk = 16 / element_bytes;
  return is_aligned(base, 16) && stride[0] % per_chunk == 0 && stride[1] % per_chunk == 0 && stride[2] % per_chunk == 0;
}

// float32 prefill runs on the tensor cores (3xTF32) by default: on an H200 its forms ran at 2-4x the tiled SIMT
// kernel (which ran at 0.3-0.7x SDPA's efficient backend); the current one, with the small terms' sums apart
// (fwd_kernel.cuh), is untimed. The session's config entry ortflash.cuda.float32_tensor_cores (CudaOptions) or, without
// one, ORTFLASH_CUDA_FLOAT32_TENSOR_CORES chooses: 0 the tiled SIMT kernel, 1 every warp splits its K and V fragments
// into tf32 parts, 2 (the default) each K and V tile is split once per block in shared memory (where the device's
// shared memory allows; else as 1; 3-20% faster than 1 in the H200's second run, 5% slower to 17% faster in its first),
// 3 one TF32 product per product (operands rounded to 10 mantissa bits: about 1e-3 relative, as the CUDA provider's
// TF32 MatMuls, for a session that allows TF32; a third of 3xTF32's tensor-core work, untimed). 3 is never the default:
// the op's contract is fp32 scores.
constexpr int kDefaultFloat32TensorCores = 2;

int float32_tensor_cores_requested() {
  const int setting = digit_setting("ORTFLASH_CUDA_FLOAT32_TENSOR_CORES", 3);
  return setting >= 0 ? setting : kDefaultFloat32TensorCores;
}

// float32_variant: float32_tensor_cores_requested() of this call.
FwdPath choose_path(const AttentionParams& a, const DeviceInfo& device, int float32_variant) {
  const bool sixteen_bit = a.dtype == DType::kFloat16 || a.dtype == DType::kBFloat16;
  const int64_t element_bytes = sixteen_bit ? 2 : 4;
  const bool aligned_dims = a.head_dim > 0 && a.head_dim % 8 == 0 && a.v_head_dim % 8 == 0;
  // Pairs of output elements are stored at once.
  const bool tensor_core_layout = rows_in_16_byte_chunks(a.q, a.q_stride, element_bytes) &&
                                  (a.kv_len == 0 || (rows_in_16_byte_chunks(a.k, a.k_stride, element_bytes) &&
                                                     rows_in_16_byte_chunks(a.v, a.v_stride, element_bytes))) &&
                                  is_aligned(a.out, uintptr_t(2 * element_bytes)) && a.out_stride[0] % 2 == 0 &&
                                  a.out_stride[1] % 2 == 0 && a.out_stride[2] % 2 == 0;
  if (sixteen_bit && device.major >= 8 && aligned_dims && tensor_core_layout &&
      head_dim_capacity(FwdPath::kTensorCoreSm80, a.head_dim, a.v_head_dim) != 0) {
    return FwdPath::kTensorCoreSm80;
  }
  // Prefill only: decoding calls (at most kDecodeMaxRows rows per head) stay on the tiled kernel's splits.
  if (!sixteen_bit && device.major >= 8 && aligned_dims && tensor_core_layout && a.q_len > cuda::kDecodeMaxRows &&
      head_dim_capacity(FwdPath::kFloat32TensorCores, a.head_dim, a.v_head_dim) != 0 && float32_variant != 0) {
    return FwdPath::kFloat32TensorCores;
  }
  if (head_dim_capacity(FwdPath::kTiled, a.head_dim, a.v_head_dim) != 0) return FwdPath::kTiled;
  return FwdPath::kGeneric;
}

// Flash-decoding: when the (batch, head, query tile) blocks cannot fill the GPU (fewer than
// `enough_blocks`), split the keys so that there are about `target_blocks`; each split keeps at
// least `min_tiles` key tiles.
int choose_num_splits(int64_t blocks, int64_t key_tiles, int64_t target_blocks, int64_t enough_blocks,
                      int64_t min_tiles) {
  if (blocks >= enough_blocks || key_tiles < 2 * min_tiles) return 1;
  const int64_t wanted =
      std::min<int64_t>({(target_blocks + blocks - 1) / blocks, key_tiles / min_tiles, cuda::kMaxSplits});
  // Splits get ceil(key_tiles / splits) tiles each; drop the splits that rounding leaves empty.
  const int64_t tiles_per_split = (key_tiles + wanted - 1) / wanted;
  return static_cast<int>((key_tiles + tiles_per_split - 1) / tiles_per_split);
}

template <class T, int kHeadDim, bool kMaskInputs, int kAccumMasks = 0>
std::string launch_tensor_core(bool decode, const FwdParams& p, cudaStream_t stream) {
  return decode ? cuda::launch_flash_fwd<cuda::DecodeTraitsFor<T, kHeadDim, kMaskInputs, kAccumMasks>>(p, stream)
                : cuda::launch_flash_fwd<cuda::FwdTraitsFor<T, kHeadDim, kMaskInputs, kAccumMasks>>(p, stream);
}

template <class T, bool kMaskInputs>
std::string launch_tensor_core(int capacity, bool decode, const FwdParams& p, cudaStream_t stream) {
  switch (capacity) {
    case 32: return launch_tensor_core<T, 32, true>(decode, p, stream);  // has_plain_variant(32) is false
    case 64: return launch_tensor_core<T, 64, kMaskInputs>(decode, p, stream);
    case 96: return launch_tensor_core<T, 96, kMaskInputs>(decode, p, stream);
    case 128: return launch_tensor_core<T, 128, kMaskInputs>(decode, p, stream);
    case 256: return launch_tensor_core<T, 256, kMaskInputs>(decode, p, stream);
    default: return "flash_attention_cuda: no tensor-core kernel for head dim capacity " + std::to_string(capacity);
  }
}

template <class T, int kAccumMasks>
std::string launch_tensor_core_accum(int capacity, bool decode, const FwdParams& p, cudaStream_t stream) {
  switch (capacity) {
    case 64: return launch_tensor_core<T, 64, false, kAccumMasks>(decode, p, stream);
    case 96: return launch_tensor_core<T, 96, false, kAccumMasks>(decode, p, stream);
    case 128: return launch_tensor_core<T, 128, false, kAccumMasks>(decode, p, stream);
    default: return "flash_attention_cuda: no masks-in-accumulator kernel for head dim capacity " + std::to_string(capacity);
  }
}

// Bias and/or keep without softcap: the plain variant with the masks in its accumulators (FwdTraits, kAccumMasks).
template <class T>
std::string launch_tensor_core_accum(int accum_masks, int capacity, bool decode, const FwdParams& p, cudaStream_t stream) {
  switch (accum_masks) {
    case cuda::kAccumBias: return launch_tensor_core_accum<T, cuda::kAccumBias>(capacity, decode, p, stream);
    case cuda::kAccumKeep: return launch_tensor_core_accum<T, cuda::kAccumKeep>(capacity, decode, p, stream);
    case cuda::kAccumBias | cuda::kAccumKeep:
      return launch_tensor_core_accum<T, cuda::kAccumBias | cuda::kAccumKeep>(capacity, decode, p, stream);
    default: return "flash_attention_cuda: no masks-in-accumulator kernel for masks " + std::to_string(accum_masks);
  }
}

// Whether the tiled kernel's smaller key tiles are needed to fit the device's shared memory.
bool tiled_small_smem(int capacity, const DeviceInfo& device) {
  const size_t bytes = capacity <= 64 ? cuda::TiledTraitsFor<float, 64, false>::kSmemBytes
                                      : cuda::TiledTraitsFor<float, 128, false>::kSmemBytes;
  return bytes > size_t(device.smem_optin);
}

template <class T>
std::string launch_tiled(int capacity, bool small_smem, const FwdParams& p, cudaStream_t stream) {
  if (capacity <= 64) {
    return small_smem ? cuda::launch_tiled_fwd<cuda::TiledTraitsFor<T, 64, true>>(p, stream)
                      : cuda::launch_tiled_fwd<cuda::TiledTraitsFor<T, 64, false>>(p, stream);
  }
  return small_smem ? cuda::launch_tiled_fwd<cuda::TiledTraitsFor<T, 128, true>>(p, stream)
                    : cuda::launch_tiled_fwd<cuda::TiledTraitsFor<T, 128, false>>(p, stream);
}

// The kernel a call runs: its family, head-dim capacity and tile variant.
struct KernelChoice {
  FwdPath path;
  int capacity;
  bool small_smem;  // tiled: the smaller key tiles of GPUs with at most 64 KiB of shared memory per block
  bool decode;      // tensor cores: the one-warp decoding tiles (at most kDecodeMaxRows rows per head)
  bool mask_inputs; // tensor cores: the variant with the bias/keep/softcap code (also for a scale <= 0, and
                    // where the head dim has no other)
  int accum_masks;  // tensor cores: the plain variant with these masks (cuda::kAccumBias | kAccumKeep) in its
                    // accumulators; 0: none
  int hopper;       // tensor cores, plain variant, prefill: a wgmma kernel (sm_90a): 1 cp.async, 2 TMA; 0 none
  bool split_tiles = false;  // float32 tensor cores: K and V split into tf32 parts once per block
  bool tf32_one_pass = false;  // float32 tensor cores: one TF32 product instead of 3xTF32 (asked for: variant 3)
};

// The Hopper kernels are built only by nvcc >= 12.3 (ORTFLASH_HAVE_HOPPER). On compute capability 9 a wgmma kernel
// runs by default from kHopperMinKeys keys: the TMA (warp-specialised) one, on an H200 1.2-2.0x SDPA's flash backend
// from 2k keys (fp16 head dim 128: 530-630 TFLOP/s; head dim 96: 1.3-1.7x), against 1.0-1.2x for the mma.sync kernel;
// at head dim 256 the cp.async one (1.3-1.6x, where the TMA one spills: 0.6-0.9x); with 128 keys (one key tile,
// nothing to pipeline) the mma.sync kernel was faster. ORTFLASH_CUDA_HOPPER chooses for every
// length: 0 the mma.sync kernel, 1 the cp.async wgmma kernel, 2 the TMA one.
#if defined(ORTFLASH_HAVE_HOPPER)
constexpr int64_t kHopperMinKeys = 256;

int hopper_requested(int capacity, int64_t kv_len) {
  const int setting = digit_setting("ORTFLASH_CUDA_HOPPER", 2);
  if (setting >= 0) return setting;
  return kv_len < kHopperMinKeys ? 0 : capacity == 256 ? 1 : 2;
}
#endif

// The plain variant's prefill calls and, on the TMA kernel, the masks-in-accumulator ones whose tiles fit.
int use_hopper(const KernelChoice& k, const DeviceInfo& device, int64_t kv_len) {
#if defined(ORTFLASH_HAVE_HOPPER)
  if (k.path != FwdPath::kTensorCoreSm80 || k.decode || k.mask_inputs) return 0;
  if (device.major != 9 || !cuda::has_hopper_variant(k.capacity)) return 0;
  const int requested = hopper_requested(k.capacity, kv_len);
  if (requested == 0 || (k.accum_masks != 0 && (requested != 2 || !cuda::has_hopper_mask_variant(k.capacity, k.accum_masks)))) {
    return 0;
  }
  static const bool available = cuda::hopper_fwd_available();  // the device runs the sm_90a image
  return available ? requested : 0;
#else
  (void)k;
  (void)device;
  (void)kv_len;
  return 0;
#endif
}

#if defined(ORTFLASH_HAVE_HOPPER)
// The TMA kernel with these masks; where it declines (mask rows or strides TMA cannot take), the mma.sync kernel's
// masks-in-accumulator variant.
template <class T, int kHeadDim, int kAccumMasks>
std::string launch_hopper_tma(const FwdParams& p, cudaStream_t stream) {
  bool declined = false;
  std::string error = cuda::launch_hopper_tma_fwd<cuda::HopperTraitsFor<T, kHeadDim, kAccumMasks>>(p, stream, &declined);
  if (declined) error = launch_tensor_core<T, kHeadDim, false, kAccumMasks>(false, p, stream);
  return error;
}

template <class T, int kHeadDim>
std::string launch_hopper(int variant, int accum_masks, const FwdParams& p, cudaStream_t stream) {
  if (variant != 2) return cuda::launch_hopper_fwd<cuda::HopperTraitsFor<T, kHeadDim>>(p, stream);
  if constexpr (!cuda::has_mask_accum_variant(kHeadDim)) {  // no masks here (use_hopper); nor their instantiations
    return accum_masks == 0 ? launch_hopper_tma<T, kHeadDim, 0>(p, stream)
                            : "flash_attention_cuda: no Hopper kernel for masks at head dim capacity " + std::to_string(kHeadDim);
  } else {
    switch (accum_masks) {
      case 0: return launch_hopper_tma<T, kHeadDim, 0>(p, stream);
      case cuda::kAccumBias: return launch_hopper_tma<T, kHeadDim, cuda::kAccumBias>(p, stream);
      case cuda::kAccumKeep: return launch_hopper_tma<T, kHeadDim, cuda::kAccumKeep>(p, stream);
      default: return launch_hopper_tma<T, kHeadDim, cuda::kAccumBias | cuda::kAccumKeep>(p, stream);
    }
  }
}
#endif

// variant: 1 the cp.async kernel, 2 the TMA one (which also takes masks in its accumulators).
template <class T>
std::string launch_hopper(int variant, int capacity, int accum_masks, const FwdParams& p, cudaStream_t stream) {
#if defined(ORTFLASH_HAVE_HOPPER)
  switch (capacity) {
    case 64: return launch_hopper<T, 64>(variant, accum_masks, p, stream);
    case 96: return launch_hopper<T, 96>(variant, accum_masks, p, stream);
    case 128: return launch_hopper<T, 128>(variant, accum_masks, p, stream);
    case 256: return launch_hopper<T, 256>(variant, accum_masks, p, stream);
    default: break;
  }
#else
  (void)variant;
  (void)accum_masks;
  (void)p;
  (void)stream;
#endif
  return "flash_attention_cuda: no Hopper kernel for head dim capacity " + std::to_string(capacity);
}

template <bool kMaskInputs, bool kSplitTiles, int kTf32Passes = 3>
std::string launch_float32_tensor_cores(int capacity, const FwdParams& p, cudaStream_t stream) {
  switch (capacity) {
    case 64: return cuda::launch_flash_fwd<cuda::Float32TraitsFor<64, kMaskInputs, kSplitTiles, kTf32Passes>>(p, stream);
    case 128: return cuda::launch_flash_fwd<cuda::Float32TraitsFor<128, kMaskInputs, kSplitTiles, kTf32Passes>>(p, stream);
    default: return "flash_attention_cuda: no float32 tensor-core kernel for head dim capacity " + std::to_string(capacity);
  }
}

// split_tiles: 3xTF32 with K and V split once per block; one_pass: a single TF32 product (never split).
template <bool kMaskInputs>
std::string launch_float32_tensor_cores(int capacity, bool split_tiles, bool one_pass, const FwdParams& p,
                                        cudaStream_t stream) {
  return one_pass      ? launch_float32_tensor_cores<kMaskInputs, false, 1>(capacity, p, stream)
         : split_tiles ? launch_float32_tensor_cores<kMaskInputs, true>(capacity, p, stream)
                       : launch_float32_tensor_cores<kMaskInputs, false>(capacity, p, stream);
}

// Whether the split-tile variant's shared memory fits the device (sm_80, sm_90; not sm_86/sm_89).
bool float32_split_tiles_fit(int capacity, bool mask_inputs, const DeviceInfo& device) {
  size_t bytes = 0;
  if (capacity == 64) {
    bytes = mask_inputs ? cuda::Float32TraitsFor<64, true, true>::kSmemBytes : cuda::Float32TraitsFor<64, false, true>::kSmemBytes;
  } else {
    bytes = mask_inputs ? cuda::Float32TraitsFor<128, true, true>::kSmemBytes : cuda::Float32TraitsFor<128, false, true>::kSmemBytes;
  }
  return bytes <= size_t(device.smem_optin);
}

template <class T>
std::string launch_forward(const KernelChoice& k, const FwdParams& p, cudaStream_t stream) {
  std::string error;
  switch (k.path) {
    case FwdPath::kFloat32TensorCores:
      if constexpr (std::is_same_v<T, float>) {
        error = k.mask_inputs ? launch_float32_tensor_cores<true>(k.capacity, k.split_tiles, k.tf32_one_pass, p, stream)
                              : launch_float32_tensor_cores<false>(k.capacity, k.split_tiles, k.tf32_one_pass, p, stream);
      } else {
        error = "flash_attention_cuda: the float32 tensor-core kernel takes float32";  // choose_path never asks
      }
      break;
    case FwdPath::kTensorCoreSm80:
      if constexpr (sizeof(T) == 2) {
        error = k.hopper        ? launch_hopper<T>(k.hopper, k.capacity, k.accum_masks, p, stream)
                : k.accum_masks ? launch_tensor_core_accum<T>(k.accum_masks, k.capacity, k.decode, p, stream)
                : k.mask_inputs ? launch_tensor_core<T, true>(k.capacity, k.decode, p, stream)
                                : launch_tensor_core<T, false>(k.capacity, k.decode, p, stream);
      } else {
        error = "flash_attention_cuda: no tensor-core kernel for float32";  // choose_path never asks for one
      }
      break;
    case FwdPath::kTiled: error = launch_tiled<T>(k.capacity, k.small_smem, p, stream); break;
    case FwdPath::kGeneric: error = cuda::launch_generic_fwd<T>(p, stream); break;
  }
  if (error.empty() && p.num_splits > 1) error = cuda::launch_combine_splits<T>(p, stream);
  return error;
}

// The dtype switch: the one place where runtime types become template arguments. Calls fn(T{}) for the element
// type T of `dtype`.
template <class Fn>
std::string with_element_type(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat16: return fn(__half{});
    case DType::kBFloat16: return fn(__nv_bfloat16{});
    case DType::kFloat32: return fn(float{});
  }
  return "flash_attention_cuda: unknown dtype";
}

std::string launch_forward(DType dtype, const KernelChoice& k, const FwdParams& p, cudaStream_t stream) {
  return with_element_type(dtype, [&](auto t) { return launch_forward<decltype(t)>(k, p, stream); });
}

constexpr size_t kMaxRepackBytes = size_t(256) << 20;

// Whether the chosen prefill kernel stages bias and keep tiles in shared memory (FwdTraits::kBiasTile /
// kKeepTile): every tensor-core variant but the general one at head dim 256, whose tiles do not fit beside
// K and V.
bool stages_mask_tiles(const KernelChoice& k) {
  if (k.path == FwdPath::kFloat32TensorCores) {
    return k.capacity == 64 ? cuda::Float32TraitsFor<64, true>::kMaskTiles : cuda::Float32TraitsFor<128, true>::kMaskTiles;
  }
  if (k.path != FwdPath::kTensorCoreSm80) return false;
  return k.accum_masks != 0 || k.capacity != 256 || cuda::FwdTraitsFor<__half, 256, true>::kMaskTiles;
}

// Scratch blocks a call holds until its kernels are enqueued (a stream-ordered allocator may then reuse them).
class ScratchBlocks {
 public:
  explicit ScratchBlocks(const CudaScratch& scratch) : scratch_(scratch) {}
  ~ScratchBlocks() {
    for (void* block : blocks_) scratch_.release(scratch_.self, block);
  }
  ScratchBlocks(const ScratchBlocks&) = delete;
  ScratchBlocks& operator=(const ScratchBlocks&) = delete;

  // nullptr when there is no allocator or it has no such block.
  void* allocate(size_t bytes) {
    if (scratch_.allocate == nullptr || scratch_.release == nullptr) return nullptr;
    void* block = scratch_.allocate(scratch_.self, bytes);
    if (block != nullptr) blocks_.push_back(block);
    return block;
  }

 private:
  const CudaScratch& scratch_;
  std::vector<void*> blocks_;
};

// When a bias or keep mask's rows are not in 16-byte chunks (say, 77 keys of float16), copies its stored rows
// into scratch rows that are, and points the params there: the kernel then stages the tiles with cp.async
// instead of one dependent global load per element. Leaves the mask as it is (and the kernel reads it element
// by element) where that cannot be done: keys not contiguous, no scratch, a failed allocation.
// E: an unsigned type of the element's size. Masks past kMaxRepackBytes stay where they are: an arena
// allocator would keep that much scratch for good.
template <class E>
std::string repack_mask_rows(const void*& mask, int64_t (&stride)[4], bool& chunks, const AttentionParams& a,
                             ScratchBlocks& blocks, cudaStream_t stream) {
  if (mask == nullptr || chunks || stride[3] != 1 || a.kv_len == 0) return {};
  cuda::RepackShape s;
  s.batches = stride[0] != 0 ? static_cast<int>(a.batch) : 1;
  s.heads = stride[1] != 0 ? static_cast<int>(a.q_heads) : 1;
  s.rows = stride[2] != 0 ? static_cast<int>(a.q_len) : 1;
  std::copy(stride, stride + 3, s.src_stride);
  s.kv_len = static_cast<int>(a.kv_len);
  constexpr int64_t kPerChunk = 16 / int64_t(sizeof(E));
  const int64_t pitch = (a.kv_len + kPerChunk - 1) / kPerChunk * kPerChunk;
  const int64_t rows = int64_t(s.batches) * s.heads * s.rows;
  if (rows > INT_MAX || pitch > INT_MAX) return {};
  s.pitch = static_cast<int>(pitch);
  const size_t bytes = size_t(rows) * size_t(pitch) * sizeof(E);
  if (bytes > kMaxRepackBytes) return {};
  void* block = blocks.allocate(bytes);
  if (block == nullptr || reinterpret_cast<uintptr_t>(block) % 16 != 0) return {};
  ORTFLASH_LAUNCH(cuda::repack_mask_rows_kernel<E>, static_cast<unsigned>(rows), cuda::kRepackThreads, 0, stream,
                  static_cast<const E*>(mask), static_cast<E*>(block), s);
  if (const cudaError_t status = cudaGetLastError(); status != cudaSuccess) {
    return cuda_failure("repack_mask_rows_kernel launch", status);
  }
  mask = block;
  stride[0] = s.batches > 1 ? int64_t(s.heads) * s.rows * pitch : 0;
  stride[1] = s.heads > 1 ? int64_t(s.rows) * pitch : 0;
  stride[2] = s.rows > 1 ? pitch : 0;
  stride[3] = 1;
  chunks = true;
  return {};
}

// Live key ranges (live_keys.cuh) for a prefill call whose bias and keep are the same for every query row: the
// padding mask of an exported encoder, or of a batched prompt. Not for decoding: one more launch on every step
// would cost more than the tiles it could skip there. By default only where the pass paid for itself on an H200
// (fifth GPU run; a quarter of every other batch entry padded, `bench_attention.py --mode encoder --live-keys both`):
// - float16/bfloat16: a keep mask's pass from 1024 keys (it cost 2-5% at 512 and gained 8-10% at 2048); a bias's
//   never (its bound also reads the queries and the padding's K and V rows, one block per (batch, head): it cost
//   6-15% at every length from 2048 to 8192);
// - float32, whose kernels run at a sixth of the 16-bit ones' speed: either pass from 512 keys (+6-16% at 512-2048;
//   up to 35% lost at 128-256).
// ORTFLASH_CUDA_LIVE_KEYS=0 turns the passes off, =1 runs them for every prefill call with a mask of more than 64 keys.
constexpr int64_t kNeverByDefault = std::numeric_limits<int64_t>::max();
int64_t live_keys_min_keys(DType dtype, bool has_bias) {
  if (dtype == DType::kFloat32) return 512;
  return has_bias ? kNeverByDefault : 1024;
}

// 0: off; 1: asked for at every length; -1: the default (from the lengths above).
int live_ranges_setting() { return digit_setting("ORTFLASH_CUDA_LIVE_KEYS", 1); }

// Whether a mask of the call varies by query row (a bias or keep with a query-row stride).
bool mask_varies_by_row(const FwdParams& p) {
  return (p.bias != nullptr && p.bias_stride[2] != 0) || (p.keep != nullptr && p.keep_stride[2] != 0);
}

bool wants_live_keys(DType dtype, const KernelChoice& k, const FwdParams& p) {
  if (k.path == FwdPath::kGeneric || k.decode || p.kv_len <= 64 || (p.bias == nullptr && p.keep == nullptr) ||
      mask_varies_by_row(p)) {
    return false;
  }
  const int setting = live_ranges_setting();
  return setting == 1 || (setting == -1 && p.kv_len >= live_keys_min_keys(dtype, p.bias != nullptr));
}

// Masks that vary by query row (live_rows.cuh: a decoder export's causal mask in its bias, a position bias with
// padding) get per-slice ranges from three more launches, one pass over each mask and, where it leaves candidates,
// one over K and V: only from kLiveRowsMinKeys keys, where that is small next to the tiles it can skip. By default
// for float32 alone: on an H200 (fifth GPU run, a (B,1,S,S) causal + padding bias) they gained 9-28% at 512 keys and
// 33-51% at 2048 on the float32 tensor-core kernel, and cost 50-64% on the 16-bit ones (which run six times as
// fast). ORTFLASH_CUDA_LIVE_ROWS=1 turns them on for every dtype, =0 off (as does ORTFLASH_CUDA_LIVE_KEYS=0).
constexpr int kLiveRowsMinKeys = 512;
// Scratch past this (the requirements: mask slices x keys floats) is not worth holding: the ranges are left out.
constexpr size_t kMaxLiveRowsBytes = size_t(64) << 20;

bool wants_live_rows(DType dtype, const KernelChoice& k, const FwdParams& p) {
  if (k.path == FwdPath::kGeneric || k.decode || p.kv_len < kLiveRowsMinKeys || !mask_varies_by_row(p)) return false;
  const int setting = digit_setting("ORTFLASH_CUDA_LIVE_ROWS", 1);
  return live_ranges_setting() != 0 && (setting == 1 || (setting == -1 && dtype == DType::kFloat32));
}

template <class T>
std::string launch_live_keys(const FwdParams& p, int slices, cuda::KeyRange* out, cudaStream_t stream) {
  ORTFLASH_LAUNCH(cuda::live_keys_kernel<T>, static_cast<unsigned>(p.batch * p.q_heads), cuda::kLiveKeysThreads, 0, stream,
                  p, slices, out);
  if (const cudaError_t status = cudaGetLastError(); status != cudaSuccess) {
    return cuda_failure("live_keys_kernel launch", status);
  }
  return {};
}

// Points p.live_ranges at the ranges of this call, computed on the stream ahead of the forward kernel; leaves it
// null (every key computed) where there is no scratch for them.
std::string find_live_keys(DType dtype, FwdParams& p, ScratchBlocks& blocks, cudaStream_t stream) {
  const int slices = (p.q_len + cuda::kLiveRows - 1) / cuda::kLiveRows;
  const int64_t heads = int64_t(p.batch) * p.q_heads;
  if (heads > INT_MAX || heads * slices > INT_MAX) return {};
  auto* ranges = static_cast<cuda::KeyRange*>(blocks.allocate(size_t(heads) * slices * sizeof(cuda::KeyRange)));
  if (ranges == nullptr) return {};
  const std::string error =
      with_element_type(dtype, [&](auto t) { return launch_live_keys<decltype(t)>(p, slices, ranges, stream); });
  if (error.empty()) {
    p.live_ranges = ranges;
    p.live_slices = slices;
  }
  return error;
}

template <class T>
std::string launch_live_rows(const FwdParams& p, const cuda::LiveRowsWork& work, unsigned mask_slices, unsigned ranges,
                             cudaStream_t stream) {
  ORTFLASH_LAUNCH(cuda::live_slices_kernel<T>, mask_slices, cuda::kLiveRowsThreads, 0, stream, p, work);
  ORTFLASH_LAUNCH(cuda::live_key_norms_kernel<T>, static_cast<unsigned>(p.batch * p.kv_heads), cuda::kLiveRowsThreads, 0,
                  stream, p, work);
  ORTFLASH_LAUNCH(cuda::live_ranges_kernel<T>, ranges, cuda::kLiveRowsThreads, 0, stream, p, work);
  if (const cudaError_t status = cudaGetLastError(); status != cudaSuccess) {
    return cuda_failure("live_rows kernels launch", status);
  }
  return {};
}

// Points p.live_ranges at per-slice ranges computed on the stream ahead of the forward kernel; leaves it null (every
// key computed) where there is no scratch, or it would take more than kMaxLiveRowsBytes.
std::string find_live_rows(DType dtype, FwdParams& p, ScratchBlocks& blocks, cudaStream_t stream) {
  cuda::LiveRowsWork work;
  const auto varies = [&](int dim) {
    return (p.bias != nullptr && p.bias_stride[dim] != 0) || (p.keep != nullptr && p.keep_stride[dim] != 0);
  };
  work.mask_batches = varies(0) ? p.batch : 1;
  work.mask_heads = varies(1) ? p.q_heads : 1;
  work.slices = (p.q_len + cuda::kLiveRows - 1) / cuda::kLiveRows;
  const int64_t mask_slices = int64_t(work.mask_batches) * work.mask_heads * work.slices;
  const int64_t ranges = int64_t(p.batch) * p.q_heads * work.slices;
  const int64_t norms = int64_t(p.batch) * p.kv_heads * p.kv_len;
  if (ranges > INT_MAX || norms > INT_MAX || mask_slices * p.kv_len > INT_MAX) return {};
  const auto aligned = [](size_t bytes) { return (bytes + 255) / 256 * 256; };
  const size_t slice_bytes = aligned(size_t(mask_slices) * sizeof(cuda::LiveSlice));
  const size_t witness_bytes = aligned(size_t(mask_slices) * cuda::kLiveRows * sizeof(int));
  const size_t requirement_bytes = aligned(size_t(mask_slices) * size_t(p.kv_len) * sizeof(float));
  const size_t norm_bytes = aligned(size_t(norms) * sizeof(float));
  const size_t range_bytes = aligned(size_t(ranges) * sizeof(cuda::KeyRange));
  const size_t total = slice_bytes + witness_bytes + requirement_bytes + norm_bytes + range_bytes;
  if (total > kMaxLiveRowsBytes) return {};
  auto* base = static_cast<unsigned char*>(blocks.allocate(total));
  if (base == nullptr) return {};
  work.slice = reinterpret_cast<cuda::LiveSlice*>(base);
  work.witness = reinterpret_cast<int*>(base + slice_bytes);
  work.requirement = reinterpret_cast<float*>(base + slice_bytes + witness_bytes);
  work.key_norm = reinterpret_cast<float*>(base + slice_bytes + witness_bytes + requirement_bytes);
  work.ranges = reinterpret_cast<cuda::KeyRange*>(base + total - range_bytes);
  const std::string error = with_element_type(dtype, [&](auto t) {
    return launch_live_rows<decltype(t)>(p, work, unsigned(mask_slices), unsigned(ranges), stream);
  });
  if (error.empty()) {
    p.live_ranges = work.ranges;
    p.live_slices = work.slices;
  }
  return error;
}

}  // namespace

std::string flash_attention_cuda(const AttentionParams& call, void* stream, const CudaScratch& scratch,
                                 const CudaOptions& options) {
  if (std::string error = validate(call); !error.empty()) return error;
  if (call.batch == 0 || call.q_heads == 0 || call.q_len == 0 || call.v_head_dim == 0) return {};  // no output
  if (std::string error = validate_pointers(call); !error.empty()) return error;
  const AttentionParams params = fold_query_heads_into_rows(call);

  DeviceInfo device;
  if (std::string error = query_device(device); !error.empty()) return error;
  FwdParams p = make_fwd_params(params);
  KernelChoice k;
  const int float32_variant = params.dtype != DType::kFloat32      ? 0
                              : options.float32_tensor_cores >= 0 ? options.float32_tensor_cores
                                                                  : float32_tensor_cores_requested();
  k.path = choose_path(params, device, float32_variant);
  k.capacity = head_dim_capacity(k.path, params.head_dim, params.v_head_dim);
  k.small_smem = k.path == FwdPath::kTiled && tiled_small_smem(k.capacity, device);
  k.decode = k.path == FwdPath::kTensorCoreSm80 && params.q_len <= cuda::kDecodeMaxRows;
  // The plain variant folds a positive scale into its exponentials (fwd_kernel.cuh, raw_scores).
  // Bias and keep without softcap (the exported encoder's padding mask) start the plain variant's scores
  // at bias / scale, or -inf for a hidden key. bias / scale stays finite for float16 biases (|bias| <=
  // 65504) with a normal positive scale; a bfloat16 one may pass FLT_MAX and is clamped there, which the
  // raw-score softmax (scores times scale * log2(e)) survives only for scale * log2(e) <= 1.
  const bool bias_fits = p.bias == nullptr || params.dtype == DType::kFloat16 || p.scale_log2 <= 1.0f;
  const bool accum = k.path == FwdPath::kTensorCoreSm80 && (p.bias != nullptr || p.keep != nullptr) && bias_fits &&
                     !(p.softcap > 0.0f) && p.scale >= 1e-30f && p.scale <= 1e30f && p.scale_log2 > 0.0f &&
                     cuda::has_mask_accum_variant(k.capacity);
  k.accum_masks = accum ? (p.bias != nullptr ? cuda::kAccumBias : 0) | (p.keep != nullptr ? cuda::kAccumKeep : 0) : 0;
  k.mask_inputs = !accum && (p.bias != nullptr || p.keep != nullptr || p.softcap > 0.0f ||
                                    !(p.scale_log2 > 0.0f) || !cuda::has_plain_variant(k.capacity));
  k.hopper = use_hopper(k, device, params.kv_len);
  k.split_tiles = k.path == FwdPath::kFloat32TensorCores && float32_variant == 2 &&
                  float32_split_tiles_fit(k.capacity, k.mask_inputs, device);
  k.tf32_one_pass = k.path == FwdPath::kFloat32TensorCores && float32_variant == 3;

  int64_t blocks = 0;
  int64_t key_tiles = 0;
  int64_t target_blocks = 2 * int64_t(device.sm_count);
  int64_t min_tiles_per_split = 1;
  if (k.path != FwdPath::kGeneric) {
    const cuda::TileShape tile = k.path == FwdPath::kTiled
                                     ? cuda::TileShape{64, cuda::tiled_block_n(k.capacity, k.small_smem), 8}
                                 : k.path == FwdPath::kFloat32TensorCores ? cuda::float32_tile_shape(k.capacity)
                                 : k.decode ? cuda::decode_tile_shape(k.capacity)
                                 : k.hopper ? cuda::hopper_tile_shape(k.capacity)
                                            : cuda::tile_shape(k.capacity, k.mask_inputs);
    blocks = (params.q_len + tile.block_m - 1) / tile.block_m * params.q_heads * params.batch;
    key_tiles = (params.kv_len + tile.block_n - 1) / tile.block_n;
    if (k.decode) {
      target_blocks = int64_t(cuda::kDecodeBlocksPerSm) * device.sm_count;
      min_tiles_per_split = key_tiles >= cuda::kDecodeLongTiles ? cuda::kDecodeMinTilesPerSplit : 1;
    }
  } else {
    blocks = (params.batch * params.q_heads * params.q_len + cuda::kGenericWarps - 1) / cuda::kGenericWarps;
    key_tiles = (params.kv_len + 255) / 256;  // a split of the generic kernel covers at least 256 keys
  }
  const bool has_scratch = scratch.allocate != nullptr && scratch.release != nullptr;
  const int splits = has_scratch ? choose_num_splits(blocks, key_tiles, target_blocks, k.decode ? target_blocks : device.sm_count,
                                                     min_tiles_per_split)
                                 : 1;

  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  ScratchBlocks held(scratch);  // released once everything is enqueued (stream-ordered allocator)
  // Not for decoding: its masks are a few rows (the element copies cost a load or two per thread and
  // tile), and one more launch would cost more than that on every step — where a growing cache leaves
  // 7 of 8 key counts off the chunk size.
  if (stages_mask_tiles(k) && !k.decode) {
    const std::string repacked =
        params.dtype == DType::kFloat32
            ? repack_mask_rows<uint32_t>(p.bias, p.bias_stride, p.bias_chunks, params, held, cuda_stream)
            : repack_mask_rows<uint16_t>(p.bias, p.bias_stride, p.bias_chunks, params, held, cuda_stream);
    if (!repacked.empty()) return repacked;
    const void* keep = p.keep;
    if (std::string error = repack_mask_rows<uint8_t>(keep, p.keep_stride, p.keep_chunks, params, held, cuda_stream);
        !error.empty()) {
      return error;
    }
    p.keep = static_cast<const uint8_t*>(keep);
  }
  if (wants_live_keys(params.dtype, k, p)) {
    if (std::string error = find_live_keys(params.dtype, p, held, cuda_stream); !error.empty()) return error;
  } else if (wants_live_rows(params.dtype, k, p)) {
    if (std::string error = find_live_rows(params.dtype, p, held, cuda_stream); !error.empty()) return error;
  }
  if (splits == 1) return launch_forward(params.dtype, k, p, cuda_stream);

  const size_t rows = static_cast<size_t>(params.batch * params.q_heads * params.q_len);
  const size_t out_bytes = (size_t(splits) * rows * size_t(params.v_head_dim) * sizeof(float) + 255) / 256 * 256;
  const size_t row_state_bytes = 2 * size_t(splits) * rows * sizeof(float);  // partial_max, partial_sum
  void* block = held.allocate(out_bytes + row_state_bytes);
  if (block == nullptr) {
    return "flash_attention_cuda: allocating " + std::to_string(out_bytes + row_state_bytes) +
           " bytes of split-KV scratch failed";
  }
  p.num_splits = splits;
  p.partial_out = static_cast<float*>(block);
  p.partial_max = reinterpret_cast<float*>(static_cast<char*>(block) + out_bytes);
  p.partial_sum = p.partial_max + size_t(splits) * rows;
  return launch_forward(params.dtype, k, p, cuda_stream);
}

}  // namespace ortflash

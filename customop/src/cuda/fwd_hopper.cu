// The Hopper (wgmma) forward kernels' launches and instantiations (fp16, bf16 x head dims 64, 128; the
// cp.async kernel and the TMA one with its tensor maps). Built only for sm_90a (nvcc >= 12.3; see cuda.cmake)
// and on the emulator.
#include <cuda_runtime_api.h>

#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#if !defined(ORTFLASH_SIMT)
#include <cuda.h>
#include <dlfcn.h>
#endif

#include "fwd_launch.cuh"
#include "hopper_kernel.cuh"

namespace ortflash::cuda {

template <class Tr>
inline DynamicSmemLimit hopper_fwd_smem_limit;

template <class Tr>
std::string launch_hopper_fwd(const FwdParams& p, cudaStream_t stream) {
  return launch_row_blocks<Tr>(&hopper_fwd_kernel<Tr>, hopper_fwd_smem_limit<Tr>, "hopper_fwd_kernel", Tr::kThreads,
                               Tr::kSmemBytes, p, stream);
}

template <class Tr>
inline DynamicSmemLimit hopper_tma_fwd_smem_limit;

#if !defined(ORTFLASH_SIMT)
// cuTensorMapEncodeTiled from the driver, looked up once (the CUDA runtime is linked statically and loads the
// driver itself; the op library must still load where there is none).
using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*,
                                   const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                   CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
EncodeTiledFn encode_tiled() {
  static const EncodeTiledFn fn = [] {
    void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    return driver != nullptr ? reinterpret_cast<EncodeTiledFn>(dlsym(driver, "cuTensorMapEncodeTiled")) : nullptr;
  }();
  return fn;
}
#endif

// A tensor map of 4 dimensions (dims[0] contiguous, elements E; `strides`: elements of dims 1..3): boxes of
// box[0] x box[1] x 1 x 1, the 128-byte swizzle, zeros outside. Dimensions of extent 1 get the packed stride
// (theirs is never used — it may be 0 for a broadcast — and TMA wants every stride a positive multiple of 16
// bytes). "" or why not.
template <class E>
std::string encode_map(TmaDescriptor& map, const void* base, const uint64_t (&dims)[4], const int64_t (&given)[3],
                       const uint32_t (&box)[2]) {
  uint64_t strides[3];
  uint64_t packed = dims[0] * sizeof(E);
  for (int i = 0; i < 3; ++i) {
    packed = (packed + 15) / 16 * 16;
    if (dims[i + 1] == 1) {
      strides[i] = packed;
    } else if (given[i] <= 0) {
      return "a non-positive stride";
    } else {
      strides[i] = uint64_t(given[i]) * sizeof(E);
    }
    if (strides[i] % 16 != 0 || strides[i] >= (uint64_t(1) << 40)) return "a stride TMA cannot take";
    packed = strides[i] * dims[i + 1];
  }
  const uint32_t box4[4] = {box[0], box[1], 1, 1};
#if defined(ORTFLASH_SIMT)
  const char* refused = simt::encode_tensor_map(&map, base, int(sizeof(E)), 4, dims, strides, box4, true);
  return refused == nullptr ? std::string() : std::string(refused);
#else
  const EncodeTiledFn encode = encode_tiled();
  if (encode == nullptr) return "no cuTensorMapEncodeTiled in the driver";
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  const CUtensorMapDataType type = sizeof(E) == 1                    ? CU_TENSOR_MAP_DATA_TYPE_UINT8
                                   : std::is_same_v<E, __half>       ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                                                     : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  const CUresult result = encode(&map, type, 4, const_cast<void*>(base), dims, strides, box4, element_strides,
                                 CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return result == CUDA_SUCCESS ? std::string() : "cuTensorMapEncodeTiled failed (" + std::to_string(int(result)) + ")";
#endif
}

// q, k or v as (head-dim column, row, head, batch); boxes of 64 columns by box_rows rows.
template <class T>
std::string encode_input_map(TmaDescriptor& map, const void* base, int cols, int rows, int heads, int batch,
                             const int64_t (&stride)[3], int box_rows) {
  const uint64_t dims[4] = {uint64_t(cols), uint64_t(rows), uint64_t(heads), uint64_t(batch)};
  return encode_map<T>(map, base, dims, {stride[2], stride[1], stride[0]}, {64, uint32_t(box_rows)});
}

// A bias (E = T) or keep mask (bytes) as (key, query row, head, batch), broadcast dimensions of extent 1; boxes
// of one 128-byte span of keys by kBlockM rows, or 1 row when broadcast over query rows. Keys must be contiguous.
template <class E, class Tr>
std::string encode_mask_map(TmaDescriptor& map, const void* base, const int64_t (&stride)[4], const FwdParams& p) {
  if (stride[3] != 1) return "keys not contiguous";
  const uint64_t dims[4] = {uint64_t(p.kv_len), stride[2] == 0 ? 1u : uint64_t(p.q_len), stride[1] == 0 ? 1u : uint64_t(p.q_heads),
                            stride[0] == 0 ? 1u : uint64_t(p.batch)};
  const uint32_t box[2] = {uint32_t(128 / sizeof(E)), stride[2] == 0 ? 1u : uint32_t(Tr::kBlockM)};
  return encode_map<E>(map, base, dims, {stride[2], stride[1], stride[0]}, box);
}

// The TMA kernel; where the inputs cannot be described by tensor maps (strides TMA refuses), the cp.async one,
// or with masks nothing: *declined is set and the caller runs the mma.sync kernel (whose kernels must not be
// instantiated here: this file's device code is sm_90a only).
template <class Tr>
std::string launch_hopper_tma_fwd(const FwdParams& p, cudaStream_t stream, bool* declined) {
  using T = typename Tr::T;
  constexpr bool kMasks = Tr::kBiasIn || Tr::kKeepIn;
  *declined = false;
  const auto fallback = [&]() {
    if constexpr (kMasks) {
      *declined = true;
      return std::string();
    } else {
      return launch_hopper_fwd<Tr>(p, stream);
    }
  };
  if constexpr (!Tr::kFits) {
    return fallback();
  } else {
    HopperTmaMaps maps;
    std::string refused = encode_input_map<T>(maps.q, p.q, p.head_dim, p.q_len, p.q_heads, p.batch, p.q_stride, Tr::kBlockM);
    if (refused.empty() && p.kv_len > 0) {
      refused = encode_input_map<T>(maps.k, p.k, p.head_dim, p.kv_len, p.kv_heads, p.batch, p.k_stride, Tr::kBlockN);
    }
    if (refused.empty() && p.kv_len > 0) {
      refused = encode_input_map<T>(maps.v, p.v, p.v_head_dim, p.kv_len, p.kv_heads, p.batch, p.v_stride, Tr::kBlockN);
    }
    if (Tr::kBiasIn && refused.empty() && p.kv_len > 0) {
      refused = p.bias_chunks ? encode_mask_map<T, Tr>(maps.bias, p.bias, p.bias_stride, p) : "bias rows not in 16-byte chunks";
    }
    if (Tr::kKeepIn && refused.empty() && p.kv_len > 0) {
      refused = p.keep_chunks ? encode_mask_map<uint8_t, Tr>(maps.keep, p.keep, p.keep_stride, p) : "keep rows not in 16-byte chunks";
    }
    if (!refused.empty()) return fallback();
    return launch_row_blocks<Tr>(&hopper_tma_fwd_kernel<Tr>, hopper_tma_fwd_smem_limit<Tr>, "hopper_tma_fwd_kernel",
                                 Tr::kTmaThreads, Tr::kTmaSmemBytes, p, stream, maps);
  }
}

#define ORTFLASH_HOPPER_INSTANCES(T, D)                                                                       \
  template std::string launch_hopper_fwd<HopperTraitsFor<T, D>>(const FwdParams&, cudaStream_t);               \
  template std::string launch_hopper_tma_fwd<HopperTraitsFor<T, D>>(const FwdParams&, cudaStream_t, bool*);    \
  template std::string launch_hopper_tma_fwd<HopperTraitsFor<T, D, 1>>(const FwdParams&, cudaStream_t, bool*); \
  template std::string launch_hopper_tma_fwd<HopperTraitsFor<T, D, 2>>(const FwdParams&, cudaStream_t, bool*); \
  template std::string launch_hopper_tma_fwd<HopperTraitsFor<T, D, 3>>(const FwdParams&, cudaStream_t, bool*);
ORTFLASH_HOPPER_INSTANCES(__half, 64)
ORTFLASH_HOPPER_INSTANCES(__nv_bfloat16, 64)
ORTFLASH_HOPPER_INSTANCES(__half, 128)
ORTFLASH_HOPPER_INSTANCES(__nv_bfloat16, 128)
#undef ORTFLASH_HOPPER_INSTANCES
// Head dim 256: no masks (the mma.sync kernel has no masks-in-accumulator variant there to decline to).
template std::string launch_hopper_fwd<HopperTraitsFor<__half, 256>>(const FwdParams&, cudaStream_t);
template std::string launch_hopper_tma_fwd<HopperTraitsFor<__half, 256>>(const FwdParams&, cudaStream_t, bool*);
template std::string launch_hopper_fwd<HopperTraitsFor<__nv_bfloat16, 256>>(const FwdParams&, cudaStream_t);
template std::string launch_hopper_tma_fwd<HopperTraitsFor<__nv_bfloat16, 256>>(const FwdParams&, cudaStream_t, bool*);

bool hopper_fwd_available() {
  cudaFuncAttributes attributes;
  const cudaError_t status = cudaFuncGetAttributes(&attributes, &hopper_fwd_kernel<HopperTraitsFor<__half, 128>>);
  if (status != cudaSuccess) (void)cudaGetLastError();  // no sm_90a image for this device: not an error of any call
  return status == cudaSuccess;
}

}  // namespace ortflash::cuda

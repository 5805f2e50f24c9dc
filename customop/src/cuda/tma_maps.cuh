// OrtFlash CUDA — host side of TMA: tensor maps (cuTensorMapEncodeTiled, looked up in the driver at run time;
// the emulator's encoder under ORTFLASH_SIMT) for the 4-d tiles the Hopper kernels load. Host code only.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#if !defined(ORTFLASH_SIMT)
#include <cuda.h>
#include <dlfcn.h>
#endif

#include "wgmma_primitives.cuh"

namespace ortflash::cuda {

#if !defined(ORTFLASH_SIMT)
// cuTensorMapEncodeTiled from the driver, looked up once (the CUDA runtime is linked statically and loads the
// driver itself; the op library must still load where there is none).
using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*,
                                   const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                   CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
inline EncodeTiledFn encode_tiled() {
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

}  // namespace ortflash::cuda

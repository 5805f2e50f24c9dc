// simt shim of <cuda_bf16.h>: the bfloat16 storage types and the conversions OrtFlash's kernels use,
// rounding to nearest even as the hardware does.
#pragma once

#include <cstdint>

#include "cuda_fp16.h"

struct __nv_bfloat16 {
  uint16_t __x;
};

struct __nv_bfloat162 {
  __nv_bfloat16 x, y;  // x: the lower 16 bits of the 32-bit register
};

namespace simt {

inline uint16_t float_to_bfloat16_bits(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>(((u >> 16) & 0x8000u) | 0x7fc0u);  // NaN
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

}  // namespace simt

inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{simt::float_to_bfloat16_bits(f)}; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return simt::bits_float(static_cast<uint32_t>(h.__x) << 16); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return __nv_bfloat162{__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}

// simt shim of <cuda_fp16.h>: the float16 storage types and the conversions OrtFlash's kernels use,
// rounding to nearest even as the hardware does.
#pragma once

#include <cstdint>
#include <cstring>

#include "../simt_device.h"

struct __half {
  uint16_t __x;
};

struct __half2 {
  __half x, y;  // x: the lower 16 bits of the 32-bit register
};

namespace simt {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t float_to_half_bits(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return sign | 0x7e00u;  // NaN
  const int exponent = static_cast<int>(magnitude >> 23) - 127;
  if (exponent >= 16) return sign | 0x7c00u;  // beyond the largest finite half: infinity
  if (exponent >= -14) {                       // a normal half (rounding may carry into infinity)
    const uint32_t mantissa = magnitude & 0x7fffffu;
    uint32_t h = (static_cast<uint32_t>(exponent + 15) << 10) | (mantissa >> 13);
    const uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  if (exponent < -25) return sign;  // below half the smallest subnormal
  // Subnormal: units of 2^-24.
  const uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;  // value = significand * 2^(exponent - 23)
  const int shift = -exponent - 1;                                    // 14..24
  uint32_t h = significand >> shift;
  const uint32_t rest = significand & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    const float value = std::ldexp(static_cast<float>(mantissa), -24);
    return sign != 0 ? -value : value;
  }
  return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

}  // namespace simt

inline __half __float2half_rn(float f) { return __half{simt::float_to_half_bits(f)}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __half2float(__half h) { return simt::half_bits_to_float(h.__x); }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2{__float2half_rn(lo), __float2half_rn(hi)}; }

// OrtFlash CUDA — the numerics shared by every forward kernel: the score transform of the op
// contract (scale → softcap → + bias → masks), in log2 units so the softmax uses exp2f, and the
// pieces of the online softmax (row max guard, rescale, quad reductions).
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "cuda_compat.cuh"
#include "fwd_params.cuh"

namespace ortflash::cuda {

constexpr float kLog2e = 1.4426950408889634f;

// Largest starting score of the masks-in-accumulator variant: 2^100, far from FLT_MAX. Tensor cores
// do not round accumulators near FLT_MAX the IEEE way (a start at -FLT_MAX came back NaN on an H200), and
// every product of the 16-bit inputs (< 2^34) vanishes next to it.
constexpr float kMaxStart = 1.2676506e30f;

// 2^x on the special-function unit: one MUFU.EX2 (ex2.approx.ftz: relative error about 2^-22, results
// below 2^-126 flushed to 0, exp2(-inf) = 0, NaN stays NaN). exp2f without --use_fast_math adds a
// range check and two multiplies around the same instruction to keep subnormal results, which a
// softmax weight 2^-126 below its row's largest cannot need; per score that is most of the
// non-mma instructions of the key loop.
__device__ __forceinline__ float fast_exp2(float x) {
#if defined(ORTFLASH_SIMT) || !defined(__CUDA_ARCH__)
  const float y = exp2f(x);
  return y < 1.17549435e-38f ? 0.0f : y;  // the flush to zero of ex2.approx.ftz
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

// The exponent (base 2) of a score's softmax weight before the row max is subtracted, for the
// general case with softcap and/or bias. Without either, callers use `s * p.scale_log2` (log2(e)
// folded into the scale: one multiply per score).
__device__ __forceinline__ float score_to_log2(float dot, float bias, const FwdParams& p) {
  float score = dot * p.scale;
  if (p.softcap > 0.0f) score = p.softcap * tanhf(score * p.softcap_inv);
  const float natural = score + bias;
  const float x = natural * kLog2e;
  // A finite score beyond FLT_MAX / log2(e) = 2.4e38 — any bias of finfo(float32 or bfloat16).min,
  // which the contract treats as an ordinary number — overflows to -inf here and would read as a
  // hidden key, so a row masked only by such a bias would yield the masked_rows value instead of
  // the average of its values. Clamped to ±FLT_MAX it stays finite; a real -inf stays -inf.
  return fabsf(x) == INFINITY && fabsf(natural) != INFINITY ? copysignf(FLT_MAX, x) : x;
}

// Whether key `col` takes part in query `row`'s softmax (the key range, causal alignment and, with
// kReadKeep, the keep mask). Out-of-range query rows are never stored, so they only need to avoid
// reading `keep`.
template <bool kReadKeep = true>
__device__ __forceinline__ bool key_visible(const FwdParams& p, int64_t keep_base, int row, int col) {
  if (col >= p.kv_len) return false;
  if (p.causal && col > row + p.causal_offset) return false;
  if (kReadKeep && p.keep != nullptr && row < p.q_len) {
    return p.keep[keep_base + row * p.keep_stride[2] + col * p.keep_stride[3]] != 0;
  }
  return true;
}

// The value subtracted from a row's scores before exp2: the running max, except that a row that
// has seen no visible key yet (max = -inf) subtracts 0 — the -inf - -inf guard, which keeps the
// weights of masked keys at exp2(-inf) = 0 instead of NaN.
__device__ __forceinline__ float max_for_exp(float row_max) { return row_max == -INFINITY ? 0.0f : row_max; }

// Factor that rescales a row's accumulators when its running max grows from `old_max` to `new_max`;
// `to_log2` (positive) converts the maxima's units to log2 units.
__device__ __forceinline__ float rescale_factor(float old_max, float new_max, float to_log2 = 1.0f) {
  return fast_exp2((old_max - max_for_exp(new_max)) * to_log2);
}

// Reductions over the 4 lanes of a quad (the lanes sharing one accumulator row of an mma tile).
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// What a finished row stores: its normalised output, or the masked_rows policy when no key was
// visible (or every visible score was -inf).
// `inv_row_sum` is 1 / (the row's sum of weights), computed once per row.
__device__ __forceinline__ float finalize_output(float acc, float inv_row_sum, bool row_masked, const FwdParams& p) {
  if (row_masked) return p.masked_rows_nan ? __int_as_float(0x7fc00000) : 0.0f;
  return acc * inv_row_sum;
}

}  // namespace ortflash::cuda

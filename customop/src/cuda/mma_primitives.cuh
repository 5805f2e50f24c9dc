// OrtFlash CUDA — the few PTX instructions the tensor-core kernel is built from, each behind a
// small named wrapper: cp.async (global → shared, zero-filling), ldmatrix (shared → mma fragments)
// and mma.sync.m16n8k16 with fp32 accumulation, mma.sync.m16n8k8 .tf32 for float32 (3xTF32), plus the
// element types' conversions.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"), with g = lane / 4 and
// t = lane % 4:
//   A (16x16, row-major)  a0:(g, 2t..2t+1)  a1:(g+8, 2t..)  a2:(g, 2t+8..)  a3:(g+8, 2t+8..)
//   B (16x8,  "col")      b0:(k=2t..2t+1, n=g)  b1:(k=2t+8.., n=g)
//   C (16x8,  fp32)       c0,c1:(g, 2t..2t+1)  c2,c3:(g+8, 2t..2t+1)
// ldmatrix.x4 returns, for the 8x8 matrix whose row addresses come from lanes 8i..8i+7, register
// i holding (row g, columns 2t..2t+1); with .trans it holds (rows 2t..2t+1, column g) instead.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>
#include <cstring>

#include "cuda_compat.cuh"

namespace ortflash::cuda {

// ---- cp.async -------------------------------------------------------------------------------

// Copies 16 bytes global → shared asynchronously; when `valid` is false nothing is read and the
// 16 shared bytes are zero-filled (src-size 0), so out-of-range rows and columns become zeros.
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, bool valid) {
#if defined(ORTFLASH_SIMT)
  simt::cp_async_16(smem_dst, gmem_src, valid);
#else
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(src_bytes));
#endif
}

// As cp_async_16, reading only the first `src_bytes` (0..16) bytes and zero-filling the rest: the
// ragged last chunk of a bias or keep row that ends inside it. `gmem_src` stays 16-byte aligned.
__device__ __forceinline__ void cp_async_16_prefix(void* smem_dst, const void* gmem_src, int src_bytes) {
#if defined(ORTFLASH_SIMT)
  simt::cp_async_16_prefix(smem_dst, gmem_src, src_bytes);
#else
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(src_bytes));
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(ORTFLASH_SIMT)
  simt::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most `kPending` committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#if defined(ORTFLASH_SIMT)
  simt::cp_async_wait(kPending);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
}

// Plain 4- and 2-byte shared-memory loads (the emulator checks them against the cp.async that filled
// the bytes: missing waits and barriers fail there).
__device__ __forceinline__ uint32_t shared_load_u32(const void* smem_src) {
#if defined(ORTFLASH_SIMT)
  return simt::shared_load_u32(smem_src);
#else
  return *static_cast<const uint32_t*>(smem_src);
#endif
}

__device__ __forceinline__ uint16_t shared_load_u16(const void* smem_src) {
#if defined(ORTFLASH_SIMT)
  return simt::shared_load_u16(smem_src);
#else
  return *static_cast<const uint16_t*>(smem_src);
#endif
}

// A plain shared-memory store of one element (the emulator records it like a completed copy).
template <class E>
__device__ __forceinline__ void shared_store(E* smem_dst, E value) {
#if defined(ORTFLASH_SIMT)
  simt::shared_store(smem_dst, &value, sizeof(E));
#else
  *smem_dst = value;
#endif
}

// ---- ldmatrix -------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_address(const void* smem_ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(smem_ptr));
}

// `addr`: this lane's row address in the shared state space (see smem_address).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
#if defined(ORTFLASH_SIMT)
  simt::ldmatrix_x4(r, addr, false);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
#if defined(ORTFLASH_SIMT)
  simt::ldmatrix_x4(r, addr, true);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

// ---- mma.sync m16n8k16, fp32 accumulate -----------------------------------------------------

template <class T>
struct Mma16816;

template <>
struct Mma16816<__half> {
  __device__ __forceinline__ static void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(ORTFLASH_SIMT)
    simt::mma_m16n8k16(c, a, b0, b1, simt::MmaInput::kFloat16);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
  }
};

template <>
struct Mma16816<__nv_bfloat16> {
  __device__ __forceinline__ static void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(ORTFLASH_SIMT)
    simt::mma_m16n8k16(c, a, b0, b1, simt::MmaInput::kBFloat16);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
  }
};

// ---- float32 on tensor cores: mma.sync m16n8k8 .tf32 in three passes (3xTF32) ---------------------------
// Fragment layouts of m16n8k8 .tf32 (PTX ISA, "Matrix Fragments for mma.m16n8k8"), g = lane / 4, t = lane % 4:
//   A (16x8, row-major)  a0:(g, t)  a1:(g+8, t)  a2:(g, t+4)  a3:(g+8, t+4)
//   B (8x8,  "col")      b0:(k=t, n=g)  b1:(k=t+4, n=g)
//   C                    as for m16n8k16.
// ldmatrix (b16) moves 32-bit words unchanged: register i of a lane holds word t of row g of matrix i, so the
// same chunk addressing as the 16-bit kernels gives these fragments from float rows (4 floats per chunk).
//
// A tf32 value keeps 10 explicit mantissa bits; the tensor cores read the top 19 bits of an operand's word (sign,
// exponent, 10 mantissa bits) and ignore the rest, which is what this code relies on for the small parts below
// (CUTLASS's float32-via-TF32 conversions rely on it too). Each float x is split as hi = x rounded to tf32 and
// lo = x - hi (exact in fp32, up to 13 significant bits) rounded to tf32 in turn (the hardware would truncate it:
// twice the error), and a·b ≈ a_lo·b_hi + a_hi·b_lo + a_hi·b_hi: the dropped a_lo·b_lo and the rounding of lo leave
// a relative error near 2^-22 per product, against 2^-11 for one TF32 product. The tensor cores also truncate each
// mma's sum toward zero (relative to the accumulator): long sums keep the small terms apart (mma_3xtf32_apart).
// (PyTorch's memory-efficient attention runs float32 on sm_80+ tensor cores in the same 3xTF32 way.)

// x rounded to a tf32 value: to nearest, ties away from zero, as cvt.rna.tf32.f32 (which ptxas expands to four
// instructions with a guard for non-finite x; here two). ±inf stays ±inf and a NaN stays NaN unless its payload
// lies wholly in the low 13 bits (no arithmetic produces such a NaN).
__device__ __forceinline__ uint32_t round_to_tf32(float x) {
  uint32_t w;
  memcpy(&w, &x, sizeof(w));
  return (w + 0x1000u) & ~0x1fffu;
}

// The float whose bits `w` holds (a register move).
__device__ __forceinline__ float bits_to_float(uint32_t w) {
  float x;
  memcpy(&x, &w, sizeof(x));
  return x;
}

struct Tf32Pair {
  uint32_t hi, lo;
};

// A finite x (softmax weights) as hi + lo.
__device__ __forceinline__ Tf32Pair split_tf32_finite(float x) {
  const uint32_t hi = round_to_tf32(x);
  return Tf32Pair{hi, round_to_tf32(x - bits_to_float(hi))};
}

// Any x as hi + lo. Where hi is infinite (x infinite, or past tf32's largest value) lo is 0, so that the products
// are what fp32 gives (inf·b, not inf + (-inf)·b = NaN); a NaN x has a NaN hi.
__device__ __forceinline__ Tf32Pair split_tf32(float x) {
  const uint32_t hi = round_to_tf32(x);
  const float hi_value = bits_to_float(hi);
  return Tf32Pair{hi, fabsf(hi_value) < INFINITY ? round_to_tf32(x - hi_value) : 0u};
}

__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(ORTFLASH_SIMT)
  simt::mma_m16n8k8_tf32(c, a, b0, b1);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// One A fragment split into its hi and lo parts (kFinite: the values are known to be finite).
struct Tf32Fragment {
  uint32_t hi[4], lo[4];
};
template <bool kFinite = false>
__device__ __forceinline__ Tf32Fragment split_fragment(float a0, float a1, float a2, float a3) {
  const auto split = [](float x) { return kFinite ? split_tf32_finite(x) : split_tf32(x); };
  const Tf32Pair p0 = split(a0), p1 = split(a1), p2 = split(a2), p3 = split(a3);
  return Tf32Fragment{{p0.hi, p1.hi, p2.hi, p3.hi}, {p0.lo, p1.lo, p2.lo, p3.lo}};
}

// c += a_lo·b_hi + a_hi·b_lo: 3xTF32's small terms.
__device__ __forceinline__ void mma_tf32_small_terms(float (&c)[4], const Tf32Fragment& a, Tf32Pair b0, Tf32Pair b1) {
  mma_tf32(c, a.lo, b0.hi, b1.hi);
  mma_tf32(c, a.hi, b0.lo, b1.lo);
}

// c += a_lo·b_hi + a_hi·b_lo + a_hi·b_hi (3xTF32).
__device__ __forceinline__ void mma_3xtf32(float (&c)[4], const Tf32Fragment& a, Tf32Pair b0, Tf32Pair b1) {
  mma_tf32_small_terms(c, a, b0, b1);
  mma_tf32(c, a.hi, b0.hi, b1.hi);
}

// 3xTF32 with the sums apart: small += a_lo·b_hi + a_hi·b_lo, large += a_hi·b_hi. Since each mma's sum is truncated
// relative to its accumulator, a long sum (a head dim of k-steps) whose small terms join the large accumulator meets
// three truncations per step at the large sums' scale instead of one; the caller adds `small` to `large` at the end.
__device__ __forceinline__ void mma_3xtf32_apart(float (&small)[4], float (&large)[4], const Tf32Fragment& a,
                                                 Tf32Pair b0, Tf32Pair b1) {
  mma_tf32_small_terms(small, a, b0, b1);
  mma_tf32(large, a.hi, b0.hi, b1.hi);
}

// kPasses 3: mma_3xtf32_apart; 1: large += a_hi·b_hi alone (one TF32 product; `small` untouched, the lo parts
// unread, so the compiler drops their computation).
template <int kPasses>
__device__ __forceinline__ void mma_tf32_passes_apart(float (&small)[4], float (&large)[4], const Tf32Fragment& a,
                                                      Tf32Pair b0, Tf32Pair b1) {
  static_assert(kPasses == 1 || kPasses == 3, "3xTF32 or one TF32 product");
  if constexpr (kPasses == 3) mma_tf32_small_terms(small, a, b0, b1);
  mma_tf32(large, a.hi, b0.hi, b1.hi);
}

// The end of a mma_tf32_passes_apart sum: large += small for 3xTF32; nothing for one pass (no small terms, and
// adding their zeros would turn a -0 into +0).
template <int kPasses>
__device__ __forceinline__ void add_small_terms(float (&large)[4], const float (&small)[4]) {
  if constexpr (kPasses == 3) {
#pragma unroll
    for (int e = 0; e < 4; ++e) large[e] += small[e];
  }
}

// kPasses 3: mma_3xtf32; 1: c += a_hi·b_hi.
template <int kPasses>
__device__ __forceinline__ void mma_tf32_passes(float (&c)[4], const Tf32Fragment& a, Tf32Pair b0, Tf32Pair b1) {
  static_assert(kPasses == 1 || kPasses == 3, "3xTF32 or one TF32 product");
  if constexpr (kPasses == 3) mma_tf32_small_terms(c, a, b0, b1);
  mma_tf32(c, a.hi, b0.hi, b1.hi);
}

// The 16-byte chunk of four floats at `tile` (shared memory) as hi and lo tf32 parts: the hi parts replace it,
// the lo parts go to the same offset of `lo_tile` (split_tf32 on each).
__device__ __forceinline__ void split_chunk_tf32(float* tile, float* lo_tile) {
  uint32_t hi[4], lo[4];
#if defined(ORTFLASH_SIMT)
  for (int i = 0; i < 4; ++i) {
    const Tf32Pair pair = split_tf32(bits_to_float(shared_load_u32(tile + i)));
    hi[i] = pair.hi;
    lo[i] = pair.lo;
  }
  for (int i = 0; i < 4; ++i) {
    simt::shared_store(tile + i, &hi[i], 4);
    simt::shared_store(lo_tile + i, &lo[i], 4);
  }
#else
  const float4 x = *reinterpret_cast<const float4*>(tile);
  const float in[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const Tf32Pair pair = split_tf32(in[i]);
    hi[i] = pair.hi;
    lo[i] = pair.lo;
  }
  *reinterpret_cast<uint4*>(tile) = make_uint4(hi[0], hi[1], hi[2], hi[3]);
  *reinterpret_cast<uint4*>(lo_tile) = make_uint4(lo[0], lo[1], lo[2], lo[3]);
#endif
}

// ---- element conversions --------------------------------------------------------------------

// Packs two fp32 values into one register of two 16-bit elements; `lo` is the lower column.
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);

template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  uint32_t word;
  memcpy(&word, &h, sizeof(word));  // a register move; no type punning through pointers
  return word;
}

template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  uint32_t word;
  memcpy(&word, &h, sizeof(word));
  return word;
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// The two 16-bit elements of one register as fp32; `lo` is the lower column (pack2's inverse).
template <class T>
__device__ __forceinline__ void unpack2(uint32_t word, float& lo, float& hi) {
  T pair[2];
  memcpy(pair, &word, sizeof(word));
  lo = to_float(pair[0]);
  hi = to_float(pair[1]);
}

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

}  // namespace ortflash::cuda

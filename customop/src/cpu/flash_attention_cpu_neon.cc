// OrtFlash CPU kernel for 64-bit ARM (AArch64): NEON (Advanced SIMD), which every AArch64 CPU has, so this path
// needs no run-time check there (CpuSupportsNeon). On other architectures this file holds only a stub that is never
// selected.
//
// Lanes are pairs of 4-float NEON registers, 8 to a Vec, so that the tile shapes, strips and register blocking are
// the AVX2 path's: its 16 ymm accumulators' worth of blocking is 16 of AArch64's 32 q registers, leaving the rest for
// the loaded vectors and broadcasts. What this path has over the portable one (the same 8-lane code, vectorised by
// the compiler for the baseline instruction set): fused multiply-adds (one rounding, one instruction), four rows per
// register block where the portable path's SSE-sized blocking takes two, and float16 and bfloat16 converted a vector
// at a time (FCVTL/FCVTN and shifts) instead of lane by lane.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "flash_attention_cpu_internal.h"
#include "ortflash/attention_params.h"

#if defined(__aarch64__)
#include <arm_neon.h>

#define ORTFLASH_CPU_ISA neon
#include "flash_attention_cpu_tile.h"

namespace ortflash::cpu::neon {

struct NeonSimd {
  static constexpr int kLanes = 8;
  // 4 rows x 2 vectors = 8 Vecs = 16 q registers of accumulators.
  static constexpr int kRowBlock = 4;
  static constexpr int kScoreVectors = 2;
  static constexpr int kValueVectors = 2;
  // Key-major scores: strips of 16 rows, micro-tiles of 4 keys or value dims x 2 vectors of rows (AVX2's).
  static constexpr int kKeyMajorKeyTile = 128;
  static constexpr int kStripVectors = 2;
  static constexpr int kValueBlock = 4;
  static constexpr int kKeyBlock = 4;
  static constexpr int kQueryTile = 64;
  static constexpr int kKeyTile = 64;

  struct Vec {
    float32x4_t lo, hi;
  };
  struct Mask {
    uint32x4_t lo, hi;  // all-ones lanes where true
  };

  static Vec Set1(float x) { return {vdupq_n_f32(x), vdupq_n_f32(x)}; }
  static Vec Zero() { return Set1(0.0f); }

  static Vec Load(const float* p) { return {vld1q_f32(p), vld1q_f32(p + 4)}; }
  static void Store(float* p, Vec v) {
    vst1q_f32(p, v.lo);
    vst1q_f32(p + 4, v.hi);
  }

  static Vec LoadLanes(const float* p) { return Load(p); }
  static Vec LoadLanes(const Float16* p) {
    const float16x8_t halves = vreinterpretq_f16_u16(vld1q_u16(reinterpret_cast<const uint16_t*>(p)));
    return {vcvt_f32_f16(vget_low_f16(halves)), vcvt_high_f32_f16(halves)};
  }
  static Vec LoadLanes(const BFloat16* p) {
    const uint16x8_t bits = vld1q_u16(reinterpret_cast<const uint16_t*>(p));
    return {vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(bits), 16)),
            vreinterpretq_f32_u32(vshll_high_n_u16(bits, 16))};
  }
  static void StoreLanes(float* p, Vec v) { Store(p, v); }
  // FCVTN rounds to nearest even (the FPCR's default mode), overflows to inf and keeps NaN a NaN.
  static void StoreLanes(Float16* p, Vec v) {
    const float16x8_t halves = vcvt_high_f16_f32(vcvt_f16_f32(v.lo), v.hi);
    vst1q_u16(reinterpret_cast<uint16_t*>(p), vreinterpretq_u16_f16(halves));
  }
  // Round to nearest even; NaN stays a quiet NaN instead of carrying into inf (as StoreFloat).
  static void StoreLanes(BFloat16* p, Vec v) {
    vst1q_u16(reinterpret_cast<uint16_t*>(p), vcombine_u16(ToBFloat16(v.lo), ToBFloat16(v.hi)));
  }

  static Vec Add(Vec a, Vec b) { return {vaddq_f32(a.lo, b.lo), vaddq_f32(a.hi, b.hi)}; }
  static Vec Sub(Vec a, Vec b) { return {vsubq_f32(a.lo, b.lo), vsubq_f32(a.hi, b.hi)}; }
  static Vec Mul(Vec a, Vec b) { return {vmulq_f32(a.lo, b.lo), vmulq_f32(a.hi, b.hi)}; }
  static Vec Div(Vec a, Vec b) { return {vdivq_f32(a.lo, b.lo), vdivq_f32(a.hi, b.hi)}; }
  static Vec MulAdd(Vec a, Vec b, Vec c) { return {vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi)}; }
  // b when either is NaN (FMAX would return the NaN): a compare and a select, as the portable path.
  static Vec Max(Vec a, Vec b) { return {MaxOf4(a.lo, b.lo), MaxOf4(a.hi, b.hi)}; }
  static Vec Abs(Vec x) { return {vabsq_f32(x.lo), vabsq_f32(x.hi)}; }
  static Vec WithSignOf(Vec magnitude, Vec sign) {
    const uint32x4_t sign_bit = vdupq_n_u32(0x80000000u);
    return {vbslq_f32(sign_bit, sign.lo, magnitude.lo), vbslq_f32(sign_bit, sign.hi, magnitude.hi)};
  }
  static constexpr bool kHasScaleByPow2 = false;  // ExpNonPositive builds 2^n with Pow2FromRounded
  // See PortableSimd::Pow2FromRounded.
  static Vec Pow2FromRounded(Vec shifted) { return {Pow2(shifted.lo), Pow2(shifted.hi)}; }

  static Mask Less(Vec a, Vec b) { return {vcltq_f32(a.lo, b.lo), vcltq_f32(a.hi, b.hi)}; }  // false for NaN
  static Mask And(Mask a, Mask b) { return {vandq_u32(a.lo, b.lo), vandq_u32(a.hi, b.hi)}; }
  static uint32_t LaneBits(Mask m) {  // bit l: lane l
    const uint32x4_t low_bits = {1u, 2u, 4u, 8u};
    const uint32x4_t high_bits = {16u, 32u, 64u, 128u};
    return vaddvq_u32(vorrq_u32(vandq_u32(m.lo, low_bits), vandq_u32(m.hi, high_bits)));
  }
  static Mask MaskFromBits(uint32_t bits) {  // lane l: bit l
    const uint32x4_t low_bits = {1u, 2u, 4u, 8u};
    const uint32x4_t high_bits = {16u, 32u, 64u, 128u};
    const uint32x4_t all = vdupq_n_u32(bits);
    return {vtstq_u32(all, low_bits), vtstq_u32(all, high_bits)};
  }
  static Mask LanesBelow(int64_t count) {
    const int32x4_t n = vdupq_n_s32(static_cast<int32_t>(count));
    const int32x4_t low_lanes = {0, 1, 2, 3};
    const int32x4_t high_lanes = {4, 5, 6, 7};
    return {vcltq_s32(low_lanes, n), vcltq_s32(high_lanes, n)};
  }
  static Mask KeptLanes(const bool* keep) {
    uint8_t bytes[8];
    std::memcpy(bytes, keep, sizeof bytes);
    const uint16x8_t wide = vmovl_u8(vld1_u8(bytes));
    return {vtstq_u32(vmovl_u16(vget_low_u16(wide)), vdupq_n_u32(0xFFu)), vtstq_u32(vmovl_high_u16(wide), vdupq_n_u32(0xFFu))};
  }
  static Vec Select(Mask m, Vec if_true, Vec if_false) {
    return {vbslq_f32(m.lo, if_true.lo, if_false.lo), vbslq_f32(m.hi, if_true.hi, if_false.hi)};
  }

  // Lane by lane in the portable path's order, with its NaN behaviour.
  static float ReduceMax(Vec v) {
    const float32x4_t m = MaxOf4(v.lo, v.hi);
    return MaxOf(MaxOf(vgetq_lane_f32(m, 0), vgetq_lane_f32(m, 1)), MaxOf(vgetq_lane_f32(m, 2), vgetq_lane_f32(m, 3)));
  }
  // (s0 + s1) + (s2 + s3) of s = lo + hi, the portable path's order: FADDP adds neighbours.
  static float ReduceSum(Vec v) {
    const float32x4_t s = vaddq_f32(v.lo, v.hi);
    const float32x4_t pairs = vpaddq_f32(s, s);
    return vgetq_lane_f32(vpaddq_f32(pairs, pairs), 0);
  }

  // Lane l = the sum of rows[l]'s lanes, each summed as ReduceSum sums it: neighbours added twice.
  static Vec SumsOf(const Vec* rows) {
    float32x4_t s[8];
    for (int r = 0; r < 8; ++r) s[r] = vaddq_f32(rows[r].lo, rows[r].hi);
    return {vpaddq_f32(vpaddq_f32(s[0], s[1]), vpaddq_f32(s[2], s[3])),
            vpaddq_f32(vpaddq_f32(s[4], s[5]), vpaddq_f32(s[6], s[7]))};
  }

  // 8 x 8: each 4 x 4 block transposed in registers, the two off-diagonal blocks swapped.
  static void TransposeSquare(Vec* rows) {
    float32x4_t lo[8], hi[8];
    for (int r = 0; r < 8; ++r) {
      lo[r] = rows[r].lo;
      hi[r] = rows[r].hi;
    }
    Transpose4(lo[0], lo[1], lo[2], lo[3]);  // columns 0-3 of rows 0-3 -> rows 0-3 of columns 0-3
    Transpose4(hi[0], hi[1], hi[2], hi[3]);  // columns 4-7 of rows 0-3
    Transpose4(lo[4], lo[5], lo[6], lo[7]);  // columns 0-3 of rows 4-7
    Transpose4(hi[4], hi[5], hi[6], hi[7]);  // columns 4-7 of rows 4-7
    for (int c = 0; c < 4; ++c) {
      rows[c] = {lo[c], lo[c + 4]};
      rows[c + 4] = {hi[c], hi[c + 4]};
    }
  }

 private:
  static float32x4_t MaxOf4(float32x4_t a, float32x4_t b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
  static float32x4_t Pow2(float32x4_t shifted) {
    return vreinterpretq_f32_u32(vshlq_n_u32(vaddq_u32(vreinterpretq_u32_f32(shifted), vdupq_n_u32(127u)), 23));
  }
  static uint16x4_t ToBFloat16(float32x4_t x) {
    const uint32x4_t bits = vreinterpretq_u32_f32(x);
    const uint32x4_t odd = vandq_u32(vshrq_n_u32(bits, 16), vdupq_n_u32(1u));
    const uint32x4_t rounded = vshrq_n_u32(vaddq_u32(bits, vaddq_u32(odd, vdupq_n_u32(0x7FFFu))), 16);
    const uint32x4_t quiet_nan = vorrq_u32(vshrq_n_u32(bits, 16), vdupq_n_u32(0x40u));
    const uint32x4_t is_nan = vmvnq_u32(vceqq_f32(x, x));
    return vmovn_u32(vbslq_u32(is_nan, quiet_nan, rounded));
  }
  // Rows a, b, c, d of a 4 x 4 block become its columns.
  static void Transpose4(float32x4_t& a, float32x4_t& b, float32x4_t& c, float32x4_t& d) {
    const float32x4_t ab_even = vtrn1q_f32(a, b);  // a0 b0 a2 b2
    const float32x4_t ab_odd = vtrn2q_f32(a, b);   // a1 b1 a3 b3
    const float32x4_t cd_even = vtrn1q_f32(c, d);  // c0 d0 c2 d2
    const float32x4_t cd_odd = vtrn2q_f32(c, d);   // c1 d1 c3 d3
    a = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(ab_even), vreinterpretq_f64_f32(cd_even)));
    b = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(ab_odd), vreinterpretq_f64_f32(cd_odd)));
    c = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(ab_even), vreinterpretq_f64_f32(cd_even)));
    d = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(ab_odd), vreinterpretq_f64_f32(cd_odd)));
  }
};

QueryTileKernel SelectQueryTileKernel(const AttentionParams& params) { return SelectForDtype<NeonSimd>(params); }

}  // namespace ortflash::cpu::neon

#else  // another architecture: never selected (CpuSupportsNeon() is false there), but the symbol is declared

namespace ortflash::cpu::neon {

QueryTileKernel SelectQueryTileKernel(const AttentionParams&) { return {}; }

}  // namespace ortflash::cpu::neon

#endif

// OrtFlash CPU kernel for AVX2 + FMA + F16C, entered only after the run-time check in
// flash_attention_cpu.cc.
//
// The target pragma enables the instruction set for everything defined below it. Standard headers
// come before it: their inline functions must not be compiled for AVX2, since the portable
// translation unit shares them (which is also why the build passes no -mavx2 for this file).
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "flash_attention_cpu_internal.h"
#include "ortflash/attention_params.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#define ORTFLASH_CPU_ISA avx2
#include "flash_attention_cpu_tile.h"

namespace ortflash::cpu::avx2 {

struct Avx2Simd {
  static constexpr int kLanes = 8;
  // 4 rows x 2 vectors = 8 accumulators, plus the loaded vectors and the broadcast, fit the 16
  // ymm registers.
  static constexpr int kRowBlock = 4;
  static constexpr int kScoreVectors = 2;
  static constexpr int kValueVectors = 2;
  // Key-major scores: strips of 16 rows; micro-tiles of 4 keys or value dims x 2 vectors of rows
  // (8 accumulators).
  static constexpr int kKeyMajorKeyTile = 128;  // 2-3% faster than 64 (S = T = 512..2048, fp32)
  static constexpr int kStripVectors = 2;
  static constexpr int kValueBlock = 4;
  static constexpr int kKeyBlock = 4;
  // Measured single-threaded (S = 512..2048, D = 64..256, fp32 and fp16): 64 x 64 is at or within
  // noise (3%) of the best everywhere; 32 or 128 query rows and 128 keys were no faster; 32 keys
  // cost 7% and 256 keys 10% at S = 512, D = 64 (per-tile overhead vs. the scores and transposed
  // keys falling out of L1).
  static constexpr int kQueryTile = 64;
  static constexpr int kKeyTile = 64;

  using Vec = __m256;
  using Mask = __m256;  // all-ones lanes where true

  static Vec Set1(float x) { return _mm256_set1_ps(x); }
  static Vec Zero() { return _mm256_setzero_ps(); }

  static Vec Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }

  static Vec LoadLanes(const float* p) { return _mm256_loadu_ps(p); }
  static Vec LoadLanes(const Float16* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static Vec LoadLanes(const BFloat16* p) {
    const __m256i widened = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(widened, 16));
  }
  static void StoreLanes(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static void StoreLanes(Float16* p, Vec v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  // Round to nearest even; NaN stays a quiet NaN instead of carrying into inf.
  static void StoreLanes(BFloat16* p, Vec v) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i rounded =
        _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF))), 16);
    const __m256i quiet_nan = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
    const __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    const __m256i result = _mm256_blendv_epi8(rounded, quiet_nan, is_nan);
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(result), _mm256_extracti128_si256(result, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
  }

  static Vec Add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec Sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
  static Vec Mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static Vec Div(Vec a, Vec b) { return _mm256_div_ps(a, b); }
  static Vec MulAdd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec Max(Vec a, Vec b) { return _mm256_max_ps(a, b); }  // b when either is NaN
  static Vec Abs(Vec x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }
  static Vec WithSignOf(Vec magnitude, Vec sign) {
    const Vec sign_bit = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(sign_bit, magnitude), _mm256_and_ps(sign_bit, sign));
  }
  static constexpr bool kHasScaleByPow2 = false;  // ExpNonPositive builds 2^n with Pow2FromRounded
  // See PortableSimd::Pow2FromRounded.
  static Vec Pow2FromRounded(Vec shifted) {
    const __m256i biased = _mm256_add_epi32(_mm256_castps_si256(shifted), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23));
  }

  static Mask Less(Vec a, Vec b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static Mask And(Mask a, Mask b) { return _mm256_and_ps(a, b); }
  static uint32_t LaneBits(Mask m) { return static_cast<uint32_t>(_mm256_movemask_ps(m)); }  // bit l: lane l
  static Mask MaskFromBits(uint32_t bits) {  // lane l: bit l
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i set = _mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), lane_bit);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(set, lane_bit));
  }
  static Mask LanesBelow(int64_t count) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), lane));
  }
  static Mask KeptLanes(const bool* keep) {
    const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(keep)));
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(bytes, _mm256_setzero_si256()));
  }
  static Vec Select(Mask m, Vec if_true, Vec if_false) { return _mm256_blendv_ps(if_false, if_true, m); }

  static float ReduceMax(Vec v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  static float ReduceSum(Vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  // Lane l = the sum of rows[l]'s lanes: 128-bit halves of rows 4 apart added, then pairs and single lanes within
  // halves; 15 shuffles where TransposeSquare and 7 adds take 24. Lane 4h + j of the last sum holds row
  // 4h + {0, 2, 1, 3}[j]; one permute puts row l in lane l.
  static Vec SumsOf(const Vec* rows) {
    Vec halves[4];  // lanes 0-3: row i, 4-7: row i + 4
    for (int i = 0; i < 4; ++i) {
      halves[i] = _mm256_add_ps(_mm256_permute2f128_ps(rows[i], rows[i + 4], 0x20),
                                _mm256_permute2f128_ps(rows[i], rows[i + 4], 0x31));
    }
    Vec pairs[2];  // in each half, lanes 0-1: halves[i], lanes 2-3: halves[i + 2]
    for (int i = 0; i < 2; ++i) {
      pairs[i] = _mm256_add_ps(_mm256_shuffle_ps(halves[i], halves[i + 2], 0x44),
                               _mm256_shuffle_ps(halves[i], halves[i + 2], 0xEE));
    }
    const Vec sums = _mm256_add_ps(_mm256_shuffle_ps(pairs[0], pairs[1], 0x88), _mm256_shuffle_ps(pairs[0], pairs[1], 0xDD));
    return _mm256_permutevar8x32_ps(sums, _mm256_setr_epi32(0, 2, 1, 3, 4, 6, 5, 7));
  }

  static void TransposeSquare(Vec* rows) {
    const Vec t0 = _mm256_unpacklo_ps(rows[0], rows[1]);
    const Vec t1 = _mm256_unpackhi_ps(rows[0], rows[1]);
    const Vec t2 = _mm256_unpacklo_ps(rows[2], rows[3]);
    const Vec t3 = _mm256_unpackhi_ps(rows[2], rows[3]);
    const Vec t4 = _mm256_unpacklo_ps(rows[4], rows[5]);
    const Vec t5 = _mm256_unpackhi_ps(rows[4], rows[5]);
    const Vec t6 = _mm256_unpacklo_ps(rows[6], rows[7]);
    const Vec t7 = _mm256_unpackhi_ps(rows[6], rows[7]);
    const Vec u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    const Vec u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    const Vec u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    const Vec u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    const Vec u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    const Vec u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    const Vec u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    const Vec u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    rows[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    rows[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    rows[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    rows[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    rows[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    rows[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    rows[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    rows[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
  }
};

QueryTileKernel SelectQueryTileKernel(const AttentionParams& params) { return SelectForDtype<Avx2Simd>(params); }

}  // namespace ortflash::cpu::avx2

#else  // another architecture: never selected (CpuSupportsAvx2Fma() is false there), but the symbol is declared

namespace ortflash::cpu::avx2 {

QueryTileKernel SelectQueryTileKernel(const AttentionParams&) { return {}; }

}  // namespace ortflash::cpu::avx2

#endif

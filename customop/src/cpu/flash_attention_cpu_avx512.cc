// OrtFlash CPU kernel for AVX-512 (F, BW, VL, DQ) + FMA + F16C: 16-lane vectors and 32 vector
// registers, entered only after the run-time check in flash_attention_cpu.cc.
//
// Worth it only where 512-bit FMAs run at full width: on the AMD EPYC (Zen 5) it was tuned on, zmm
// FMAs issue at the same rate as ymm ones (2 per cycle), and this path is twice the AVX2 one
// single-threaded (S = 512, D = 32..128, fp32: 172-217 vs. 85-107 GFLOP/s).
//
// The target pragma comes after the standard headers for the reason given in
// flash_attention_cpu_avx2.cc: their inline functions must not be compiled for AVX-512.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "flash_attention_cpu_internal.h"
#include "ortflash/attention_params.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
// GCC 12.2's AVX-512 intrinsics make their "undefined" pass-through vectors by self-initialisation,
// which -W(maybe-)uninitialized reports wherever they are inlined (GCC bug 105593); the warning
// points into the header, so it is silenced for the header only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#define ORTFLASH_CPU_ISA avx512
#include "flash_attention_cpu_tile.h"

namespace ortflash::cpu::avx512 {

struct Avx512Simd {
  static constexpr int kLanes = 16;
  // Q·Kᵀ: 8 rows x 2 vectors (32 keys) = 16 accumulators; the query element is an embedded
  // broadcast operand of the FMA, so only the 2 key vectors take registers. P·V likewise.
  static constexpr int kRowBlock = 8;
  static constexpr int kScoreVectors = 2;
  static constexpr int kValueVectors = 2;
  // Key-major scores (flash_attention_cpu_tile.h): strips of 32 rows; Q·Kᵀ micro-tiles of 8 keys x
  // 2 vectors of rows and P·V micro-tiles of 8 value dims x 2 vectors of rows (16 accumulators
  // each), the key or value element a broadcast. Measured single-threaded, fp32: 12 x 2 (24
  // accumulators) and 4 x 4 micro-tiles were no faster (4 x 4, with strips of 64 rows, 11-15%
  // slower causal); 256 keys per tile 1-2% faster than 128, 512 no faster at T = 2048 and 12% slower
  // at T = 512 (a tile's padding is skipped only after an earlier tile has set the rows' maxima).
  static constexpr int kKeyMajorKeyTile = 256;
  static constexpr int kStripVectors = 2;
  static constexpr int kValueBlock = 8;
  static constexpr int kKeyBlock = 8;
  // Measured single-threaded at S = 512 and 2048, D = 64, fp32: 128 x 128 is the best within
  // noise (3%); 64 keys cost 4%, 64 x 64 5-7% (the per-tile transposition and softmax overhead);
  // 256 query rows or 256 keys were no faster. 4 rows x 4 vectors blocking was within noise of
  // 8 x 2, which also keeps value rows of 2 vectors (D = 32) in one pass. Software prefetch of the
  // next key tile's K and V rows gained nothing at S = 2048 (the hardware prefetchers keep up),
  // and fp16 inputs run as fast as fp32: they are converted once per key tile.
  static constexpr int kQueryTile = 128;
  static constexpr int kKeyTile = 128;

  using Vec = __m512;
  using Mask = __mmask16;  // bit l set where lane l is true

  static Vec Set1(float x) { return _mm512_set1_ps(x); }
  static Vec Zero() { return _mm512_setzero_ps(); }

  static Vec Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }

  static Vec LoadLanes(const float* p) { return _mm512_loadu_ps(p); }
  static Vec LoadLanes(const Float16* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static Vec LoadLanes(const BFloat16* p) {
    const __m512i widened = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(widened, 16));
  }
  static void StoreLanes(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static void StoreLanes(Float16* p, Vec v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  // Round to nearest even; NaN stays a quiet NaN instead of carrying into inf.
  static void StoreLanes(BFloat16* p, Vec v) {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    const __m512i rounded =
        _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
    const __m512i quiet_nan = _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
    const __mmask16 is_nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    const __m512i result = _mm512_mask_blend_epi32(is_nan, rounded, quiet_nan);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(result));
  }

  static Vec Add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec Sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
  static Vec Mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Vec Div(Vec a, Vec b) { return _mm512_div_ps(a, b); }
  static Vec MulAdd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec Max(Vec a, Vec b) { return _mm512_max_ps(a, b); }  // b when either is NaN
  static Vec Abs(Vec x) { return _mm512_andnot_ps(_mm512_set1_ps(-0.0f), x); }
  static Vec WithSignOf(Vec magnitude, Vec sign) {
    const Vec sign_bit = _mm512_set1_ps(-0.0f);
    return _mm512_or_ps(_mm512_andnot_ps(sign_bit, magnitude), _mm512_and_ps(sign_bit, sign));
  }
  // x * 2^n for integral n, with subnormal and 0 results (see ExpNonPositive): one instruction
  // instead of building 2^n in the exponent bits, a multiply and the flush below -87, 4 of e^x's 17
  // instructions. 1-2% faster at S = T = 512..2048 (exponentials were 8% of the time).
  static constexpr bool kHasScaleByPow2 = true;
  static Vec ScaleByPow2(Vec x, Vec n) { return _mm512_scalef_ps(x, n); }

  static Mask Less(Vec a, Vec b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static Mask And(Mask a, Mask b) { return static_cast<Mask>(a & b); }
  static uint32_t LaneBits(Mask m) { return m; }  // bit l: lane l
  static Mask MaskFromBits(uint32_t bits) { return static_cast<Mask>(bits); }  // lane l: bit l
  static Mask LanesBelow(int64_t count) {
    return count >= kLanes ? static_cast<Mask>(0xFFFF) : static_cast<Mask>((1u << count) - 1u);
  }
  static Mask KeptLanes(const bool* keep) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(keep));
    return _mm_test_epi8_mask(bytes, bytes);
  }
  static Vec Select(Mask m, Vec if_true, Vec if_false) { return _mm512_mask_blend_ps(m, if_false, if_true); }

  // Halved as in Avx2Simd, down to one lane.
  static float ReduceMax(Vec v) {
    const __m256 half = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  static float ReduceSum(Vec v) {
    const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  // Lane l = the sum of rows[l]'s lanes: halves of rows 8 apart added (256-bit halves, then 128-bit chunks of rows
  // 4 apart, then pairs and single lanes within chunks), 31 shuffles where TransposeSquare and 15 adds take 64.
  // Lane 4k + j of the last sum holds row kChunkRow[k] + kPairRow[j]; one permute puts row l in lane l.
  static Vec SumsOf(const Vec* rows) {
    Vec halves[8];
    for (int i = 0; i < 8; ++i) {
      halves[i] = _mm512_add_ps(_mm512_shuffle_f32x4(rows[i], rows[i + 8], 0x44),
                                _mm512_shuffle_f32x4(rows[i], rows[i + 8], 0xEE));
    }
    Vec chunks[4];  // chunk 0: row i, 1: row i + 8, 2: row i + 4, 3: row i + 12
    for (int i = 0; i < 4; ++i) {
      chunks[i] = _mm512_add_ps(_mm512_shuffle_f32x4(halves[i], halves[i + 4], 0x88),
                                _mm512_shuffle_f32x4(halves[i], halves[i + 4], 0xDD));
    }
    Vec pairs[2];  // in each chunk, lanes 0-1: chunks[i], lanes 2-3: chunks[i + 2]
    for (int i = 0; i < 2; ++i) {
      pairs[i] = _mm512_add_ps(_mm512_shuffle_ps(chunks[i], chunks[i + 2], 0x44),
                               _mm512_shuffle_ps(chunks[i], chunks[i + 2], 0xEE));
    }
    // In each chunk k, lane j: chunks[0], chunks[2], chunks[1], chunks[3] (j = 0..3), i.e. row kChunkRow[k] + kPairRow[j]
    // with kChunkRow = {0, 8, 4, 12} and kPairRow = {0, 2, 1, 3}.
    const Vec sums = _mm512_add_ps(_mm512_shuffle_ps(pairs[0], pairs[1], 0x88), _mm512_shuffle_ps(pairs[0], pairs[1], 0xDD));
    // Row l sits in lane 4k + j with l = kChunkRow[k] + kPairRow[j].
    const __m512i lane_of_row = _mm512_setr_epi32(0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15);
    return _mm512_permutexvar_ps(lane_of_row, sums);
  }

  // 16 x 16: interleave pairs of rows and then quadruples within each 128-bit chunk (chunk c of
  // u[k] then holds rows 0-3 of column 4c + k), and gather the chunks of u[k], u[4 + k], u[8 + k],
  // u[12 + k] across 128-bit lanes.
  static void TransposeSquare(Vec* rows) {
    Vec t[kLanes];
    for (int i = 0; i < kLanes; i += 2) {
      t[i] = _mm512_unpacklo_ps(rows[i], rows[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(rows[i], rows[i + 1]);
    }
    Vec u[kLanes];
    for (int i = 0; i < kLanes; i += 4) {
      u[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
      u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
      u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
      u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int k = 0; k < 4; ++k) {
      const Vec low01 = _mm512_shuffle_f32x4(u[k], u[4 + k], _MM_SHUFFLE(1, 0, 1, 0));
      const Vec high01 = _mm512_shuffle_f32x4(u[k], u[4 + k], _MM_SHUFFLE(3, 2, 3, 2));
      const Vec low23 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], _MM_SHUFFLE(1, 0, 1, 0));
      const Vec high23 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], _MM_SHUFFLE(3, 2, 3, 2));
      rows[k] = _mm512_shuffle_f32x4(low01, low23, _MM_SHUFFLE(2, 0, 2, 0));
      rows[4 + k] = _mm512_shuffle_f32x4(low01, low23, _MM_SHUFFLE(3, 1, 3, 1));
      rows[8 + k] = _mm512_shuffle_f32x4(high01, high23, _MM_SHUFFLE(2, 0, 2, 0));
      rows[12 + k] = _mm512_shuffle_f32x4(high01, high23, _MM_SHUFFLE(3, 1, 3, 1));
    }
  }
};

QueryTileKernel SelectQueryTileKernel(const AttentionParams& params) { return SelectForDtype<Avx512Simd>(params); }

}  // namespace ortflash::cpu::avx512

#else  // another architecture: never selected (CpuSupportsAvx512() is false there), but the symbol is declared

namespace ortflash::cpu::avx512 {

QueryTileKernel SelectQueryTileKernel(const AttentionParams&) { return {}; }

}  // namespace ortflash::cpu::avx512

#endif

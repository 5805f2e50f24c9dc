// OrtFlash CPU kernel for any CPU: the tile kernel over plain 8-lane loops, which the compiler
// vectorises for the baseline instruction set.
#define ORTFLASH_CPU_ISA portable
#include "flash_attention_cpu_tile.h"

namespace ortflash::cpu::portable {

// The reference semantics of a Simd policy (see flash_attention_cpu_tile.h). Lanes are two
// 4-float GCC vectors, so the baseline compiler keeps them in SSE registers; a 32-byte vector type
// would change the ABI without AVX, and plain float arrays defeat register allocation (S = 512,
// D = 64, fp32: 209 ms with float[8] lanes, 42 ms with these, 9 ms on the AVX2 path).
struct PortableSimd {
  // fp32 lanes of a Vec: LoadLanes/StoreLanes convert and KeptLanes reads that many elements, and
  // TransposeSquare transposes kLanes Vecs.
  static constexpr int kLanes = 8;
  // 4 rows x 2 vectors of accumulators are 16 SSE registers, which spill; 2 rows do not.
  static constexpr int kRowBlock = 2;
  static constexpr int kScoreVectors = 2;
  static constexpr int kValueVectors = 2;
  // Key-major scores: strips of one vector of rows, 4 keys or value dims per micro-tile.
  static constexpr int kKeyMajorKeyTile = 64;
  static constexpr int kStripVectors = 1;
  static constexpr int kValueBlock = 4;
  static constexpr int kKeyBlock = 4;
  static constexpr int kQueryTile = 64;
  static constexpr int kKeyTile = 64;

  typedef float Float4 __attribute__((vector_size(16)));
  typedef int32_t Int4 __attribute__((vector_size(16)));
  typedef uint32_t Bits4 __attribute__((vector_size(16)));

  struct Vec {
    Float4 lo, hi;
  };
  struct Mask {
    Int4 lo, hi;  // all-ones lanes where true
  };

  static Vec Set1(float x) { return {Float4{} + x, Float4{} + x}; }
  static Vec Zero() { return {Float4{}, Float4{}}; }

  static Vec Load(const float* p) {
    Vec v;
    std::memcpy(&v.lo, p, sizeof v.lo);
    std::memcpy(&v.hi, p + 4, sizeof v.hi);
    return v;
  }
  static void Store(float* p, Vec v) {
    std::memcpy(p, &v.lo, sizeof v.lo);
    std::memcpy(p + 4, &v.hi, sizeof v.hi);
  }

  // kLanes elements of a storage type, converted to fp32 (and back, rounding to nearest even).
  template <class T>
  static Vec LoadLanes(const T* p) {
    float lanes[kLanes];
    for (int l = 0; l < kLanes; ++l) lanes[l] = ToFloat(p[l]);
    return Load(lanes);
  }
  template <class T>
  static void StoreLanes(T* p, Vec v) {
    float lanes[kLanes];
    Store(lanes, v);
    for (int l = 0; l < kLanes; ++l) StoreFloat(lanes[l], p + l);
  }

  static Vec Add(Vec a, Vec b) { return {a.lo + b.lo, a.hi + b.hi}; }
  static Vec Sub(Vec a, Vec b) { return {a.lo - b.lo, a.hi - b.hi}; }
  static Vec Mul(Vec a, Vec b) { return {a.lo * b.lo, a.hi * b.hi}; }
  static Vec Div(Vec a, Vec b) { return {a.lo / b.lo, a.hi / b.hi}; }
  // a * b + c; rounded twice here, once with FMA.
  static Vec MulAdd(Vec a, Vec b, Vec c) { return {a.lo * b.lo + c.lo, a.hi * b.hi + c.hi}; }
  // b when either is NaN.
  static Vec Max(Vec a, Vec b) { return {a.lo > b.lo ? a.lo : b.lo, a.hi > b.hi ? a.hi : b.hi}; }
  static Vec Abs(Vec x) { return {ClearSign(x.lo), ClearSign(x.hi)}; }
  static Vec WithSignOf(Vec magnitude, Vec sign) {
    return {CopySign(magnitude.lo, sign.lo), CopySign(magnitude.hi, sign.hi)};
  }
  static constexpr bool kHasScaleByPow2 = false;  // ExpNonPositive builds 2^n with Pow2FromRounded
  // 2^n from n + 1.5 * 2^23 (see ExpNonPositive): n sits in the low mantissa bits, and shifting
  // n + 127 into the exponent field drops the rest.
  static Vec Pow2FromRounded(Vec shifted) { return {Pow2(shifted.lo), Pow2(shifted.hi)}; }

  static Mask Less(Vec a, Vec b) { return {a.lo < b.lo, a.hi < b.hi}; }
  static Mask And(Mask a, Mask b) { return {a.lo & b.lo, a.hi & b.hi}; }
  static uint32_t LaneBits(Mask m) {  // bit l: lane l
    uint32_t bits = 0;
    for (int l = 0; l < 4; ++l) bits |= (m.lo[l] != 0 ? 1u : 0u) << l | (m.hi[l] != 0 ? 1u : 0u) << (l + 4);
    return bits;
  }
  static Mask MaskFromBits(uint32_t bits) {  // lane l: bit l
    const Int4 b = Int4{} + static_cast<int32_t>(bits);
    return {(b & Int4{1, 2, 4, 8}) != 0, (b & Int4{16, 32, 64, 128}) != 0};
  }
  static Mask LanesBelow(int64_t count) {
    const Int4 n = Int4{} + static_cast<int32_t>(count);
    return {Int4{0, 1, 2, 3} < n, Int4{4, 5, 6, 7} < n};
  }
  static Mask KeptLanes(const bool* keep) {
    return {Int4{keep[0], keep[1], keep[2], keep[3]} != 0, Int4{keep[4], keep[5], keep[6], keep[7]} != 0};
  }
  static Vec Select(Mask m, Vec if_true, Vec if_false) {
    return {m.lo ? if_true.lo : if_false.lo, m.hi ? if_true.hi : if_false.hi};
  }

  static float ReduceMax(Vec v) {
    const Float4 m = v.lo > v.hi ? v.lo : v.hi;
    return MaxOf(MaxOf(m[0], m[1]), MaxOf(m[2], m[3]));
  }
  static float ReduceSum(Vec v) {
    const Float4 s = v.lo + v.hi;
    return (s[0] + s[1]) + (s[2] + s[3]);
  }

  // Lane l = the sum of rows[l]'s lanes.
  static Vec SumsOf(const Vec* rows) {
    float sums[kLanes];
    for (int l = 0; l < kLanes; ++l) sums[l] = ReduceSum(rows[l]);
    return Load(sums);
  }

  static void TransposeSquare(Vec* rows) {
    float block[kLanes][kLanes];
    for (int r = 0; r < kLanes; ++r) Store(block[r], rows[r]);
    for (int c = 0; c < kLanes; ++c) {
      float column[kLanes];
      for (int r = 0; r < kLanes; ++r) column[r] = block[r][c];
      rows[c] = Load(column);
    }
  }

 private:
  static Float4 ClearSign(Float4 x) { return reinterpret_cast<Float4>(reinterpret_cast<Bits4>(x) & 0x7FFFFFFFu); }
  static Float4 CopySign(Float4 magnitude, Float4 sign) {
    return reinterpret_cast<Float4>((reinterpret_cast<Bits4>(magnitude) & 0x7FFFFFFFu) |
                                    (reinterpret_cast<Bits4>(sign) & 0x80000000u));
  }
  static Float4 Pow2(Float4 shifted) {
    return reinterpret_cast<Float4>((reinterpret_cast<Bits4>(shifted) + 127u) << 23);
  }
};

QueryTileKernel SelectQueryTileKernel(const AttentionParams& params) { return SelectForDtype<PortableSimd>(params); }

}  // namespace ortflash::cpu::portable

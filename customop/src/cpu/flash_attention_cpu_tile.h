// OrtFlash CPU kernel body: one query tile of one (batch, head), or of several query heads that
// share a kv head, packed into one tile (WorkItem), FlashAttention-style.
//
// Included by one translation unit per instruction set (flash_attention_cpu_portable.cc,
// flash_attention_cpu_avx2.cc, flash_attention_cpu_avx512.cc on x86-64, flash_attention_cpu_neon.cc on
// AArch64), each defining ORTFLASH_CPU_ISA as
// the namespace everything here lands in. Distinct namespaces keep the copies of every inline
// function and template compiled for each instruction set apart; under one name the linker could
// keep the AVX-512 or AVX2 copy for all and run it on a CPU without those. For the same reason
// this code calls no standard-library function templates, only builtins, C functions and its own
// helpers.
//
// Each instruction set supplies a `Simd` policy of fp32 vectors of S::kLanes lanes (8 for AVX2, NEON
// and the portable path, 16 for AVX-512), its register blocking (S::kRowBlock query rows by
// S::kScoreVectors vectors of keys for Q·Kᵀ, by S::kValueVectors vectors of value dims for P·V)
// and its tile shape (S::kQueryTile rows by S::kKeyTile keys).
// Its semantics are those of PortableSimd (flash_attention_cpu_portable.cc); Max(a, b) returns b
// when either is NaN, which lets NaN through the clamps below.
//
// Two layouts of the scores. Row-major (RunQueryTileRows), for any call: the query tile is converted
// to fp32 once; then for each key tile the keys are transposed into scratch (head_dim x key_tile)
// so that the Q·Kᵀ micro-tile broadcasts q[d] and multiplies a vector of keys at a time; the scores
// get scale, softcap, bias and masks and go through an online softmax (running max and sum per
// row, accumulator rescaled when the max grows); P·V accumulates rows vectorised over the value
// head dim. Key-major (RunQueryTileKeyMajor), for calls whose queries fill a vector: query rows lie
// across the lanes, so no key tile is transposed (only a bias that differs by row, strip by strip)
// and the softmax needs no horizontal reductions (see KeyMajorScores).
// Rows too few to pay for a transposed key tile (decoding, with or without a few grouped heads;
// a key-major item's rows past its whole strips) take the row-major path with K and V read in
// place instead (RowsInPlaceFit, ScoreRowBlockInPlace). Only one tile of scores ever exists.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "flash_attention_cpu_internal.h"
#include "ortflash/attention_params.h"

#ifndef ORTFLASH_CPU_ISA
#error "Define ORTFLASH_CPU_ISA (the instruction-set namespace) before including this header."
#endif

namespace ortflash::cpu::ORTFLASH_CPU_ISA {

// ---- Element types (storage only: all arithmetic is fp32) ---------------------------------------

struct Float16 {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

constexpr float kInfinity = __builtin_inff();
constexpr float kQuietNaN = __builtin_nanf("");

inline uint32_t BitsOf(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}

inline float FloatWithBits(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

inline float ToFloat(float x) { return x; }

inline float ToFloat(BFloat16 x) { return FloatWithBits(uint32_t{x.bits} << 16); }

inline float ToFloat(Float16 x) {
  const uint32_t sign = uint32_t{x.bits & 0x8000u} << 16;
  const uint32_t exponent = (x.bits >> 10) & 0x1Fu;
  const uint32_t mantissa = x.bits & 0x3FFu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in fp32
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) return FloatWithBits(sign | 0x7F800000u | (mantissa << 13));  // inf, NaN
  return FloatWithBits(sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13));
}

inline void StoreFloat(float x, float* out) { *out = x; }

// Round to nearest even, as the contract requires for 16-bit outputs.
inline void StoreFloat(float x, BFloat16* out) {
  const uint32_t bits = BitsOf(x);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {  // NaN: rounding could carry it into inf
    out->bits = static_cast<uint16_t>((bits >> 16) | 0x40u);
    return;
  }
  out->bits = static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

inline void StoreFloat(float x, Float16* out) {
  const uint32_t bits = BitsOf(x);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  uint32_t half;
  if (magnitude > 0x7F800000u) {
    half = 0x7E00u;  // NaN
  } else if (magnitude >= 0x477FF000u) {
    half = 0x7C00u;  // >= 65520 (halfway past the largest half, 65504) rounds to inf
  } else if (magnitude < 0x38800000u) {
    // Below 2^-14 the half is subnormal with spacing 2^-24, which is exactly the ulp of 0.5f:
    // adding 0.5f lets the FPU do the round-to-nearest-even.
    half = BitsOf(FloatWithBits(magnitude) + 0.5f) - BitsOf(0.5f);
  } else {
    // Round the 13 dropped mantissa bits to nearest even, then rebias the exponent 127 -> 15.
    half = (magnitude + 0xFFFu + ((magnitude >> 13) & 1u) - ((127u - 15u) << 23)) >> 13;
  }
  out->bits = static_cast<uint16_t>(sign | half);
}

inline int64_t MinOf(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t MaxOf(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t Clamp(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : (x > hi ? hi : x); }
inline int64_t RoundUp(int64_t x, int64_t multiple) { return (x + multiple - 1) / multiple * multiple; }
// The leading part of [0, count) that whole vectors of S cover; the rest is a scalar tail.
template <class S>
int64_t WholeVectors(int64_t count) {
  return count - count % S::kLanes;
}

// ---- Vectorised numerics -------------------------------------------------------------------------

// e^x for x <= 0 or NaN: softmax only ever exponentiates (score - running max). Range reduction
// x = n·ln2 + r, |r| <= ln2/2, then the degree-7 Taylor polynomial of e^r (truncation error 5e-9),
// about 1 ulp overall. Policies with ScaleByPow2 (p·2^n in one instruction, subnormal and 0 results
// included: AVX-512's vscalefps) scale by it, and below -104 (e^x < 2^-150) the result rounds to 0;
// the others build 2^n in the exponent bits, which reach only 2^-126, and flush the result to 0
// below -87. Either way hidden keys (-inf) weigh exactly 0.
template <class S>
constexpr float kExpZeroBelow = S::kHasScaleByPow2 ? -104.0f : -87.0f;  // ExpNonPositive is 0 below

template <class S>
typename S::Vec ExpNonPositive(typename S::Vec x) {
  constexpr float kLowest = kExpZeroBelow<S>;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2High = 0.693359375f;  // few mantissa bits: n * kLn2High is exact
  constexpr float kLn2Low = -2.12194440e-4f;
  constexpr float kRoundToInteger = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const typename S::Vec clamped = S::Max(S::Set1(kLowest), x);
  const typename S::Vec shifted = S::MulAdd(clamped, S::Set1(kLog2e), S::Set1(kRoundToInteger));
  const typename S::Vec n = S::Sub(shifted, S::Set1(kRoundToInteger));
  typename S::Vec r = S::MulAdd(n, S::Set1(-kLn2High), clamped);
  r = S::MulAdd(n, S::Set1(-kLn2Low), r);
  typename S::Vec poly = S::Set1(1.0f / 5040);
  poly = S::MulAdd(poly, r, S::Set1(1.0f / 720));
  poly = S::MulAdd(poly, r, S::Set1(1.0f / 120));
  poly = S::MulAdd(poly, r, S::Set1(1.0f / 24));
  poly = S::MulAdd(poly, r, S::Set1(1.0f / 6));
  poly = S::MulAdd(poly, r, S::Set1(0.5f));
  poly = S::MulAdd(poly, r, S::Set1(1.0f));
  poly = S::MulAdd(poly, r, S::Set1(1.0f));
  if constexpr (S::kHasScaleByPow2) {
    return S::ScaleByPow2(poly, n);
  } else {
    const typename S::Vec result = S::Mul(poly, S::Pow2FromRounded(shifted));
    return S::Select(S::Less(x, S::Set1(kLowest)), S::Zero(), result);
  }
}

// tanh, for softcap. For |x| >= 0.18, (1 - e^-2|x|) / (1 + e^-2|x|); below that 1 - e^-2|x|
// would cancel, so e^-2|x| - 1 comes from its own Taylor series (degree 8, |2x| <= 0.36).
template <class S>
typename S::Vec Tanh(typename S::Vec x) {
  using Vec = typename S::Vec;
  const Vec magnitude = S::Abs(x);
  const Vec y = S::Mul(magnitude, S::Set1(-2.0f));
  const Vec one = S::Set1(1.0f);
  const Vec e = ExpNonPositive<S>(y);
  const Vec large = S::Div(S::Sub(one, e), S::Add(one, e));
  Vec series = S::Set1(1.0f / 40320);
  series = S::MulAdd(series, y, S::Set1(1.0f / 5040));
  series = S::MulAdd(series, y, S::Set1(1.0f / 720));
  series = S::MulAdd(series, y, S::Set1(1.0f / 120));
  series = S::MulAdd(series, y, S::Set1(1.0f / 24));
  series = S::MulAdd(series, y, S::Set1(1.0f / 6));
  series = S::MulAdd(series, y, S::Set1(0.5f));
  series = S::MulAdd(series, y, one);
  const Vec expm1 = S::Mul(series, y);
  const Vec small = S::Div(S::Sub(S::Zero(), expm1), S::Add(S::Set1(2.0f), expm1));
  return S::WithSignOf(S::Select(S::Less(magnitude, S::Set1(0.18f)), small, large), x);
}

// ---- Online softmax ------------------------------------------------------------------------------

// Like Simd::Max: b when either is NaN.
inline float MaxOf(float a, float b) { return a > b ? a : b; }

// What a row subtracts before exponentiating. A row that has seen no finite score has max -inf;
// subtracting 0 instead keeps -inf - (-inf) = NaN out and still gives every key e^-inf = 0.
inline float SoftmaxShift(float running_max) { return running_max == -kInfinity ? 0.0f : running_max; }

// SoftmaxShift of every lane.
template <class S>
typename S::Vec SoftmaxShifts(typename S::Vec running_max) {
  constexpr float kLowestFinite = -3.40282347e+38f;
  return S::Select(S::Less(running_max, S::Set1(kLowestFinite)), S::Zero(), running_max);
}

// ---- Scores as the contract defines them ------------------------------------------------------------

// Which keys causality lets query i see: [0, VisibleKeys(i)). Nondecreasing in i.
struct CausalWindow {
  CausalAlignment alignment;
  int64_t q_len;
  int64_t kv_len;

  int64_t VisibleKeys(int64_t query) const {
    switch (alignment) {
      case CausalAlignment::kUpperLeft:
        return Clamp(query + 1, 0, kv_len);
      case CausalAlignment::kLowerRight:
        return Clamp(query + 1 + kv_len - q_len, 0, kv_len);
      case CausalAlignment::kNone:
        break;
    }
    return kv_len;
  }
};

// What turns one query row's dot products into its scores: pointers at key 0 of this key tile.
template <class T>
struct RowScoreRule {
  float scale;
  float softcap;
  const T* bias;  // null: no bias
  int64_t bias_key_stride;
  const bool* keep;  // null: every key kept
  int64_t keep_key_stride;
};

// Where a work item's (batch, first query head) starts in each input: q, k and v row 0 (k and v of
// the head's key/value head), bias and keep at query 0, key 0 (null when the call has none).
template <class T>
struct ItemInputs {
  const T* query;
  const T* key;
  const T* value;
  const T* bias;
  const bool* keep;
};

template <class T>
ItemInputs<T> ItemInputsOf(const AttentionParams& p, const WorkItem& item) {
  const int64_t kv_head = item.head / (p.q_heads / p.kv_heads);
  ItemInputs<T> in;
  in.query = static_cast<const T*>(p.q) + item.batch * p.q_stride[0] + item.head * p.q_stride[1];
  in.key = static_cast<const T*>(p.k) + item.batch * p.k_stride[0] + kv_head * p.k_stride[1];
  in.value = static_cast<const T*>(p.v) + item.batch * p.v_stride[0] + kv_head * p.v_stride[1];
  in.bias = p.bias == nullptr ? nullptr
                              : static_cast<const T*>(p.bias) + item.batch * p.bias_stride[0] + item.head * p.bias_stride[1];
  in.keep = p.keep == nullptr ? nullptr : p.keep + item.batch * p.keep_stride[0] + item.head * p.keep_stride[1];
  return in;
}

template <class S, class T>
typename S::Vec LoadBias(const T* bias, int64_t key_stride, int64_t count) {
  if (key_stride == 0) return S::Set1(ToFloat(*bias));
  if (key_stride == 1 && count == S::kLanes) return S::LoadLanes(bias);
  float lanes[S::kLanes] = {};
  for (int64_t lane = 0; lane < count; ++lane) lanes[lane] = ToFloat(bias[lane * key_stride]);
  return S::Load(lanes);
}

template <class S>
typename S::Mask KeptKeys(const bool* keep, int64_t key_stride, int64_t count) {
  if (key_stride == 1 && count == S::kLanes) return S::KeptLanes(keep);
  bool lanes[S::kLanes] = {};
  for (int64_t lane = 0; lane < count; ++lane) lanes[lane] = keep[lane * key_stride];
  return S::KeptLanes(lanes);
}

// Scores for keys [key, key + count) of a row (count <= S::kLanes; lanes past count come back
// -inf): scale -> softcap -> + bias -> hidden keys -inf.
template <class S, class T>
typename S::Vec ContractScores(typename S::Vec dots, const RowScoreRule<T>& rule, int64_t key, int64_t count) {
  typename S::Vec scores = S::Mul(dots, S::Set1(rule.scale));
  if (rule.softcap > 0.0f) {
    const typename S::Vec cap = S::Set1(rule.softcap);
    scores = S::Mul(cap, Tanh<S>(S::Div(scores, cap)));
  }
  if (rule.bias != nullptr) {
    scores = S::Add(scores, LoadBias<S>(rule.bias + key * rule.bias_key_stride, rule.bias_key_stride, count));
  }
  typename S::Mask visible = S::LanesBelow(count);
  if (rule.keep != nullptr) {
    visible = S::And(visible, KeptKeys<S>(rule.keep + key * rule.keep_key_stride, rule.keep_key_stride, count));
  }
  return S::Select(visible, scores, S::Set1(-kInfinity));
}

// Turns one row's dot products against this key tile into unnormalised probabilities in place,
// relative to *new_max = the larger of running_max and the tile's scores. `visible`: keys of the
// tile the row may see; probabilities up to `zero_until` are written (0 past `visible`). Returns
// the sum of the probabilities; RescaleRows folds it into the row's running state.
template <class S, class T>
float OnlineSoftmaxRow(float* scores, int64_t visible, int64_t zero_until, const RowScoreRule<T>& rule,
                       float running_max, float* new_max_out) {
  using Vec = typename S::Vec;
  constexpr int kLanes = S::kLanes;
  if (visible == 0) {
    for (int64_t key = 0; key < zero_until; key += kLanes) S::Store(scores + key, S::Zero());
    *new_max_out = running_max;
    return 0.0f;
  }
  Vec tile_max = S::Set1(-kInfinity);
  int64_t scored = 0;
  if (rule.softcap <= 0.0f && rule.keep == nullptr && (rule.bias == nullptr || rule.bias_key_stride == 1)) {
    // ContractScores for whole vectors of the common rule, with its tests hoisted out of the loop:
    // 6% faster at S = 512, D = 64 on AVX-512, 4-8% on AVX2.
    const Vec scale = S::Set1(rule.scale);
    const T* const bias = rule.bias;
    for (; scored < WholeVectors<S>(visible); scored += kLanes) {
      Vec s = S::Mul(S::Load(scores + scored), scale);
      if (bias != nullptr) s = S::Add(s, S::LoadLanes(bias + scored));
      S::Store(scores + scored, s);
      tile_max = S::Max(tile_max, s);
    }
  }
  for (; scored < visible; scored += kLanes) {
    const Vec s = ContractScores<S>(S::Load(scores + scored), rule, scored, MinOf(kLanes, visible - scored));
    S::Store(scores + scored, s);
    tile_max = S::Max(tile_max, s);
  }
  const float new_max = MaxOf(running_max, S::ReduceMax(tile_max));
  const Vec shift = S::Set1(SoftmaxShift(new_max));
  Vec tile_sum = S::Zero();
  int64_t key = 0;
  for (; key < visible; key += kLanes) {
    const Vec p = ExpNonPositive<S>(S::Sub(S::Load(scores + key), shift));
    S::Store(scores + key, p);
    tile_sum = S::Add(tile_sum, p);
  }
  for (; key < zero_until; key += kLanes) S::Store(scores + key, S::Zero());
  *new_max_out = new_max;
  return S::ReduceSum(tile_sum);
}

// For `count` rows (a multiple of S::kLanes), vectorised across rows: the factor that brings what
// a row accumulated relative to max to the scale of new_max (new_max >= max; 1 when the max did
// not move, 0 when nothing finite was seen before), then sum = sum * factor + tile_sum and
// max = new_max. One exponential per kLanes rows instead of one per row: 8% faster at S = 512,
// D = 64 on AVX-512 (165 -> 179 GFLOP/s single-threaded).
template <class S>
void RescaleRows(int64_t count, const float* new_max, const float* tile_sum, float* max, float* sum, float* rescale) {
  for (int64_t row = 0; row < count; row += S::kLanes) {
    const typename S::Vec moved_to = S::Load(new_max + row);
    const typename S::Vec factor = ExpNonPositive<S>(S::Sub(S::Load(max + row), SoftmaxShifts<S>(moved_to)));
    S::Store(rescale + row, factor);
    S::Store(sum + row, S::Add(S::Mul(S::Load(sum + row), factor), S::Load(tile_sum + row)));
    S::Store(max + row, moved_to);
  }
}

// ---- Prefetching the next work item ----------------------------------------------------------------

// Lines [first, first + lines * 64) for a loop to prefetch one per iteration (Line), interleaved with its arithmetic.
struct PrefetchSlice {
  const char* first = nullptr;
  int64_t lines = 0;

  // Line i < lines. Loops split at `lines` instead of testing it every iteration (2-3% of the time of long calls,
  // which prefetch nothing). An asm statement on x86: GCC deletes loops of nothing but __builtin_prefetch (it takes
  // C++ loops to end, and a prefetch to have no effect). The address goes in a register: as a memory operand ("m",
  // a char, which may alias anything) it made GCC store the loop's accumulators to memory before every prefetch.
  void Line(int64_t i) const {
    const char* address = first + i * 64;
#if defined(__x86_64__) || defined(__i386__)
    asm volatile("prefetcht0 (%0)" : : "r"(address));
#else
    __builtin_prefetch(address, 0, 3);
#endif
  }
};

// Brings the next work item's bytes (WorkItem::next) into cache a line at a time, slice by slice, while this item
// computes. Issued all at once, a few hundred prefetches fill the core's miss buffers and stall it until most have
// arrived, which hides little: a batch of short sequences out of cache ran 2-3x slower than in cache either way.
class LinePrefetcher {
 public:
  explicit LinePrefetcher(const NextItemBytes& next) : run_(next.runs), end_(next.runs + next.count) { Start(); }

  // Up to `lines` lines of the current run.
  PrefetchSlice Take(int64_t lines) {
    if (run_ == end_) return {};
    const int64_t left = static_cast<int64_t>((run_end_ - line_ + kLine - 1) / kLine);
    const PrefetchSlice slice{reinterpret_cast<const char*>(line_), lines < left ? lines : left};
    line_ += static_cast<uintptr_t>(slice.lines) * kLine;
    if (line_ >= run_end_) {
      ++run_;
      Start();
    }
    return slice;
  }
  bool Done() const { return run_ == end_; }
  // Up to `lines` lines, now.
  void Issue(int64_t lines) {
    while (lines > 0 && run_ != end_) {
      const PrefetchSlice slice = Take(lines);
      for (int64_t i = 0; i < slice.lines; ++i) slice.Line(i);
      lines -= slice.lines;
    }
  }
  // What Take has not handed out.
  void Rest() { Issue(INT64_MAX); }

 private:
  static constexpr uintptr_t kLine = 64;

  // line_: the line holding the run's first byte.
  void Start() {
    if (run_ == end_) return;
    line_ = reinterpret_cast<uintptr_t>(run_->first) & ~(kLine - 1);
    run_end_ = reinterpret_cast<uintptr_t>(run_->first) + static_cast<uintptr_t>(run_->bytes);
  }

  const PrefetchRun* run_ = nullptr;
  const PrefetchRun* end_ = nullptr;
  uintptr_t line_ = 0;
  uintptr_t run_end_ = 0;
};

// Lines the row-major path prefetches a step: before each block of keys its rows read in place score, and before
// each P·V micro-tile. Its items are short (few queries): a line a loop iteration would leave most of the next
// item's lines to a burst at the end.
constexpr int64_t kRowPathPrefetchLines = 16;

// ---- Tiles ---------------------------------------------------------------------------------------

// Tile shape for one head dim; kHeadDim == 0 means head dim and value head dim known at run time,
// otherwise both equal kHeadDim.
template <class S, int kHeadDim>
struct TileTraits {
  static constexpr int kLanes = S::kLanes;
  static constexpr int kRowBlock = S::kRowBlock;          // query rows of one register micro-tile
  static constexpr int kScoreVectors = S::kScoreVectors;  // vectors of keys in a Q·Kᵀ micro-tile
  static constexpr int kValueVectors = S::kValueVectors;  // vectors of value dims in a P·V micro-tile
  static constexpr int kScoreColumns = kScoreVectors * kLanes;
  static constexpr int kValueColumns = kValueVectors * kLanes;
  static constexpr int kQueryTile = S::kQueryTile;  // query rows of a work item
  static constexpr int kKeyTile = S::kKeyTile;      // keys per pass of the online softmax
  // Key-major scores (RunQueryTileKeyMajor): query rows in a strip of kStripVectors vectors,
  // kKeyBlock keys per Q·Kᵀ micro-tile, kKeyMajorKeyTile keys per pass of the online softmax.
  static constexpr int kKeyMajorKeyTile = S::kKeyMajorKeyTile;
  static constexpr int kStripVectors = S::kStripVectors;
  static constexpr int kStripRows = kStripVectors * kLanes;
  static constexpr int kKeyBlock = S::kKeyBlock;
  static constexpr int kValueBlock = S::kValueBlock;  // value dims per P·V micro-tile
  static_assert(kHeadDim >= 0, "head dim 0 selects the run-time head dim path");
  static_assert(kQueryTile % kRowBlock == 0, "a query tile is made of whole row blocks");
  static_assert(kQueryTile % kLanes == 0, "the row state of a query tile is made of whole vectors");
  static_assert(kKeyTile % kScoreColumns == 0, "a key tile is made of whole micro-tiles");
  static_assert(kQueryTile % kStripRows == 0, "a query tile is made of whole strips");
};

// Per-work-item fp32 scratch, carved from one block.
struct TileScratch {
  float* queries;       // query_tile x head_dim: this tile's query rows (rows past the tile are 0);
                        // key-major: head_dim x padded rows, transposed
  float* keys_t;        // head_dim x key_tile: the current key tile, transposed; key-major:
                        // key-major tile x head_dim, the key tile in fp32 unless read in place
  float* values;        // key_tile (key-major: its tile) x value_dim_padded: the value tile, unless read
                        // in place
  float* scores;        // query_tile x key_tile: dot products, then unnormalised probabilities;
                        // key-major: key-major tile x strip rows
  float* acc;           // query_tile x value_dim_padded: sum of p·v
  float* row_max;       // query_tile: running max of each row's scores
  float* row_sum;       // query_tile: running sum of e^(score - row_max)
  float* row_new_max;   // query_tile: row_max including the current key tile
  float* row_tile_sum;  // query_tile: the current key tile's part of row_sum, relative to row_new_max
  float* row_rescale;   // query_tile: factor from row_max to row_new_max
};

struct ScratchSizes {
  size_t queries, keys_t, values, scores, acc, row_state;

  size_t Total() const { return queries + keys_t + values + scores + acc + 5 * row_state; }
};

// Each array a whole number of cache lines, so that all start on one (kScratchAlignment).
// Room for either path (row-major or key-major).
template <class Traits>
ScratchSizes ScratchSizesFor(int64_t head_dim, int64_t value_dim_padded) {
  constexpr int64_t kLineFloats = static_cast<int64_t>(kScratchAlignment / sizeof(float));
  constexpr int64_t kKeys = Traits::kKeyTile > Traits::kKeyMajorKeyTile ? Traits::kKeyTile : Traits::kKeyMajorKeyTile;
  constexpr int64_t kScores = Traits::kQueryTile * Traits::kKeyTile > Traits::kKeyMajorKeyTile * Traits::kStripRows
                                  ? Traits::kQueryTile * Traits::kKeyTile
                                  : Traits::kKeyMajorKeyTile * Traits::kStripRows;
  const auto floats = [](int64_t count) { return static_cast<size_t>(RoundUp(count, kLineFloats)); };
  return {floats(Traits::kQueryTile * head_dim),         floats(head_dim * kKeys),
          floats(kKeys * value_dim_padded),              floats(kScores),
          floats(Traits::kQueryTile * value_dim_padded), floats(Traits::kQueryTile)};
}

inline TileScratch CarveScratch(float* base, const ScratchSizes& sizes) {
  TileScratch scratch;
  scratch.queries = base;
  scratch.keys_t = scratch.queries + sizes.queries;
  scratch.values = scratch.keys_t + sizes.keys_t;
  scratch.scores = scratch.values + sizes.values;
  scratch.acc = scratch.scores + sizes.scores;
  scratch.row_max = scratch.acc + sizes.acc;
  scratch.row_sum = scratch.row_max + sizes.row_state;
  scratch.row_new_max = scratch.row_sum + sizes.row_state;
  scratch.row_tile_sum = scratch.row_new_max + sizes.row_state;
  scratch.row_rescale = scratch.row_tile_sum + sizes.row_state;
  return scratch;
}

// Where row r of a work item (WorkItem) lies: query Query(r) of the item's head Head(r) (counted
// from its first head).
struct PackedRows {
  int64_t first_row;
  int64_t rows_per_head;

  int64_t Head(int64_t row) const { return row / rows_per_head; }
  int64_t Query(int64_t row) const { return first_row + row % rows_per_head; }
  // The row's element offset in a tensor with these head and query strides, from the item's first
  // head, query 0.
  int64_t Offset(int64_t row, int64_t head_stride, int64_t query_stride) const {
    return Head(row) * head_stride + Query(row) * query_stride;
  }
};

// rows x head_dim query rows -> fp32, rows up to padded_rows zero. `query` is the item's first head.
template <class S, class T>
void LoadQueryRows(const T* query, int64_t head_stride, int64_t query_stride, const PackedRows& packing, int64_t rows,
                   int64_t padded_rows, int64_t head_dim, float* out) {
  for (int64_t row = 0; row < padded_rows; ++row) {
    float* dst = out + row * head_dim;
    if (row >= rows) {
      for (int64_t d = 0; d < head_dim; ++d) dst[d] = 0.0f;
      continue;
    }
    const T* src = query + packing.Offset(row, head_stride, query_stride);
    int64_t d = 0;
    for (; d < WholeVectors<S>(head_dim); d += S::kLanes) S::Store(dst + d, S::LoadLanes(src + d));
    for (; d < head_dim; ++d) dst[d] = ToFloat(src[d]);
  }
}

// Keys [0, count) -> keys_t[d * key_tile + j] in fp32, in kLanes x kLanes blocks; columns up to
// `columns` (a whole number of vectors) zero. The last block, keys past `count` zero in it, goes through the same
// transposes: key by key, the transposed layout's column writes (one cache line per dim) made a key range that
// was no whole number of micro-tiles 2-7x slower than a whole one (one decoding row per head).
template <class S, class T>
void LoadKeysTransposed(const T* keys, int64_t key_stride, int64_t count, int64_t columns, int64_t head_dim,
                        int64_t key_tile, float* keys_t) {
  constexpr int kLanes = S::kLanes;
  for (int64_t key = 0; key < columns; key += kLanes) {
    const int64_t present = count - key < 0 ? 0 : MinOf(count - key, kLanes);  // keys of this block
    int64_t d = 0;
    for (; d < WholeVectors<S>(head_dim); d += kLanes) {
      typename S::Vec block[kLanes];
      for (int row = 0; row < kLanes; ++row) {
        block[row] = row < present ? S::LoadLanes(keys + (key + row) * key_stride + d) : S::Zero();
      }
      S::TransposeSquare(block);
      for (int row = 0; row < kLanes; ++row) S::Store(keys_t + (d + row) * key_tile + key, block[row]);
    }
    for (; d < head_dim; ++d) {
      for (int row = 0; row < kLanes; ++row) {
        keys_t[d * key_tile + key + row] = row < present ? ToFloat(keys[(key + row) * key_stride + d]) : 0.0f;
      }
    }
  }
}

// fp32 value rows made of whole vectors are read where they are (null: convert them per tile).
template <class S>
const float* ValuesInPlace(const float* values, int64_t value_dim) {
  return value_dim % S::kLanes == 0 ? values : nullptr;
}
template <class S, class T>
const float* ValuesInPlace(const T*, int64_t) {
  return nullptr;
}

// count rows of `dim` elements (value rows; key rows on the key-major path) -> fp32 rows of
// dim_padded (the padding 0).
template <class S, class T>
void LoadRowsAsFloat(const T* rows, int64_t row_stride, int64_t count, int64_t dim, int64_t dim_padded, float* out) {
  for (int64_t row = 0; row < count; ++row) {
    const T* src = rows + row * row_stride;
    float* dst = out + row * dim_padded;
    int64_t c = 0;
    for (; c < WholeVectors<S>(dim); c += S::kLanes) S::Store(dst + c, S::LoadLanes(src + c));
    for (; c < dim; ++c) dst[c] = ToFloat(src[c]);
    for (; c < dim_padded; ++c) dst[c] = 0.0f;
  }
}

// scores[r][0, kScoreColumns) = queries[r] · keys_t[:, 0, kScoreColumns) for kRows rows.
template <class S, int kRows, int kHeadDim>
void ScoreMicroTile(const float* queries, int64_t head_dim, const float* keys_t, int64_t key_tile, float* scores) {
  constexpr int kVectors = TileTraits<S, kHeadDim>::kScoreVectors;
  constexpr int kLanes = S::kLanes;
  const int64_t dims = kHeadDim > 0 ? kHeadDim : head_dim;
  typename S::Vec sum[kRows][kVectors];
  for (int row = 0; row < kRows; ++row) {
    for (int v = 0; v < kVectors; ++v) sum[row][v] = S::Zero();
  }
  for (int64_t d = 0; d < dims; ++d) {
    typename S::Vec key[kVectors];
    for (int v = 0; v < kVectors; ++v) key[v] = S::Load(keys_t + d * key_tile + v * kLanes);
    for (int row = 0; row < kRows; ++row) {
      const typename S::Vec q = S::Set1(queries[row * dims + d]);
      for (int v = 0; v < kVectors; ++v) sum[row][v] = S::MulAdd(q, key[v], sum[row][v]);
    }
  }
  for (int row = 0; row < kRows; ++row) {
    for (int v = 0; v < kVectors; ++v) S::Store(scores + row * key_tile + v * kLanes, sum[row][v]);
  }
}

// acc[r][0, kVectors * kLanes) = acc[r] * rescale[r] + sum over keys j < count of
// probs[r * kRowStride + j * kKeyStride] * values[j] (fp32, or 16-bit converted as loaded). Compile-time strides
// keep the broadcasts' offsets constant.
template <class S, int kRows, int kVectors, int kRowStride, int kKeyStride, class V = float>
void AccumulateValuesMicroTile(const float* probs, const float* rescale, const V* values, int64_t value_stride,
                               int64_t count, float* acc, int64_t acc_stride) {
  constexpr int kLanes = S::kLanes;
  typename S::Vec sum[kRows][kVectors];
  for (int row = 0; row < kRows; ++row) {
    const typename S::Vec factor = S::Set1(rescale[row]);
    for (int v = 0; v < kVectors; ++v) sum[row][v] = S::Mul(S::Load(acc + row * acc_stride + v * kLanes), factor);
  }
  for (int64_t key = 0; key < count; ++key) {
    typename S::Vec value[kVectors];
    for (int v = 0; v < kVectors; ++v) value[v] = S::LoadLanes(values + key * value_stride + v * kLanes);
    for (int row = 0; row < kRows; ++row) {
      const typename S::Vec p = S::Set1(probs[row * kRowStride + key * kKeyStride]);
      for (int v = 0; v < kVectors; ++v) sum[row][v] = S::MulAdd(p, value[v], sum[row][v]);
    }
  }
  for (int row = 0; row < kRows; ++row) {
    for (int v = 0; v < kVectors; ++v) S::Store(acc + row * acc_stride + v * kLanes, sum[row][v]);
  }
}

// ---- Query rows that read K and V where they are ------------------------------------------------
//
// A work item of one query row (decoding, Sq = 1; or the few rows past a key-major item's whole
// strips), or of a few packed decoding rows (grouped heads), uses each key and value element once
// or a few times. Transposing the key tile for ScoreMicroTile, and converting 16-bit rows into
// scratch first, then cost more than the products. Here each key row is read in place (16-bit
// converted as it is loaded), for a block of rows x keys that makes kLanes pairs: one accumulator
// per pair across the head dim, the kLanes accumulators summed lane by lane into one vector of
// kLanes scores (S::SumsOf). Each score's arithmetic is the same whatever the block (the same
// products in the same lanes, summed the same way), so packed and unpacked rows agree bit for bit.

// Grouped heads of at most this many query heads per key/value head decode in place: beyond, the
// transposed key tile serves enough rows to cost less than SumsOf per score.
inline constexpr int64_t kMaxGroupInPlace = 8;

// Whether a call's rows read K and V in place (RunQueryTileRows: single-row items, and every item of
// a call with fewer queries than a vector, decoding among them): head dims of whole vectors, and one
// query head per key/value head or decoding with at most kMaxGroupInPlace query heads per key/value head. Which rows do is a property of the
// call, so no row's arithmetic changes with packing (PackedAndUnpackedWorkItemsGiveIdenticalOutput).
template <class S>
bool RowsInPlaceFit(const AttentionParams& p) {
  static_assert(kMaxGroupInPlace <= S::kLanes, "a group's rows fit one block of accumulators");
  const int64_t group = p.q_heads / p.kv_heads;
  return (group == 1 || (p.q_len == 1 && group <= kMaxGroupInPlace)) && p.head_dim % S::kLanes == 0 &&
         p.v_head_dim % S::kLanes == 0;
}

// scores[r * score_stride + j] = queries[r] · keys[j] for rows r in [0, rows), rows <= kRows (the block's
// other rows repeat the last and are not written), and keys j in [0, columns) (a whole number of vectors; keys
// past `count` give the last key's product, unused); head_dim a whole number of vectors.
template <class S, class T, int kHeadDim, int kRows, bool kPrefetch>
void ScoreRowBlockInPlace(const float* queries, int64_t rows, const T* keys, int64_t key_stride, int64_t count,
                          int64_t columns, int64_t head_dim, float* scores, int64_t score_stride,
                          LinePrefetcher& prefetch) {
  using Vec = typename S::Vec;
  constexpr int kLanes = S::kLanes;
  constexpr int kKeys = kLanes / kRows;  // accumulator r * kKeys + k: row r, key k of the block
  const int64_t dims = kHeadDim > 0 ? kHeadDim : head_dim;
  const float* query[kRows];
  for (int r = 0; r < kRows; ++r) query[r] = queries + MinOf(static_cast<int64_t>(r), rows - 1) * dims;
  for (int64_t first = 0; first < columns; first += kKeys) {
    if constexpr (kPrefetch) prefetch.Issue(kRowPathPrefetchLines);
    const T* row[kKeys];
    for (int k = 0; k < kKeys; ++k) row[k] = keys + MinOf(first + k, count - 1) * key_stride;
    Vec sum[kLanes];
    for (int l = 0; l < kLanes; ++l) sum[l] = S::Zero();
    for (int64_t d = 0; d < dims; d += kLanes) {
      Vec key[kKeys];
      for (int k = 0; k < kKeys; ++k) key[k] = S::LoadLanes(row[k] + d);
#pragma GCC unroll 16
      for (int r = 0; r < kRows; ++r) {
        const Vec q = S::Load(query[r] + d);
        for (int k = 0; k < kKeys; ++k) sum[r * kKeys + k] = S::MulAdd(key[k], q, sum[r * kKeys + k]);
      }
    }
    const Vec sums = S::SumsOf(sum);
    if constexpr (kRows == 1) {
      S::Store(scores + first, sums);
    } else {
      float lanes[kLanes];
      S::Store(lanes, sums);
      for (int r = 0; r < kRows && r < rows; ++r) {
        for (int k = 0; k < kKeys; ++k) scores[r * score_stride + first + k] = lanes[r * kKeys + k];
      }
    }
  }
}

// ScoreRowBlockInPlace for rows [0, rows): blocks of kMaxGroupInPlace rows, the last in a block of the smallest
// power of two of rows that holds it (each score's arithmetic the same whatever the block).
template <class S, class T, int kHeadDim>
void ScoreRowsInPlace(const float* queries, int64_t rows, const T* keys, int64_t key_stride, int64_t count,
                      int64_t columns, int64_t head_dim, float* scores, int64_t score_stride,
                      LinePrefetcher& prefetch) {
  const int64_t dims = kHeadDim > 0 ? kHeadDim : head_dim;
  // Prefetching or not, in instances of their own: a test per block of keys made decoding (which prefetches
  // nothing: its items are too long) 4-16% slower.
  const auto score = [&](auto rows_in_block, auto prefetching, const float* block_queries, int64_t block,
                         float* block_scores) {
    ScoreRowBlockInPlace<S, T, kHeadDim, decltype(rows_in_block)::value, decltype(prefetching)::value>(
        block_queries, block, keys, key_stride, count, columns, head_dim, block_scores, score_stride, prefetch);
  };
  const auto score_rows = [&](auto prefetching) {
    for (int64_t first = 0; first < rows; first += kMaxGroupInPlace) {  // blocks of up to 8 rows
      const int64_t block = MinOf(kMaxGroupInPlace, rows - first);
      const float* block_queries = queries + first * dims;
      float* block_scores = scores + first * score_stride;
      if (block == 1) {
        score(std::integral_constant<int, 1>{}, prefetching, block_queries, block, block_scores);
      } else if (block == 2) {
        score(std::integral_constant<int, 2>{}, prefetching, block_queries, block, block_scores);
      } else if (block <= 4) {
        score(std::integral_constant<int, 4>{}, prefetching, block_queries, block, block_scores);
      } else {
        score(std::integral_constant<int, kMaxGroupInPlace>{}, prefetching, block_queries, block, block_scores);
      }
    }
  };
  if (prefetch.Done()) {
    score_rows(std::false_type{});
  } else {
    score_rows(std::true_type{});
  }
}

// acc[0, value_dim) = acc * rescale + sum over keys j < count of probs[j] * values[j], the value
// rows read in place (16-bit converted as loaded); value_dim a whole number of vectors.
// AccumulateValuesMicroTile's arithmetic for one row, 4 vectors of value dims per pass where its
// blocking takes 2: decoding 15-30% faster (one thread, CPU clock, AVX-512).
template <class S, class T>
void AccumulateValuesInPlace(const float* probs, float rescale, const T* values, int64_t value_stride, int64_t count,
                             int64_t value_dim, float* acc) {
  using Vec = typename S::Vec;
  constexpr int kLanes = S::kLanes;
  constexpr int kVectors = 4;
  const Vec factor = S::Set1(rescale);
  int64_t c = 0;
  for (; c + kVectors * kLanes <= value_dim; c += kVectors * kLanes) {
    Vec sum[kVectors];
    for (int v = 0; v < kVectors; ++v) sum[v] = S::Mul(S::Load(acc + c + v * kLanes), factor);
    for (int64_t j = 0; j < count; ++j) {
      const Vec p = S::Set1(probs[j]);
      for (int v = 0; v < kVectors; ++v) sum[v] = S::MulAdd(p, S::LoadLanes(values + j * value_stride + c + v * kLanes), sum[v]);
    }
    for (int v = 0; v < kVectors; ++v) S::Store(acc + c + v * kLanes, sum[v]);
  }
  for (; c < value_dim; c += kLanes) {
    Vec sum = S::Mul(S::Load(acc + c), factor);
    for (int64_t j = 0; j < count; ++j) sum = S::MulAdd(S::Set1(probs[j]), S::LoadLanes(values + j * value_stride + c), sum);
    S::Store(acc + c, sum);
  }
}

template <class T>
void StoreMaskedRow(MaskedRows policy, int64_t value_dim, T* out) {
  const float fill = policy == MaskedRows::kNaN ? kQuietNaN : 0.0f;
  for (int64_t c = 0; c < value_dim; ++c) StoreFloat(fill, out + c);
}

template <class S, class T>
void StoreOutputRow(const float* acc, float row_sum, int64_t value_dim, MaskedRows policy, T* out) {
  // The row max contributes e^0 = 1 to the sum, so the sum is 0 exactly when no visible key had a
  // finite score: a masked row.
  if (row_sum == 0.0f) {
    StoreMaskedRow(policy, value_dim, out);
    return;
  }
  const float inverse = 1.0f / row_sum;
  const typename S::Vec factor = S::Set1(inverse);
  int64_t c = 0;
  for (; c < WholeVectors<S>(value_dim); c += S::kLanes) S::StoreLanes(out + c, S::Mul(S::Load(acc + c), factor));
  for (; c < value_dim; ++c) StoreFloat(acc[c] * inverse, out + c);
}

// Where a work item's output rows go (row r as PackedRows counts it).
template <class T>
struct ItemOutput {
  T* out;  // the item's batch and first query head, query 0
  PackedRows packing;
  int64_t head_stride;
  int64_t query_stride;

  T* Row(int64_t row) const { return out + packing.Offset(row, head_stride, query_stride); }
};

template <class T>
ItemOutput<T> ItemOutputOf(const AttentionParams& p, const WorkItem& item) {
  return {static_cast<T*>(p.out) + item.batch * p.out_stride[0] + item.head * p.out_stride[1],
          PackedRows{item.first_row, item.rows}, p.out_stride[1], p.out_stride[2]};
}

// Keys the item's last query sees: no row of the item sees more, so the loop over key tiles stops
// there. When that is none, every row gets the masked_rows value and 0 says the item is done.
template <class T>
int64_t ItemKeysOrMaskedRows(const AttentionParams& p, const WorkItem& item, const ItemOutput<T>& output,
                             int64_t rows, int64_t value_dim) {
  const int64_t keys = CausalWindow{p.causal, p.q_len, p.kv_len}.VisibleKeys(item.first_row + item.rows - 1);
  if (keys == 0) {
    for (int64_t row = 0; row < rows; ++row) StoreMaskedRow(p.masked_rows, value_dim, output.Row(row));
  }
  return keys;
}

// |row|, the Euclidean norm of fp32 elements [0, count); NaN or inf where an element is not finite.
template <class S>
float RowNorm(const float* row, int64_t count) {
  typename S::Vec squares = S::Zero();
  int64_t i = 0;
  for (; i < WholeVectors<S>(count); i += S::kLanes) {
    const typename S::Vec x = S::Load(row + i);
    squares = S::MulAdd(x, x, squares);
  }
  float sum = S::ReduceSum(squares);
  for (; i < count; ++i) sum += row[i] * row[i];
  return __builtin_sqrtf(sum);
}

// Whether fp32 elements [0, count) are all finite (x - x is 0 for those, NaN for inf and NaN).
template <class S>
bool RowIsFinite(const float* row, int64_t count) {
  typename S::Vec zeros = S::Zero();
  int64_t i = 0;
  for (; i < WholeVectors<S>(count); i += S::kLanes) {
    const typename S::Vec x = S::Load(row + i);
    zeros = S::Add(zeros, S::Sub(x, x));
  }
  float sum = S::ReduceSum(zeros);
  for (; i < count; ++i) sum += row[i] - row[i];
  return sum == 0.0f;
}

// The largest Euclidean norm over columns [0, count) of a dim x stride fp32 layout (transposed rows: the key-major
// path's queries, the row-major path's keys), count rounded up to whole vectors, which must be readable (0 past
// count); inf where an element is not finite.
template <class S>
float LargestColumnNorm(const float* data, int64_t stride, int64_t count, int64_t dim) {
  float largest = 0.0f;
  for (int64_t first = 0; first < count; first += S::kLanes) {
    typename S::Vec squares = S::Zero();
    for (int64_t d = 0; d < dim; ++d) {
      const typename S::Vec x = S::Load(data + d * stride + first);
      squares = S::MulAdd(x, x, squares);
    }
    if (!(S::ReduceSum(squares) < kInfinity)) return kInfinity;  // NaN or inf where an element is
    const float lanes_max = S::ReduceMax(squares);
    largest = lanes_max > largest ? lanes_max : largest;
  }
  return __builtin_sqrtf(largest);
}

// The largest Euclidean norm over `count` fp32 rows of `dim` elements, `stride` apart; inf where one is not finite.
// Rows of whole vectors go kLanes at a time, their squares summed lane by lane (S::SumsOf), not one by one.
template <class S>
float LargestRowNorm(const float* rows, int64_t stride, int64_t count, int64_t dim) {
  using Vec = typename S::Vec;
  constexpr int kLanes = S::kLanes;
  int64_t row = 0;
  float largest = 0.0f;  // squared
  if (dim % kLanes == 0) {
    Vec squares_max = S::Zero();
    Vec not_finite = S::Zero();  // x - x: 0 while every sum is finite
    for (; row + kLanes <= count; row += kLanes) {
      Vec squares[kLanes];
      for (int l = 0; l < kLanes; ++l) {
        const float* x = rows + (row + l) * stride;
        squares[l] = S::Zero();
        for (int64_t d = 0; d < dim; d += kLanes) squares[l] = S::MulAdd(S::Load(x + d), S::Load(x + d), squares[l]);
      }
      const Vec sums = S::SumsOf(squares);
      not_finite = S::Add(not_finite, S::Sub(sums, sums));
      squares_max = S::Max(sums, squares_max);
    }
    if (S::ReduceSum(not_finite) != 0.0f) return kInfinity;
    largest = S::ReduceMax(squares_max);
  }
  for (; row < count; ++row) {
    const float norm = RowNorm<S>(rows + row * stride, dim);
    if (!(norm < kInfinity)) return kInfinity;
    largest = norm * norm > largest ? norm * norm : largest;
  }
  return __builtin_sqrtf(largest);
}

// Whether `count` fp32 rows of `dim` elements, `stride` apart, are all finite (RowIsFinite, one reduction for all).
template <class S>
bool RowsAreFinite(const float* rows, int64_t stride, int64_t count, int64_t dim) {
  if (dim % S::kLanes != 0) {
    for (int64_t row = 0; row < count; ++row) {
      if (!RowIsFinite<S>(rows + row * stride, dim)) return false;
    }
    return true;
  }
  typename S::Vec zeros = S::Zero();
  for (int64_t row = 0; row < count; ++row) {
    for (int64_t d = 0; d < dim; d += S::kLanes) {
      const typename S::Vec x = S::Load(rows + row * stride + d);
      zeros = S::Add(zeros, S::Sub(x, x));
    }
  }
  return S::ReduceSum(zeros) == 0.0f;
}

// Whether a key tile may weigh exactly 0 for every row of a row-major item, so that it can be left out (masks that
// may differ by row: a causal mask held in the bias, padding with a position bias): row by row, every key it sees
// here is hidden by keep or biased more than 1 below its running max + kExpZeroBelow. Fills `row_bias_max` (rows
// floats) with each row's largest such bias (-inf: none seen) for TileWeighsNothing, which adds the score term once
// the tile's keys are loaded. A row with no running max yet keeps the tile; so does a NaN bias.
template <class S, class T>
bool TileBiasesBelowRowMaxima(const AttentionParams& p, const ItemInputs<T>& in, const PackedRows& packing, int64_t rows,
                              const CausalWindow& window, int64_t key_start, int64_t keys, const float* row_max,
                              float* row_bias_max) {
  using Vec = typename S::Vec;
  if (in.bias == nullptr && in.keep == nullptr) return false;
  const Vec one = S::Set1(1.0f);
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t visible = Clamp(window.VisibleKeys(packing.Query(row)) - key_start, 0, keys);
    const T* bias = in.bias == nullptr ? nullptr
                                       : in.bias + packing.Offset(row, p.bias_stride[1], p.bias_stride[2]) + key_start * p.bias_stride[3];
    const bool* keep = in.keep == nullptr ? nullptr
                                          : in.keep + packing.Offset(row, p.keep_stride[1], p.keep_stride[2]) + key_start * p.keep_stride[3];
    const Vec threshold = S::Set1(row_max[row] + kExpZeroBelow<S>);
    Vec largest = S::Set1(-kInfinity);
    Vec live = S::Zero();  // per lane, how many seen keys fail the test (NaN fails it)
    for (int64_t j = 0; j < visible; j += S::kLanes) {
      const int64_t count = MinOf(static_cast<int64_t>(S::kLanes), visible - j);
      typename S::Mask seen = S::LanesBelow(count);
      if (keep != nullptr) seen = S::And(seen, KeptKeys<S>(keep + j * p.keep_stride[3], p.keep_stride[3], count));
      const Vec b = bias != nullptr ? LoadBias<S>(bias + j * p.bias_stride[3], p.bias_stride[3], count) : S::Set1(kInfinity);
      live = S::Add(live, S::Select(seen, S::Select(S::Less(S::Add(b, one), threshold), S::Zero(), one), S::Zero()));
      largest = S::Select(seen, S::Max(largest, b), largest);
    }
    if (S::ReduceSum(live) != 0.0f) return false;  // most live tiles stop at their first row
    row_bias_max[row] = S::ReduceMax(largest);
  }
  return true;
}

// After TileBiasesBelowRowMaxima passed, with the tile's keys (transposed) and values loaded: whether the tile
// weighs exactly 0 for every row whatever the dot products. |score - bias| <= |scale|·|q|·|k| (KeysToCompute's
// margin for rounding) must keep each row's largest bias below its max + kExpZeroBelow, and the tile's K and V rows
// must be finite (0 · inf is NaN in the unfused graph; so is inf + -inf).
template <class S>
bool TileWeighsNothing(const AttentionParams& p, int64_t rows, const float* row_max, const float* row_bias_max,
                       const float* keys_t, int64_t key_tile, int64_t keys, int64_t head_dim, float query_norm,
                       const float* values, int64_t value_stride, int64_t value_dim) {
  const float key_norm = LargestColumnNorm<S>(keys_t, key_tile, keys, head_dim);
  if (!(key_norm < kInfinity) || !(query_norm < kInfinity)) return false;
  if (!RowsAreFinite<S>(values, value_stride, keys, value_dim)) return false;
  const float margin = 1.01f + static_cast<float>(head_dim) * 0x1p-21f;
  const float score_bound = margin * __builtin_fabsf(p.scale) * query_norm * key_norm;
  for (int64_t row = 0; row < rows; ++row) {
    if (row_bias_max[row] == -kInfinity) continue;  // nothing of the tile seen, or only -inf biases
    if (!(row_bias_max[row] + score_bound + 1.0f < row_max[row] + kExpZeroBelow<S>)) return false;
  }
  return true;
}

// One work item with kRows-row micro-tiles (1 for single-row tiles such as decode without packing).
// Every row's arithmetic is the same whichever item and micro-tile it is in, so packing query heads
// into one item (WorkItem::heads > 1) gives bit-identical output.
template <class S, class T, int kHeadDim, int kRows>
void RunQueryTileRows(const AttentionParams& p, const WorkItem& item, float* scratch_base) {
  LinePrefetcher prefetch(item.next);
  using Traits = TileTraits<S, kHeadDim>;
  constexpr int64_t kKeyTile = Traits::kKeyTile;
  constexpr int kLanes = S::kLanes;
  const int64_t head_dim = kHeadDim > 0 ? kHeadDim : p.head_dim;
  const int64_t value_dim = kHeadDim > 0 ? kHeadDim : p.v_head_dim;
  const int64_t value_dim_padded = RoundUp(value_dim, kLanes);
  const TileScratch scratch = CarveScratch(scratch_base, ScratchSizesFor<Traits>(head_dim, value_dim_padded));

  const PackedRows packing{item.first_row, item.rows};
  const int64_t rows = item.heads * item.rows;  // at most Traits::kQueryTile (HeadsPerWorkItem)
  const int64_t padded_rows = RoundUp(rows, kRows);
  const ItemOutput<T> output = ItemOutputOf<T>(p, item);
  const auto out_row = [&](int64_t row) { return output.Row(row); };

  const CausalWindow window{p.causal, p.q_len, p.kv_len};
  const auto visible_in_tile = [&](int64_t row, int64_t key_start, int64_t keys) {
    return Clamp(window.VisibleKeys(packing.Query(row)) - key_start, 0, keys);
  };
  const int64_t tile_keys = ItemKeysOrMaskedRows(p, item, output, rows, value_dim);
  if (tile_keys == 0) return;
  // K and V read in place for every row (RowsInPlaceFit) of items of one row, and of calls whose queries are fewer
  // than a vector (decoding; S < 16 on AVX-512, where a transposed tile of 32 keys scored 8-12 keys, and cost
  // 1.3-1.5x the time at S = 4..12); the value rows of a tile that may weigh nothing are converted too, for its test
  // (the same fp32 values either way).
  const bool in_place = (kRows == 1 || p.q_len < kLanes || item.keys_in_place) && RowsInPlaceFit<S>(p);

  const ItemInputs<T> inputs = ItemInputsOf<T>(p, item);
  const auto& [query, key, value, bias, keep] = inputs;

  LoadQueryRows<S>(query, p.q_stride[1], p.q_stride[2], packing, rows, padded_rows, head_dim, scratch.queries);
  // The largest |q| of the item, for TileWeighsNothing.
  const float query_norm = bias != nullptr ? LargestRowNorm<S>(scratch.queries, head_dim, rows, head_dim) : 0.0f;
  for (int64_t i = 0; i < padded_rows * value_dim_padded; ++i) scratch.acc[i] = 0.0f;
  // Every row of the tile, also past padded_rows: RescaleRows works in whole vectors of rows.
  for (int64_t row = 0; row < Traits::kQueryTile; ++row) {
    scratch.row_max[row] = -kInfinity;
    scratch.row_sum[row] = 0.0f;
    scratch.row_new_max[row] = -kInfinity;
    scratch.row_tile_sum[row] = 0.0f;
  }

  for (int64_t key_start = 0; key_start < tile_keys; key_start += kKeyTile) {
    const int64_t keys = MinOf(kKeyTile, tile_keys - key_start);
    const int64_t columns = RoundUp(keys, Traits::kScoreColumns);
    // The bias test first (cheap, and most live tiles fail it at their first row); the norms need the loaded tile.
    const bool maybe_nothing = TileBiasesBelowRowMaxima<S>(p, inputs, packing, rows, window, key_start, keys,
                                                           scratch.row_max, scratch.row_rescale);
    const T* key_tile = key + key_start * p.k_stride[2];
    const T* value_tile = value + key_start * p.v_stride[2];
    // A tile that may weigh nothing needs its keys transposed for the norm test, and its values in fp32.
    if (!in_place || maybe_nothing) {
      LoadKeysTransposed<S>(key_tile, p.k_stride[2], keys, columns, head_dim, kKeyTile, scratch.keys_t);
    }
    const float* values = nullptr;
    int64_t value_stride = p.v_stride[2];
    if (!in_place || maybe_nothing) {
      values = ValuesInPlace<S>(value_tile, value_dim);
      if (values == nullptr) {
        LoadRowsAsFloat<S>(value_tile, p.v_stride[2], keys, value_dim, value_dim_padded, scratch.values);
        values = scratch.values;
        value_stride = value_dim_padded;
      }
    }
    if (maybe_nothing && TileWeighsNothing<S>(p, rows, scratch.row_max, scratch.row_rescale, scratch.keys_t, kKeyTile,
                                              keys, head_dim, query_norm, values, value_stride, value_dim)) {
      continue;  // every row's state stays as it is: the tile adds exactly 0
    }
    if (in_place) {
      ScoreRowsInPlace<S, T, kHeadDim>(scratch.queries, rows, key_tile, p.k_stride[2], keys, RoundUp(keys, kLanes),
                                       head_dim, scratch.scores, kKeyTile, prefetch);
    } else {
      for (int64_t row = 0; row < padded_rows; row += kRows) {
        for (int64_t column = 0; column < columns; column += Traits::kScoreColumns) {
          ScoreMicroTile<S, kRows, kHeadDim>(scratch.queries + row * head_dim, head_dim, scratch.keys_t + column,
                                             kKeyTile, scratch.scores + row * kKeyTile + column);
        }
      }
    }

    for (int64_t row = 0; row < padded_rows; ++row) {
      const int64_t visible = row < rows ? visible_in_tile(row, key_start, keys) : 0;
      RowScoreRule<T> rule{p.scale, p.softcap, nullptr, p.bias_stride[3], nullptr, p.keep_stride[3]};
      if (visible > 0 && bias != nullptr) {
        rule.bias = bias + packing.Offset(row, p.bias_stride[1], p.bias_stride[2]) + key_start * p.bias_stride[3];
      }
      if (visible > 0 && keep != nullptr) {
        rule.keep = keep + packing.Offset(row, p.keep_stride[1], p.keep_stride[2]) + key_start * p.keep_stride[3];
      }
      scratch.row_tile_sum[row] = OnlineSoftmaxRow<S>(scratch.scores + row * kKeyTile, visible, RoundUp(keys, kLanes),
                                                      rule, scratch.row_max[row], scratch.row_new_max + row);
    }
    RescaleRows<S>(RoundUp(padded_rows, kLanes), scratch.row_new_max, scratch.row_tile_sum, scratch.row_max,
                   scratch.row_sum, scratch.row_rescale);

    for (int64_t row = 0; row < padded_rows; row += kRows) {
      // The most keys a real row of the block sees (packed rows are not in query order); a row's
      // probabilities past its own visible keys are 0.
      int64_t block_keys = 0;
      for (int64_t r = row; r < MinOf(row + kRows, rows); ++r) {
        const int64_t visible = visible_in_tile(r, key_start, keys);
        block_keys = visible > block_keys ? visible : block_keys;
      }
      const float* probs = scratch.scores + row * kKeyTile;
      float* acc = scratch.acc + row * value_dim_padded;
      if (in_place && rows == 1) {
        AccumulateValuesInPlace<S>(probs, scratch.row_rescale[row], value_tile, p.v_stride[2], block_keys, value_dim, acc);
        continue;
      }
      const auto accumulate = [&](const auto* value_rows, int64_t stride) {
        int64_t c = 0;
        for (; c + Traits::kValueColumns <= value_dim_padded; c += Traits::kValueColumns) {
          prefetch.Issue(kRowPathPrefetchLines);
          AccumulateValuesMicroTile<S, kRows, Traits::kValueVectors, kKeyTile, 1>(
              probs, scratch.row_rescale + row, value_rows + c, stride, block_keys, acc + c, value_dim_padded);
        }
        for (; c < value_dim_padded; c += kLanes) {
          AccumulateValuesMicroTile<S, kRows, 1, kKeyTile, 1>(probs, scratch.row_rescale + row, value_rows + c, stride,
                                                              block_keys, acc + c, value_dim_padded);
        }
      };
      if (in_place) {
        accumulate(value_tile, p.v_stride[2]);
      } else {
        accumulate(values, value_stride);
      }
    }
  }

  for (int64_t row = 0; row < rows; ++row) {
    StoreOutputRow<S>(scratch.acc + row * value_dim_padded, scratch.row_sum[row], value_dim, p.masked_rows,
                      out_row(row));
  }
  prefetch.Rest();
}

// ---- Key-major scores: query rows across vector lanes ---------------------------------------------
//
// Where queries come at least a vector at a time, the scores of a strip of query rows are held key
// by key, the strip's rows across the lanes of kStripVectors vectors (rows past an item's whole
// strips that fit one vector: a strip of one). Q·Kᵀ then broadcasts k[j][d] from keys in their own
// layout, so no key tile is transposed (the query tile is, once per work item); scale, bias and
// masks are applied to the dot products in registers; and the online softmax runs lane-wise, its
// running max and sum without horizontal reductions. Masks the same for every row of an item (none,
// or values that vary only with batch and key, such as a padding mask) are read a value per key. A
// bias that differs by row (a causal mask or a position bias held in it: decoder exports, T5, Swin)
// is transposed into the scores strip by strip (LoadStripBiasTransposed), past each row's keys that
// provably weigh 0 (StripBiasedKeys); a keep mask that does (DeBERTa's padding outer product) goes
// as bits per key (LoadStripKeepBits). Through the row-major path such calls took 1.15-1.4x the time
// (S = T = 512, 12 heads of 64, one thread). Each strip goes through scores, softmax and P·V before
// the next, which keeps its scores in L1. Every row's arithmetic is the same whichever item, strip,
// lane and strip width it is in (with no multiply and add fused unasked: -ffp-contract=off), so
// packing query heads into an item still gives bit-identical output.

// Whether the rows of one work item may read different values of a mask input (`stride`: its
// strides): it varies with the query, or with the head where items may pack query heads.
inline bool VariesByRow(const AttentionParams& p, const void* data, const int64_t* stride) {
  return data != nullptr && (stride[2] != 0 || (stride[1] != 0 && p.q_heads != p.kv_heads));
}

// Whether a call's rows take the key-major path: queries at least a vector at a time. A property of
// the call, not of a work item: packing query heads into items must not change which path a row
// takes. A bias that varies by row (a causal mask or a position bias held in it) goes to the scores
// transposed, strip by strip (LoadStripBiasTransposed); a keep mask that varies by row, as bits
// (LoadStripKeepBits).
template <class S>
bool KeyMajorScores(const AttentionParams& p) {
  return p.q_len >= S::kLanes;
}

// rows x head_dim query rows -> queries_t[d * padded_rows + r] in fp32, rows up to padded_rows (a
// multiple of S::kLanes) 0. `query` is the item's first head.
template <class S, class T>
void LoadQueriesTransposed(const T* query, int64_t head_stride, int64_t query_stride, const PackedRows& packing,
                           int64_t rows, int64_t padded_rows, int64_t head_dim, float* queries_t) {
  constexpr int kLanes = S::kLanes;
  for (int64_t first = 0; first < padded_rows; first += kLanes) {
    const T* source[kLanes];  // null: a padding row
    for (int l = 0; l < kLanes; ++l) {
      source[l] = first + l < rows ? query + packing.Offset(first + l, head_stride, query_stride) : nullptr;
    }
    // Blocks with padding rows too go through the transposes, zeros for those rows (as LoadKeysTransposed).
    int64_t d = 0;
    for (; d < WholeVectors<S>(head_dim); d += kLanes) {
      typename S::Vec block[kLanes];
      for (int l = 0; l < kLanes; ++l) block[l] = source[l] != nullptr ? S::LoadLanes(source[l] + d) : S::Zero();
      S::TransposeSquare(block);
      for (int l = 0; l < kLanes; ++l) S::Store(queries_t + (d + l) * padded_rows + first, block[l]);
    }
    for (; d < head_dim; ++d) {
      for (int l = 0; l < kLanes; ++l) {
        queries_t[d * padded_rows + first + l] = source[l] != nullptr ? ToFloat(source[l][d]) : 0.0f;
      }
    }
  }
}

// Key-major: fp32 key and value rows are read where they are, elements broadcast one at a time
// (null: convert them per tile).
inline const float* RowsInPlace(const float* rows) { return rows; }
template <class T>
const float* RowsInPlace(const T*) {
  return nullptr;
}

// What turns a strip's dot products against one key into scores: the same fields as a row's rule,
// with bias and keep at key 0 of the tile being the same for every row; or, with lane_bias (rows
// whose biases differ: a causal mask or a position bias held in the bias), bias null and each
// lane's bias for key j waiting in the scores, where ScoreStripKeys stores that key's scores
// (LoadStripBiasTransposed); with keep_bits (rows whose keep values differ), keep null and bit
// v * kLanes + l of keep_bits[j] set where lane l of vector v keeps key j (LoadStripKeepBits).
template <class T>
struct KeyScoreRule : RowScoreRule<T> {
  bool lane_bias;
  const uint32_t* keep_bits;
};

// `score` (key j, the lanes of vector v) -inf in the lanes that keep_bits hides (none where it is null).
template <class S, class T>
typename S::Vec KeptLaneScores(const KeyScoreRule<T>& rule, int64_t j, int v, typename S::Vec score) {
  if (rule.keep_bits == nullptr) return score;
  return S::Select(S::MaskFromBits(rule.keep_bits[j] >> (v * S::kLanes)), score, S::Set1(-kInfinity));
}

// ScoreStripKeys's finish with softcap, on the dot products of keys [key, key + count), dots[k * kStripRows + lane]
// for key key + k.
template <class S, int kVectors, class T>
void SoftcapStripKeys(const KeyScoreRule<T>& rule, int64_t key, int64_t count, const typename S::Vec* visible,
                      const float* dots, float* scores, typename S::Vec* tile_max) {
  using Vec = typename S::Vec;
  constexpr int kStripRows = kVectors * S::kLanes;
  const Vec scale = S::Set1(rule.scale);
  const Vec cap = S::Set1(rule.softcap);
  for (int64_t j = key; j < key + count; ++j) {
    const bool kept = rule.keep == nullptr || rule.keep[j * rule.keep_key_stride];
    for (int v = 0; v < kVectors; ++v) {
      float* score_lanes = scores + j * kStripRows + v * S::kLanes;
      const Vec dot = S::Load(dots + (j - key) * kStripRows + v * S::kLanes);
      Vec score = S::Mul(cap, Tanh<S>(S::Div(S::Mul(dot, scale), cap)));
      if (rule.lane_bias) {
        score = S::Add(score, S::Load(score_lanes));
      } else if (rule.bias != nullptr) {
        score = S::Add(score, S::Set1(ToFloat(rule.bias[j * rule.bias_key_stride])));
      }
      if (!kept) {
        score = S::Set1(-kInfinity);
      } else {
        score = KeptLaneScores<S>(rule, j, v, score);
        if (visible != nullptr) {
          score = S::Select(S::Less(S::Set1(static_cast<float>(j)), visible[v]), score, S::Set1(-kInfinity));
        }
      }
      S::Store(score_lanes, score);
      tile_max[v] = S::Max(tile_max[v], score);
    }
  }
}

// Scores of the rows of a strip of kVectors vectors against keys [key, key + kKeys) of the tile:
// scores[j * kStripRows + r] = contract score of queries_t[:, r] · keys[j], for j in that range
// (with rule.lane_bias, each lane's bias read from there first).
// `keys` points at key `key`; `visible` holds each lane's visible keys as floats (null: every lane
// sees every key here). tile_max[v] takes the max with each score of vector v. Each lane's
// arithmetic is the same whatever kVectors and kKeys.
template <class S, class T, int kKeys, int kHeadDim, int kVectors>
void ScoreStripKeys(const float* queries_t, int64_t queries_stride, const float* keys, int64_t key_stride,
                    int64_t head_dim, const KeyScoreRule<T>& rule, int64_t key, const typename S::Vec* visible,
                    float* scores, typename S::Vec* tile_max, PrefetchSlice prefetch) {
  using Vec = typename S::Vec;
  constexpr int kStripRows = kVectors * S::kLanes;
  constexpr int kLanes = S::kLanes;
  const int64_t dims = kHeadDim > 0 ? kHeadDim : head_dim;
  Vec sum[kKeys][kVectors];
  for (int k = 0; k < kKeys; ++k) {
    for (int v = 0; v < kVectors; ++v) sum[k][v] = S::Zero();
  }
  const auto accumulate = [&](int64_t d) {
    Vec query[kVectors];
    for (int v = 0; v < kVectors; ++v) query[v] = S::Load(queries_t + d * queries_stride + v * kLanes);
    for (int k = 0; k < kKeys; ++k) {
      const Vec k_d = S::Set1(keys[k * key_stride + d]);
      for (int v = 0; v < kVectors; ++v) sum[k][v] = S::MulAdd(k_d, query[v], sum[k][v]);
    }
  };
  int64_t d = 0;
  for (const int64_t fetching = MinOf(prefetch.lines, dims); d < fetching; ++d) {
    accumulate(d);
    prefetch.Line(d);
  }
  for (; d < dims; ++d) accumulate(d);
  const Vec scale = S::Set1(rule.scale);
  if (rule.softcap > 0.0f) {
    // Finished from memory: Tanh inlined into the loop below would keep the accumulators out of
    // registers in the loop above. The dot products go apart from the scores, where lane biases wait.
    alignas(64) float dots[kKeys * kStripRows];
    for (int k = 0; k < kKeys; ++k) {
      for (int v = 0; v < kVectors; ++v) S::Store(dots + k * kStripRows + v * kLanes, sum[k][v]);
    }
    SoftcapStripKeys<S, kVectors>(rule, key, kKeys, visible, dots, scores, tile_max);
    return;
  }
  // Unrolled, or the accumulators would live in memory, stored on every step of the loop above.
#pragma GCC unroll 16
  for (int k = 0; k < kKeys; ++k) {
    const int64_t j = key + k;
    const bool kept = rule.keep == nullptr || rule.keep[j * rule.keep_key_stride];
    const Vec bias = rule.bias != nullptr ? S::Set1(ToFloat(rule.bias[j * rule.bias_key_stride])) : S::Zero();
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) {
      Vec score = S::Mul(sum[k][v], scale);
      if (rule.lane_bias) {
        score = S::Add(score, S::Load(scores + j * kStripRows + v * kLanes));
      } else if (rule.bias != nullptr) {
        score = S::Add(score, bias);
      }
      if (!kept) {
        score = S::Set1(-kInfinity);
      } else {
        score = KeptLaneScores<S>(rule, j, v, score);
        if (visible != nullptr) {
          score = S::Select(S::Less(S::Set1(static_cast<float>(j)), visible[v]), score, S::Set1(-kInfinity));
        }
      }
      S::Store(scores + j * kStripRows + v * kLanes, score);
      tile_max[v] = S::Max(tile_max[v], score);
    }
  }
}

// ScoreStripKeys in a function of its own, for narrow strips: inlined into the work item beside the wide strip's,
// GCC 12 kept its accumulators and key offsets in memory (S = T = 16, 32 heads of 128, f32: 59 us a call inlined,
// 37 us apart). The wide strip's stays inlined (apart, long f32 calls took 2% longer).
template <class S, class T, int kKeys, int kHeadDim, int kVectors>
__attribute__((noinline)) void ScoreStripKeysApart(const float* queries_t, int64_t queries_stride, const float* keys,
                                                   int64_t key_stride, int64_t head_dim, const KeyScoreRule<T>& rule,
                                                   int64_t key, const typename S::Vec* visible, float* scores,
                                                   typename S::Vec* tile_max, PrefetchSlice prefetch) {
  ScoreStripKeys<S, T, kKeys, kHeadDim, kVectors>(queries_t, queries_stride, keys, key_stride, head_dim, rule, key,
                                                  visible, scores, tile_max, prefetch);
}

// How many leading keys of a tile of `keys` the item's rows must compute. The rest, a suffix, is
// hidden by the keep mask, or biased so far below every row's running max that e^(score - max)
// is exactly 0 whatever the dot products (|score| <= |scale|·|q|·|k|, plus a margin for rounding)
// and its values are finite, so that leaving it out adds exactly 0: the padding of right-padded
// sequences, by mask or by a bias of -10000 or finfo.min. bias and keep are the same for every
// row on this path. `query_norm`: the largest |q| of the item's rows; `row_max`: their running
// maxima before this tile.
template <class S, class T>
int64_t KeysToCompute(int64_t keys, const KeyScoreRule<T>& rule, const float* key_rows, int64_t key_stride,
                      int64_t head_dim, const float* values, int64_t value_stride, int64_t value_dim,
                      float query_norm, const float* row_max, int64_t rows) {
  if (rule.bias == nullptr && rule.keep == nullptr) return keys;
  const float margin = 1.01f + static_cast<float>(head_dim) * 0x1p-21f;
  const float score_bound_factor = margin * __builtin_fabsf(rule.scale) * query_norm;
  float threshold = kInfinity;  // the lowest running max + kExpZeroBelow, once needed
  bool have_threshold = false;
  float bias_max = -kInfinity;
  float key_norm_max = 0.0f;
  int64_t count = keys;
  for (; count > 0; --count) {
    const int64_t key = count - 1;
    if (rule.keep != nullptr && !rule.keep[key * rule.keep_key_stride]) continue;
    if (rule.bias == nullptr) break;
    if (!have_threshold) {
      float lowest = kInfinity;
      for (int64_t row = 0; row < rows; ++row) {
        if (!(row_max[row] >= lowest)) lowest = row_max[row];  // NaN stays: no comparison holds
      }
      threshold = lowest + kExpZeroBelow<S>;
      have_threshold = true;
    }
    // Written so that NaN is taken up, and then fails the comparison below.
    const float bias = ToFloat(rule.bias[key * rule.bias_key_stride]);
    if (!(bias <= bias_max)) bias_max = bias;
    const float key_norm = RowNorm<S>(key_rows + key * key_stride, head_dim);
    if (!(key_norm <= key_norm_max)) key_norm_max = key_norm;
    const float score_bound = bias_max + score_bound_factor * key_norm_max + 1.0f;
    if (!(score_bound < threshold) || !RowIsFinite<S>(values + key * value_stride, value_dim)) break;
  }
  return count;
}

// The gap a key's bias b needs below a witness's bias `top` before the key's score terms count, beside the bounds
// on both dot products (LeadingDeadKeys, LeadingDeadKeysByRow): e^x is 0 below kExpZeroBelow, 1 more for its
// rounding, and 2^-20 of both biases for the rounding of score = dot + bias.
template <class S>
float DeadKeyGap(float b, float top) {
  return 1.0f - kExpZeroBelow<S> + (__builtin_fabsf(b) + __builtin_fabsf(top)) * 0x1p-20f;
}

// Rows [first, first + count) of K or V (rows `stride` elements apart) as fp32: in place for float, else converted
// into `buffer` (count rows of dim floats). `float_stride` becomes the stride of the rows returned.
template <class S, class T>
const float* RowsAsFloat(const T* base, int64_t stride, int64_t first, int64_t count, int64_t dim, float* buffer,
                         int64_t& float_stride) {
  if (const float* in_place = RowsInPlace(base + first * stride)) {
    float_stride = stride;
    return in_place;
  }
  LoadRowsAsFloat<S>(base + first * stride, stride, count, dim, dim, buffer);
  float_stride = dim;
  return buffer;
}

// How many leading keys weigh exactly 0 for every row of a key-major item, so that its key loop starts past them
// (left padding: the keys before a sequence's first real one; KeysToCompute takes the trailing ones). They are
// hidden by keep, or biased so far below the witness w (the first kept key whose bias is near the best, which
// every row must see) that e^(score - max) is exactly 0 whatever the dot products: a row's max is at least
// bias_w - |scale|·|q|·|k_w| and key j scores at most bias_j + |scale|·|q|·|k_j| (KeysToCompute's margin for
// rounding, and 2^-20 of both biases), and their K and V rows are finite. `key_buffer` and `value_buffer` hold
// `buffer_rows` rows of head_dim and value_dim floats (16-bit rows are converted there, a block at a time).
template <class S, class T>
int64_t LeadingDeadKeys(const AttentionParams& p, const T* bias, const bool* keep, const T* key, const T* value,
                        int64_t keys, int64_t head_dim, int64_t value_dim, float query_norm, const int64_t* row_visible,
                        int64_t rows, float* key_buffer, float* value_buffer, int64_t buffer_rows) {
  const auto kept = [&](int64_t j) { return keep == nullptr || keep[j * p.keep_stride[3]]; };
  const auto bias_at = [&](int64_t j) { return ToFloat(bias[j * p.bias_stride[3]]); };
  int64_t hidden = 0;
  while (hidden < keys && !kept(hidden)) ++hidden;
  if (bias == nullptr || hidden == keys || !(query_norm < kInfinity)) return hidden;
  float best = -kInfinity;
  for (int64_t j = hidden; j < keys; ++j) {
    if (!kept(j)) continue;
    const float b = bias_at(j);
    if (b != b) return hidden;
    best = b > best ? b : best;
  }
  if (!(__builtin_fabsf(best) < kInfinity)) return hidden;
  int64_t witness = hidden;
  while (witness < keys && (!kept(witness) || bias_at(witness) + DeadKeyGap<S>(bias_at(witness), best) < best)) {
    ++witness;
  }
  if (witness == hidden) return hidden;  // nothing before the first near key but what keep hides
  for (int64_t row = 0; row < rows; ++row) {
    if (row_visible[row] <= witness) return hidden;  // a row that does not see the witness
  }
  int64_t stride = 0;
  const float witness_bias = bias_at(witness);
  const float witness_norm =
      RowNorm<S>(RowsAsFloat<S>(key, p.k_stride[2], witness, 1, head_dim, key_buffer, stride), head_dim);
  if (!(witness_norm < kInfinity)) return hidden;
  const float factor = (1.01f + static_cast<float>(head_dim) * 0x1p-21f) * __builtin_fabsf(p.scale) * query_norm;
  for (int64_t first = hidden; first < witness; first += buffer_rows) {
    const int64_t count = MinOf(buffer_rows, witness - first);
    int64_t key_stride = 0, value_stride = 0;
    const float* key_rows = RowsAsFloat<S>(key, p.k_stride[2], first, count, head_dim, key_buffer, key_stride);
    const float* value_rows = RowsAsFloat<S>(value, p.v_stride[2], first, count, value_dim, value_buffer, value_stride);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t j = first + i;
      if (!kept(j)) continue;
      const float key_norm = RowNorm<S>(key_rows + i * key_stride, head_dim);
      const float b = bias_at(j);
      if (!(key_norm < kInfinity) || !RowIsFinite<S>(value_rows + i * value_stride, value_dim) ||
          !(b + factor * (key_norm + witness_norm) + DeadKeyGap<S>(b, witness_bias) < witness_bias)) {
        return j;
      }
    }
  }
  return witness;
}

// The first of `count` keys that `keep` keeps (its values `stride` apart; null: key 0), or `count` if none: eight at a
// time where they are adjacent.
inline int64_t FirstKeptKey(const bool* keep, int64_t stride, int64_t count) {
  if (keep == nullptr) return count > 0 ? 0 : count;
  int64_t j = 0;
  if (stride == 1) {
    for (; j + 8 <= count; j += 8) {
      uint64_t bytes;
      std::memcpy(&bytes, keep + j, sizeof bytes);
      if (bytes != 0) break;
    }
  }
  while (j < count && !keep[j * stride]) ++j;
  return j;
}

// The largest of `count` biases `stride` apart that `keep` keeps (null: all; its values keep_stride apart), as fp32
// (-inf for none), into `largest`; false where one of them is NaN.
template <class S, class T>
bool LargestBias(const T* bias, int64_t stride, int64_t count, float& largest, const bool* keep = nullptr,
                 int64_t keep_stride = 0) {
  using Vec = typename S::Vec;
  const Vec inf = S::Set1(kInfinity), minus_inf = S::Set1(-kInfinity);
  Vec most = minus_inf;
  for (int64_t first = 0; first < count; first += S::kLanes) {
    const int64_t n = MinOf(S::kLanes, count - first);
    const Vec b = LoadBias<S>(bias + first * stride, stride, n);
    typename S::Mask lanes = S::LanesBelow(n);
    if (keep != nullptr) lanes = S::And(lanes, KeptKeys<S>(keep + first * keep_stride, keep_stride, n));
    const uint32_t bits = S::LaneBits(lanes);
    // A lane is below +inf or above -inf unless it is NaN.
    if (((S::LaneBits(S::Less(b, inf)) | S::LaneBits(S::Less(minus_inf, b))) & bits) != bits) return false;
    most = S::Max(most, S::Select(lanes, b, minus_inf));
  }
  largest = S::ReduceMax(most);
  return true;
}

// Leading keys x (head_dim + value_dim) a strip's count must reach before its other rows scan for their witnesses.
inline constexpr int64_t kLeadingWorthLeavingOut = 2048;

// Masks that differ by row (lane_bias, lane_keep): how many leading keys weigh exactly 0 for every row of a key-major
// item's strip, rows [row_begin, row_begin + rows). That is left padding in a (B, 1, S, T) mask, as an exported
// decoder carries batched prompts under its causal mask (LeadingDeadKeys needs one witness for every row). A row may
// leave out the keys it does not see, the keys it hides, and the kept keys before its witness: a kept key it sees
// whose finite bias lies above every earlier kept key's by LeadingDeadKeys's test, with one bound
// |scale|·max|q|·max|k| for both dot products (k over the keys up to the last witness), and finite K and V rows. The
// first row that keeps a key it sees takes the first such key as its witness (one vector pass says whether there
// may be one, then a scan); each later row scans only the keys before the count so far and takes the first kept key
// past it as its witness, or lowers the count to the keys it hides. A row whose biases all lie near each other (a
// query of the padding, whose keys all hold the mask's fill; a row with no padding) so sets it to the keys it hides,
// 0 without keep. NaN biases keep their keys.
template <class S, class T>
int64_t LeadingDeadKeysByRow(const AttentionParams& p, const T* bias, const bool* keep, const PackedRows& packing,
                             const T* key, const T* value, int64_t keys, int64_t head_dim, int64_t value_dim,
                             float query_norm, const int64_t* row_visible, int64_t row_begin, int64_t rows,
                             float* key_buffer, float* value_buffer, int64_t buffer_rows) {
  // How far a witness's bias w lies above the biases m of the keys before it, less their gap (> 0: enough for dot
  // products of 0; the bound must fit in it twice). Twice the gap's rounding term, for this sum's own rounding.
  const auto slack = [](float m, float w) {
    if (m == -kInfinity) return kInfinity;  // only keys biased -inf before it
    return (w - m) - DeadKeyGap<S>(m, w) - (__builtin_fabsf(m) + __builtin_fabsf(w)) * 0x1p-20f;
  };
  int64_t count = keys;          // keys every row so far leaves out, before the bound's test
  int64_t fallback = keys;       // keys every row so far hides (keep) or does not see: left out whatever the bound
  int64_t last_witness = -1;     // the largest witness index
  float least_slack = kInfinity;  // over the rows' witnesses
  bool counted = false;          // whether a row has set the count (the first one scans for its witness)
  // Row r's head and query, stepped along (PackedRows::Offset divides).
  int64_t head = packing.Head(row_begin), query = packing.Query(row_begin);
  for (int64_t r = row_begin; r < row_begin + rows && count > 0; ++r) {
    if (r > row_begin && ++query == packing.first_row + packing.rows_per_head) {
      query = packing.first_row;
      ++head;
    }
    const T* row_bias = bias != nullptr ? bias + head * p.bias_stride[1] + query * p.bias_stride[2] : nullptr;
    const bool* row_keep = keep != nullptr ? keep + head * p.keep_stride[1] + query * p.keep_stride[2] : nullptr;
    const auto kept = [&](int64_t j) { return row_keep == nullptr || row_keep[j * p.keep_stride[3]]; };
    const auto bias_at = [&](int64_t j) { return ToFloat(row_bias[j * p.bias_stride[3]]); };
    const int64_t seen = MinOf(row_visible[r], keys);
    const bool first_row = !counted;
    const int64_t limit = first_row ? seen : MinOf(count, seen);
    int64_t hidden = -1;  // the row's first kept key before `limit` (-1: none)
    int64_t witness = -1;
    float before = -kInfinity;  // the largest bias of its kept keys before the witness
    bool nan = false;
    // Keys [from, to) one at a time; false once the scan ends (a witness, a NaN bias, keep-only's first kept key).
    const auto scan_keys = [&](int64_t from, int64_t to) {
      for (int64_t j = from; j < to; ++j) {
        if (!kept(j)) continue;
        if (row_bias == nullptr) {
          hidden = j;
          return false;
        }
        const float b = bias_at(j);
        if (b != b) {
          nan = true;
          if (hidden < 0) hidden = j;
          return false;
        }
        if (first_row && hidden >= 0 && __builtin_fabsf(b) < kInfinity && slack(before, b) > 0.0f) {
          witness = j;
          return false;
        }
        if (hidden < 0) hidden = j;
        before = MaxOf(before, b);
      }
      return true;
    };
    if (row_bias == nullptr || (!first_row && row_keep != nullptr)) {
      scan_keys(0, limit);
    } else if (!first_row) {  // every key kept: the largest bias before the count, a vector at a time
      if (limit > 0) {
        hidden = 0;
        nan = !LargestBias<S>(row_bias, p.bias_stride[3], limit, before);
      }
    } else if (const int64_t h = FirstKeptKey(row_keep, p.keep_stride[3], limit); h < limit) {
      // The first row that keeps a key (a DeBERTa mask's padded rows keep none). A witness lies more than the least
      // gap above the first kept key's bias: unless the largest kept bias does (one pass a vector at a time), there is
      // none to scan for. An -inf first bias, or a NaN, are scanned for.
      const bool* keep_from = row_keep == nullptr ? nullptr : row_keep + h * p.keep_stride[3];
      float top = kInfinity;
      const T* bias_from = row_bias + h * p.bias_stride[3];
      const bool ordered = LargestBias<S>(bias_from, p.bias_stride[3], limit - h, top, keep_from, p.keep_stride[3]);
      if (ordered && !(top - bias_at(h) > 1.0f - kExpZeroBelow<S>)) {
        hidden = h;
      } else if (row_keep != nullptr) {
        scan_keys(h, limit);
      } else {
        // A vector at a time, one key at a time only in the first vector and where one may hold a witness (a bias
        // more than the least gap above the largest before it) or a NaN.
        for (int64_t first = 0; first < limit; first += S::kLanes) {
          const int64_t n = MinOf(S::kLanes, limit - first);
          float largest = kInfinity;
          const bool finite = LargestBias<S>(row_bias + first * p.bias_stride[3], p.bias_stride[3], n, largest);
          if (hidden < 0 || !finite || !(largest - before <= 1.0f - kExpZeroBelow<S>)) {
            if (!scan_keys(first, first + n)) break;
          } else {
            before = MaxOf(before, largest);
          }
        }
      }
    }
    if (hidden < 0) continue;  // no kept key before the count: leaving those out changes nothing for this row
    if (row_bias == nullptr || nan) {
      count = MinOf(count, hidden);
      fallback = MinOf(fallback, hidden);
      counted = true;
      continue;
    }
    if (!first_row && seen > count) {  // the first kept key the row sees past the count
      int64_t j = count;
      while (j < seen && !kept(j)) ++j;
      if (j < seen) {
        const float b = bias_at(j);
        if (__builtin_fabsf(b) < kInfinity && slack(before, b) > 0.0f) witness = j;
      }
    }
    fallback = MinOf(fallback, hidden);
    counted = true;
    if (witness < 0) {
      count = MinOf(count, hidden);
      continue;
    }
    if (first_row) {  // a later row's witness lies at or past the count
      // Each later row costs a scan of the keys before the count: worth it where they hold enough work (at S = T = 64,
      // 8 keys of 64 + 64 dims took 1.1x the time to leave out).
      if (witness * (head_dim + value_dim) < kLeadingWorthLeavingOut) return 0;  // the other rows not yet scanned
      count = witness;
    }
    last_witness = MaxOf(last_witness, witness);
    const float witness_slack = slack(before, bias_at(witness));
    if (witness_slack < least_slack) least_slack = witness_slack;
  }
  if (count <= fallback || last_witness < 0) return count;
  // The bound over the keys up to the last witness, and finite values for the keys left out.
  float key_norm = 0.0f;
  for (int64_t first = 0; first <= last_witness; first += buffer_rows) {
    const int64_t rows_here = MinOf(buffer_rows, last_witness + 1 - first);
    int64_t key_stride = 0;
    const float* key_rows = RowsAsFloat<S>(key, p.k_stride[2], first, rows_here, head_dim, key_buffer, key_stride);
    key_norm = MaxOf(key_norm, LargestRowNorm<S>(key_rows, key_stride, rows_here, head_dim));
  }
  const float factor = (1.01f + static_cast<float>(head_dim) * 0x1p-21f) * __builtin_fabsf(p.scale);
  const float bound = factor * query_norm * key_norm;
  if (!(2.0f * bound < least_slack)) return fallback;  // NaN and inf too
  for (int64_t first = 0; first < count; first += buffer_rows) {
    const int64_t rows_here = MinOf(buffer_rows, count - first);
    int64_t value_stride = 0;
    const float* value_rows =
        RowsAsFloat<S>(value, p.v_stride[2], first, rows_here, value_dim, value_buffer, value_stride);
    if (RowsAreFinite<S>(value_rows, value_stride, rows_here, value_dim)) continue;
    for (int64_t i = 0; i < rows_here; ++i) {
      if (!RowIsFinite<S>(value_rows + i * value_stride, value_dim)) return MaxOf(fallback, first + i);
    }
  }
  return count;
}

// Row-varying biases (KeyScoreRule::lane_bias) of a strip for keys [0, count) of a tile, row r's
// from bias_rows[r] (keys key_stride apart; null: a padding row, 0), transposed into fp32
// scores[j * kStripRows + r], where ScoreStripKeys adds each to its lane's dot product.
template <class S, class T, int kVectors>
void LoadStripBiasTransposed(const T* const* bias_rows, int64_t key_stride, int64_t count, float* scores) {
  constexpr int kLanes = S::kLanes;
  constexpr int kStripRows = kVectors * kLanes;
  for (int v = 0; v < kVectors; ++v) {
    const T* const* rows = bias_rows + v * kLanes;
    for (int64_t first = 0; first < count; first += kLanes) {
      const int64_t keys = MinOf(kLanes, count - first);
      typename S::Vec block[kLanes];
      for (int l = 0; l < kLanes; ++l) {
        block[l] = rows[l] != nullptr ? LoadBias<S>(rows[l] + first * key_stride, key_stride, keys) : S::Zero();
      }
      S::TransposeSquare(block);
      for (int64_t k = 0; k < keys; ++k) S::Store(scores + (first + k) * kStripRows + v * kLanes, block[k]);
    }
  }
}

// Keep values that differ by row (KeyScoreRule::keep_bits) of a strip of kRows rows for keys [0, count) of a tile:
// bit r of bits[j] set where row r keeps key j, row r's values from keep_rows[r] (keys key_stride apart; null: a
// padding row, which keeps nothing). Adjacent keys go eight rows by eight keys at a time: each row's eight bytes
// made 0 or 1 (nonzero keeps), shifted left by the row's place in the eight and or-ed, leave key k's eight rows in
// byte k (no carries).
template <int kRows>
void LoadStripKeepBits(const bool* const* keep_rows, int64_t key_stride, int64_t count, uint32_t* bits) {
  static_assert(kRows % 8 == 0 && kRows <= 32, "rows in groups of 8, bits in a uint32_t");
  for (int64_t j = 0; j < count; ++j) bits[j] = 0;
  int64_t first = 0;
  if constexpr (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) {
    if (key_stride == 1) {
      for (; first + 8 <= count; first += 8) {
        for (int group = 0; group < kRows / 8; ++group) {
          uint64_t rows = 0;
          for (int r = 0; r < 8; ++r) {
            const bool* row = keep_rows[group * 8 + r];
            if (row == nullptr) continue;
            uint64_t bytes;
            std::memcpy(&bytes, row + first, sizeof bytes);
            bytes |= (bytes & 0xF0F0F0F0F0F0F0F0u) >> 4;
            bytes |= (bytes & 0x0C0C0C0C0C0C0C0Cu) >> 2;
            bytes |= (bytes & 0x0202020202020202u) >> 1;
            rows |= (bytes & 0x0101010101010101u) << r;
          }
          for (int k = 0; k < 8; ++k) {
            bits[first + k] |= static_cast<uint32_t>((rows >> (8 * k)) & 0xFFu) << (8 * group);
          }
        }
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {  // the rest key by key
    if (keep_rows[r] == nullptr) continue;
    for (int64_t j = first; j < count; ++j) bits[j] |= (keep_rows[r][j * key_stride] ? 1u : 0u) << r;
  }
}

// Row-varying biases: how many leading keys of a tile the first `rows` rows of a strip must compute, given the
// keys each sees (row_keys[r], a prefix of the tile that causality and the tile's computed keys leave). The rest
// of a row's keys are biased so far below the row's max after this tile that e^(score - max) is exactly 0
// whatever the dot products, and the tile's K and V rows are finite, so that leaving them out adds exactly 0:
// the part of a causal mask held in the bias above the diagonal. The max is at least the running max before the
// tile (row_max[r]), and at least the score of a witness: the largest finite bias among the row's first kLanes
// keys that keep keeps (rule.keep or rule.keep_bits; the row computes them). `score_bound()` bounds
// |score - bias| over the tile's keys, with KeysToCompute's margin for rounding (inf where a K or V row is not
// finite); it is asked for only once a row's last key may be left out. Rows go last first: under a causal mask
// the last sees the most, and the others then test only keys past it. NaN biases and maxima fail every test, and
// keep their keys.
template <class S, class T, class ScoreBound>
int64_t StripBiasedKeys(const T* const* bias_rows, int64_t bias_key_stride, const KeyScoreRule<T>& rule,
                        const int64_t* row_keys, const float* row_max, int64_t rows, const ScoreBound& score_bound) {
  using Vec = typename S::Vec;
  constexpr int kLanes = S::kLanes;
  constexpr float kRounding = 0x1p-20f;  // of a bias's magnitude, for the rounding of score = dot + bias
  int64_t needed = 0;
  float bound = 0.0f;
  bool have_bound = false;
  for (int64_t r = rows - 1; r >= 0; --r) {
    const int64_t keys = row_keys[r];
    if (keys <= needed) continue;
    const T* bias = bias_rows[r];
    // Without the bound (>= 0): whether the last key may be left out, by the running max, else by the witness.
    const float last = ToFloat(bias[(keys - 1) * bias_key_stride]);
    float witness = -kInfinity;
    if (!(last + 1.0f < row_max[r] + kExpZeroBelow<S>)) {
      const int64_t first_count = MinOf(kLanes, keys);
      const Vec first = LoadBias<S>(bias, bias_key_stride, first_count);
      typename S::Mask witnesses = S::And(S::LanesBelow(first_count), S::Less(S::Abs(first), S::Set1(kInfinity)));
      if (rule.keep != nullptr) {
        witnesses = S::And(witnesses, KeptKeys<S>(rule.keep, rule.keep_key_stride, first_count));
      }
      if (rule.keep_bits != nullptr) {
        bool kept[kLanes] = {};
        for (int64_t k = 0; k < first_count; ++k) kept[k] = (rule.keep_bits[k] >> r & 1u) != 0;
        witnesses = S::And(witnesses, S::KeptLanes(kept));
      }
      witness = S::ReduceMax(S::Select(witnesses, first, S::Set1(-kInfinity)));
      if (!(last + 1.0f < MaxOf(witness, row_max[r]) + kExpZeroBelow<S>)) {  // a NaN max keeps every key
        needed = keys;
        continue;
      }
    }
    if (!have_bound) {
      bound = score_bound();
      have_bound = true;
    }
    const float witness_floor = witness - bound - __builtin_fabsf(witness) * kRounding;  // -inf: no witness
    // Key j is left out where bias_j + bound + 1 + |bias_j| kRounding < floor, which holds where
    // bias_j < excess - |excess| 2 kRounding, excess = floor - bound - 1 (either sign of bias_j and excess).
    const float excess = MaxOf(witness_floor, row_max[r]) + kExpZeroBelow<S> - (bound + 1.0f);
    const Vec limit = S::Set1(excess - __builtin_fabsf(excess) * (2.0f * kRounding));
    const auto dead_lanes = [&](int64_t start, int64_t count) {  // bit l: key start + l left out
      const Vec b = LoadBias<S>(bias + start * bias_key_stride, bias_key_stride, count);
      return S::LaneBits(S::And(S::LanesBelow(count), S::Less(b, limit)));
    };
    constexpr uint32_t kEveryLane = (1u << kLanes) - 1u;
    int64_t live_keys = keys;
    // Four vectors of keys a step while all are left out (a causal mask's keys past the diagonal), then one.
    for (; live_keys - needed >= 4 * kLanes; live_keys -= 4 * kLanes) {
      const int64_t start = live_keys - 4 * kLanes;
      if ((dead_lanes(start, kLanes) & dead_lanes(start + kLanes, kLanes) & dead_lanes(start + 2 * kLanes, kLanes) &
           dead_lanes(start + 3 * kLanes, kLanes)) != kEveryLane) {
        break;
      }
    }
    while (live_keys > needed) {
      const int64_t count = MinOf(kLanes, live_keys - needed);
      const int64_t start = live_keys - count;
      const uint32_t live = S::LaneBits(S::LanesBelow(count)) & ~dead_lanes(start, count);
      if (live != 0) {
        live_keys = start + 32 - __builtin_clz(live);  // past the last live lane
        break;
      }
      live_keys = start;
    }
    needed = live_keys;  // no fewer than before: the scan stops there
  }
  return needed;
}

// P·V for a strip, its rows across lanes: acc_t[c * kStripRows + lane] for kDims value dims c
// (acc_t and values at the first) becomes acc_t * rescale + the sum over keys j < count of
// values[j][c] * probs[j * kStripRows + lane].
template <class S, int kDims, int kVectors>
void AccumulateValuesStrip(const float* probs, const typename S::Vec* rescale, const float* values,
                           int64_t value_stride, int64_t count, float* acc_t, PrefetchSlice prefetch) {
  using Vec = typename S::Vec;
  constexpr int kLanes = S::kLanes;
  constexpr int kStripRows = kVectors * kLanes;
  Vec sum[kDims][kVectors];
  for (int c = 0; c < kDims; ++c) {
    for (int v = 0; v < kVectors; ++v) sum[c][v] = S::Mul(S::Load(acc_t + c * kStripRows + v * kLanes), rescale[v]);
  }
  const auto accumulate = [&](int64_t key) {
    Vec prob[kVectors];
    for (int v = 0; v < kVectors; ++v) prob[v] = S::Load(probs + key * kStripRows + v * kLanes);
    for (int c = 0; c < kDims; ++c) {
      const Vec value = S::Set1(values[key * value_stride + c]);
      for (int v = 0; v < kVectors; ++v) sum[c][v] = S::MulAdd(value, prob[v], sum[c][v]);
    }
  };
  int64_t key = 0;
  for (const int64_t fetching = MinOf(prefetch.lines, count); key < fetching; ++key) {
    accumulate(key);
    prefetch.Line(key);
  }
  for (; key < count; ++key) accumulate(key);
  for (int c = 0; c < kDims; ++c) {
    for (int v = 0; v < kVectors; ++v) S::Store(acc_t + c * kStripRows + v * kLanes, sum[c][v]);
  }
}

// A strip's outputs from its transposed accumulators (value_dim x kStripRows): each row divided by
// its sum, or filled as masked_rows says where the sum is 0 (as StoreOutputRow). `row_sum` and
// `out_row(r)` are indexed by the strip's rows, of which the first `rows` are real.
template <class S, class T, int kVectors, class OutRow>
void StoreStripOutputs(float* acc_t, const float* row_sum, int64_t rows, int64_t value_dim, MaskedRows policy,
                       const OutRow& out_row) {
  using Vec = typename S::Vec;
  constexpr int kLanes = S::kLanes;
  constexpr int kStripRows = kVectors * kLanes;
  for (int v = 0; v < kVectors; ++v) {
    const Vec sum = S::Load(row_sum + v * kLanes);
    // 1 / sum where the sum is not 0; masked rows are overwritten below.
    const Vec inverse = S::Select(S::Less(S::Zero(), sum), S::Div(S::Set1(1.0f), sum), S::Zero());
    for (int64_t c = 0; c < value_dim; ++c) {
      float* lanes = acc_t + c * kStripRows + v * kLanes;
      S::Store(lanes, S::Mul(S::Load(lanes), inverse));
    }
  }
  for (int64_t first = 0; first < rows; first += kLanes) {
    // A vector of rows, the last maybe only in part (its padding rows transposed too, not stored).
    const int lanes = static_cast<int>(MinOf(kLanes, rows - first));
    T* out[kLanes];
    for (int l = 0; l < lanes; ++l) out[l] = out_row(first + l);
    int64_t c = 0;
    for (; c < WholeVectors<S>(value_dim); c += kLanes) {
      Vec block[kLanes];
      for (int i = 0; i < kLanes; ++i) block[i] = S::Load(acc_t + (c + i) * kStripRows + first);
      S::TransposeSquare(block);
      for (int l = 0; l < lanes; ++l) S::StoreLanes(out[l] + c, block[l]);
    }
    for (; c < value_dim; ++c) {
      for (int l = 0; l < lanes; ++l) StoreFloat(acc_t[c * kStripRows + first + l], out[l] + c);
    }
  }
  for (int64_t row = 0; row < rows; ++row) {
    if (row_sum[row] == 0.0f) StoreMaskedRow(policy, value_dim, out_row(row));
  }
}

template <class S, class T, int kHeadDim>
void RunQueryTile(const AttentionParams& params, const WorkItem& item, float* scratch);

// One work item on the key-major path (KeyMajorScores).
template <class S, class T, int kHeadDim>
void RunQueryTileKeyMajor(const AttentionParams& p, const WorkItem& whole_item, float* scratch_base) {
  using Traits = TileTraits<S, kHeadDim>;
  using Vec = typename S::Vec;
  constexpr int64_t kKeyTile = Traits::kKeyMajorKeyTile;
  constexpr int kLanes = S::kLanes;
  constexpr int kStripVectors = Traits::kStripVectors;
  constexpr int kStripRows = Traits::kStripRows;
  // The last strip would be mostly padding (S = 33: half the strip work for one row): its few rows go first, as a
  // row-major item of their own with K and V read in place (RunQueryTileRows; one pass over K and V for all of
  // them: a row at a time took 1.1x the time at S = 36 and 1.16x at S = 40), before the whole strips use the
  // scratch. Only without packed heads, where an item's rows are one head's queries in order.
  WorkItem item = whole_item;
  const int64_t lone_rows = item.rows % kStripRows;
  if (item.heads == 1 && lone_rows > 0 && lone_rows <= kStripRows / 4 && RowsInPlaceFit<S>(p)) {
    WorkItem lone = item;
    lone.first_row = item.first_row + item.rows - lone_rows;
    lone.rows = lone_rows;
    lone.next = {};
    lone.keys_in_place = true;
    RunQueryTile<S, T, kHeadDim>(p, lone, scratch_base);
    item.rows -= lone_rows;
    if (item.rows == 0) return;
  }
  const int64_t head_dim = kHeadDim > 0 ? kHeadDim : p.head_dim;
  const int64_t value_dim = kHeadDim > 0 ? kHeadDim : p.v_head_dim;
  const TileScratch scratch =
      CarveScratch(scratch_base, ScratchSizesFor<Traits>(head_dim, RoundUp(value_dim, kLanes)));

  const PackedRows packing{item.first_row, item.rows};
  const int64_t rows = item.heads * item.rows;
  // Whole strips, then rows past them in one vector where they fit (S = 16 on AVX-512: one vector, not a strip of
  // two that is half padding); each lane's arithmetic is the same in either.
  const int64_t tail_rows = rows % kStripRows;
  const bool narrow_tail = kStripVectors > 1 && tail_rows > 0 && tail_rows <= kLanes;
  const int64_t padded_rows = narrow_tail ? rows - tail_rows + kLanes : RoundUp(rows, kStripRows);
  const int64_t wide_rows = narrow_tail ? padded_rows - kLanes : padded_rows;  // rows of the whole strips
  const ItemOutput<T> output = ItemOutputOf<T>(p, item);
  const auto out_row = [&](int64_t row) { return output.Row(row); };

  const CausalWindow window{p.causal, p.q_len, p.kv_len};
  const int64_t tile_keys = ItemKeysOrMaskedRows(p, item, output, rows, value_dim);
  if (tile_keys == 0) return;

  // bias and keep are the same for every row of the item, unless lane_bias or lane_keep (strip by strip).
  const auto [query, key, value, bias, keep] = ItemInputsOf<T>(p, item);
  const bool lane_bias = VariesByRow(p, p.bias, p.bias_stride);
  const bool lane_keep = VariesByRow(p, p.keep, p.keep_stride);

  LoadQueriesTransposed<S>(query, p.q_stride[1], p.q_stride[2], packing, rows, padded_rows, head_dim, scratch.queries);
  const float query_norm =
      bias != nullptr ? LargestColumnNorm<S>(scratch.queries, padded_rows, padded_rows, head_dim) : 0.0f;
  // Keys each row sees (from key 0); padding rows see them all (their scores are never used).
  int64_t row_visible[Traits::kQueryTile] = {};
  for (int64_t row = 0; row < padded_rows; ++row) {
    row_visible[row] = row < rows ? window.VisibleKeys(packing.Query(row)) : p.kv_len;
  }
  // Accumulators strip by strip, each value_dim x kStripRows (transposed).
  for (int64_t i = 0; i < padded_rows * value_dim; ++i) scratch.acc[i] = 0.0f;
  for (int64_t row = 0; row < padded_rows; ++row) {
    scratch.row_max[row] = -kInfinity;
    scratch.row_sum[row] = 0.0f;
  }

  // Leading keys that weigh 0 for every row: one witness for all rows where the masks are the same for each. Where they
  // differ, a witness per row, and a count per strip (a strip of the padding's rows must see every key; the strips
  // past it start later); the key loop starts at the least, each strip at its own (strip_lead, by strip / kStripRows).
  int64_t strip_lead[Traits::kQueryTile / kStripRows + 1] = {};
  int64_t first_key = 0;
  if (lane_bias || lane_keep) {
    first_key = tile_keys;
    for (int64_t strip = 0; strip < padded_rows; strip += kStripRows) {
      const int64_t lead = LeadingDeadKeysByRow<S>(p, bias, keep, packing, key, value, tile_keys, head_dim, value_dim,
                                                   query_norm, row_visible, strip, MinOf(kStripRows, rows - strip),
                                                   scratch.keys_t, scratch.values, kKeyTile);
      strip_lead[strip / kStripRows] = lead;
      first_key = MinOf(first_key, lead);
    }
  } else {
    first_key = LeadingDeadKeys<S>(p, bias, keep, key, value, tile_keys, head_dim, value_dim, query_norm, row_visible,
                                   rows, scratch.keys_t, scratch.values, kKeyTile);
  }
  LinePrefetcher prefetch(item.next);  // a line per head dim of each Q·Kᵀ block and per key of each P·V block
  for (int64_t key_start = first_key; key_start < tile_keys; key_start += kKeyTile) {
    const int64_t keys = MinOf(kKeyTile, tile_keys - key_start);
    const T* key_tile = key + key_start * p.k_stride[2];
    const float* key_rows = RowsInPlace(key_tile);
    int64_t key_stride = p.k_stride[2];
    if (key_rows == nullptr) {
      LoadRowsAsFloat<S>(key_tile, p.k_stride[2], keys, head_dim, head_dim, scratch.keys_t);
      key_rows = scratch.keys_t;
      key_stride = head_dim;
    }
    const T* value_tile = value + key_start * p.v_stride[2];
    const float* values = RowsInPlace(value_tile);
    int64_t value_stride = p.v_stride[2];
    if (values == nullptr) {
      LoadRowsAsFloat<S>(value_tile, p.v_stride[2], keys, value_dim, value_dim, scratch.values);
      values = scratch.values;
      value_stride = value_dim;
    }
    KeyScoreRule<T> rule{
        {p.scale, p.softcap, nullptr, p.bias_stride[3], nullptr, p.keep_stride[3]}, lane_bias, nullptr};
    if (bias != nullptr && !lane_bias) rule.bias = bias + key_start * p.bias_stride[3];
    if (keep != nullptr && !lane_keep) rule.keep = keep + key_start * p.keep_stride[3];
    const int64_t computed_keys = KeysToCompute<S>(keys, rule, key_rows, key_stride, head_dim, values, value_stride,
                                                   value_dim, query_norm, scratch.row_max, rows);
    // Lane biases: a bound on |score - bias| over this tile's keys for StripBiasedKeys, once a strip asks for it.
    float tile_score_bound = -1.0f;  // not yet known
    const auto score_bound = [&] {
      if (tile_score_bound < 0.0f) {
        const float key_norm = LargestRowNorm<S>(key_rows, key_stride, keys, head_dim);
        const bool finite = query_norm < kInfinity && key_norm < kInfinity &&
                            RowsAreFinite<S>(values, value_stride, keys, value_dim);
        const float margin = 1.01f + static_cast<float>(head_dim) * 0x1p-21f;
        tile_score_bound = finite ? margin * __builtin_fabsf(p.scale) * query_norm * key_norm : kInfinity;
      }
      return tile_score_bound;
    };

    // One strip of kVectors vectors of rows, from row `strip`, through this tile: scores, softmax, P·V.
    const auto run_strip = [&](auto vectors, int64_t strip) {
      constexpr int kVectors = decltype(vectors)::value;
      constexpr int kRows = kVectors * kLanes;
      // A narrow strip keeps the key block (16 keys of one vector each spilled their key offsets) and doubles the
      // value block (the accumulators of a whole strip).
      constexpr int kKeyBlock = Traits::kKeyBlock;
      constexpr int kValueBlock = Traits::kValueBlock * kStripVectors / kVectors;
      // The strip runs on the tile's keys from its own first (strip_lead): key `strip_first` on, `own_keys` of them.
      const int64_t lead = Clamp(strip_lead[strip / kStripRows] - key_start, 0, keys);
      const int64_t strip_first = key_start + lead;
      const int64_t own_keys = keys - lead;
      const float* strip_key_rows = key_rows + lead * key_stride;
      const float* strip_values = values + lead * value_stride;
      // Keys of these each lane sees.
      float visible_lanes[kRows];
      int64_t strip_keys = 0;
      bool every_key_visible = true;
      for (int r = 0; r < kRows; ++r) {
        const int64_t visible = Clamp(row_visible[strip + r] - strip_first, 0, own_keys);
        if (strip + r < rows) strip_keys = visible > strip_keys ? visible : strip_keys;
        every_key_visible = every_key_visible && visible == own_keys;
        visible_lanes[r] = static_cast<float>(visible);
      }
      strip_keys = MinOf(strip_keys, computed_keys - lead);
      if (strip_keys <= 0) return;
      const int64_t real_rows = MinOf(kRows, rows - strip);
      KeyScoreRule<T> strip_rule = rule;
      if (rule.bias != nullptr) strip_rule.bias += lead * rule.bias_key_stride;
      if (rule.keep != nullptr) strip_rule.keep += lead * rule.keep_key_stride;
      uint32_t keep_bits[kKeyTile];
      if (lane_keep) {
        const bool* keep_rows[kRows];
        for (int r = 0; r < kRows; ++r) {
          keep_rows[r] = r < real_rows ? keep + packing.Offset(strip + r, p.keep_stride[1], p.keep_stride[2]) +
                                             strip_first * p.keep_stride[3]
                                       : nullptr;
        }
        LoadStripKeepBits<kRows>(keep_rows, p.keep_stride[3], strip_keys, keep_bits);
        while (strip_keys > 0 && keep_bits[strip_keys - 1] == 0) --strip_keys;  // hidden from every row
        strip_rule.keep_bits = keep_bits;
      }
      if (lane_bias && strip_keys > 0) {
        const T* bias_rows[kRows];
        int64_t row_keys[kRows];
        for (int r = 0; r < kRows; ++r) {
          bias_rows[r] = r < real_rows ? bias + packing.Offset(strip + r, p.bias_stride[1], p.bias_stride[2]) +
                                             strip_first * p.bias_stride[3]
                                       : nullptr;
          row_keys[r] = MinOf(static_cast<int64_t>(visible_lanes[r]), strip_keys);
        }
        strip_keys = StripBiasedKeys<S>(bias_rows, p.bias_stride[3], strip_rule, row_keys, scratch.row_max + strip,
                                        real_rows, score_bound);
        if (strip_keys > 0) {
          LoadStripBiasTransposed<S, T, kVectors>(bias_rows, p.bias_stride[3], strip_keys, scratch.scores);
        }
      }
      // No row of the strip sees a key of this tile that counts: its state and accumulators stay as
      // they are.
      if (strip_keys == 0) return;
      Vec visible[kVectors];
      for (int v = 0; v < kVectors; ++v) visible[v] = S::Load(visible_lanes + v * kLanes);
      const Vec* masked = every_key_visible ? nullptr : visible;

      Vec tile_max[kVectors];
      for (int v = 0; v < kVectors; ++v) tile_max[v] = S::Set1(-kInfinity);
      const float* queries_t = scratch.queries + strip;
      // Keys [j, j + kKeys) of the strip (ScoreStripKeysApart for a narrow strip).
      const auto score_keys = [&](auto keys_in_block, int64_t j) {
        constexpr int kKeys = decltype(keys_in_block)::value;
        if constexpr (kVectors == kStripVectors) {
          ScoreStripKeys<S, T, kKeys, kHeadDim, kVectors>(queries_t, padded_rows, strip_key_rows + j * key_stride,
                                                          key_stride, head_dim, strip_rule, j, masked, scratch.scores,
                                                          tile_max, prefetch.Take(head_dim));
        } else {
          ScoreStripKeysApart<S, T, kKeys, kHeadDim, kVectors>(queries_t, padded_rows,
                                                               strip_key_rows + j * key_stride,
                                                               key_stride, head_dim, strip_rule, j, masked,
                                                               scratch.scores,
                                                               tile_max, prefetch.Take(head_dim));
        }
      };
      int64_t j = 0;
      for (; j + kKeyBlock <= strip_keys; j += kKeyBlock) score_keys(std::integral_constant<int, kKeyBlock>{}, j);
      if constexpr (kKeyBlock > 4) {
        for (; j + 4 <= strip_keys; j += 4) score_keys(std::integral_constant<int, 4>{}, j);
      }
      for (; j < strip_keys; ++j) score_keys(std::integral_constant<int, 1>{}, j);

      for (int v = 0; v < kVectors; ++v) {
        const int64_t first = strip + v * kLanes;
        const Vec new_max = S::Max(S::Load(scratch.row_max + first), tile_max[v]);
        const Vec shift = SoftmaxShifts<S>(new_max);
        Vec tile_sum = S::Zero();
        float* probs = scratch.scores + v * kLanes;
        for (int64_t k = 0; k < strip_keys; ++k) {
          const Vec prob = ExpNonPositive<S>(S::Sub(S::Load(probs + k * kRows), shift));
          S::Store(probs + k * kRows, prob);
          tile_sum = S::Add(tile_sum, prob);
        }
        S::Store(scratch.row_new_max + first, new_max);
        S::Store(scratch.row_tile_sum + first, tile_sum);
      }
      RescaleRows<S>(kRows, scratch.row_new_max + strip, scratch.row_tile_sum + strip, scratch.row_max + strip,
                     scratch.row_sum + strip, scratch.row_rescale + strip);

      Vec rescale[kVectors];
      for (int v = 0; v < kVectors; ++v) rescale[v] = S::Load(scratch.row_rescale + strip + v * kLanes);
      float* acc_t = scratch.acc + strip * value_dim;
      const int64_t blocked_dims = value_dim - value_dim % kValueBlock;
      for (int64_t c = 0; c < blocked_dims; c += kValueBlock) {
        AccumulateValuesStrip<S, kValueBlock, kVectors>(scratch.scores, rescale, strip_values + c, value_stride,
                                                        strip_keys, acc_t + c * kRows, prefetch.Take(strip_keys));
      }
      int64_t c = blocked_dims;
      if constexpr (kValueBlock > 4) {
        for (; c + 4 <= value_dim; c += 4) {
          AccumulateValuesStrip<S, 4, kVectors>(scratch.scores, rescale, strip_values + c, value_stride, strip_keys,
                                                acc_t + c * kRows, prefetch.Take(strip_keys));
        }
      }
      for (; c < value_dim; ++c) {
        AccumulateValuesStrip<S, 1, kVectors>(scratch.scores, rescale, strip_values + c, value_stride, strip_keys,
                                              acc_t + c * kRows, prefetch.Take(strip_keys));
      }
    };
    for (int64_t strip = 0; strip < wide_rows; strip += kStripRows) {
      run_strip(std::integral_constant<int, kStripVectors>{}, strip);
    }
    if (narrow_tail) run_strip(std::integral_constant<int, 1>{}, wide_rows);
  }

  for (int64_t strip = 0; strip < wide_rows && strip < rows; strip += kStripRows) {
    StoreStripOutputs<S, T, kStripVectors>(scratch.acc + strip * value_dim, scratch.row_sum + strip,
                                           MinOf(kStripRows, rows - strip), value_dim, p.masked_rows,
                                           [&](int64_t row) { return out_row(strip + row); });
  }
  if (narrow_tail) {
    StoreStripOutputs<S, T, 1>(scratch.acc + wide_rows * value_dim, scratch.row_sum + wide_rows, rows - wide_rows,
                               value_dim, p.masked_rows, [&](int64_t row) { return out_row(wide_rows + row); });
  }
  prefetch.Rest();
}

template <class S, class T, int kHeadDim>
void RunQueryTile(const AttentionParams& params, const WorkItem& item, float* scratch) {
  constexpr int kRowBlock = TileTraits<S, kHeadDim>::kRowBlock;
  const int64_t rows = item.heads * item.rows;
  if (rows == 1) {
    RunQueryTileRows<S, T, kHeadDim, 1>(params, item, scratch);
    return;
  }
  // A group of 4 packed decode rows in one block of 4, not in half of an 8-row block (AVX-512):
  // 8-10% faster on the GqaDecode benchmark (G = 4, D = 128, T = 512 and 2048).
  if constexpr (kRowBlock >= 8) {
    if (rows <= kRowBlock / 2) {
      RunQueryTileRows<S, T, kHeadDim, kRowBlock / 2>(params, item, scratch);
      return;
    }
  }
  RunQueryTileRows<S, T, kHeadDim, kRowBlock>(params, item, scratch);
}

// ---- Run-time -> compile-time dispatch (dtype x head dim), in one place --------------------------

template <class S, class T, int kHeadDim>
QueryTileKernel MakeQueryTileKernel(const AttentionParams& params) {
  using Traits = TileTraits<S, kHeadDim>;
  const int64_t head_dim = kHeadDim > 0 ? kHeadDim : params.head_dim;
  const int64_t value_dim = kHeadDim > 0 ? kHeadDim : params.v_head_dim;
  QueryTileKernel kernel;
  kernel.run = KeyMajorScores<S>(params) ? &RunQueryTileKeyMajor<S, T, kHeadDim> : &RunQueryTile<S, T, kHeadDim>;
  kernel.query_tile_rows = Traits::kQueryTile;
  kernel.scratch_floats = ScratchSizesFor<Traits>(head_dim, RoundUp(value_dim, S::kLanes)).Total();
  return kernel;
}

template <class S, class T>
QueryTileKernel SelectForHeadDim(const AttentionParams& params) {
  if (params.head_dim == params.v_head_dim) {
    switch (params.head_dim) {
      case 32:
        return MakeQueryTileKernel<S, T, 32>(params);
      case 64:
        return MakeQueryTileKernel<S, T, 64>(params);
      case 80:
        return MakeQueryTileKernel<S, T, 80>(params);
      case 96:
        return MakeQueryTileKernel<S, T, 96>(params);
      case 128:
        return MakeQueryTileKernel<S, T, 128>(params);
      case 256:
        return MakeQueryTileKernel<S, T, 256>(params);
      default:
        break;
    }
  }
  return MakeQueryTileKernel<S, T, 0>(params);
}

template <class S>
QueryTileKernel SelectForDtype(const AttentionParams& params) {
  switch (params.dtype) {
    case DType::kFloat32:
      return SelectForHeadDim<S, float>(params);
    case DType::kFloat16:
      return SelectForHeadDim<S, Float16>(params);
    case DType::kBFloat16:
      return SelectForHeadDim<S, BFloat16>(params);
  }
  return {};
}

}  // namespace ortflash::cpu::ORTFLASH_CPU_ISA

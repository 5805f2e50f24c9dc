// OrtFlash CUDA — which keys a key-padding mask leaves live, so that the forward kernels skip the key
// tiles outside them (the padding of a right- or left-padded batch) instead of computing weights of 0.
//
// For a bias and/or keep mask that is the same for every query row of a (batch, query head) — the
// (B, 1, 1, Skv) padding mask exporters build from BERT's attention_mask — one block per (batch, query
// head) finds two key ranges, outside which every key is dead:
//  - keep: the keys the mask hides. The contract excludes them from every row.
//  - bias: also the kept keys whose bias lies so far below the best bias that their weight
//    e^(score - row max) is 0 in fp32 whatever Q and K hold. With |scale·q·k| <= |scale|·|q|·|k| (|q| the
//    largest query norm of the head), a row that sees the witness w (the first kept key whose bias is near
//    the best) has a max of at least bias_w - |scale|·|q|·|k_w|, and key j's score is at most
//    bias_j + |scale|·|q|·|k_j|. When the second lies kDeadGap below the first, with margins for the
//    kernels' rounding, e^(...) is below half the smallest subnormal. Such keys also need finite K and V rows
//    (0 · inf is NaN in the unfused graph), and their bias is taken no lower than the kernels' clamps
//    (kMaxStart · scale, FLT_MAX in log2 units).
// Exact: a dead key adds exactly 0 to every sum it would have entered. The bias range holds for the rows
// that see the witness; under causality the slices of kLiveRows query rows whose first row does not see it get
// the keep range. Only the ends are cut, never holes: the kernels skip whole tiles before and after.
// The norms are read only where the mask leaves candidates: an unpadded batch costs two passes over its
// mask row; a padded one also reads its queries once and the K and V rows of the padding. By default short calls
// run no pass, nor do 16-bit calls with a bias (live_keys_min_keys in flash_attention_cuda.cu): there it cost more
// than it saved.
#pragma once

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>

#include "block_reduce.cuh"
#include "fwd_params.cuh"
#include "mma_primitives.cuh"
#include "softmax.cuh"

namespace ortflash::cuda {

// Many threads per block: the pass is bound by the latency of its loads, and the grid has one block per (batch,
// query head), few for a long prompt.
constexpr int kLiveKeysThreads = 1024;

// Natural-log units below a row's max past which a weight is 0 in fp32: e^-128 = 2.6e-56, far below
// half the smallest subnormal (7e-46), so exp, exp2 and their flush-to-zero forms all give 0.
constexpr double kDeadGap = 128.0;

// A float as an int whose order is the float's (for block_max over floats; NaN excluded by the callers).
__device__ __forceinline__ int ordered_bits(float x) {
  const int bits = __float_as_int(x);
  return bits >= 0 ? bits : bits ^ 0x7fffffff;
}
__device__ __forceinline__ float from_ordered_bits(int bits) { return __int_as_float(bits >= 0 ? bits : bits ^ 0x7fffffff); }

// The numbers of the bound, shared with the per-row pass (live_rows.cuh).
struct DeadKeyBound {
  double lowest_used;    // no kernel uses a bias below this (the accumulator start's clamp, FLT_MAX in log2 units)
  double softcap_bound;  // |score_j - score_w| <= this with softcap (2 · softcap, and 1%); inf without

  __device__ __forceinline__ explicit DeadKeyBound(const FwdParams& p)
      : lowest_used(fmax(-double(kMaxStart) * fabs(double(p.scale)), -double(FLT_MAX) / 1.4426950408889634)),
        softcap_bound(p.softcap > 0.0f ? 2.02 * double(p.softcap) : INFINITY) {}

  __device__ __forceinline__ double used_bias(float bias) const { return fmax(double(bias), lowest_used); }
  // The gap below a reference bias `top` a key needs before its score terms count: kDeadGap and the rounding of both
  // biases (relative 2^-20 covers bias / scale, the log2(e) multiply and the FFMA against the row max).
  static __device__ __forceinline__ double gap_needed(double bias, double top) {
    return kDeadGap + (fabs(bias) + fabs(top)) * 0x1p-20;
  }
  // |scale|·|q|, with 1% and the dot products' fp32 rounding (head_dim · 2^-21): times |k_j| + |k_w| it bounds how
  // far key j's score can lie above its bias, plus how far the witness's can lie below its own.
  static __device__ __forceinline__ double score_factor(const FwdParams& p, float q_squared) {
    return fabs(double(p.scale)) * sqrt(double(q_squared)) * (1.01 + p.head_dim * 0x1p-21);
  }
};

// One block per (batch, query head), blockIdx.x = batch * q_heads + head; writes the head's `slices` ranges (the
// layout of FwdParams::live_ranges). Launched only for masks that broadcast over query rows (bias_stride[2] ==
// keep_stride[2] == 0). The pass is bound by latency, not bandwidth: four dependent steps (two scans of the mask
// row, one read of every row the bound needs, one more scan), each ending in one block-wide exchange of all its
// values (the first version took a reduction per value and a pass per kind of row).
template <class T>
__global__ void __launch_bounds__(kLiveKeysThreads) live_keys_kernel(const FwdParams p, int slices, KeyRange* out) {
  constexpr int kThreads = kLiveKeysThreads;
  constexpr int kWarps = kThreads / 32;
  __shared__ int scratch[4 * kWarps];
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % 32;
  const int warp = tid / 32;
  const int batch = static_cast<int>(blockIdx.x) / p.q_heads;
  const int head = static_cast<int>(blockIdx.x) % p.q_heads;
  const T* const bias = p.bias == nullptr ? nullptr
                                          : static_cast<const T*>(p.bias) + batch * p.bias_stride[0] + head * p.bias_stride[1];
  const uint8_t* const keep = p.keep == nullptr ? nullptr : p.keep + batch * p.keep_stride[0] + head * p.keep_stride[1];
  const auto kept = [&](int j) { return keep == nullptr || keep[j * p.keep_stride[3]] != 0; };
  const auto bias_at = [&](int j) { return to_float(bias[j * p.bias_stride[3]]); };

  // ---- the keys keep leaves, and the best bias among them ----
  int first_kept = INT_MAX, last_kept = -1, nan_bias = 0;
  float best = -INFINITY;
  // Branch-free bodies, unrolled: several loads in flight per thread (a scan is bound by their latency).
#pragma unroll 4
  for (int j = tid; j < p.kv_len; j += kThreads) {
    const bool visible = kept(j);
    const float b = bias != nullptr ? bias_at(j) : 0.0f;
    first_kept = visible ? min(first_kept, j) : first_kept;
    last_kept = visible ? j : last_kept;
    nan_bias |= visible && b != b;
    best = visible ? fmaxf(best, b) : best;  // fmaxf passes over a NaN
  }
  int scan[4] = {-first_kept, last_kept, nan_bias, ordered_bits(best)};
  block_max<kThreads>(scan, scratch);
  first_kept = -scan[0], last_kept = scan[1], nan_bias = scan[2], best = from_ordered_bits(scan[3]);

  // Keys outside [begin, end) are dead to the rows that see the witness; outside the keep range, to every row.
  const KeyRange keep_range{last_kept < 0 ? 0 : first_kept, last_kept + 1};
  KeyRange bias_range = keep_range;
  int witness = 0;
  const auto finish = [&] {
    for (int s = tid; s < slices; s += kThreads) {
      const bool sees_witness = !p.causal || witness <= s * kLiveRows + p.causal_offset;
      out[int64_t(blockIdx.x) * slices + s] = sees_witness ? bias_range : keep_range;
    }
  };
  // No bias bound without a finite best bias (a NaN anywhere makes every row NaN: nothing is cut).
  if (bias == nullptr || last_kept < 0 || nan_bias != 0 || !(fabsf(best) < INFINITY)) return finish();

  const DeadKeyBound bound(p);
  const auto used_bias = [&](int j) { return bound.used_bias(bias_at(j)); };

  // ---- kept keys near the best bias: live whatever their norms ----
  const double best_d = best;
  int first_near = INT_MAX, last_near = -1;
#pragma unroll 4
  for (int j = tid; j < p.kv_len; j += kThreads) {
    const double b = used_bias(j);
    const bool near = kept(j) && !(b + DeadKeyBound::gap_needed(b, best_d) < best_d);
    first_near = near ? min(first_near, j) : first_near;
    last_near = near ? j : last_near;
  }
  int near_scan[2] = {-first_near, last_near};
  block_max<kThreads>(near_scan, scratch);
  first_near = -near_scan[0], last_near = near_scan[1];  // the best key is one of them
  // Nothing to prove dead (an unpadded batch): the queries are not read.
  if (first_near == keep_range.begin && last_near == keep_range.end - 1) return finish();
  // The witness: the first of them, so that under causality as many query rows as possible see it.
  witness = first_near;
  const double witness_bias = bias_at(witness);

  // ---- every row the bound needs, in one pass: the head's queries, the witness's key, and the candidates' K and V
  // rows (the kept keys before the first near key and after the last) ----
  // One bound for all candidates (the largest of their key norms): a padding mask gives its padding one bias, so a
  // bound per key would cut no more, and with one the cut is a scan of the mask. Any row that is not finite (or
  // whose sum of squares overflows): no cut. Each warp takes kRowsInFlight rows at a time, its lanes across their
  // elements (coalesced), all of those rows' loads issued together.
  const T* const q = static_cast<const T*>(p.q) + batch * p.q_stride[0] + head * p.q_stride[1];
  const T* const k = static_cast<const T*>(p.k) + batch * p.k_stride[0] + (head / p.group) * p.k_stride[1];
  const T* const v = static_cast<const T*>(p.v) + batch * p.v_stride[0] + (head / p.group) * p.v_stride[1];
  const int lead = first_near - keep_range.begin, trail = keep_range.end - 1 - last_near;
  const int rows = p.q_len + 1 + 2 * (lead + trail);
  const int width = max(p.head_dim, p.v_head_dim);
  enum RowKind { kQuery, kWitness, kCandidateKey, kCandidateValue };
  // Row r of the pass: its first element, its length, its kind.
  const auto row_of = [&](int r, const T*& row, int& count, int& kind) {
    count = p.head_dim;
    if (r < p.q_len) { row = q + int64_t(r) * p.q_stride[2], kind = kQuery; return; }
    r -= p.q_len;
    if (r == 0) { row = k + int64_t(witness) * p.k_stride[2], kind = kWitness; return; }
    r -= 1;
    const bool value = r >= lead + trail;
    if (value) r -= lead + trail;
    const int key = r < lead ? keep_range.begin + r : last_near + 1 + (r - lead);
    row = value ? v + int64_t(key) * p.v_stride[2] : k + int64_t(key) * p.k_stride[2];
    kind = value ? kCandidateValue : kCandidateKey;
    if (value) count = p.v_head_dim;
  };
  constexpr int kRowsInFlight = 4;
  float q_squared = 0.0f, witness_squared = 0.0f, key_squared = 0.0f;
  int not_finite = 0;
  for (int r0 = warp * kRowsInFlight; r0 < rows; r0 += kWarps * kRowsInFlight) {
    const T* row[kRowsInFlight];
    int count[kRowsInFlight], kind[kRowsInFlight];
    float sum[kRowsInFlight];
#pragma unroll
    for (int r = 0; r < kRowsInFlight; ++r) {
      sum[r] = 0.0f, count[r] = 0, kind[r] = kQuery, row[r] = q;
      if (r0 + r < rows) row_of(r0 + r, row[r], count[r], kind[r]);
    }
    for (int i = lane; i < width; i += 32) {
#pragma unroll
      for (int r = 0; r < kRowsInFlight; ++r) {
        if (i < count[r]) {
          const float x = to_float(row[r][i]);
          sum[r] = fmaf(x, x, sum[r]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kRowsInFlight; ++r) {
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], offset);
      if (!(sum[r] < INFINITY)) not_finite = 1;  // rows past the end sum to 0
      if (kind[r] == kQuery) q_squared = fmaxf(q_squared, sum[r]);
      if (kind[r] == kWitness) witness_squared = fmaxf(witness_squared, sum[r]);
      if (kind[r] == kCandidateKey) key_squared = fmaxf(key_squared, sum[r]);
    }
  }
  // Sums of squares are >= 0 (or NaN, with not_finite set): their bits order as they do.
  int norms[4] = {__float_as_int(q_squared), __float_as_int(witness_squared), __float_as_int(key_squared), not_finite};
  block_max<kThreads>(norms, scratch);
  if (norms[3] != 0) return finish();
  q_squared = __int_as_float(norms[0]), witness_squared = __int_as_float(norms[1]), key_squared = __int_as_float(norms[2]);

  // Every row that sees the witness has a max of at least witness_bias - |scale|·|q|·|k_w|; key j scores at most
  // bias_j + |scale|·|q|·|k_j| <= bias_j + |scale|·|q|·max |k|.
  const double score_factor = DeadKeyBound::score_factor(p, q_squared);
  const double score_bound =
      fmin(score_factor * (sqrt(double(key_squared)) + sqrt(double(witness_squared))), bound.softcap_bound);
  const auto live_candidate = [&](int j) {
    const double b = used_bias(j);
    return kept(j) && !(b + DeadKeyBound::gap_needed(b, witness_bias) + score_bound < witness_bias);
  };

  // ---- the keys before the first near key and after the last: live where the bound fails ----
  int first_live = INT_MAX, last_live = -1;
  for (int j = keep_range.begin + tid; j < first_near; j += kThreads) {
    if (live_candidate(j)) {
      first_live = j;
      break;  // this thread's keys only grow
    }
  }
  for (int j = last_near + 1 + tid; j < keep_range.end; j += kThreads) {
    if (live_candidate(j)) last_live = j;
  }
  int live_scan[2] = {-first_live, last_live};
  block_max<kThreads>(live_scan, scratch);
  bias_range = KeyRange{min(first_near, -live_scan[0]), max(last_near, live_scan[1]) + 1};
  finish();
}

}  // namespace ortflash::cuda

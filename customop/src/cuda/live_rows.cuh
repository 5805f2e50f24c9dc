// OrtFlash CUDA — live key ranges for masks that vary by query row: a decoder export's 4-d causal mask in its bias
// (finfo.min above the diagonal), a padding mask combined with a position bias (T5), any (B, H, Sq, Skv) mask.
// The same exactness argument as live_keys.cuh, row by row, over slices of kLiveRows query rows:
//  - every row: the keys it sees (keep and causality) and, with a bias, its best bias among them and the first
//    visible key near it (the row's witness w_i); keys outside [first, last] visible key are dead to the row;
//  - a key j outside the slice's near keys is dead to row i when bias_ij lies so far below bias_iw_i that
//    bias_ij + |scale|·|q|·|k_j| stays kDeadGap below bias_iw_i - |scale|·|q|·|k_w_i| (|q| the largest query norm
//    of the slice's rows in the head), and K and V rows of j are finite;
//  - the slice's range is the union of its rows' live keys; block_work takes the union over the slices of a block.
// Three passes, on the stream ahead of the forward kernel:
//  1. live_slices_kernel, one block per (mask batch, mask head, slice): each row's visible keys, best bias and
//     witness; the slice's near range; for each key outside it, the largest requirement over the rows,
//     D_j = max_i (used bias_ij + gap - bias_iw_i), which must stay below -|scale|·|q|·(|k_j| + |k_w|);
//  2. live_key_norms_kernel, one block per (batch, kv head): |k_j| (inf where K or V is not finite), only for batch
//     entries whose mask leaves candidates in some slice: unpadded masks read no K or V;
//  3. live_ranges_kernel, one block per (batch, query head, slice): the query norms, the bound, the range.
// The passes are bound by the latency of their loads: the norms are read by warps, lanes across a few rows' elements
// at once (warp_row_sums), and pass 1 loads a key's column for 8 rows before using any of it. (The first form, a
// thread per row and one load after another, cost more than the tiles it skipped on an H200; this one is untimed.)
#pragma once

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>

#include "block_reduce.cuh"
#include "fwd_params.cuh"
#include "live_keys.cuh"

namespace ortflash::cuda {

constexpr int kLiveRowsThreads = 256;

// What pass 1 leaves for a (mask batch, mask head, slice).
struct LiveSlice {
  int lo = 0, hi = -1;                  // keys every range of the slice keeps: near keys, and rows without a bound
  int visible_lo = 0, visible_hi = -1;  // the keys any row of the slice sees
  int candidates = 0;                   // whether keys between visible and near may be dead (pass 3 decides)
};

// The passes' scratch and shape; pointers into one block of scratch (flash_attention_cuda.cu).
struct LiveRowsWork {
  int mask_batches = 1, mask_heads = 1;  // 1 where bias and keep both broadcast over the dim
  int slices = 0;                        // ceil(q_len / kLiveRows)
  LiveSlice* slice = nullptr;            // [mask_batches][mask_heads][slices]
  int* witness = nullptr;                // [..][slices][kLiveRows]: the row's witness key, -1 for no bias bound
  float* requirement = nullptr;          // [..][slices][kv_len]: D_j, for keys between visible and near
  float* key_norm = nullptr;             // [batch][kv_heads][kv_len]
  KeyRange* ranges = nullptr;            // [batch][q_heads][slices] (FwdParams::live_ranges)

  __device__ __forceinline__ int slice_index(int batch, int head, int s) const {
    return ((mask_batches > 1 ? batch : 0) * mask_heads + (mask_heads > 1 ? head : 0)) * slices + s;
  }
};

// Pass 1. blockIdx.x = (mask batch * mask_heads + mask head) * slices + slice.
template <class T>
__global__ void __launch_bounds__(kLiveRowsThreads) live_slices_kernel(const FwdParams p, LiveRowsWork work) {
  constexpr int kWarps = kLiveRowsThreads / 32;
  __shared__ int row_lo[kLiveRows], row_hi[kLiveRows], row_visible_lo[kLiveRows], row_visible_hi[kLiveRows];
  __shared__ int row_witness[kLiveRows];
  __shared__ float row_witness_bias[kLiveRows];
  const int index = static_cast<int>(blockIdx.x);
  const int s = index % work.slices;
  const int head = (index / work.slices) % work.mask_heads;
  const int batch = index / (work.slices * work.mask_heads);
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int r0 = s * kLiveRows;
  const T* const bias = p.bias == nullptr ? nullptr
                                          : static_cast<const T*>(p.bias) + batch * p.bias_stride[0] + head * p.bias_stride[1];
  const uint8_t* const keep = p.keep == nullptr ? nullptr : p.keep + batch * p.keep_stride[0] + head * p.keep_stride[1];
  const auto bias_at = [&](int row, int j) { return to_float(bias[row * p.bias_stride[2] + j * p.bias_stride[3]]); };
  const auto kept = [&](int row, int j) {
    return keep == nullptr || keep[row * p.keep_stride[2] + j * p.keep_stride[3]] != 0;
  };
  // Keys [0, visible_end(row)) pass causality.
  const auto visible_end = [&](int row) { return p.causal ? max(0, min(p.kv_len, row + p.causal_offset + 1)) : p.kv_len; };
  const DeadKeyBound bound(p);

  for (int i = warp; i < kLiveRows; i += kWarps) {
    const int row = r0 + i;
    const int end = row < p.q_len ? visible_end(row) : 0;
    int lo = INT_MAX, hi = -1, nan_bias = 0;
    float best = -INFINITY;
    // Branch-free bodies, unrolled: several loads in flight per thread (a scan is bound by their latency).
#pragma unroll 4
    for (int j = lane; j < end; j += 32) {
      const bool visible = kept(row, j);
      const float b = bias != nullptr ? bias_at(row, j) : 0.0f;
      lo = visible ? min(lo, j) : lo;
      hi = visible ? j : hi;
      nan_bias |= visible && b != b;
      best = visible ? fmaxf(best, b) : best;
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, offset));
      hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, offset));
      nan_bias = max(nan_bias, __shfl_xor_sync(0xffffffffu, nan_bias, offset));
      best = fmaxf(best, __shfl_xor_sync(0xffffffffu, best, offset));
    }
    const bool bounded = bias != nullptr && hi >= 0 && nan_bias == 0 && fabsf(best) < INFINITY;
    int near_lo = lo, near_hi = hi;
    if (bounded) {
      near_lo = INT_MAX, near_hi = -1;
#pragma unroll 4
      for (int j = lane; j < end; j += 32) {
        const bool visible = kept(row, j);
        const double b = bound.used_bias(bias_at(row, j));
        const bool near = visible && !(b + DeadKeyBound::gap_needed(b, best) < double(best));
        near_lo = near ? min(near_lo, j) : near_lo;
        near_hi = near ? j : near_hi;
      }
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) {
        near_lo = min(near_lo, __shfl_xor_sync(0xffffffffu, near_lo, offset));
        near_hi = max(near_hi, __shfl_xor_sync(0xffffffffu, near_hi, offset));
      }
    }
    if (lane == 0) {
      row_visible_lo[i] = lo, row_visible_hi[i] = hi;
      row_lo[i] = near_lo, row_hi[i] = near_hi;  // the best key is near: near_lo <= near_hi
      row_witness[i] = bounded ? near_lo : -1;
      row_witness_bias[i] = bounded ? bias_at(row, near_lo) : 0.0f;
    }
  }
  __syncthreads();

  LiveSlice info;
  info.lo = INT_MAX, info.hi = -1, info.visible_lo = INT_MAX, info.visible_hi = -1;
  for (int i = 0; i < kLiveRows; ++i) {
    info.lo = min(info.lo, row_lo[i]);
    info.hi = max(info.hi, row_hi[i]);
    info.visible_lo = min(info.visible_lo, row_visible_lo[i]);
    info.visible_hi = max(info.visible_hi, row_visible_hi[i]);
  }
  info.candidates = info.hi >= 0 && (info.visible_lo < info.lo || info.visible_hi > info.hi) ? 1 : 0;

  // D_j for the keys between the visible and the near range: -inf where no row sees the key (dead to all), +inf
  // where a row's bias is NaN there.
  if (info.candidates) {
    float* const requirement = work.requirement + int64_t(index) * p.kv_len;
    const auto requirement_of = [&](int j) {
      double largest = -INFINITY;
      // kBatch rows at a time, their bias and keep loads all issued before any is used (a key's column, one load
      // after another, left the pass waiting on each).
      constexpr int kBatch = 8;
      static_assert(kLiveRows % kBatch == 0, "whole batches of rows");
      for (int i0 = 0; i0 < kLiveRows; i0 += kBatch) {
        float row_bias[kBatch];
        bool row_keeps[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const bool in_range = r0 + i0 + u < p.q_len;
          row_bias[u] = in_range && bias != nullptr ? bias_at(r0 + i0 + u, j) : 0.0f;
          row_keeps[u] = in_range && kept(r0 + i0 + u, j);
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int i = i0 + u;
          if (!row_keeps[u] || j >= visible_end(r0 + i)) continue;
          if (row_witness[i] < 0) return INFINITY;  // a row without a bound sees it (not expected outside [lo, hi])
          const double b = bound.used_bias(row_bias[u]);
          const double top = row_witness_bias[i];
          const double needed = b + DeadKeyBound::gap_needed(b, top) - top;
          largest = needed == needed ? fmax(largest, needed) : INFINITY;
        }
      }
      // Kept finite (a sum past -FLT_MAX must not read as "no row sees it"), and +inf stays.
      return largest == -INFINITY ? -INFINITY : static_cast<float>(fmax(largest, -double(FLT_MAX)));
    };
    const int tid = static_cast<int>(threadIdx.x);
    for (int j = info.visible_lo + tid; j < info.lo; j += kLiveRowsThreads) requirement[j] = requirement_of(j);
    for (int j = info.hi + 1 + tid; j <= info.visible_hi; j += kLiveRowsThreads) requirement[j] = requirement_of(j);
  }
  if (threadIdx.x < kLiveRows) work.witness[index * kLiveRows + threadIdx.x] = row_witness[threadIdx.x];
  if (threadIdx.x == 0) work.slice[index] = info;
}

// Rows a warp reads at once in the norm passes, its lanes across their elements (coalesced), all the rows' loads
// issued together: a thread walking a whole row alone waits on one load after another (the passes are bound by the
// latency of their loads), as live_keys_kernel found for its norms.
constexpr int kLiveRowsInFlight = 4;

// Sums of squares of rows `first`..`first` + kLiveRowsInFlight - 1 of a (rows x count) layout `stride` apart (rows
// past `rows` sum to 0), and, where `finite_of` is not null, the sums of x - x of the rows of that second layout
// (0 for a finite row, NaN otherwise), each reduced over the warp: every lane holds every row's sums.
template <class T>
__device__ __forceinline__ void warp_row_sums(const T* squares_of, int64_t squares_stride, int squares_count,
                                              const T* finite_of, int64_t finite_stride, int finite_count, int first,
                                              int rows, int lane, float (&squared)[kLiveRowsInFlight],
                                              float (&zeros)[kLiveRowsInFlight]) {
#pragma unroll
  for (int r = 0; r < kLiveRowsInFlight; ++r) squared[r] = 0.0f, zeros[r] = 0.0f;
  const int width = finite_of != nullptr ? max(squares_count, finite_count) : squares_count;
  for (int i = lane; i < width; i += 32) {
#pragma unroll
    for (int r = 0; r < kLiveRowsInFlight; ++r) {
      if (first + r >= rows) continue;
      if (i < squares_count) {
        const float x = to_float(squares_of[(first + r) * squares_stride + i]);
        squared[r] = fmaf(x, x, squared[r]);
      }
      if (finite_of != nullptr && i < finite_count) {
        const float y = to_float(finite_of[(first + r) * finite_stride + i]);
        zeros[r] += y - y;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kLiveRowsInFlight; ++r) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      squared[r] += __shfl_xor_sync(0xffffffffu, squared[r], offset);
      zeros[r] += __shfl_xor_sync(0xffffffffu, zeros[r], offset);
    }
  }
}

// Pass 2. blockIdx.x = batch * kv_heads + kv head.
template <class T>
__global__ void __launch_bounds__(kLiveRowsThreads) live_key_norms_kernel(const FwdParams p, LiveRowsWork work) {
  constexpr int kWarps = kLiveRowsThreads / 32;
  __shared__ int scratch[kWarps];
  const int batch = static_cast<int>(blockIdx.x) / p.kv_heads;
  const int kv_head = static_cast<int>(blockIdx.x) % p.kv_heads;
  const int tid = static_cast<int>(threadIdx.x);
  // Needed where some slice of this batch entry's mask has candidates (any mask head: the group's among them).
  const int mask_batch = work.mask_batches > 1 ? batch : 0;
  int needed = 0;
  for (int i = tid; i < work.mask_heads * work.slices; i += kLiveRowsThreads) {
    needed |= work.slice[mask_batch * work.mask_heads * work.slices + i].candidates;
  }
  needed = block_reduce<kLiveRowsThreads>(needed, scratch, [](int a, int b) { return a | b; });
  if (!needed) return;
  const T* const k = static_cast<const T*>(p.k) + batch * p.k_stride[0] + kv_head * p.k_stride[1];
  const T* const v = static_cast<const T*>(p.v) + batch * p.v_stride[0] + kv_head * p.v_stride[1];
  float* const norms = work.key_norm + int64_t(blockIdx.x) * p.kv_len;
  const int lane = tid % 32, warp = tid / 32;
  // |k_j|, inf where K's row (or its sum of squares) or V's row is not finite.
  for (int j0 = warp * kLiveRowsInFlight; j0 < p.kv_len; j0 += kWarps * kLiveRowsInFlight) {
    float squared[kLiveRowsInFlight], zeros[kLiveRowsInFlight];
    warp_row_sums(k, p.k_stride[2], p.head_dim, v, p.v_stride[2], p.v_head_dim, j0, p.kv_len, lane, squared, zeros);
#pragma unroll
    for (int r = 0; r < kLiveRowsInFlight; ++r) {
      if (lane == r && j0 + r < p.kv_len) {
        norms[j0 + r] = squared[r] < INFINITY && zeros[r] == 0.0f ? sqrtf(squared[r]) : INFINITY;
      }
    }
  }
}

// Pass 3. blockIdx.x = (batch * q_heads + head) * slices + slice.
template <class T>
__global__ void __launch_bounds__(kLiveRowsThreads) live_ranges_kernel(const FwdParams p, LiveRowsWork work) {
  __shared__ int int_scratch[kLiveRowsThreads / 32];
  __shared__ float float_scratch[kLiveRowsThreads / 32];
  const int index = static_cast<int>(blockIdx.x);
  const int s = index % work.slices;
  const int head = (index / work.slices) % p.q_heads;
  const int batch = index / (work.slices * p.q_heads);
  const int tid = static_cast<int>(threadIdx.x);
  const int slice_index = work.slice_index(batch, head, s);
  const LiveSlice info = work.slice[slice_index];
  KeyRange range{info.lo, info.hi + 1};
  if (info.hi < 0) range = KeyRange{0, 0};  // no row of the slice sees a key
  if (!info.candidates) {
    if (tid == 0) work.ranges[index] = range;
    return;
  }

  // The largest query norm of the slice's rows in this head (warps across the rows, as pass 2), and the largest
  // witness key norm.
  constexpr int kWarps = kLiveRowsThreads / 32;
  const int r0 = s * kLiveRows;
  const int kv_head = head / p.group;
  const float* const norms = work.key_norm + (int64_t(batch) * p.kv_heads + kv_head) * p.kv_len;
  float q_squared = 0.0f, witness_norm = 0.0f;
  const T* const q = static_cast<const T*>(p.q) + batch * p.q_stride[0] + head * p.q_stride[1] + r0 * p.q_stride[2];
  const int slice_rows = min(kLiveRows, p.q_len - r0);
  for (int i0 = (tid / 32) * kLiveRowsInFlight; i0 < slice_rows; i0 += kWarps * kLiveRowsInFlight) {
    float squared[kLiveRowsInFlight], unused[kLiveRowsInFlight];
    warp_row_sums<T>(q, p.q_stride[2], p.head_dim, nullptr, 0, 0, i0, slice_rows, tid % 32, squared, unused);
#pragma unroll
    for (int r = 0; r < kLiveRowsInFlight; ++r) q_squared = fmaxf(q_squared, squared[r] < INFINITY ? squared[r] : INFINITY);
  }
  if (tid < kLiveRows && r0 + tid < p.q_len) {
    const int witness = work.witness[slice_index * kLiveRows + tid];
    if (witness >= 0) witness_norm = norms[witness];
  }
  const auto larger = [](float a, float b) { return fmaxf(a, b); };
  q_squared = block_reduce<kLiveRowsThreads>(q_squared, float_scratch, larger);
  witness_norm = block_reduce<kLiveRowsThreads>(witness_norm, float_scratch, larger);
  const DeadKeyBound bound(p);
  const double score_factor = DeadKeyBound::score_factor(p, q_squared);
  const float* const requirement = work.requirement + int64_t(slice_index) * p.kv_len;
  const auto live = [&](int j) {
    const double needed = requirement[j];
    if (needed == -INFINITY) return false;  // no row sees it
    const double score_bound = fmin(score_factor * (double(norms[j]) + witness_norm), bound.softcap_bound);
    return !(needed + score_bound < 0.0);
  };
  int lead = INT_MAX, trail = -1;
  for (int j = info.visible_lo + tid; j < info.lo; j += kLiveRowsThreads) {
    if (live(j)) {
      lead = j;
      break;  // this thread's keys only grow
    }
  }
  for (int j = info.hi + 1 + tid; j <= info.visible_hi; j += kLiveRowsThreads) {
    if (live(j)) trail = j;
  }
  lead = block_reduce<kLiveRowsThreads>(lead, int_scratch, [](int a, int b) { return min(a, b); });
  trail = block_reduce<kLiveRowsThreads>(trail, int_scratch, [](int a, int b) { return max(a, b); });
  if (tid == 0) work.ranges[index] = KeyRange{min(info.lo, lead), max(info.hi, trail) + 1};
}

}  // namespace ortflash::cuda

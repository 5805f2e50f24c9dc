// OrtFlash CUDA — the generic forward kernel: any head dims (including D != Dv and D = 0), any
// element type (float32 included), any strides and alignments. No tensor cores: one warp per query
// row, the same online softmax in fp32 as the tensor-core kernel, in tiles of 32 keys (one per
// lane). Correct first; it carries what neither the tensor-core nor the tiled SIMT kernel takes: head
// dims above 128 that the tensor cores do not take (float32 above all, D > 256, odd D).
#pragma once

#include <cmath>
#include <cstdint>

#include "fwd_params.cuh"
#include "mma_primitives.cuh"
#include "softmax.cuh"

namespace ortflash::cuda {

// Dynamic shared memory: per warp, the query row (head_dim floats) and the output accumulator
// (v_head_dim floats).
inline size_t generic_smem_bytes(const FwdParams& p) {
  return size_t(kGenericWarps) * size_t(p.head_dim + p.v_head_dim) * sizeof(float);
}

template <class T>
__global__ void __launch_bounds__(kGenericWarps * 32) generic_fwd_kernel(const FwdParams p) {
  ORTFLASH_DYNAMIC_SMEM(float, generic_smem);
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int64_t rows_total = int64_t(p.batch) * p.q_heads * p.q_len;
  const int64_t row_index = int64_t(blockIdx.x) * kGenericWarps + warp;
  if (row_index >= rows_total) return;  // whole warps only; no block-wide barrier below
  const int split = static_cast<int>(blockIdx.y);

  const int row = static_cast<int>(row_index % p.q_len);
  const int64_t batch_head = row_index / p.q_len;
  const int head = static_cast<int>(batch_head % p.q_heads);
  const int batch = static_cast<int>(batch_head / p.q_heads);
  const int kv_head = head / p.group;

  float* const q_row = generic_smem + size_t(warp) * (p.head_dim + p.v_head_dim);
  float* const acc = q_row + p.head_dim;  // column c is owned by lane c % 32
  const T* const q = static_cast<const T*>(p.q) + batch * p.q_stride[0] + head * p.q_stride[1] + row * p.q_stride[2];
  for (int c = lane; c < p.head_dim; c += 32) q_row[c] = to_float(q[c]);
  for (int c = lane; c < p.v_head_dim; c += 32) acc[c] = 0.0f;
  __syncwarp();

  const T* const k_base = static_cast<const T*>(p.k) + batch * p.k_stride[0] + kv_head * p.k_stride[1];
  const T* const v_base = static_cast<const T*>(p.v) + batch * p.v_stride[0] + kv_head * p.v_stride[1];
  const int64_t bias_row = batch * p.bias_stride[0] + head * p.bias_stride[1] + row * p.bias_stride[2];
  const int64_t keep_base = batch * p.keep_stride[0] + head * p.keep_stride[1];

  int key_end = p.kv_len;
  if (p.causal) key_end = max(0, min(key_end, row + p.causal_offset + 1));
  const int keys_per_split = (p.kv_len + p.num_splits - 1) / p.num_splits;
  const int key_begin = split * keys_per_split;
  key_end = min(key_end, key_begin + keys_per_split);

  float row_max = -INFINITY;
  float row_sum = 0.0f;
  for (int j0 = key_begin; j0 < key_end; j0 += 32) {
    const int key = j0 + lane;
    float x = -INFINITY;
    const bool visible = key < key_end && key_visible(p, keep_base, row, key);
    if (visible) {
      const T* const k = k_base + key * p.k_stride[2];
      float dot = 0.0f;
      for (int c = 0; c < p.head_dim; ++c) dot = fmaf(q_row[c], to_float(k[c]), dot);
      const float bias =
          p.bias != nullptr ? to_float(static_cast<const T*>(p.bias)[bias_row + key * p.bias_stride[3]]) : 0.0f;
      x = score_to_log2(dot, bias, p);
    }
    const float new_max = fmaxf(row_max, warp_max(x));
    const float scale = rescale_factor(row_max, new_max);
    const float weight = exp2f(x - max_for_exp(new_max));
    row_max = new_max;
    row_sum = row_sum * scale + warp_sum(weight);
    for (int c = lane; c < p.v_head_dim; c += 32) acc[c] *= scale;
    // Keys that keep or causality hide (or past the range) take no part; a visible key whose weight is exactly 0 (a
    // bias far below the row's max, or -inf) still does, as in the unfused graph, where 0·inf = NaN.
    const unsigned visible_lanes = __ballot_sync(0xffffffffu, visible);
    const int keys_here = min(32, key_end - j0);
    for (int i = 0; i < keys_here; ++i) {
      const float w = __shfl_sync(0xffffffffu, weight, i);
      if (((visible_lanes >> i) & 1u) == 0) continue;  // uniform across the warp
      const T* const v = v_base + (j0 + i) * p.v_stride[2];
      for (int c = lane; c < p.v_head_dim; c += 32) acc[c] = fmaf(w, to_float(v[c]), acc[c]);
    }
  }

  const bool masked = row_max == -INFINITY;
  const float inv_sum = masked ? 0.0f : 1.0f / row_sum;
  if (p.num_splits > 1) {
    float* const dst = p.partial_out + (split * rows_total + row_index) * p.v_head_dim;
    for (int c = lane; c < p.v_head_dim; c += 32) dst[c] = acc[c] * inv_sum;
    if (lane == 0) {
      p.partial_max[split * rows_total + row_index] = row_max;
      p.partial_sum[split * rows_total + row_index] = row_sum;
    }
  } else {
    T* const out = static_cast<T*>(p.out) + batch * p.out_stride[0] + head * p.out_stride[1] + row * p.out_stride[2];
    for (int c = lane; c < p.v_head_dim; c += 32) out[c] = from_float<T>(finalize_output(acc[c], inv_sum, masked, p));
  }
}

}  // namespace ortflash::cuda

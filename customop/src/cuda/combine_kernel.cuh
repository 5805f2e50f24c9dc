// OrtFlash CUDA — merges the split-KV partial results (flash-decoding): per query row,
//   out = Σ_s l_s 2^(m_s - M) · o_s / Σ_s l_s 2^(m_s - M),   M = max_s m_s,
// where o_s is split s's normalised output, m_s its row max (log2 units, −inf: no visible key) and
// l_s its sum of weights 2^(score - m_s).
#pragma once

#include <cmath>
#include <cstdint>

#include "block_reduce.cuh"
#include "fwd_params.cuh"
#include "mma_primitives.cuh"
#include "softmax.cuh"

namespace ortflash::cuda {

constexpr int kCombineThreads = 128;

// One block per query row. The splits' row states are read by all threads at once (a single thread
// walking up to kMaxSplits splits serially, three times, made the combine the slowest part of a
// one-token decode), then each thread sums its output columns over the splits.
template <class T>
__global__ void __launch_bounds__(kCombineThreads) combine_splits_kernel(const FwdParams p) {
  __shared__ float split_weight[kMaxSplits];
  __shared__ float reduce_scratch[kCombineThreads / 32];
  const int64_t rows_total = int64_t(p.batch) * p.q_heads * p.q_len;
  const int64_t row_index = blockIdx.x;
  const int splits = p.num_splits;

  float local_max = -INFINITY;
  for (int s = static_cast<int>(threadIdx.x); s < splits; s += kCombineThreads) {
    local_max = fmaxf(local_max, p.partial_max[s * rows_total + row_index]);
  }
  const float max_all = block_reduce<kCombineThreads>(local_max, reduce_scratch, [](float a, float b) { return fmaxf(a, b); });
  const bool row_masked = max_all == -INFINITY;
  float local_total = 0.0f;
  for (int s = static_cast<int>(threadIdx.x); s < splits; s += kCombineThreads) {
    // A split without a visible key has max -inf and sum 0: weight exp2(-inf) * 0 = 0.
    const float split_max = p.partial_max[s * rows_total + row_index];
    const float weight = row_masked ? 0.0f : p.partial_sum[s * rows_total + row_index] * exp2f(split_max - max_all);
    split_weight[s] = weight;
    local_total += weight;
  }
  const float total = block_reduce<kCombineThreads>(local_total, reduce_scratch, [](float a, float b) { return a + b; });
  const float inv_total = row_masked ? 0.0f : 1.0f / total;  // the reduction's barrier also published split_weight

  const int row = static_cast<int>(row_index % p.q_len);
  const int64_t batch_head = row_index / p.q_len;
  const int head = static_cast<int>(batch_head % p.q_heads);
  const int batch = static_cast<int>(batch_head / p.q_heads);
  T* const out = static_cast<T*>(p.out) + batch * p.out_stride[0] + head * p.out_stride[1] + row * p.out_stride[2];
  const float* const partial = p.partial_out + row_index * p.v_head_dim;
  const int64_t split_step = rows_total * p.v_head_dim;
  for (int c = static_cast<int>(threadIdx.x); c < p.v_head_dim; c += kCombineThreads) {
    float value = 0.0f;
#pragma unroll 8
    for (int s = 0; s < splits; ++s) {
      const float weight = split_weight[s];
      value = fmaf(weight, partial[s * split_step + c], value);
    }
    out[c] = from_float<T>(finalize_output(value, inv_total, row_masked, p));
  }
}

}  // namespace ortflash::cuda

// OrtFlash CUDA — merges the split-KV partial results (flash-decoding): per query row,
//   out = Σ_s l_s 2^(m_s - M) · o_s / Σ_s l_s 2^(m_s - M),   M = max_s m_s,
// where o_s is split s's normalised output, m_s its row max (log2 units, −inf: no visible key) and
// l_s its sum of weights 2^(score - m_s).
#pragma once

#include <cmath>
#include <cstdint>

#include "fwd_params.cuh"
#include "mma_primitives.cuh"
#include "softmax.cuh"

namespace ortflash::cuda {

constexpr int kCombineThreads = 128;

template <class T>
__global__ void __launch_bounds__(kCombineThreads) combine_splits_kernel(const FwdParams p) {
  __shared__ float split_weight[kMaxSplits];
  __shared__ bool row_masked;
  const int64_t rows_total = int64_t(p.batch) * p.q_heads * p.q_len;
  const int64_t row_index = blockIdx.x;

  if (threadIdx.x == 0) {
    float max_all = -INFINITY;
    for (int s = 0; s < p.num_splits; ++s) max_all = fmaxf(max_all, p.partial_max[s * rows_total + row_index]);
    row_masked = max_all == -INFINITY;
    float total = 0.0f;
    for (int s = 0; s < p.num_splits; ++s) {
      // A split without a visible key has max -inf and sum 0: weight exp2(-inf) * 0 = 0.
      const float split_max = p.partial_max[s * rows_total + row_index];
      split_weight[s] = row_masked ? 0.0f : p.partial_sum[s * rows_total + row_index] * exp2f(split_max - max_all);
      total += split_weight[s];
    }
    const float inv_total = row_masked ? 0.0f : 1.0f / total;
    for (int s = 0; s < p.num_splits; ++s) split_weight[s] *= inv_total;
  }
  __syncthreads();

  const int row = static_cast<int>(row_index % p.q_len);
  const int64_t batch_head = row_index / p.q_len;
  const int head = static_cast<int>(batch_head % p.q_heads);
  const int batch = static_cast<int>(batch_head / p.q_heads);
  T* const out = static_cast<T*>(p.out) + batch * p.out_stride[0] + head * p.out_stride[1] + row * p.out_stride[2];
  for (int c = static_cast<int>(threadIdx.x); c < p.v_head_dim; c += kCombineThreads) {
    float value = 0.0f;
    for (int s = 0; s < p.num_splits; ++s) {
      if (split_weight[s] != 0.0f) value = fmaf(split_weight[s], p.partial_out[(s * rows_total + row_index) * p.v_head_dim + c], value);
    }
    out[c] = from_float<T>(finalize_output(value, 1.0f, row_masked, p));
  }
}

}  // namespace ortflash::cuda

// OrtFlash CUDA — a block-wide reduction of one 32-bit value per thread (float, int), for the small
// helper kernels (split-KV combine, live-key ranges): a warp reduction by shuffles, then the warps'
// results through shared memory. Every thread of the block must call it; every thread gets the result.
#pragma once

#include "cuda_compat.cuh"

namespace ortflash::cuda {

// `scratch`: kThreads / 32 values in shared memory, free for reuse when this returns.
template <int kThreads, class V, class Op>
__device__ __forceinline__ V block_reduce(V v, V* scratch, Op op) {
  static_assert(kThreads % 32 == 0 && sizeof(V) == 4, "whole warps, 32-bit values");
  constexpr int kWarps = kThreads / 32;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  const int warp = static_cast<int>(threadIdx.x) / 32;
  if (threadIdx.x % 32 == 0) scratch[warp] = v;
  __syncthreads();
  V all = scratch[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) all = op(all, scratch[w]);
  __syncthreads();  // scratch may be reused by the next reduction
  return all;
}

// The block-wide maxima of N values per thread at once (one exchange through shared memory instead of one per
// value; a min is the max of the negation). `scratch`: N * kThreads / 32 ints. Every thread gets every result.
template <int kThreads, int N>
__device__ __forceinline__ void block_max(int (&v)[N], int* scratch) {
  static_assert(kThreads % 32 == 0, "whole warps");
  constexpr int kWarps = kThreads / 32;
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v[i] = max(v[i], __shfl_xor_sync(0xffffffffu, v[i], offset));
  }
  const int warp = static_cast<int>(threadIdx.x) / 32;
  if (threadIdx.x % 32 == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) scratch[i * kWarps + warp] = v[i];
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < N; ++i) {
    v[i] = scratch[i * kWarps];
    for (int w = 1; w < kWarps; ++w) v[i] = max(v[i], scratch[i * kWarps + w]);
  }
  __syncthreads();  // scratch may be reused by the next reduction
}

}  // namespace ortflash::cuda

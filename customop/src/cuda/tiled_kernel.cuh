// OrtFlash CUDA — the tiled SIMT forward kernel: FlashAttention on the fp32 cores, for the calls the
// tensor-core kernel does not take with head dims up to 128 — float32 inputs above all, also 16-bit
// inputs with odd head dims or rows not in 16-byte chunks. Every element is converted to fp32 on its
// way into shared memory; all arithmetic is fp32, as in the other kernels.
//
// One block of 256 threads owns 64 query rows of one (batch, query head) and, with split-KV, one
// slice of the key tiles, like the tensor-core kernel (block_work). The threads form a 16 x 16 grid:
// thread (ty, tx) owns query rows 4ty..4ty+3 of the block, computes their scores against keys
// tx·kKeysPerThread.. of each key tile, and accumulates their outputs for value columns
// 64j + 4tx..64j + 4tx + 3. Per key tile:
//   K (transposed), V → shared;  S = Q·Kᵀ as 4 x kKeysPerThread register tiles (Q and K read as
//   float4 from their transposed copies);  score transform + masks (log2 units);  online softmax
//   across the 16 threads of a row (shuffles within half a warp);  P → shared (transposed);
//   O += P·V as 4 x kColsPerThread register tiles.
// The row state (max, partial sums) and O stay in registers for the whole key loop; only one tile of
// scores exists, in shared memory as P.
#pragma once

#include <cmath>
#include <cstdint>

#include "block_work.cuh"
#include "fwd_params.cuh"
#include "mma_primitives.cuh"
#include "softmax.cuh"

namespace ortflash::cuda {

// kHeadDim: capacity for both head dims (64 or 128; D and Dv up to it, any value). kBlockN: keys per
// tile, chosen so that the tiles fit the 99 KiB an sm_86/sm_89 block may use.
template <class T_, int kHeadDim_, int kBlockN_>
struct TiledTraits {
  using T = T_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 64;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kThreads = 256;
  static constexpr int kRowsPerThread = 4;                 // kBlockM / 16
  static constexpr int kKeysPerThread = kBlockN / 16;
  static constexpr int kColsPerThread = kHeadDim / 16;     // in groups of 4: columns 64j + 4tx + e
  // Row strides of the shared arrays, in floats: 16-byte aligned rows (float4 reads), padded by 4.
  static constexpr int kQtStride = kBlockM + 4;            // Qᵀ: [kHeadDim][kBlockM]
  static constexpr int kKtStride = kBlockN + 4;            // Kᵀ: [kHeadDim][kBlockN]
  static constexpr int kVStride = kHeadDim + 4;            // V:  [kBlockN][kHeadDim]
  static constexpr int kPtStride = kBlockM + 4;            // Pᵀ: [kBlockN][kBlockM]
  static constexpr int kQtFloats = kHeadDim * kQtStride;
  static constexpr int kKtFloats = kHeadDim * kKtStride;
  static constexpr int kVFloats = kBlockN * kVStride;
  static constexpr int kPtFloats = kBlockN * kPtStride;
  static constexpr size_t kSmemBytes = size_t(kQtFloats + kKtFloats + kVFloats + kPtFloats) * sizeof(float);

  static_assert(kHeadDim % 64 == 0, "output columns go in groups of 4 per thread over 16 threads");
  static_assert(kBlockN % 16 == 0 && kKeysPerThread <= 4, "each thread scores 1-4 keys of a tile");
  static_assert(kSmemBytes <= 99 * 1024, "tiles must fit the 99 KiB per block of sm_86/sm_89");
};

// Copies rows [row0, row0 + kRows) of a row-major tensor (row stride `row_stride`, `cols` valid
// columns) into shared memory as fp32, transposed (dst[col * dst_stride + row]) or not
// (dst[row * dst_stride + col]); rows at or past `rows_valid` and columns past `cols` become zeros,
// up to kCols columns. Consecutive threads read consecutive columns of a row (coalesced).
template <class Tr, int kRows, int kCols, bool kTranspose>
__device__ __forceinline__ void load_tile_f32(float* dst, int dst_stride, const typename Tr::T* base, int64_t row_stride,
                                              int row0, int rows_valid, int cols) {
  for (int index = static_cast<int>(threadIdx.x); index < kRows * kCols; index += Tr::kThreads) {
    const int row = index / kCols;
    const int col = index % kCols;
    float value = 0.0f;
    if (row0 + row < rows_valid && col < cols) value = to_float(base[(row0 + row) * row_stride + col]);
    if (kTranspose) {
      dst[col * dst_stride + row] = value;
    } else {
      dst[row * dst_stride + col] = value;
    }
  }
}

template <class Tr>
__global__ void __launch_bounds__(Tr::kThreads) tiled_fwd_kernel(const FwdParams p) {
  using T = typename Tr::T;
  constexpr int kRows = Tr::kRowsPerThread;
  constexpr int kKeys = Tr::kKeysPerThread;
  constexpr int kCols = Tr::kColsPerThread;

  ORTFLASH_DYNAMIC_SMEM(float, tiled_smem);
  float* const sQt = tiled_smem;
  float* const sKt = sQt + Tr::kQtFloats;
  float* const sV = sKt + Tr::kKtFloats;
  float* const sPt = sV + Tr::kVFloats;

  const BlockWork w = block_work<Tr>(p);
  const int tx = static_cast<int>(threadIdx.x) % 16;
  const int ty = static_cast<int>(threadIdx.x) / 16;  // lanes 0-15 and 16-31 of a warp: two rows of threads
  const int row0 = w.m0 + kRows * ty;                 // this thread's first query row

  const HeadInputs<T> in = head_inputs<T>(p, w);
  const bool plain_scores = p.softcap <= 0.0f && p.bias == nullptr;

  float o[kRows][kCols];
  float row_max[kRows];
  float row_sum[kRows];  // this thread's keys only; the 16 threads of a row are summed at the end
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) o[i][c] = 0.0f;
    row_max[i] = -INFINITY;
    row_sum[i] = 0.0f;
  }

  if (w.tile_begin < w.tile_end) {
    load_tile_f32<Tr, Tr::kBlockM, Tr::kHeadDim, true>(sQt, Tr::kQtStride, in.q, p.q_stride[2], w.m0, p.q_len,
                                                       p.head_dim);
  }
  for (int tile = w.tile_end - 1; tile >= w.tile_begin; --tile) {
    const int n0 = tile * Tr::kBlockN;
    __syncthreads();  // every thread is done with the previous tile's Kᵀ, V and Pᵀ (and Qᵀ is stored)
    load_tile_f32<Tr, Tr::kBlockN, Tr::kHeadDim, true>(sKt, Tr::kKtStride, in.k, p.k_stride[2], n0, p.kv_len,
                                                       p.head_dim);
    load_tile_f32<Tr, Tr::kBlockN, Tr::kHeadDim, false>(sV, Tr::kVStride, in.v, p.v_stride[2], n0, p.kv_len,
                                                        p.v_head_dim);
    __syncthreads();

    // ---- S = Q·Kᵀ for rows row0.. and keys n0 + kKeys·tx.. ----
    float s[kRows][kKeys];
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
#pragma unroll
      for (int j = 0; j < kKeys; ++j) s[i][j] = 0.0f;
    }
    for (int d = 0; d < p.head_dim; ++d) {
      const float4 q4 = *reinterpret_cast<const float4*>(sQt + d * Tr::kQtStride + kRows * ty);
      const float* const k = sKt + d * Tr::kKtStride + kKeys * tx;
      const float qv[4] = {q4.x, q4.y, q4.z, q4.w};
#pragma unroll
      for (int j = 0; j < kKeys; ++j) {
        const float kv = k[j];
#pragma unroll
        for (int i = 0; i < kRows; ++i) s[i][j] = fmaf(qv[i], kv, s[i][j]);
      }
    }

    // ---- scores → log2 units, masks; online softmax per row across its 16 threads ----
    const bool tile_needs_mask = p.keep != nullptr || n0 + Tr::kBlockN > p.kv_len ||
                                 (p.causal && n0 + Tr::kBlockN - 1 > w.m0 + p.causal_offset);
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int row = row0 + i;
      float tile_max = row_max[i];
#pragma unroll
      for (int j = 0; j < kKeys; ++j) {
        const int col = n0 + kKeys * tx + j;
        float x = s[i][j] * p.scale_log2;
        if (!plain_scores) {
          float bias = 0.0f;
          if (p.bias != nullptr && row < p.q_len && col < p.kv_len) {
            bias = to_float(static_cast<const T*>(p.bias)[in.bias + row * p.bias_stride[2] + col * p.bias_stride[3]]);
          }
          x = score_to_log2(s[i][j], bias, p);
        }
        if (tile_needs_mask && !key_visible(p, in.keep, row, col)) x = -INFINITY;
        s[i][j] = x;
        tile_max = fmaxf(tile_max, x);
      }
#pragma unroll
      for (int offset = 1; offset < 16; offset <<= 1) {
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
      }
      const float factor = rescale_factor(row_max[i], tile_max);
      row_max[i] = tile_max;
      row_sum[i] *= factor;
#pragma unroll
      for (int c = 0; c < kCols; ++c) o[i][c] *= factor;
      const float subtract = max_for_exp(tile_max);
#pragma unroll
      for (int j = 0; j < kKeys; ++j) {
        const float weight = fast_exp2(s[i][j] - subtract);
        row_sum[i] += weight;
        sPt[(kKeys * tx + j) * Tr::kPtStride + kRows * ty + i] = weight;
      }
    }
    __syncthreads();  // Pᵀ complete

    // ---- O += P·V ----
    for (int n = 0; n < Tr::kBlockN; ++n) {
      const float4 p4 = *reinterpret_cast<const float4*>(sPt + n * Tr::kPtStride + kRows * ty);
      const float pv[4] = {p4.x, p4.y, p4.z, p4.w};
      const float* const v = sV + n * Tr::kVStride + 4 * tx;
#pragma unroll
      for (int g = 0; g < kCols / 4; ++g) {
        const float4 v4 = *reinterpret_cast<const float4*>(v + 64 * g);
#pragma unroll
        for (int i = 0; i < kRows; ++i) {
          o[i][4 * g + 0] = fmaf(pv[i], v4.x, o[i][4 * g + 0]);
          o[i][4 * g + 1] = fmaf(pv[i], v4.y, o[i][4 * g + 1]);
          o[i][4 * g + 2] = fmaf(pv[i], v4.z, o[i][4 * g + 2]);
          o[i][4 * g + 3] = fmaf(pv[i], v4.w, o[i][4 * g + 3]);
        }
      }
    }
  }

  // ---- epilogue: normalise and store (or hand the split's partial result to the combine) ----
  const int64_t rows_total = int64_t(p.batch) * p.q_heads * p.q_len;
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    float sum = row_sum[i];
#pragma unroll
    for (int offset = 1; offset < 16; offset <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    const int row = row0 + i;
    if (row >= p.q_len) continue;
    const bool masked = row_max[i] == -INFINITY;
    const float inv_sum = masked ? 0.0f : 1.0f / sum;
    const int64_t row_index = (int64_t(w.batch) * p.q_heads + w.head) * p.q_len + row;
    if (p.num_splits > 1) {
      float* const dst = p.partial_out + (w.split * rows_total + row_index) * p.v_head_dim;
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        const int col = 64 * (c / 4) + 4 * tx + c % 4;
        if (col < p.v_head_dim) dst[col] = o[i][c] * inv_sum;
      }
      if (tx == 0) {
        p.partial_max[w.split * rows_total + row_index] = row_max[i];
        p.partial_sum[w.split * rows_total + row_index] = sum;
      }
    } else {
      T* const dst = static_cast<T*>(p.out) + w.batch * p.out_stride[0] + w.head * p.out_stride[1] + row * p.out_stride[2];
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        const int col = 64 * (c / 4) + 4 * tx + c % 4;
        if (col < p.v_head_dim) dst[col] = from_float<T>(finalize_output(o[i][c], inv_sum, masked, p));
      }
    }
  }
}

}  // namespace ortflash::cuda

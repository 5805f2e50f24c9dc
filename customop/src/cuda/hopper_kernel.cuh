// OrtFlash CUDA — the forward kernel on Hopper's warpgroup MMA (wgmma, sm_90a), for the calls without
// bias, keep or softcap (the plain variant of fwd_kernel.cuh: causal or not, any lengths, GQA, strides,
// split-KV) at head dims 64 and 128, fp16 and bf16.
//
// A thread block of kWarpGroups warpgroups (128 threads each) owns 64 query rows per warpgroup. Per key
// tile (kBlockN keys), each warpgroup:
//   S = Q·Kᵀ       wgmma m64n<kBlockN>k16, Q and K from shared memory (both K-major), D/16 k-steps
//   masks, online softmax on the S registers (rows g and g + 8 of each warp's 16, as in fwd_kernel.cuh)
//   O += P·V       wgmma m64n<D>k16, P from registers (the S accumulators re-packed: they are exactly the
//                  A fragments), V from shared memory (N-major), kBlockN/16 k-steps
// K and V tiles are double-buffered: the next tile's K and V stream in by cp.async (into the 128-byte
// swizzled layout the wgmma descriptors describe, see wgmma_primitives.cuh) during the whole of this
// tile's work. Key tiles run from last to first, so the masked ones (ragged end, causal diagonal) come
// first, and causally hidden tiles are never loaded.
//
// Not yet here (the next steps, which need a GPU to time): TMA loads, producer/consumer warp
// specialisation, overlapping one tile's softmax with the next tile's Q·Kᵀ.
#pragma once

#include <cstdint>

#include "block_work.cuh"
#include "fwd_kernel.cuh"
#include "fwd_params.cuh"
#include "fwd_traits.cuh"
#include "softmax.cuh"
#include "wgmma_primitives.cuh"

namespace ortflash::cuda {

// Enqueues cp.async copies of rows [row0, row0 + kRows) into a swizzled tile (see swizzle_offset); rows at
// or past `rows_valid` and columns at or past `cols_valid` become zeros.
template <class Tr, int kRows>
__device__ __forceinline__ void load_swizzled_tile_async(unsigned char* tile, const typename Tr::T* base, int64_t row_stride,
                                                         int row0, int rows_valid, int cols_valid) {
  constexpr int kPerThread = kRows * Tr::kChunks / Tr::kThreads;
  constexpr int kRowStep = Tr::kThreads / Tr::kChunks;
  static_assert(Tr::kThreads % Tr::kChunks == 0, "a thread keeps one chunk column");
  const int chunk = static_cast<int>(threadIdx.x) % Tr::kChunks;
  const int first_row = static_cast<int>(threadIdx.x) / Tr::kChunks;
  const bool column_valid = chunk * 8 < cols_valid;
  const typename Tr::T* src = base + (row0 + first_row) * row_stride + chunk * 8;
  const int64_t src_step = kRowStep * row_stride;
  const bool all_valid = column_valid && row0 + kRows <= rows_valid;
#pragma unroll
  for (int it = 0; it < kPerThread; ++it) {
    const int row = first_row + it * kRowStep;
    const bool valid = all_valid || (column_valid && row0 + row < rows_valid);
    cp_async_16(tile + swizzle_offset(kRows, row, chunk), valid ? src : base, valid);
    src += src_step;
  }
}

template <class Tr>
__global__ void __launch_bounds__(Tr::kThreads, 1) hopper_fwd_kernel(const FwdParams p) {
  using T = typename Tr::T;
  constexpr int kDTiles = Tr::kDTiles;
  constexpr int kSRegs = Tr::kBlockN / 2;  // S accumulators per thread
  constexpr int kPSteps = Tr::kBlockN / 16;

  ORTFLASH_DYNAMIC_SMEM(unsigned char, smem_raw);
  const uint32_t raw_addr = smem_address(smem_raw);
  unsigned char* const smem = smem_raw + ((1024u - (raw_addr & 1023u)) & 1023u);
  unsigned char* const sQ = smem;
  unsigned char* const sKV = sQ + Tr::kQTileBytes;  // stage s: K at sKV + 2s·kKvTileBytes, V after it
  const auto sK = [&](int stage) { return sKV + 2 * stage * Tr::kKvTileBytes; };
  const auto sV = [&](int stage) { return sKV + (2 * stage + 1) * Tr::kKvTileBytes; };

  const BlockWork w = block_work<Tr>(p);
  const int tid = static_cast<int>(threadIdx.x);
  const int group = tid / 128;          // warpgroup: query rows 64·group .. +63 of the block
  const int warp_in_group = (tid % 128) / 32;
  const int lane = tid % 32;
  const int quad_row = lane / 4;        // g
  const int quad_col = 2 * (lane % 4);  // 2t
  const int row0 = w.m0 + 64 * group + 16 * warp_in_group + quad_row;  // this thread's rows: row0, row0 + 8
  const HeadInputs<T> in = head_inputs<T>(p, w);

  // Descriptors: Q rows of this warpgroup, k-step ks (16 head-dim columns: 64-column block ks / 4,
  // 32 bytes per step within it); K likewise over the tile's keys; V at key row 16·kk, 64-column blocks
  // kBlockN·128 bytes apart.
  const uint32_t q_base = smem_address(sQ) + uint32_t(64 * group * 128);
  const auto q_desc = [&](int ks) {
    return smem_descriptor(q_base + uint32_t((ks / 4) * Tr::kBlockM * 128 + (ks % 4) * 32), 16, 1024);
  };
  const auto k_desc = [&](int stage, int ks) {
    return smem_descriptor(smem_address(sK(stage)) + uint32_t((ks / 4) * Tr::kBlockN * 128 + (ks % 4) * 32), 16, 1024);
  };
  const auto v_desc = [&](int stage, int kk) {
    return smem_descriptor(smem_address(sV(stage)) + uint32_t(kk * 16 * 128), uint32_t(Tr::kBlockN * 128), 1024);
  };

  float o[kDTiles][4];
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int dt = 0; dt < kDTiles; ++dt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[dt][e] = 0.0f;
  }
  // As in the plain variant of fwd_kernel.cuh: scores stay raw dot products through the row max, and each
  // weight is one FFMA and one ex2, exp2(s·c − max·c) with c = scale·log2(e) > 0.
  const float to_log2 = p.scale_log2;

  const auto load_kv = [&](int stage, int tile) {
    load_swizzled_tile_async<Tr, Tr::kBlockN>(sK(stage), in.k, p.k_stride[2], tile * Tr::kBlockN, p.kv_len, p.head_dim);
    load_swizzled_tile_async<Tr, Tr::kBlockN>(sV(stage), in.v, p.v_stride[2], tile * Tr::kBlockN, p.kv_len, p.v_head_dim);
  };
  if (w.tile_begin < w.tile_end) {
    load_swizzled_tile_async<Tr, Tr::kBlockM>(sQ, in.q, p.q_stride[2], w.m0, p.q_len, p.head_dim);
    load_kv(0, w.tile_end - 1);
    cp_async_commit();
  }

  int stage = 0;
  for (int tile = w.tile_end - 1; tile >= w.tile_begin; --tile) {
    const int n0 = tile * Tr::kBlockN;
    cp_async_wait<0>();
    fence_proxy_async();  // this thread's copies, visible to wgmma after the barrier
    __syncthreads();      // K, V (tile) visible; every warpgroup is done with the other stage
    if (tile > w.tile_begin) {
      load_kv(stage ^ 1, tile - 1);
      cp_async_commit();
    }

    // ---- S = Q·Kᵀ ----
    float s[kSRegs];
#if defined(ORTFLASH_SIMT)
    for (float& x : s) x = 0.0f;  // overwritten (scale-d = 0); defined values for the emulator's snapshot
#endif
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < Tr::kHeadDim / 16; ++ks) Wgmma<T, Tr::kBlockN>::ss(s, q_desc(ks), k_desc(stage, ks), ks > 0);
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(s);

    // ---- masks: keys past the end, causally hidden keys ----
    // s[4j + 2h + b]: query row row0 + 8h, key n0 + 8j + quad_col + b.
    const bool tile_needs_mask = n0 + Tr::kBlockN > p.kv_len || (p.causal && n0 + Tr::kBlockN - 1 > w.m0 + p.causal_offset);
    if (tile_needs_mask) {
#pragma unroll
      for (int e = 0; e < kSRegs; ++e) {
        const int row = row0 + 8 * ((e >> 1) & 1);
        const int col = n0 + 8 * (e >> 2) + quad_col + (e & 1);
        if (!key_visible<false>(p, 0, row, col)) s[e] = -INFINITY;
      }
    }

    // ---- online softmax ----
    float scale[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float tile_max = row_max[h];
#pragma unroll
      for (int j = 0; j < kSRegs / 4; ++j) tile_max = fmaxf(tile_max, fmaxf(s[4 * j + 2 * h], s[4 * j + 2 * h + 1]));
      tile_max = quad_max(tile_max);
      scale[h] = rescale_factor(row_max[h], tile_max, to_log2);
      row_max[h] = tile_max;
      row_sum[h] *= scale[h];
    }
    if (__any_sync(0xffffffffu, scale[0] != 1.0f || scale[1] != 1.0f)) {
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        o[dt][0] *= scale[0];
        o[dt][1] *= scale[0];
        o[dt][2] *= scale[1];
        o[dt][3] *= scale[1];
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float subtract = max_for_exp(row_max[h]) * to_log2;
#pragma unroll
      for (int j = 0; j < kSRegs / 4; ++j) {
#pragma unroll
        for (int b = 0; b < 2; ++b) {
          const float weight = fast_exp2(fmaf(s[4 * j + 2 * h + b], to_log2, -subtract));
          s[4 * j + 2 * h + b] = weight;
          row_sum[h] += weight;  // this lane's columns; the quad is summed at the end
        }
      }
    }

    // ---- O += P·V: the S accumulators of keys 16kk..16kk+15 are the A fragment of step kk ----
    uint32_t pa[kPSteps][4];
#pragma unroll
    for (int kk = 0; kk < kPSteps; ++kk) {
      pa[kk][0] = pack2<T>(s[8 * kk + 0], s[8 * kk + 1]);
      pa[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
      pa[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
      pa[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
    }
    float (&o_flat)[kDTiles * 4] = reinterpret_cast<float (&)[kDTiles * 4]>(o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kPSteps; ++kk) Wgmma<T, Tr::kHeadDim>::rs_n_major(o_flat, pa[kk], v_desc(stage, kk), true);
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(o_flat);
#pragma unroll
    for (int kk = 0; kk < kPSteps; ++kk) fence_registers(pa[kk]);  // the A registers stay untouched until here
    stage ^= 1;
  }

  // ---- epilogue ----
#pragma unroll
  for (int h = 0; h < 2; ++h) store_output_row<T>(p, w, row0 + 8 * h, quad_col, o, h, row_max[h], row_sum[h], to_log2);
}

}  // namespace ortflash::cuda

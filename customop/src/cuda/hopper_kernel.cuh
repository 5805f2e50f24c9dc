// OrtFlash CUDA — the forward kernels on Hopper's warpgroup MMA (wgmma, sm_90a), fp16 and bf16, head dims 64
// and 128, for the calls without softcap: the plain variant of fwd_kernel.cuh (causal or not, any lengths, GQA,
// strides, split-KV) and, in the TMA kernel, its masks-in-accumulator variants (bias and/or keep).
//
// kWarpGroups warpgroups (128 threads each) own 64 query rows each. Per key tile (kBlockN keys), each:
//   S = Q·Kᵀ       wgmma m64n<kBlockN>k16, Q and K from shared memory (both K-major), D/16 k-steps, landing
//                  on the masks' starting scores when there are masks
//   masks, online softmax on the S registers (rows g and g + 8 of each warp's 16, as in fwd_kernel.cuh)
//   O += P·V       wgmma m64n<D>k16, P from registers (the S accumulators re-packed: they are exactly the
//                  A fragments), V from shared memory (N-major), kBlockN/16 k-steps
// Key tiles run from last to first, so the masked ones (ragged end, causal diagonal) come first, and
// causally hidden tiles are never loaded. Two ways to bring the tiles in (128-byte swizzled layout, see
// wgmma_primitives.cuh):
//   hopper_fwd_kernel      every thread copies by cp.async, K/V double-buffered, __syncthreads per tile;
//   hopper_tma_fwd_kernel  warp specialisation: a producer warpgroup (one thread issues, the warpgroup gives its
//                          registers to the consumers by setmaxnreg) streams Q, K, V (and the mask tiles) by TMA
//                          into kStages buffers, mbarriers hand them to the consumer warpgroups and back; no
//                          block-wide barrier in the key loop. With kOverlap, tile i's Q·Kᵀ is in flight with
//                          tile i-1's P·V (FlashAttention-3's intra-warpgroup overlap).
//                          With kPingpong as well, the two warpgroups take turns at the tensor cores (named
//                          barriers), one's softmax running while the other's GEMMs do (FlashAttention-3's pingpong).
// Not yet here (for a session that can time it): TMA stores of O.
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

// Rows of a mask tile's layout: the block's query rows, or for a mask broadcast over query rows its one row
// in the layout of 8 (so that every 64-column block starts on a 1024-byte boundary, as the swizzle needs).
template <class Tr>
__device__ __forceinline__ int mask_tile_rows(bool broadcast) {
  return broadcast ? 8 : Tr::kBlockM;
}

// One consumer warpgroup's state and math for its 64 query rows: O accumulators (o[dt][e]: row row0 + 8·(e/2),
// column 8·dt + quad_col + e%2), the running row max (raw dot-product units) and this lane's part of the row
// sums, for the thread's two rows row0 and row0 + 8. Thread tid of the consumers (warpgroup tid / 128) owns
// rows m0 + 64·(tid / 128) + 16·warp + lane / 4 (+ 8) of the block's query rows from m0.
template <class Tr>
struct HopperRows {
  using T = typename Tr::T;
  static constexpr int kDTiles = Tr::kDTiles;
  static constexpr int kSRegs = Tr::kBlockN / 2;  // S accumulators per thread
  static constexpr int kPSteps = Tr::kBlockN / 16;

  float o[kDTiles][4];
  float row_max[2];
  float row_sum[2];
  int row0;
  int quad_col;

  __device__ __forceinline__ HopperRows(int m0, int tid)
      : row0(m0 + 64 * (tid / 128) + 16 * ((tid % 128) / 32) + (tid % 32) / 4), quad_col(2 * (tid % 4)) {
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[dt][e] = 0.0f;
    }
    row_max[0] = row_max[1] = -INFINITY;
    row_sum[0] = row_sum[1] = 0.0f;
  }

  // Issues S = Q·Kᵀ for the tile as one wgmma group (not waited for): `q_desc(ks)`, `k_desc(ks)` give the
  // descriptors of k-step ks (16 head-dim columns). With masks, the products land on the starting scores in s
  // (start_scores); else s is overwritten. With `fence`, first the wgmma.fence that must separate register
  // accesses from the next wgmma.
  template <class QDesc, class KDesc>
  __device__ __forceinline__ void issue_scores(float (&s)[kSRegs], QDesc q_desc, KDesc k_desc, bool fence = true) {
    constexpr bool kFromStart = Tr::kBiasIn || Tr::kKeepIn;
#if defined(ORTFLASH_SIMT)
    if (!kFromStart) {
      for (float& x : s) x = 0.0f;  // overwritten (scale-d = 0); defined values for the emulator's snapshot
    }
#endif
    if (fence) wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < Tr::kHeadDim / 16; ++ks) Wgmma<T, Tr::kBlockN>::ss(s, q_desc(ks), k_desc(ks), kFromStart || ks > 0);
    wgmma_commit();
  }

  template <class QDesc, class KDesc>
  __device__ __forceinline__ void scores(float (&s)[kSRegs], QDesc q_desc, KDesc k_desc) {
    issue_scores(s, q_desc, k_desc);
    wgmma_wait<0>();
    fence_registers(s);
  }

  // The masks-in-accumulator start of the tile's scores (fwd_kernel.cuh): bias / scale where the key is kept,
  // -inf where it is hidden. Tiles as TMA wrote them (HopperTraits): bias_tile / keep_tile hold `block_rows`
  // query rows of the block (row 0 only when the mask is broadcast over query rows: row_bcast).
  __device__ __forceinline__ void start_scores(float (&s)[kSRegs], const unsigned char* bias_tile, bool bias_bcast,
                                               const unsigned char* keep_tile, bool keep_bcast, int local_row0,
                                               const FwdParams& p) {
    // s[4j + 2h + b] is key 8j + quad_col + b of row local_row0 + 8h. In a swizzled tile (swizzle_offset) that is
    // 16-byte chunk j (bias) or j / 2 (keep) of the row, XOR-ed with the row's (r % 8), which rows r and r + 8
    // share: per row one base address, and per chunk one XOR — few live registers, whatever ptxas hoists.
    const auto row_base = [&](const unsigned char* tile, bool bcast, int h) {
      return tile + (bcast ? 0 : local_row0 + 8 * h) * 128;
    };
    const int bias_x = bias_bcast ? 0 : (local_row0 & 7) << 4, keep_x = keep_bcast ? 0 : (local_row0 & 7) << 4;
    const int bias_block = mask_tile_rows<Tr>(bias_bcast) * 128, keep_block = mask_tile_rows<Tr>(keep_bcast) * 128;
#pragma unroll
    for (int e = 0; e < kSRegs; e += 2) {  // s[e], s[e + 1]: adjacent keys of one row
      const int h = (e >> 1) & 1, j = e >> 2;
      float start[2] = {0.0f, 0.0f};
      if constexpr (Tr::kBiasIn) {
        const unsigned char* at = row_base(bias_tile, bias_bcast, h) + (j >> 3) * bias_block + ((((j & 7) << 4) ^ bias_x)) +
                                  quad_col * 2;
        unpack2<T>(shared_load_u32(at), start[0], start[1]);
        start[0] = bias_over_scale<T>(start[0], p.inv_scale);
        start[1] = bias_over_scale<T>(start[1], p.inv_scale);
      }
      if constexpr (Tr::kKeepIn) {
        const unsigned char* at = row_base(keep_tile, keep_bcast, h) + (j >> 4) * keep_block +
                                  (((((j >> 1) & 7) << 4) ^ keep_x)) + 8 * (j & 1) + quad_col;
        const uint32_t pair = shared_load_u16(at);
        if ((pair & 0xffu) == 0) start[0] = -INFINITY;
        if ((pair >> 8) == 0) start[1] = -INFINITY;
      }
      s[e] = start[0];
      s[e + 1] = start[1];
    }
  }

  // Keys past the end and causally hidden keys of the tile at key n0 (block rows from m0) to -inf; then the
  // online softmax: new row maxima, the sums rescaled, s = exp2(s·c − max·c) with c = scale·log2(e) > 0 (the
  // plain variant's raw-score softmax of fwd_kernel.cuh). O's factors go to `scale` (see rescale): O may
  // still be in flight.
  __device__ __forceinline__ void softmax_scores(float (&s)[kSRegs], float (&scale)[2], const FwdParams& p, int m0, int n0) {
    const float to_log2 = p.scale_log2;
    // s[4j + 2h + b]: query row row0 + 8h, key n0 + 8j + quad_col + b.
    if (n0 + Tr::kBlockN > p.kv_len || (p.causal && n0 + Tr::kBlockN - 1 > m0 + p.causal_offset)) {
#pragma unroll
      for (int e = 0; e < kSRegs; ++e) {
        if (!key_visible<false>(p, 0, row0 + 8 * ((e >> 1) & 1), n0 + 8 * (e >> 2) + quad_col + (e & 1))) s[e] = -INFINITY;
      }
    }
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
    // As in fwd_kernel.cuh: a bfloat16 bias may leave a row with only huge (clamped) scores, where the fused
    // multiply-subtract would be off by more than the exponent range; such warps round both products.
    const bool huge_max = Tr::kBiasIn && !std::is_same_v<T, __half> &&
                          __any_sync(0xffffffffu, !(fabsf(row_max[0] * to_log2) < kHugeLog2) ||
                                                      !(fabsf(row_max[1] * to_log2) < kHugeLog2));
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float subtract = max_for_exp(row_max[h]) * to_log2;
#pragma unroll
      for (int j = 0; j < kSRegs / 4; ++j) {
#pragma unroll
        for (int b = 0; b < 2; ++b) {
          const float x = s[4 * j + 2 * h + b];
          const float weight = fast_exp2(huge_max ? __fmul_rn(x, to_log2) - subtract : fmaf(x, to_log2, -subtract));
          s[4 * j + 2 * h + b] = weight;
          row_sum[h] += weight;  // this lane's columns; the quad is summed at the end
        }
      }
    }
  }

  // O's rescale for a new row max. Most tiles, once the maxima settle, leave every row of the warp unchanged
  // (factor exactly 1): then the multiplies are skipped.
  __device__ __forceinline__ void rescale(const float (&scale)[2]) {
    if (__any_sync(0xffffffffu, scale[0] != 1.0f || scale[1] != 1.0f)) {
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        o[dt][0] *= scale[0];
        o[dt][1] *= scale[0];
        o[dt][2] *= scale[1];
        o[dt][3] *= scale[1];
      }
    }
  }

  __device__ __forceinline__ void softmax(float (&s)[kSRegs], const FwdParams& p, int m0, int n0) {
    float scale[2];
    softmax_scores(s, scale, p, m0, n0);
    rescale(scale);
  }

  // O += P·V: the S accumulators of keys 16kk..16kk+15 are the A fragment of step kk; `v_desc(kk)` the
  // descriptor of V's key rows 16kk...
  __device__ __forceinline__ static void pack_p(const float (&s)[kSRegs], uint32_t (&pa)[kPSteps][4]) {
#pragma unroll
    for (int kk = 0; kk < kPSteps; ++kk) {
      pa[kk][0] = pack2<T>(s[8 * kk + 0], s[8 * kk + 1]);
      pa[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
      pa[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
      pa[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
    }
  }

  // Issues O += P·V as one wgmma group (not waited for); pa must stay untouched until finish_accumulate.
  template <class VDesc>
  __device__ __forceinline__ void issue_accumulate(const uint32_t (&pa)[kPSteps][4], VDesc v_desc, bool fence = true) {
    float (&o_flat)[kDTiles * 4] = reinterpret_cast<float (&)[kDTiles * 4]>(o);
    if (fence) wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kPSteps; ++kk) Wgmma<T, Tr::kHeadDim>::rs_n_major(o_flat, pa[kk], v_desc(kk), true);
    wgmma_commit();
  }

  // After the wait for the P·V group: O and P's registers are the program's again.
  __device__ __forceinline__ void fence_accumulate(uint32_t (&pa)[kPSteps][4]) {
    fence_registers(reinterpret_cast<float (&)[kDTiles * 4]>(o));
#pragma unroll
    for (int kk = 0; kk < kPSteps; ++kk) fence_registers(pa[kk]);
  }

  template <class VDesc>
  __device__ __forceinline__ void accumulate(const float (&s)[kSRegs], VDesc v_desc) {
    uint32_t pa[kPSteps][4];
    pack_p(s, pa);
    issue_accumulate(pa, v_desc);
    wgmma_wait<0>();
    fence_accumulate(pa);
  }

  __device__ __forceinline__ void store(const FwdParams& p, const BlockWork& w) const {
#pragma unroll
    for (int h = 0; h < 2; ++h) store_output_row<T>(p, w, row0 + 8 * h, quad_col, o, h, row_max[h], row_sum[h], p.scale_log2);
  }
};

// Descriptors of the swizzled tiles (see wgmma_primitives.cuh): a K-major operand of `rows` rows at `base`,
// k-step ks (16 columns: 64-column block ks / 4, 32 bytes per step within it); V (N-major) at key row 16·kk,
// its 64-column blocks kBlockN·128 bytes apart.
__device__ __forceinline__ uint64_t k_major_desc(uint32_t base, int rows, int ks) {
  return smem_descriptor(base + uint32_t((ks / 4) * rows * 128 + (ks % 4) * 32), 16, 1024);
}
__device__ __forceinline__ uint64_t n_major_desc(uint32_t base, int rows, int kk) {
  return smem_descriptor(base + uint32_t(kk * 16 * 128), uint32_t(rows * 128), 1024);
}

// The block's shared memory from its first 1024-byte boundary.
__device__ __forceinline__ unsigned char* aligned_smem_1024(unsigned char* raw) {
  return raw + ((1024u - (smem_address(raw) & 1023u)) & 1023u);
}

template <class Tr>
__global__ void __launch_bounds__(Tr::kThreads, 1) hopper_fwd_kernel(const FwdParams p) {
  using T = typename Tr::T;
  static_assert(!Tr::kBiasIn && !Tr::kKeepIn, "masks are the TMA kernel's");
  ORTFLASH_DYNAMIC_SMEM(unsigned char, smem_raw);
  unsigned char* const sQ = aligned_smem_1024(smem_raw);
  unsigned char* const sKV = sQ + Tr::kQTileBytes;  // stage s: K at sKV + 2s·kKvTileBytes, V after it
  const auto sK = [&](int stage) { return sKV + 2 * stage * Tr::kKvTileBytes; };
  const auto sV = [&](int stage) { return sKV + (2 * stage + 1) * Tr::kKvTileBytes; };

  const BlockWork w = block_work<Tr>(p);
  const int tid = static_cast<int>(threadIdx.x);
  const int group = tid / 128;  // warpgroup: query rows 64·group .. +63 of the block
  HopperRows<Tr> rows(w.m0, tid);
  const HeadInputs<T> in = head_inputs<T>(p, w);
  const uint32_t q_base = smem_address(sQ) + uint32_t(64 * group * 128);

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
    cp_async_wait<0>();
    fence_proxy_async();  // this thread's copies, visible to wgmma after the barrier
    __syncthreads();      // K, V (tile) visible; every warpgroup is done with the other stage
    if (tile > w.tile_begin) {
      load_kv(stage ^ 1, tile - 1);
      cp_async_commit();
    }
    const uint32_t k_base = smem_address(sK(stage)), v_base = smem_address(sV(stage));
    float s[HopperRows<Tr>::kSRegs];
    rows.scores(s, [&](int ks) { return k_major_desc(q_base, Tr::kBlockM, ks); },
                [&](int ks) { return k_major_desc(k_base, Tr::kBlockN, ks); });
    rows.softmax(s, p, w.m0, tile * Tr::kBlockN);
    rows.accumulate(s, [&](int kk) { return n_major_desc(v_base, Tr::kBlockN, kk); });
    stage ^= 1;
  }
  rows.store(p, w);
}

// The TMA tensor maps of one call: q, k, v as 4-d tensors (head-dim column, row, head, batch), boxes of 64
// columns (one 128-byte swizzle span) by kBlockM (q) or kBlockN (k, v) rows.
struct HopperTmaMaps {
  TmaDescriptor q;
  TmaDescriptor k;
  TmaDescriptor v;
  TmaDescriptor bias;  // (key, query row or 1, head or 1, batch or 1): boxes of 64 keys x kBlockM rows (or 1)
  TmaDescriptor keep;  // the same with bytes: boxes of 128 keys
};

// kWarpGroups consumer warpgroups (threads 0 .. kThreads-1) and one producer warpgroup after them.
template <class Tr>
__global__ void __launch_bounds__(Tr::kTmaThreads, 1) hopper_tma_fwd_kernel(const FwdParams p,
                                                                            const __grid_constant__ HopperTmaMaps maps) {
  ORTFLASH_DYNAMIC_SMEM(unsigned char, smem_raw);
  unsigned char* const sQ = aligned_smem_1024(smem_raw);
  unsigned char* const sStages = sQ + Tr::kQTileBytes;  // per stage: K, V, bias, keep
  const auto sK = [&](int stage) { return sStages + stage * Tr::kStageBytes; };
  const auto sV = [&](int stage) { return sK(stage) + Tr::kKvTileBytes; };
  const auto sBias = [&](int stage) { return sV(stage) + Tr::kKvTileBytes; };
  const auto sKeep = [&](int stage) { return sBias(stage) + Tr::kBiasTileBytes; };
  const bool bias_bcast = p.bias_stride[2] == 0, keep_bcast = p.keep_stride[2] == 0;
  // mbarriers after the tiles: Q full; per stage K full, V full (one producer arrival plus the TMA bytes each)
  // and empty (one arrival per consumer warpgroup once its wgmma reads of the stage are done).
  uint64_t* const bars = reinterpret_cast<uint64_t*>(sQ + Tr::kTileBytes);
  uint64_t* const q_full = bars;
  const auto k_full = [&](int stage) { return bars + 1 + stage; };
  const auto v_full = [&](int stage) { return bars + 1 + Tr::kStages + stage; };
  const auto empty = [&](int stage) { return bars + 1 + 2 * Tr::kStages + stage; };

  const BlockWork w = block_work<Tr>(p);
  const int tid = static_cast<int>(threadIdx.x);
  const int tiles = max(0, w.tile_end - w.tile_begin);
  if (tid == 0) {
    mbarrier_init(q_full, 1);
    for (int stage = 0; stage < Tr::kStages; ++stage) {
      mbarrier_init(k_full(stage), 1);
      mbarrier_init(v_full(stage), 1);
      mbarrier_init(empty(stage), Tr::kWarpGroups);
    }
    fence_barrier_init();
  }
  __syncthreads();

  if (tid >= Tr::kThreads) {  // ---- producer warpgroup: one thread issues every copy ----
    if constexpr (Tr::kRegisterSplit) setmaxnreg_dec<Tr::kProducerRegs>();
    if (tid != Tr::kThreads || tiles == 0) return;
    const int kv_head = w.head / p.group;
    constexpr uint32_t kKvBytes = Tr::kKvTileBytes;
    // Mask boxes: 64 bias elements or 128 keep bytes wide, kBlockM rows or (broadcast over query rows) 1; the
    // coordinates of broadcast dimensions are 0 (their tensor-map extent is 1).
    const int bias_rows = bias_bcast ? 1 : Tr::kBlockM, keep_rows = keep_bcast ? 1 : Tr::kBlockM;
    const uint32_t mask_bytes = (Tr::kBiasIn ? uint32_t(bias_rows) * Tr::kBlockN * 2 : 0u) +
                                (Tr::kKeepIn ? uint32_t(keep_rows) * Tr::kBlockN : 0u);
    struct MaskAt {
      int row, head, batch;
    };
    const auto mask_at = [&](const int64_t (&stride)[4]) {
      return MaskAt{stride[2] == 0 ? 0 : w.m0, stride[1] == 0 ? 0 : w.head, stride[0] == 0 ? 0 : w.batch};
    };
    const MaskAt bias_at = mask_at(p.bias_stride), keep_at = mask_at(p.keep_stride);
    mbarrier_arrive_expect_tx(q_full, uint32_t(Tr::kQTileBytes));
    for (int cb = 0; cb < Tr::kTileCols / 64; ++cb) {
      tma_load_4d(sQ + cb * Tr::kBlockM * 128, &maps.q, q_full, 64 * cb, w.m0, w.head, w.batch);
    }
    for (int i = 0; i < tiles; ++i) {
      const int stage = i % Tr::kStages;
      const int n0 = (w.tile_end - 1 - i) * Tr::kBlockN;
      mbarrier_wait(empty(stage), ((i / Tr::kStages) & 1) ^ 1);  // the first round finds every stage free
      mbarrier_arrive_expect_tx(k_full(stage), kKvBytes + mask_bytes);  // the masks start the scores: with K
      for (int cb = 0; cb < Tr::kTileCols / 64; ++cb) {
        tma_load_4d(sK(stage) + cb * Tr::kBlockN * 128, &maps.k, k_full(stage), 64 * cb, n0, kv_head, w.batch);
      }
      if constexpr (Tr::kBiasIn) {
        for (int cb = 0; cb < Tr::kBlockN / 64; ++cb) {
          tma_load_4d(sBias(stage) + cb * mask_tile_rows<Tr>(bias_bcast) * 128, &maps.bias, k_full(stage), n0 + 64 * cb,
                      bias_at.row, bias_at.head, bias_at.batch);
        }
      }
      if constexpr (Tr::kKeepIn) {
        for (int cb = 0; cb < Tr::kBlockN / 128; ++cb) {
          tma_load_4d(sKeep(stage) + cb * mask_tile_rows<Tr>(keep_bcast) * 128, &maps.keep, k_full(stage), n0 + 128 * cb,
                      keep_at.row, keep_at.head, keep_at.batch);
        }
      }
      mbarrier_arrive_expect_tx(v_full(stage), kKvBytes);
      for (int cb = 0; cb < Tr::kTileCols / 64; ++cb) {
        tma_load_4d(sV(stage) + cb * Tr::kBlockN * 128, &maps.v, v_full(stage), 64 * cb, n0, kv_head, w.batch);
      }
    }
    return;
  }

  // ---- consumer warpgroups ----
  if constexpr (Tr::kRegisterSplit) setmaxnreg_inc<Tr::kConsumerRegs>();
  const int group = tid / 128;
  HopperRows<Tr> rows(w.m0, tid);
  const int local_row0 = rows.row0 - w.m0;  // within the block
  // With masks, the tile's scores start from them (read once K's barrier, which also counts the mask boxes, is done).
  const auto start = [&](float (&s)[HopperRows<Tr>::kSRegs], int stage) {
    if constexpr (Tr::kBiasIn || Tr::kKeepIn) {
      rows.start_scores(s, sBias(stage), bias_bcast, sKeep(stage), keep_bcast, local_row0, p);
    }
  };
  const uint32_t q_base = smem_address(sQ) + uint32_t(64 * group * 128);
  const auto q_desc = [&](int ks) { return k_major_desc(q_base, Tr::kBlockM, ks); };
  const auto k_desc = [&](int stage) {
    const uint32_t base = smem_address(sK(stage));
    return [base](int ks) { return k_major_desc(base, Tr::kBlockN, ks); };
  };
  const auto v_desc = [&](int stage) {
    const uint32_t base = smem_address(sV(stage));
    return [base](int kk) { return n_major_desc(base, Tr::kBlockN, kk); };
  };
  const auto release = [&](int stage) {
    if (tid % 128 == 0) mbarrier_arrive(empty(stage));  // this warpgroup's wgmma reads of the stage are done
  };
  if (tiles > 0) mbarrier_wait(q_full, 0);
  if constexpr (!Tr::kOverlap) {
    for (int i = 0; i < tiles; ++i) {
      const int stage = i % Tr::kStages;
      const uint32_t parity = (i / Tr::kStages) & 1;
      const int n0 = (w.tile_end - 1 - i) * Tr::kBlockN;
      float s[HopperRows<Tr>::kSRegs];
      mbarrier_wait(k_full(stage), parity);
      start(s, stage);
      rows.scores(s, q_desc, k_desc(stage));
      rows.softmax(s, p, w.m0, n0);
      mbarrier_wait(v_full(stage), parity);
      rows.accumulate(s, v_desc(stage));
      release(stage);
    }
  } else if (tiles > 0) {
    // FlashAttention-3's overlap within a warpgroup: tile i's Q·Kᵀ and tile i-1's P·V are in flight together,
    // and tile i's softmax runs while P·V still does; O's rescale waits for it. With kPingpong the two
    // warpgroups take turns issuing their GEMMs (warpgroup 0 first): each waits at its own named barrier
    // (id 1 + group, both warpgroups' 256 threads), issues, then lets the other go. Each warpgroup has tiles + 1
    // turns; warpgroup 1 arrives once before its first and not after its last, so every phase completes.
    const auto my_turn = [&]() {
      if constexpr (Tr::kPingpong) named_barrier_sync(1 + group, 256);
    };
    const auto their_turn = [&](bool last) {
      if constexpr (Tr::kPingpong) {
        if (!(last && group == 1)) named_barrier_arrive(1 + (group ^ 1), 256);
      }
    };
    if constexpr (Tr::kPingpong) {
      if (group == 1) named_barrier_arrive(1, 256);
    }
    uint32_t pa[HopperRows<Tr>::kPSteps][4];
    {
      float s[HopperRows<Tr>::kSRegs];
      mbarrier_wait(k_full(0), 0);
      start(s, 0);
      my_turn();
      rows.issue_scores(s, q_desc, k_desc(0));
      their_turn(false);
      wgmma_wait<0>();
      fence_registers(s);
      rows.softmax(s, p, w.m0, (w.tile_end - 1) * Tr::kBlockN);
      HopperRows<Tr>::pack_p(s, pa);
    }
    for (int i = 1; i < tiles; ++i) {
      const int stage = i % Tr::kStages, previous = (i - 1) % Tr::kStages;
      float s[HopperRows<Tr>::kSRegs];
      float scale[2];
      mbarrier_wait(k_full(stage), (i / Tr::kStages) & 1);
      start(s, stage);
      mbarrier_wait(v_full(previous), ((i - 1) / Tr::kStages) & 1);
      my_turn();
      rows.issue_scores(s, q_desc, k_desc(stage));
      rows.issue_accumulate(pa, v_desc(previous), false);  // one fence for both groups
      their_turn(false);
      wgmma_wait<1>();  // Q·Kᵀ (the older group) done
      fence_registers(s);
      rows.softmax_scores(s, scale, p, w.m0, (w.tile_end - 1 - i) * Tr::kBlockN);
      wgmma_wait<0>();  // P·V done
      rows.fence_accumulate(pa);
      release(previous);
      rows.rescale(scale);
      HopperRows<Tr>::pack_p(s, pa);
    }
    const int last = (tiles - 1) % Tr::kStages;
    mbarrier_wait(v_full(last), ((tiles - 1) / Tr::kStages) & 1);
    my_turn();
    rows.issue_accumulate(pa, v_desc(last));
    their_turn(true);
    wgmma_wait<0>();
    rows.fence_accumulate(pa);
    release(last);
  }
  rows.store(p, w);
}

}  // namespace ortflash::cuda

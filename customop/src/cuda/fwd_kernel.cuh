// OrtFlash CUDA — the FlashAttention-2 forward kernel on tensor cores (mma.sync m16n8k16, sm_80+).
//
// One thread block owns kBlockM query rows of one (batch, query head) and, with split-KV, one
// slice of the key tiles. Each warp owns kMTiles 16-row slices of those rows and keeps their
// output accumulators and softmax state (row max, row sum) in registers for the whole key loop:
//   S = Q·Kᵀ (ldmatrix from shared, fp32 accumulate) → score transform + masks (log2 units)
//   → online softmax (rescale O, P = exp2(S - max)) → O += P·V (P re-packed from S registers,
//   V through ldmatrix.trans).
// K and V tiles stream in with cp.async: V(n) while Q·K(n)ᵀ and the softmax run, K(n-1) while
// P·V(n) runs. Key tiles are visited from last to first, so the tiles that need masking (the
// ragged end, the causal diagonal) come first; tiles wholly hidden by causality are never loaded.
// Bias and keep tiles (query rows x keys of the tile) stream in with K(n). Three families of variants
// (FwdTraits): plain (no masks; scores stay raw dot products until the exponent), masks in the
// accumulators (S starts at bias / scale, or -inf for a hidden key, then takes the plain path), and
// general (softcap, and the masks the accumulators cannot take, applied after Q·Kᵀ in log2 units).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "block_work.cuh"
#include "fwd_params.cuh"
#include "fwd_traits.cuh"
#include "mma_primitives.cuh"
#include "softmax.cuh"

#if !defined(ORTFLASH_FLOAT32_Q_REGISTERS)
#define ORTFLASH_FLOAT32_Q_REGISTERS 1
#endif

namespace ortflash::cuda {

// Enqueues cp.async copies of rows [row0, row0 + kRows) of a row-major tensor into a tile in the
// shared layout; rows at or past `rows_valid` and columns at or past `cols_valid` become zeros.
template <class Tr, int kRows>
__device__ __forceinline__ void load_tile_async(typename Tr::T* tile, const typename Tr::T* base, int64_t row_stride,
                                                int row0, int rows_valid, int cols_valid) {
  constexpr int kColumns = Tr::kLoadColumns;
  if constexpr (Tr::kThreads % kColumns == 0 && (kRows * kColumns) % Tr::kThreads == 0) {
    // A thread keeps one column; its rows advance by kRowStep, its source pointer by a stride. (Before,
    // head dim 96 split every copy's index into row and chunk: about ten address instructions per copy.)
    constexpr int kPerThread = kRows * kColumns / Tr::kThreads;
    constexpr int kRowStep = Tr::kThreads / kColumns;
    const int chunk = static_cast<int>(threadIdx.x) % kColumns;
    if (kColumns != Tr::kChunks && chunk >= Tr::kChunks) return;  // no such column in the layout
    const int first_row = static_cast<int>(threadIdx.x) / kColumns;
    const bool column_valid = chunk * Tr::kChunkElems < cols_valid;
    const typename Tr::T* src = base + (row0 + first_row) * row_stride + chunk * Tr::kChunkElems;
    const int64_t src_step = kRowStep * row_stride;
    if (column_valid && row0 + kRows <= rows_valid) {  // the common case: no bound to check per copy
#pragma unroll
      for (int it = 0; it < kPerThread; ++it) {
        cp_async_16(tile + Tr::Layout::offset(first_row + it * kRowStep, chunk), src, true);
        src += src_step;
      }
      return;
    }
#pragma unroll
    for (int it = 0; it < kPerThread; ++it) {
      const int row = first_row + it * kRowStep;
      const bool valid = column_valid && row0 + row < rows_valid;
      cp_async_16(tile + Tr::Layout::offset(row, chunk), valid ? src : base, valid);
      src += src_step;
    }
  } else {
    constexpr int kPerThread = kRows * Tr::kChunks / Tr::kThreads;
#pragma unroll
    for (int it = 0; it < kPerThread; ++it) {
      const int index = it * Tr::kThreads + static_cast<int>(threadIdx.x);
      const int row = index / Tr::kChunks;
      const int chunk = index % Tr::kChunks;
      const bool valid = row0 + row < rows_valid && chunk * Tr::kChunkElems < cols_valid;
      const typename Tr::T* src = valid ? base + (row0 + row) * row_stride + chunk * Tr::kChunkElems : base;
      cp_async_16(tile + Tr::Layout::offset(row, chunk), src, valid);
    }
  }
}

// Enqueues cp.async copies of the bias or keep entries of query rows [m0, m0 + kBlockM) and keys
// [n0, n0 + kBlockN) into a tile with `pitch` elements per row; a mask broadcast over query rows
// (row_stride 0) fills row 0 only. Entries past the query or key range become zeros. `base` is the
// (batch, head)'s query row 0, key 0; rows start on 16-byte boundaries (FwdParams::bias_chunks).
template <class Tr, class E>
__device__ __forceinline__ void load_mask_tile_async(E* tile, int pitch, const E* base, int64_t row_stride, int m0,
                                                     int n0, int q_len, int kv_len) {
  constexpr int kElems = 16 / int(sizeof(E));   // per 16-byte chunk
  constexpr int kChunks = Tr::kBlockN / kElems;  // per tile row
  static_assert(Tr::kBlockN % kElems == 0, "mask tile rows are whole 16-byte chunks");
  const int rows = row_stride == 0 ? 1 : Tr::kBlockM;
  for (int i = static_cast<int>(threadIdx.x); i < rows * kChunks; i += Tr::kThreads) {
    const int r = i / kChunks;
    const int c = (i % kChunks) * kElems;
    const int valid = m0 + r < q_len ? min(kElems, kv_len - (n0 + c)) : 0;
    const E* src = valid > 0 ? base + (m0 + r) * row_stride + (n0 + c) : base;
    cp_async_16_prefix(tile + r * pitch + c, src, valid > 0 ? valid * int(sizeof(E)) : 0);
  }
}

// As load_mask_tile_async for rows that do not come in 16-byte chunks (any strides, a key stride of 0
// included): plain element loads and shared stores, visible after the next __syncthreads.
template <class Tr, class E>
__device__ __forceinline__ void load_mask_tile_strided(E* tile, int pitch, const E* base, int64_t row_stride,
                                                       int64_t key_stride, int m0, int n0, int q_len, int kv_len) {
  const int rows = row_stride == 0 ? 1 : Tr::kBlockM;
#pragma unroll 1
  for (int i = static_cast<int>(threadIdx.x); i < rows * Tr::kBlockN; i += Tr::kThreads) {
    const int r = i / Tr::kBlockN;
    const int c = i % Tr::kBlockN;
    E value{};
    if (m0 + r < q_len && n0 + c < kv_len) value = base[(m0 + r) * row_stride + (n0 + c) * key_stride];
    shared_store(tile + r * pitch + c, value);
  }
}

// Calls fn(mt, half, nt) for every pair of this lane's score accumulators, s[mt][nt][2·half] and
// s[mt][nt][2·half + 1]: adjacent keys of one query row (row tile mt, rows +8·half, key tile nt).
template <int kMTiles, int kNTiles, class Fn>
__device__ __forceinline__ void for_each_score_pair(Fn&& fn) {
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) fn(mt, half, nt);
    }
  }
}

// |row max| in log2 units past which the fused multiply-subtract of the exponentials could be off by
// more than the exponent range (see the softmax in flash_fwd_kernel): 2^20 keeps it below 2^-5.
constexpr float kHugeLog2 = 1048576.0f;

// The masks-in-accumulator variant's starting score: bias / scale. A finite bfloat16 bias (up to
// finfo.min = -3.4e38) over the scale is clamped to ±kMaxStart, so it stays finite; every key past it
// weighs the same (exp2 of the difference of two equal scores), which only matters in a row whose visible
// keys all lie past -kMaxStart x scale. float16 biases (|bias| <= 65504, scale >= 1e-30) stay below it.
template <class T>
__device__ __forceinline__ float bias_over_scale(float bias, float inv_scale) {
  const float x = bias * inv_scale;
  if constexpr (!std::is_same_v<T, __half>) {
    return fabsf(bias) == INFINITY ? x : fmaxf(fminf(x, kMaxStart), -kMaxStart);
  } else {
    return x;
  }
}

// The bias in log2 units. A finite bias past FLT_MAX / log2(e) (bfloat16's or float32's finfo.min, an
// ordinary number to the contract) would overflow to -inf and read as a hidden key; it is clamped to
// ±FLT_MAX. float16 biases cannot overflow.
template <class T>
__device__ __forceinline__ float bias_to_log2(float bias) {
  const float x = bias * kLog2e;
  if constexpr (!std::is_same_v<T, __half>) {
    return fabsf(x) == INFINITY && fabsf(bias) != INFINITY ? copysignf(FLT_MAX, x) : x;
  } else {
    return x;
  }
}

// Two adjacent elements of a shared tile (a bias pair) as floats.
template <class T>
__device__ __forceinline__ void load_pair(const T* src, float& lo, float& hi) {
  if constexpr (sizeof(T) == 4) {
    lo = bits_to_float(shared_load_u32(src));
    hi = bits_to_float(shared_load_u32(src + 1));
  } else {
    unpack2<T>(shared_load_u32(src), lo, hi);
  }
}

// Shared-memory element offsets of the V values a lane feeds P·V in the float32 (3xTF32) kernel: the B fragment
// of k-step nt (keys 8nt..8nt+7) and output columns 8dt..8dt+7 is V[8nt + 2t][8dt + g] (b0) and
// V[8nt + 2t + 1][8dt + g] (b1): the keys permuted so that the A fragment is the S accumulators as they are
// (see flash_fwd_kernel). With the swizzled layout the 32 lanes' words fall in 32 distinct banks. As for
// LdmatrixAddress, the swizzled chunk of column 8dt + g depends on dt only through dt & 3 next to the lane's
// values, so every offset is a register plus an immediate.
template <class Tr>
struct VScalarOffsets {
  int even[4], odd[4];  // per dt & 3: rows 2t and 2t + 1

  __device__ __forceinline__ explicit VScalarOffsets(int lane) {
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int chunk = 2 * j + g / 4;
      even[j] = Tr::Layout::offset(2 * t, chunk) + g % 4;
      odd[j] = Tr::Layout::offset(2 * t + 1, chunk) + g % 4;
    }
  }

  // Offsets of b0 (row 8nt + 2t) and b1 (row 8nt + 2t + 1) for output column tile dt.
  __device__ __forceinline__ int b0(int nt, int dt) const { return base(nt, dt) + even[dt & 3]; }
  __device__ __forceinline__ int b1(int nt, int dt) const { return base(nt, dt) + odd[dt & 3]; }

 private:
  __device__ __forceinline__ static int base(int nt, int dt) {
    return 8 * nt * Tr::Layout::kRowElems + 2 * (dt & ~3) * Tr::kChunkElems;
  }
};

// The epilogue of a thread's share of one query row `row` (columns quad_col + 8·dt, accumulators
// o[dt][2·half], o[dt][2·half + 1]): the normalised output, or, with split-KV, the split's normalised
// partial output, row max (log2 units) and sum of weights for the combine. `lane_sum` is this lane's part
// of the row sum (the quad is summed here); row_max is in the kernel's score units (times to_log2: log2).
template <class T, int kDTiles>
__device__ __forceinline__ void store_output_row(const FwdParams& p, const BlockWork& w, int row, int quad_col,
                                                 const float (&o)[kDTiles][4], int half, float row_max, float lane_sum,
                                                 float to_log2) {
  const float sum = quad_sum(lane_sum);
  if (row >= p.q_len) return;
  const bool masked = row_max == -INFINITY;
  const float inv_sum = masked ? 0.0f : 1.0f / sum;
  const int64_t rows_total = int64_t(p.batch) * p.q_heads * p.q_len;
  const int64_t row_index = (int64_t(w.batch) * p.q_heads + w.head) * p.q_len + row;
  if (p.num_splits > 1) {
    float* dst = p.partial_out + (w.split * rows_total + row_index) * p.v_head_dim;
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      const int col = dt * 8 + quad_col;
      if (col < p.v_head_dim) {
        *reinterpret_cast<float2*>(dst + col) = make_float2(o[dt][2 * half] * inv_sum, o[dt][2 * half + 1] * inv_sum);
      }
    }
    if (quad_col == 0) {
      p.partial_max[w.split * rows_total + row_index] = row_max * to_log2;  // log2 units
      p.partial_sum[w.split * rows_total + row_index] = sum;
    }
  } else {
    T* dst = static_cast<T*>(p.out) + w.batch * p.out_stride[0] + w.head * p.out_stride[1] + row * p.out_stride[2];
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      const int col = dt * 8 + quad_col;
      if (col >= p.v_head_dim) continue;
      const float lo = finalize_output(o[dt][2 * half], inv_sum, masked, p);
      const float hi = finalize_output(o[dt][2 * half + 1], inv_sum, masked, p);
      if constexpr (sizeof(T) == 4) {
        *reinterpret_cast<float2*>(dst + col) = make_float2(lo, hi);
      } else {
        *reinterpret_cast<uint32_t*>(dst + col) = pack2<T>(lo, hi);
      }
    }
  }
}

// kSplitTiles: splits a K or V tile (kBlockN rows in the shared layout) into its tf32 parts, the hi parts in
// place and the lo parts into `lo_tile`, every thread a share of its chunks. Visible after the next barrier.
template <class Tr>
__device__ __forceinline__ void split_tile(typename Tr::T* tile, typename Tr::T* lo_tile) {
  constexpr int kChunksPerTile = Tr::kBlockN * Tr::kChunks;
#pragma unroll 4
  for (int i = static_cast<int>(threadIdx.x); i < kChunksPerTile; i += Tr::kThreads) {
    const int offset = Tr::Layout::offset(i / Tr::kChunks, i % Tr::kChunks);
    split_chunk_tf32(tile + offset, lo_tile + offset);
  }
}

template <class Tr>
__global__ void __launch_bounds__(Tr::kThreads) flash_fwd_kernel(const FwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  // cp.async and bf16 mma need sm_80. The library is also built for sm_75 (its SIMT kernels run
  // there), but choose_path never launches this kernel below compute capability 8.
  __trap();
#else
  using T = typename Tr::T;
  constexpr int kMTiles = Tr::kMTiles;
  constexpr int kNTiles = Tr::kNTiles;
  constexpr int kDTiles = Tr::kDTiles;

  ORTFLASH_DYNAMIC_SMEM(unsigned char, smem);
  T* const sQ = reinterpret_cast<T*>(smem);
  T* const sK = sQ + Tr::kQTileElems;
  T* const sV = sK + Tr::kKvTileElems;
  T* const sBias = sV + Tr::kKvTileElems;  // kBiasTile only
  uint8_t* const sKeep = reinterpret_cast<uint8_t*>(sBias) + (Tr::kBiasTile ? Tr::kBiasTileBytes : 0);  // kKeepTile only
  // kSplitTiles: the lo tf32 parts of the K and V tiles (the hi parts replace the tiles' floats).
  T* const sKlo = reinterpret_cast<T*>(smem + Tr::kSmemBytes - Tr::kSplitTileBytes);
  T* const sVlo = sKlo + Tr::kKvTileElems;

  const BlockWork w = block_work<Tr>(p);
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp_row0 = (static_cast<int>(threadIdx.x) / 32) * Tr::kRowsPerWarp;
  // ldmatrix row addresses (see the fragment layouts in mma_primitives.cuh):
  //  Q (A operand):  rows +0..15 of the 16-row tile, chunk +0 for lanes 0-15, +1 for lanes 16-31;
  //  K (B operand):  keys +0..7 | +0..7 (chunk +1) | +8..15 | +8..15 (chunk +1), per 8 lanes;
  //  V (B operand, transposed): keys +0..15, chunk +0 for lanes 0-15, +1 for lanes 16-31.
  const typename Tr::Address q_addr(smem_address(sQ), warp_row0 + (lane & 15), lane >> 4);
  const typename Tr::Address k_addr(smem_address(sK), (lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1);
  const typename Tr::Address v_addr(smem_address(sV), lane & 15, lane >> 4);
  const VScalarOffsets<Tr> v_scalar(lane);  // float32: V through plain loads (no ldmatrix.trans of 32-bit words)
  const uint32_t k_lo_offset = smem_address(sKlo) - smem_address(sK);  // kSplitTiles: bytes from a K hi row to its lo row
  const int quad_row = lane / 4;      // g: accumulator row within an mma tile (and +8)
  const int quad_col = 2 * (lane % 4);  // 2t: first accumulator column within an 8-column tile
  // Query row and key of score accumulator e of row tile mt and key tile nt (keys from n0).
  const auto score_row = [&](int mt, int e) { return w.m0 + warp_row0 + mt * 16 + quad_row + (e >> 1) * 8; };
  const auto score_col = [&](int n0, int nt, int e) { return n0 + nt * 8 + quad_col + (e & 1); };

  const HeadInputs<T> in = head_inputs<T>(p, w);
  // Every bias and keep tile (general variant with kMaskTiles; masks-in-accumulator variants) goes through
  // shared memory, streamed in with K: by cp.async when the rows come in 16-byte chunks, else element by element.
  const bool bias_tile = Tr::kAccumBiasIn || (Tr::kMaskTiles && p.bias != nullptr);
  const bool keep_tile = Tr::kAccumKeepIn || (Tr::kMaskTiles && p.keep != nullptr);
  const auto load_mask_tiles = [&](int n0) {
    if constexpr (Tr::kBiasTile) {
      const T* const bias = static_cast<const T*>(p.bias) + in.bias;
      if (bias_tile && p.bias_chunks) {
        load_mask_tile_async<Tr>(sBias, Tr::kBiasPitch, bias, p.bias_stride[2], w.m0, n0, p.q_len, p.kv_len);
      } else if (bias_tile) {
        load_mask_tile_strided<Tr>(sBias, Tr::kBiasPitch, bias, p.bias_stride[2], p.bias_stride[3], w.m0, n0, p.q_len,
                                   p.kv_len);
      }
    }
    if constexpr (Tr::kKeepTile) {
      const uint8_t* const keep = p.keep + in.keep;
      if (keep_tile && p.keep_chunks) {
        load_mask_tile_async<Tr>(sKeep, Tr::kKeepPitch, keep, p.keep_stride[2], w.m0, n0, p.q_len, p.kv_len);
      } else if (keep_tile) {
        load_mask_tile_strided<Tr>(sKeep, Tr::kKeepPitch, keep, p.keep_stride[2], p.keep_stride[3], w.m0, n0, p.q_len,
                                   p.kv_len);
      }
    }
  };
  // This lane's first entry of each tile (row warp_row0 + quad_row, column quad_col) and the step to
  // its rows 8 further down (0 for a tile of one broadcast row).
  const int bias_row8 = p.bias_stride[2] == 0 ? 0 : 8 * Tr::kBiasPitch;
  const int keep_row8 = p.keep_stride[2] == 0 ? 0 : 8 * Tr::kKeepPitch;
  const T* const bias_lane = sBias + (bias_row8 / 8) * (warp_row0 + quad_row) + quad_col;
  const uint8_t* const keep_lane = sKeep + (keep_row8 / 8) * (warp_row0 + quad_row) + quad_col;
  // The shared bias / keep pair of score pair (mt, half, nt) (see for_each_score_pair).
  const auto bias_pair = [&](int mt, int half, int nt) { return bias_lane + (2 * mt + half) * bias_row8 + nt * 8; };
  const auto keep_pair = [&](int mt, int half, int nt) { return keep_lane + (2 * mt + half) * keep_row8 + nt * 8; };

  float o[kMTiles][kDTiles][4];
  float row_max[kMTiles][2];
  float row_sum[kMTiles][2];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][dt][e] = 0.0f;
    }
    row_max[mt][0] = row_max[mt][1] = -INFINITY;
    row_sum[mt][0] = row_sum[mt][1] = 0.0f;
  }

  const bool plain_scores = !Tr::kMaskInputs || (p.softcap <= 0.0f && p.bias == nullptr);
  // The plain variant (launched only with a positive scale) keeps its scores unscaled through the row
  // max: scaling by a positive factor keeps the order (and fl(c·max) = max fl(c·s)), so each weight is
  // one FFMA and one ex2, exp2(s·c − max·c), instead of a multiply, a subtract and the ex2. Its row_max
  // is then in units of the raw dot product; to_log2 turns it (and differences of it) into log2 units.
  // The general variant's scores are in log2 units from the start (to_log2 = 1).
  constexpr bool raw_scores = !Tr::kMaskInputs;
  const float to_log2 = raw_scores ? p.scale_log2 : 1.0f;

  // float32 at head dims up to 64: Q's tf32 parts stay in registers for the whole key loop (64 per 16-row tile)
  // instead of being loaded and split again for every key tile (nvcc 11.8: 208-250 registers instead of 156-168, no
  // spills; two blocks per SM instead of three). Untimed: ORTFLASH_FLOAT32_Q_REGISTERS=0 (a tuning macro) turns it off.
  constexpr bool kQInRegisters = Tr::kTf32 && Tr::kHeadDim <= 64 && ORTFLASH_FLOAT32_Q_REGISTERS != 0;
  Tf32Fragment q_parts[kQInRegisters ? Tr::kKSteps : 1][kQInRegisters ? kMTiles : 1];

  if (w.tile_begin < w.tile_end) {
    load_tile_async<Tr, Tr::kBlockM>(sQ, in.q, p.q_stride[2], w.m0, p.q_len, p.head_dim);
    load_tile_async<Tr, Tr::kBlockN>(sK, in.k, p.k_stride[2], (w.tile_end - 1) * Tr::kBlockN, p.kv_len,
                                     p.head_dim);
    load_mask_tiles((w.tile_end - 1) * Tr::kBlockN);
    cp_async_commit();
  }

  for (int tile = w.tile_end - 1; tile >= w.tile_begin; --tile) {
    const int n0 = tile * Tr::kBlockN;
    cp_async_wait<0>();
    __syncthreads();  // K(tile) visible to all warps; every warp is done reading V(tile + 1)
    load_tile_async<Tr, Tr::kBlockN>(sV, in.v, p.v_stride[2], n0, p.kv_len, p.v_head_dim);
    cp_async_commit();
    if constexpr (Tr::kSplitTiles) {
      split_tile<Tr>(sK, sKlo);
      __syncthreads();  // K(tile)'s parts visible to all warps
    }

    // ---- S = Q·Kᵀ (kMaskAccum: starting from bias / scale, -inf for hidden keys) ----
    float s[kMTiles][kNTiles][4];
    for_each_score_pair<kMTiles, kNTiles>([&](int mt, int half, int nt) {
      float start[2] = {0.0f, 0.0f};
      if constexpr (Tr::kAccumBiasIn) {
        load_pair<T>(bias_pair(mt, half, nt), start[0], start[1]);
        start[0] = bias_over_scale<T>(start[0], p.inv_scale);
        start[1] = bias_over_scale<T>(start[1], p.inv_scale);
      }
      if constexpr (Tr::kAccumKeepIn) {
        const uint32_t pair = shared_load_u16(keep_pair(mt, half, nt));
        if ((pair & 0xffu) == 0) start[0] = -INFINITY;
        if ((pair >> 8) == 0) start[1] = -INFINITY;
      }
      s[mt][nt][2 * half] = start[0];
      s[mt][nt][2 * half + 1] = start[1];
    });
    if constexpr (Tr::kTf32) {
      // 3xTF32 with the small terms (lo·hi + hi·lo, about 2^-11 of the products) in accumulators of their own, added
      // once at the end (mma_3xtf32_apart): the large sums meet kKSteps truncations instead of 3·kKSteps (the first GPU
      // run: scores near 1e4 missed the fp32 tolerance with the three mma of a k-step on one accumulator; a second
      // pass over the head dim for the small terms met it but read Q and K's hi parts twice, 20-25% slower).
      // The same ldmatrix addressing gives the m16n8k8 .tf32 fragments (8 head-dim columns = two chunks).
      const auto k_pairs = [&](int np, int ks, Tf32Pair (&b)[4]) {
        uint32_t raw[4];  // raw[0], raw[1]: key tile 2np (k = t, t + 4); raw[2], raw[3]: key tile 2np + 1
        ldmatrix_x4(raw, k_addr.at(np * 16, ks));
        if constexpr (Tr::kSplitTiles) {  // the tile holds the hi parts; the lo parts at the same place of sKlo
          uint32_t lo[4];
          ldmatrix_x4(lo, k_addr.at(np * 16, ks) + k_lo_offset);
#pragma unroll
          for (int i = 0; i < 4; ++i) b[i] = Tf32Pair{raw[i], lo[i]};
        } else {
#pragma unroll
          for (int i = 0; i < 4; ++i) b[i] = split_tf32(bits_to_float(raw[i]));
        }
      };
      const auto q_fragment = [&](int mt, int ks) {
        uint32_t raw[4];
        ldmatrix_x4(raw, q_addr.at(mt * 16, ks));
        return split_fragment(bits_to_float(raw[0]), bits_to_float(raw[1]), bits_to_float(raw[2]), bits_to_float(raw[3]));
      };
      if constexpr (kQInRegisters) {
        // Q's parts in registers (split at the first tile): key-tile pairs outer, small accumulators for one pair.
#pragma unroll
        for (int np = 0; np < kNTiles / 2; ++np) {
          float small[kMTiles][2][4] = {};
#pragma unroll
          for (int ks = 0; ks < Tr::kKSteps; ++ks) {
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt) {
              if (np == 0 && tile == w.tile_end - 1) q_parts[ks][mt] = q_fragment(mt, ks);
            }
            Tf32Pair b[4];
            k_pairs(np, ks, b);
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt) {
              mma_tf32_passes_apart<Tr::kTf32Passes>(small[mt][0], s[mt][2 * np], q_parts[ks][mt], b[0], b[1]);
              mma_tf32_passes_apart<Tr::kTf32Passes>(small[mt][1], s[mt][2 * np + 1], q_parts[ks][mt], b[2], b[3]);
            }
          }
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) {
            add_small_terms<Tr::kTf32Passes>(s[mt][2 * np], small[mt][0]);
            add_small_terms<Tr::kTf32Passes>(s[mt][2 * np + 1], small[mt][1]);
          }
        }
      } else {
        // Q from shared memory: head-dim steps outer (each Q fragment loaded and split once), small accumulators
        // for the whole tile.
        float small[kMTiles][kNTiles][4] = {};
#pragma unroll
        for (int ks = 0; ks < Tr::kKSteps; ++ks) {
          Tf32Fragment a[kMTiles];
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) a[mt] = q_fragment(mt, ks);
#pragma unroll
          for (int np = 0; np < kNTiles / 2; ++np) {
            Tf32Pair b[4];
            k_pairs(np, ks, b);
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt) {
              mma_tf32_passes_apart<Tr::kTf32Passes>(small[mt][2 * np], s[mt][2 * np], a[mt], b[0], b[1]);
              mma_tf32_passes_apart<Tr::kTf32Passes>(small[mt][2 * np + 1], s[mt][2 * np + 1], a[mt], b[2], b[3]);
            }
          }
        }
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt) add_small_terms<Tr::kTf32Passes>(s[mt][nt], small[mt][nt]);
        }
      }
    } else {
#pragma unroll
      for (int ks = 0; ks < Tr::kKSteps; ++ks) {
        uint32_t a[kMTiles][4];
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          ldmatrix_x4(a[mt], q_addr.at(mt * 16, ks));
        }
#pragma unroll
        for (int np = 0; np < kNTiles / 2; ++np) {
          uint32_t b[4];  // b[0], b[1]: key tile 2np; b[2], b[3]: key tile 2np + 1
          ldmatrix_x4(b, k_addr.at(np * 16, ks));
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) {
            Mma16816<T>::run(s[mt][2 * np], a[mt], b[0], b[1]);
            Mma16816<T>::run(s[mt][2 * np + 1], a[mt], b[2], b[3]);
          }
        }
      }
    }

    // ---- scores → log2 units (general variant; the plain one keeps raw scores), masks ----
    // Two separate passes, each behind one uniform branch: folded into one per-element loop, ptxas
    // kept a branch, a register copy and the predicated mask tests for every score of every tile
    // (~190 issue slots per tile next to 256 mma at head dim 128), masked tile or not.
    if constexpr (Tr::kMaskInputs) {
      if (plain_scores) {
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) s[mt][nt][e] *= p.scale_log2;
          }
        }
      } else if constexpr (Tr::kMaskTiles) {
        // s·scale·log2(e) + bias·log2(e) (softcap: softcap·tanh(s·scale / softcap) first), the bias pair of
        // each accumulator row from the shared tile.
        const bool softcap = p.softcap > 0.0f;
        for_each_score_pair<kMTiles, kNTiles>([&](int mt, int half, int nt) {
          float bias[2] = {0.0f, 0.0f};
          if (bias_tile) load_pair<T>(bias_pair(mt, half, nt), bias[0], bias[1]);
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            float& score = s[mt][nt][2 * half + j];
            score = softcap ? fmaf(p.softcap * tanhf(score * p.scale * p.softcap_inv), kLog2e, bias_to_log2<T>(bias[j]))
                            : fmaf(score, p.scale_log2, bias_to_log2<T>(bias[j]));
          }
        });
      } else {  // no room for the tiles: bias from global memory
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int row = score_row(mt, e);
              const int col = score_col(n0, nt, e);
              float bias = 0.0f;
              if (p.bias != nullptr && row < p.q_len && col < p.kv_len) {
                bias = to_float(static_cast<const T*>(
                    p.bias)[in.bias + row * p.bias_stride[2] + col * p.bias_stride[3]]);
              }
              s[mt][nt][e] = score_to_log2(s[mt][nt][e], bias, p);
            }
          }
        }
      }
    }
    const bool tile_needs_mask = (Tr::kMaskInputs && p.keep != nullptr) || n0 + Tr::kBlockN > p.kv_len ||
                                 (p.causal && n0 + Tr::kBlockN - 1 > w.m0 + p.causal_offset);
    if (Tr::kMaskTiles && keep_tile) {
      for_each_score_pair<kMTiles, kNTiles>([&](int mt, int half, int nt) {
        const uint32_t pair = shared_load_u16(keep_pair(mt, half, nt));
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int e = 2 * half + j;
          const bool kept = (pair >> (8 * j)) & 0xffu;
          if (!kept || !key_visible<false>(p, 0, score_row(mt, e), score_col(n0, nt, e))) s[mt][nt][e] = -INFINITY;
        }
      });
    } else if (tile_needs_mask) {
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            if (!key_visible<Tr::kMaskInputs && !Tr::kMaskTiles>(p, in.keep, score_row(mt, e), score_col(n0, nt, e))) {
              s[mt][nt][e] = -INFINITY;
            }
          }
        }
      }
    }

    // ---- online softmax: new row max, rescale O and the row sum, P = exp2(S - max) ----
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      float scale[2];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float tile_max = row_max[mt][half];
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          tile_max = fmaxf(tile_max, fmaxf(s[mt][nt][2 * half], s[mt][nt][2 * half + 1]));
        }
        tile_max = quad_max(tile_max);
        scale[half] = rescale_factor(row_max[mt][half], tile_max, to_log2);
        row_max[mt][half] = tile_max;
        row_sum[mt][half] *= scale[half];
      }
      // Once the running maxima settle, most tiles leave all 16 rows of an mma tile unchanged
      // (factor exactly 1): skipping the multiply then changes nothing and saves kDTiles * 4
      // multiplies per thread, the largest non-mma cost of the loop at head dim 128.
      if (__any_sync(0xffffffffu, scale[0] != 1.0f || scale[1] != 1.0f)) {
#pragma unroll
        for (int dt = 0; dt < kDTiles; ++dt) {
          o[mt][dt][0] *= scale[0];
          o[mt][dt][1] *= scale[0];
          o[mt][dt][2] *= scale[1];
          o[mt][dt][3] *= scale[1];
        }
      }
      // The FFMA below computes s·c exactly but subtracts max·c rounded; their difference at s = max is
      // that rounding, up to |max·c|·2^-25: harmless (one factor shared by the row) until it passes the
      // exponent range. With a bfloat16 bias in the accumulators a row may see only huge biases (a clamped
      // finfo.min: max·c near -FLT_MAX); rows of a warp with such a max round both products. (float16
      // biases keep |max·c| near |bias|·log2(e) <= 94500.)
      const bool huge_max = Tr::kAccumBiasIn && !std::is_same_v<T, __half> &&
                            __any_sync(0xffffffffu, !(fabsf(row_max[mt][0] * to_log2) < kHugeLog2) ||
                                                        !(fabsf(row_max[mt][1] * to_log2) < kHugeLog2));
      if (!huge_max) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const float subtract = max_for_exp(row_max[mt][half]) * to_log2;
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
            for (int e = 2 * half; e < 2 * half + 2; ++e) {
              const float weight = fast_exp2(fmaf(s[mt][nt][e], to_log2, -subtract));
              s[mt][nt][e] = weight;
              row_sum[mt][half] += weight;  // this lane's columns; the quad is summed at the end
            }
          }
        }
      } else {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const float subtract = max_for_exp(row_max[mt][half]) * to_log2;
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
            for (int e = 2 * half; e < 2 * half + 2; ++e) {
              const float weight = fast_exp2(__fmul_rn(s[mt][nt][e], to_log2) - subtract);
              s[mt][nt][e] = weight;
              row_sum[mt][half] += weight;
            }
          }
        }
      }
    }

    cp_async_wait<0>();
    __syncthreads();  // V(tile) visible; every warp is done reading K(tile)
    if (tile > w.tile_begin) {
      load_tile_async<Tr, Tr::kBlockN>(sK, in.k, p.k_stride[2], n0 - Tr::kBlockN, p.kv_len, p.head_dim);
      load_mask_tiles(n0 - Tr::kBlockN);
      cp_async_commit();
    }
    if constexpr (Tr::kSplitTiles) {
      split_tile<Tr>(sV, sVlo);
      __syncthreads();  // V(tile)'s parts visible to all warps
    }

    // ---- O += P·V ----
    if constexpr (Tr::kTf32) {
      // k-step nt: the 8 keys of score tile nt, in the order (2t, 2t + 1) -> (k = t, k = t + 4), so that the A
      // fragment (g, t), (g+8, t), (g, t+4), (g+8, t+4) is s[mt][nt][0], [2], [1], [3]; V's rows follow it.
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        Tf32Fragment pa[kMTiles];
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          pa[mt] = split_fragment<true>(s[mt][nt][0], s[mt][nt][2], s[mt][nt][1], s[mt][nt][3]);  // weights: finite
        }
#pragma unroll
        for (int dt = 0; dt < kDTiles; ++dt) {
          Tf32Pair b0, b1;
          if constexpr (Tr::kSplitTiles) {
            b0 = Tf32Pair{shared_load_u32(sV + v_scalar.b0(nt, dt)), shared_load_u32(sVlo + v_scalar.b0(nt, dt))};
            b1 = Tf32Pair{shared_load_u32(sV + v_scalar.b1(nt, dt)), shared_load_u32(sVlo + v_scalar.b1(nt, dt))};
          } else {
            b0 = split_tf32(bits_to_float(shared_load_u32(sV + v_scalar.b0(nt, dt))));
            b1 = split_tf32(bits_to_float(shared_load_u32(sV + v_scalar.b1(nt, dt))));
          }
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) mma_tf32_passes<Tr::kTf32Passes>(o[mt][dt], pa[mt], b0, b1);
        }
      }
    } else {
#pragma unroll
      for (int kp = 0; kp < Tr::kBlockN / 16; ++kp) {
        uint32_t pa[kMTiles][4];
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          // The S accumulators of key tiles 2kp and 2kp+1 are exactly the A fragment of P.
          pa[mt][0] = pack2<T>(s[mt][2 * kp][0], s[mt][2 * kp][1]);
          pa[mt][1] = pack2<T>(s[mt][2 * kp][2], s[mt][2 * kp][3]);
          pa[mt][2] = pack2<T>(s[mt][2 * kp + 1][0], s[mt][2 * kp + 1][1]);
          pa[mt][3] = pack2<T>(s[mt][2 * kp + 1][2], s[mt][2 * kp + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < kDTiles / 2; ++dp) {
          uint32_t b[4];  // b[0], b[1]: output columns 16dp..+7; b[2], b[3]: columns 16dp+8..+15
          ldmatrix_x4_trans(b, v_addr.at(kp * 16, dp));
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) {
            Mma16816<T>::run(o[mt][2 * dp], pa[mt], b[0], b[1]);
            Mma16816<T>::run(o[mt][2 * dp + 1], pa[mt], b[2], b[3]);
          }
        }
      }
    }
  }

  // ---- epilogue: normalise and store (or hand the split's partial result to the combine) ----
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      store_output_row<T>(p, w, score_row(mt, 2 * half), quad_col, o[mt], half, row_max[mt][half], row_sum[mt][half], to_log2);
    }
  }
#endif
}

}  // namespace ortflash::cuda

// OrtFlash CUDA — which query rows and key tiles a thread block of a tiled forward kernel (tensor-core
// or SIMT) works on. Tr supplies kBlockM (query rows per block) and kBlockN (keys per tile).
#pragma once

#include <climits>

#include "cuda_compat.cuh"
#include "fwd_params.cuh"

namespace ortflash::cuda {

// Which query rows and key tiles a block works on.
struct BlockWork {
  int batch;
  int head;
  int split;
  int m0;              // first query row
  int tile_begin;      // key tiles [tile_begin, tile_end)
  int tile_end;
};

template <class Tr>
__device__ __forceinline__ BlockWork block_work(const FwdParams& p) {
  const int num_m_blocks = (p.q_len + Tr::kBlockM - 1) / Tr::kBlockM;
  // Query blocks vary fastest, so blocks running together share one head's K/V in L2.
  // 32-bit division: the grid has at most 2^31 - 1 blocks (checked at launch).
  unsigned index = blockIdx.x;
  const int m_slot = static_cast<int>(index % unsigned(num_m_blocks));
  index /= unsigned(num_m_blocks);
  BlockWork w;
  w.split = static_cast<int>(index % unsigned(p.num_splits));
  index /= unsigned(p.num_splits);
  w.head = static_cast<int>(index % unsigned(p.q_heads));
  w.batch = static_cast<int>(index / unsigned(p.q_heads));
  // Causal: the blocks with the most visible keys (the last rows) start first.
  const int m_block = p.causal ? num_m_blocks - 1 - m_slot : m_slot;
  w.m0 = m_block * Tr::kBlockM;

  int key_begin = 0;
  int key_end = p.kv_len;
  if (p.causal) {
    const int last_row = min(w.m0 + Tr::kBlockM, p.q_len) - 1;
    key_end = max(0, min(key_end, last_row + p.causal_offset + 1));
  }
  if (p.live_ranges != nullptr) {
    // The union of the ranges of the row slices the block's rows lie in.
    const KeyRange* const ranges = p.live_ranges + (w.batch * p.q_heads + w.head) * p.live_slices;
    const int last_slice = (min(w.m0 + Tr::kBlockM, p.q_len) - 1) / kLiveRows;
    int begin = INT_MAX, end = 0;
    for (int s = w.m0 / kLiveRows; s <= last_slice; ++s) {
      const KeyRange r = ranges[s];
      if (r.begin < r.end) {
        begin = min(begin, r.begin);
        end = max(end, r.end);
      }
    }
    key_begin = end > 0 ? begin : 0;
    key_end = min(key_end, end);
  }
  const int visible_tiles = (key_end + Tr::kBlockN - 1) / Tr::kBlockN;
  const int all_tiles = (p.kv_len + Tr::kBlockN - 1) / Tr::kBlockN;
  const int tiles_per_split = (all_tiles + p.num_splits - 1) / p.num_splits;
  w.tile_begin = max(w.split * tiles_per_split, key_begin / Tr::kBlockN);
  w.tile_end = min(visible_tiles, w.split * tiles_per_split + tiles_per_split);
  return w;
}

// Where a block's (batch, query head) starts in each input: q/k/v row 0 (k and v of the head's
// key/value head) and the bias/keep element offsets of query row 0, key 0.
template <class T>
struct HeadInputs {
  const T* q;
  const T* k;
  const T* v;
  int64_t bias;
  int64_t keep;
};

template <class T>
__device__ __forceinline__ HeadInputs<T> head_inputs(const FwdParams& p, const BlockWork& w) {
  const int kv_head = w.head / p.group;
  HeadInputs<T> in;
  in.q = static_cast<const T*>(p.q) + w.batch * p.q_stride[0] + w.head * p.q_stride[1];
  in.k = static_cast<const T*>(p.k) + w.batch * p.k_stride[0] + kv_head * p.k_stride[1];
  in.v = static_cast<const T*>(p.v) + w.batch * p.v_stride[0] + kv_head * p.v_stride[1];
  in.bias = w.batch * p.bias_stride[0] + w.head * p.bias_stride[1];
  in.keep = w.batch * p.keep_stride[0] + w.head * p.keep_stride[1];
  return in;
}

}  // namespace ortflash::cuda

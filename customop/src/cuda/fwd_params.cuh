// OrtFlash CUDA — the by-value parameter block every forward kernel receives. Built once from
// AttentionParams in flash_attention_cuda.cu (make_fwd_params), after validation.
#pragma once

#include <cstdint>

namespace ortflash::cuda {

constexpr int kGenericWarps = 4;  // query rows (one per warp) per block of the generic kernel
constexpr int kMaxSplits = 128;   // split-KV factor limit (the combine kernel keeps one weight per split)

// Query rows per live key range (live_keys.cuh, live_rows.cuh); a block takes the union of the ranges of the
// slices its rows lie in.
constexpr int kLiveRows = 64;

// Keys [begin, end) may be live for the rows a range covers; every other key is dead to them.
struct KeyRange {
  int begin = 0, end = 0;
};

struct FwdParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  const void* bias = nullptr;     // element type = the kernel's T; nullptr = none
  const uint8_t* keep = nullptr;  // bool as one byte; nullptr = none

  int batch = 0;
  int q_heads = 0;
  int kv_heads = 0;
  int group = 1;  // q_heads / kv_heads: query head h reads key/value head h / group
  int q_len = 0;
  int kv_len = 0;
  int head_dim = 0;
  int v_head_dim = 0;

  // Element strides {batch, head, row}; the last dimension is contiguous.
  int64_t q_stride[3] = {0, 0, 0};
  int64_t k_stride[3] = {0, 0, 0};
  int64_t v_stride[3] = {0, 0, 0};
  int64_t out_stride[3] = {0, 0, 0};
  // {batch, head, query, key}; 0 = broadcast.
  int64_t bias_stride[4] = {0, 0, 0, 0};
  int64_t keep_stride[4] = {0, 0, 0, 0};
  // Whether bias / keep rows can be copied in 16-byte chunks (16-byte aligned rows, contiguous keys):
  // then the tensor-core kernel stages them in shared memory (FwdTraits::kMaskTiles).
  bool bias_chunks = false;
  bool keep_chunks = false;

  float scale = 1.0f;       // scores = scale * q.k
  float scale_log2 = 1.0f;  // scale * log2(e): the whole score transform when no softcap and no bias
  float inv_scale = 1.0f;   // 1 / scale: the bias-in-accumulator variant starts the scores at bias / scale
  float softcap = 0.0f;     // > 0: softcap * tanh(scores / softcap)
  float softcap_inv = 0.0f; // 1 / softcap (no division in the key loop)
  bool causal = false;
  int causal_offset = 0;    // key j visible to query i iff j <= i + causal_offset
  bool masked_rows_nan = false;

  // Split-KV (flash-decoding): with num_splits > 1 every block covers one slice of the keys and
  // writes its normalised partial output, row max and sum of weights to scratch; a combine kernel
  // merges. Max and sum stay apart rather than as one log-sum-exp: max + log2(sum) loses log2(sum)
  // once |max| passes about 2^24 (a -1e9 or finfo.min bias masking a whole row), and the combine
  // would then weigh splits equally instead of by their sums.
  int num_splits = 1;
  float* partial_out = nullptr;  // [num_splits][batch * q_heads * q_len][v_head_dim]
  float* partial_max = nullptr;  // [num_splits][batch * q_heads * q_len], log2 units, -inf = no key
  float* partial_sum = nullptr;  // [num_splits][batch * q_heads * q_len], sum of 2^(score - max)

  // Per (batch, query head, slice of kLiveRows query rows); nullptr = every key may be live. Kernels that use
  // block_work skip the key tiles wholly outside their range; the others may ignore it (dead keys weigh 0 either way).
  const KeyRange* live_ranges = nullptr;
  int live_slices = 0;  // slices per (batch, query head): ceil(q_len / kLiveRows)
};

}  // namespace ortflash::cuda

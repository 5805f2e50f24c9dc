// OrtFlash — the kernel-facing description of one attention call.
//
// Built once by the ONNX Runtime adapter (src/ort) or by a test/benchmark, passed by value to
// flash_attention_cpu / flash_attention_cuda. Nothing here knows about ONNX Runtime.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ortflash {

enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// 0 none; 1 upper-left (key j visible to query i iff j <= i);
// 2 lower-right (j <= i + kv_len - q_len, the KV-cache case). Values match the op attribute.
enum class CausalAlignment : int32_t { kNone = 0, kUpperLeft = 1, kLowerRight = 2 };

// What a query row with no visible key yields. Values match the op attribute's order.
enum class MaskedRows : int32_t { kZero = 0, kNaN = 1 };

// A parallel-for supplied by the caller (ONNX Runtime's intra-op pool in the op).
// Runs fn(data, i) for every i in [0, total); may run them concurrently. A null runner means
// "run serially on the calling thread".
struct ParallelRunner {
  void (*parallel_for)(void* self, void (*fn)(void* data, size_t i), size_t total, void* data) = nullptr;
  void* self = nullptr;
};

// Logical shapes (4-D, rank-3 callers set batch = N, heads = 1):
//   q    (batch, q_heads,  q_len,  head_dim)
//   k    (batch, kv_heads, kv_len, head_dim)
//   v    (batch, kv_heads, kv_len, v_head_dim)
//   out  (batch, q_heads,  q_len,  v_head_dim)
//   bias (broadcast to batch, q_heads, q_len, kv_len), element type = dtype; optional
//   keep (broadcast to batch, q_heads, q_len, kv_len), bool; optional
// All strides are in elements. The last dimension of q/k/v/out is contiguous (stride 1);
// bias/keep strides may be 0 in any dimension (broadcast), including the last one.
struct AttentionParams {
  DType dtype = DType::kFloat32;

  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  const void* bias = nullptr;
  const bool* keep = nullptr;

  int64_t batch = 0;
  int64_t q_heads = 0;
  int64_t kv_heads = 0;
  int64_t q_len = 0;
  int64_t kv_len = 0;
  int64_t head_dim = 0;
  int64_t v_head_dim = 0;

  // {batch, head, seq} strides.
  int64_t q_stride[3] = {0, 0, 0};
  int64_t k_stride[3] = {0, 0, 0};
  int64_t v_stride[3] = {0, 0, 0};
  int64_t out_stride[3] = {0, 0, 0};
  // {batch, head, query, key} strides; 0 = broadcast.
  int64_t bias_stride[4] = {0, 0, 0, 0};
  int64_t keep_stride[4] = {0, 0, 0, 0};

  float scale = 1.0f;
  float softcap = 0.0f;  // > 0 enables softcap * tanh(s / softcap), before bias and masks
  CausalAlignment causal = CausalAlignment::kNone;
  MaskedRows masked_rows = MaskedRows::kZero;
};

// Fills the q/k/v/out strides for densely packed BHSD tensors.
inline void SetDenseStrides(AttentionParams& p) {
  auto fill = [](int64_t* s, int64_t heads, int64_t len, int64_t dim) {
    s[2] = dim;
    s[1] = len * dim;
    s[0] = heads * len * dim;
  };
  fill(p.q_stride, p.q_heads, p.q_len, p.head_dim);
  fill(p.k_stride, p.kv_heads, p.kv_len, p.head_dim);
  fill(p.v_stride, p.kv_heads, p.kv_len, p.v_head_dim);
  fill(p.out_stride, p.q_heads, p.q_len, p.v_head_dim);
}

}  // namespace ortflash

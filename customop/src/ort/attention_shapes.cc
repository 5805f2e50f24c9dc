#include "attention_shapes.h"

#include <cstddef>

namespace ortflash {
namespace {

std::string Describe(const char* name, const Shape& shape) {
  return std::string(name) + " " + ShapeToString(shape);
}

// Strides (in elements) with which a tensor of `shape` is read as if broadcast to `target`
// (numpy rules, right-aligned): 0 in every broadcast dimension. `target` has rank 4 here.
bool BroadcastStrides(const Shape& shape, const Shape& target, int64_t (&strides)[4]) {
  if (shape.size() > target.size()) return false;
  const size_t offset = target.size() - shape.size();
  int64_t stride = 1;
  for (size_t axis = target.size(); axis-- > 0;) {
    strides[axis] = 0;
    if (axis < offset) continue;
    const int64_t dim = shape[axis - offset];
    if (dim == target[axis]) {
      strides[axis] = dim == 1 ? 0 : stride;
    } else if (dim != 1) {
      return false;
    }
    stride *= dim;
  }
  return true;
}

bool AnyNegative(const Shape& shape) {
  for (int64_t d : shape)
    if (d < 0) return true;
  return false;
}

// Whether the product of the dimensions other than 0 fits in int64: then so does every stride and
// element count taken from the shape, whichever dimension is 0. ONNX Runtime accepts a tensor whose
// leading dimension is 0 even when its other dimensions multiply past int64.
bool ProductFitsInt64(const Shape& shape) {
  int64_t product = 1;
  for (int64_t d : shape) {
    if (d != 0 && __builtin_mul_overflow(product, d, &product)) return false;
  }
  return true;
}

}  // namespace

std::string ShapeToString(const Shape& shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + ")";
}

std::string ResolveAttentionShapes(const AttentionShapes& shapes, AttentionParams& params, Shape& output) {
  const Shape& q = shapes.query;
  const Shape& k = shapes.key;
  const Shape& v = shapes.value;
  const size_t rank = q.size();
  if (rank != 3 && rank != 4)
    return "FlashAttention: input Q must have rank 4 (B, H, S, D) or rank 3 (N, S, D), got " + Describe("Q", q);
  if (k.size() != rank) return "FlashAttention: input K must have the same rank as Q: " + Describe("Q", q) + ", " + Describe("K", k);
  if (v.size() != rank) return "FlashAttention: input V must have the same rank as Q: " + Describe("Q", q) + ", " + Describe("V", v);
  if (AnyNegative(q) || AnyNegative(k) || AnyNegative(v))
    return "FlashAttention: negative dimension in " + Describe("Q", q) + ", " + Describe("K", k) + ", " + Describe("V", v);
  const char* too_large = " is too large: the product of its dimensions overflows int64";
  if (!ProductFitsInt64(q)) return "FlashAttention: input " + Describe("Q", q) + too_large;
  if (!ProductFitsInt64(k)) return "FlashAttention: input " + Describe("K", k) + too_large;
  if (!ProductFitsInt64(v)) return "FlashAttention: input " + Describe("V", v) + too_large;

  // Rank 3 is (N, S, D): one head per batch entry.
  const Shape q4 = rank == 4 ? q : Shape{q[0], 1, q[1], q[2]};
  const Shape k4 = rank == 4 ? k : Shape{k[0], 1, k[1], k[2]};
  const Shape v4 = rank == 4 ? v : Shape{v[0], 1, v[1], v[2]};

  if (k4[0] != q4[0] || v4[0] != q4[0])
    return "FlashAttention: batch dimension differs: " + Describe("Q", q) + ", " + Describe("K", k) + ", " + Describe("V", v);
  if (k4[3] != q4[3])
    return "FlashAttention: head dimension of K (" + std::to_string(k4[3]) + ") does not match Q (" + std::to_string(q4[3]) +
           "): " + Describe("Q", q) + ", " + Describe("K", k);
  if (v4[1] != k4[1] || v4[2] != k4[2])
    return "FlashAttention: V must have the heads and sequence length of K: " + Describe("K", k) + ", " + Describe("V", v);
  if (k4[1] == 0 ? q4[1] != 0 : q4[1] % k4[1] != 0)
    return "FlashAttention: query heads (" + std::to_string(q4[1]) + ") must be a multiple of key/value heads (" +
           std::to_string(k4[1]) + "): " + Describe("Q", q) + ", " + Describe("K", k);

  // Y takes B, H, Sq from Q and Dv from V: each fitting does not make Y fit.
  if (!ProductFitsInt64({q4[0], q4[1], q4[2], v4[3]}))
    return "FlashAttention: the output (" + std::to_string(q4[0]) + ", " + std::to_string(q4[1]) + ", " +
           std::to_string(q4[2]) + ", " + std::to_string(v4[3]) + ") of " + Describe("Q", q) + " and " + Describe("V", v) +
           too_large;

  params.batch = q4[0];
  params.q_heads = q4[1];
  params.kv_heads = k4[1];
  params.q_len = q4[2];
  params.kv_len = k4[2];
  params.head_dim = q4[3];
  params.v_head_dim = v4[3];
  SetDenseStrides(params);

  const Shape scores{params.batch, params.q_heads, params.q_len, params.kv_len};
  // Rank-3 callers broadcast bias/keep against (N, Sq, Skv), which is `scores` without the head axis.
  const Shape target = rank == 4 ? scores : Shape{params.batch, params.q_len, params.kv_len};
  auto resolve_mask = [&](const char* name, const std::optional<Shape>& mask, int64_t (&strides)[4]) -> std::string {
    if (!mask) return {};
    if (mask->size() > target.size())
      return std::string("FlashAttention: input ") + name + " " + ShapeToString(*mask) + " has a higher rank than the scores " +
             ShapeToString(target) + " of " + Describe("Q", q) + " and " + Describe("K", k);
    if (!AnyNegative(*mask) && !ProductFitsInt64(*mask))
      return std::string("FlashAttention: input ") + name + " " + ShapeToString(*mask) + too_large;
    int64_t local[4] = {0, 0, 0, 0};
    Shape padded_target = target;
    if (rank == 3) padded_target.insert(padded_target.begin() + 1, 1);  // keep (b, i, j) in their 4-D slots
    Shape padded_mask = *mask;
    if (rank == 3 && padded_mask.size() == 3) padded_mask.insert(padded_mask.begin() + 1, 1);
    if (AnyNegative(*mask) || !BroadcastStrides(padded_mask, padded_target, local))
      return std::string("FlashAttention: input ") + name + " " + ShapeToString(*mask) + " does not broadcast to the scores " +
             ShapeToString(target) + " of " + Describe("Q", q) + " and " + Describe("K", k);
    for (int axis = 0; axis < 4; ++axis) strides[axis] = local[axis];
    return {};
  };
  if (std::string error = resolve_mask("bias", shapes.bias, params.bias_stride); !error.empty()) return error;
  if (std::string error = resolve_mask("keep", shapes.keep, params.keep_stride); !error.empty()) return error;

  output = rank == 4 ? Shape{params.batch, params.q_heads, params.q_len, params.v_head_dim}
                     : Shape{params.batch, params.q_len, params.v_head_dim};
  return {};
}

}  // namespace ortflash

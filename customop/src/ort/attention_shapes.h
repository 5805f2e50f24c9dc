// Shape resolution for the FlashAttention op: checks the input shapes against the op contract
// and fills the sizes and strides of AttentionParams. Free of ONNX Runtime types so the CPU and
// CUDA adapters share it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ortflash/attention_params.h"

namespace ortflash {

using Shape = std::vector<int64_t>;

struct AttentionShapes {
  Shape query;
  Shape key;
  Shape value;
  std::optional<Shape> bias;
  std::optional<Shape> keep;
};

// On success returns an empty string, fills sizes/strides of `params` and sets `output` to the
// shape of Y. On failure returns a message naming the offending input and the shapes involved.
std::string ResolveAttentionShapes(const AttentionShapes& shapes, AttentionParams& params, Shape& output);

// "(2, 12, 128, 64)"
std::string ShapeToString(const Shape& shape);

}  // namespace ortflash

// OrtFlash CUDA — copies a bias or keep mask whose rows do not come in 16-byte chunks (a key count that
// is not a multiple of 8 halves or 16 bytes, an odd base) into scratch rows that do, so that the
// tensor-core kernel stages its tiles with cp.async instead of one dependent load per element.
// Only the mask's own rows are copied: dimensions it broadcasts over (stride 0) stay broadcast.
#pragma once

#include <cstdint>

#include "cuda_compat.cuh"

namespace ortflash::cuda {

constexpr int kRepackThreads = 256;

// The mask's stored rows and the layout they get: `rows` = batches x heads x query rows actually
// stored (1 where broadcast), each `kv_len` keys from `src` at `src_stride` {batch, head, row}
// (the key stride is 1), to `pitch` elements apart.
struct RepackShape {
  int batches = 1, heads = 1, rows = 1;
  int64_t src_stride[3] = {0, 0, 0};
  int kv_len = 0;
  int pitch = 0;
};

// One block per stored row; keys past kv_len up to the pitch become zeros.
template <class E>
__global__ void __launch_bounds__(kRepackThreads) repack_mask_rows_kernel(const E* src, E* dst, RepackShape s) {
  const int64_t row = blockIdx.x;
  const int64_t r = row % s.rows;
  const int64_t h = (row / s.rows) % s.heads;
  const int64_t b = row / (int64_t(s.rows) * s.heads);
  const E* from = src + b * s.src_stride[0] + h * s.src_stride[1] + r * s.src_stride[2];
  E* to = dst + row * s.pitch;
  for (int c = static_cast<int>(threadIdx.x); c < s.pitch; c += kRepackThreads) to[c] = c < s.kv_len ? from[c] : E{};
}

}  // namespace ortflash::cuda

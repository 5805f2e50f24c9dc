// OrtFlash CPU kernel entry point. Free of ONNX Runtime types.
#pragma once

#include <cstdint>
#include <string>

#include "ortflash/attention_params.h"

namespace ortflash {

// The most fp32 scratch one work item may take, in bytes. A work item holds a few (query tile x head
// dim) and (key tile x head dim) blocks, so only absurd head dims (D + Dv beyond about a million)
// reach it; the limit turns them into an error instead of an allocation that the OS grants lazily
// and then cannot back (the process would be killed, not told).
inline constexpr int64_t kMaxCpuScratchBytesPerThread = int64_t(1) << 30;

// Computes out = softmax(mask(softcap(scale * q k^T) + bias)) v exactly as the op contract in
// DESIGN.md specifies, tile by tile with an online softmax (never materialising q_len x kv_len).
// Expects params that passed validation (shapes consistent, pointers valid for the strides).
// Accumulates in fp32 for every dtype. Work is split over (batch, head, query tile) and handed to
// `runner` (serial when runner.parallel_for is null); short queries (decoding) of query heads that
// share a kv head are packed into one work item while that leaves every hardware thread an item,
// with output bit-identical to the unpacked split.
// Returns an empty string on success, otherwise a message saying what failed (scratch memory that
// could not be allocated, with its size); the output is then unspecified. No exception leaves a
// work item, so none reaches `runner`'s threads; what runner.parallel_for itself throws passes
// through, and building the returned message may throw std::bad_alloc.
std::string flash_attention_cpu(const AttentionParams& params, const ParallelRunner& runner = {});

// Which instruction-set path the runtime dispatch picked on this machine ("avx512", "avx2-fma" or "portable").
const char* flash_attention_cpu_isa();

}  // namespace ortflash

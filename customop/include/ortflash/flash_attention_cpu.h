// OrtFlash CPU kernel entry point. Free of ONNX Runtime types.
#pragma once

#include "ortflash/attention_params.h"

namespace ortflash {

// Computes out = softmax(mask(softcap(scale * q k^T) + bias)) v exactly as the op contract in
// DESIGN.md specifies, tile by tile with an online softmax (never materialising q_len x kv_len).
// Expects params that passed validation (shapes consistent, pointers valid for the strides).
// Accumulates in fp32 for every dtype. Work is split over (batch, head, query tile) and handed to
// `runner` (serial when runner.parallel_for is null).
void flash_attention_cpu(const AttentionParams& params, const ParallelRunner& runner = {});

// Which instruction-set path the runtime dispatch picked on this machine ("avx512", "avx2-fma" or "portable").
const char* flash_attention_cpu_isa();

}  // namespace ortflash

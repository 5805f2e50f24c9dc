// OrtFlash kernels C API — the CUDA forward kernel on device pointers, without ONNX Runtime, for
// native tests and the Python benchmark (ctypes). Built as the shared library ortflash_kernels.
#pragma once

#include <stddef.h>

#include "ortflash/attention_params.h"

#if defined(__GNUC__)
#define ORTFLASH_KERNELS_EXPORT __attribute__((visibility("default")))
#else
#define ORTFLASH_KERNELS_EXPORT
#endif

extern "C" {

// Enqueues the attention described by *params (device pointers) on `stream` (a cudaStream_t);
// split-KV scratch comes from cudaMallocAsync/cudaFreeAsync on that stream. Returns NULL on
// success, otherwise a message that stays valid until the next call on this thread.
ORTFLASH_KERNELS_EXPORT const char* ortflash_attention_forward(const ortflash::AttentionParams* params, void* stream);

// sizeof(ortflash::AttentionParams), so a foreign-language mirror of the struct can check itself.
ORTFLASH_KERNELS_EXPORT size_t ortflash_attention_params_size(void);

}

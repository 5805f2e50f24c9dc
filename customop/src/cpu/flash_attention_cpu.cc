// OrtFlash CPU kernel entry: instruction-set dispatch and the parallel launch over work items.
#include "ortflash/flash_attention_cpu.h"

#include <cstddef>
#include <cstdint>
#include <memory>

#include "flash_attention_cpu_internal.h"

namespace ortflash {
namespace {

using KernelSelector = cpu::QueryTileKernel (*)(const AttentionParams&);

KernelSelector DispatchedSelector() {
  static const KernelSelector selector = cpu::CpuSupportsAvx512()    ? &cpu::avx512::SelectQueryTileKernel
                                         : cpu::CpuSupportsAvx2Fma() ? &cpu::avx2::SelectQueryTileKernel
                                                                     : &cpu::portable::SelectQueryTileKernel;
  return selector;
}

// Scratch for the work items a thread runs, kept between items and calls so that a work item
// does not allocate.
float* ThreadScratch(size_t floats) {
  thread_local std::unique_ptr<float[]> buffer;
  thread_local size_t capacity = 0;
  if (capacity < floats) {
    buffer.reset(new float[floats]);
    capacity = floats;
  }
  return buffer.get();
}

struct Launch {
  const AttentionParams* params;
  cpu::QueryTileKernel kernel;
  int64_t tiles_per_head;
};

// Work item index = (batch * q_heads + head) * tiles_per_head + query tile.
void RunWorkItem(void* data, size_t index) {
  const Launch& launch = *static_cast<const Launch*>(data);
  const AttentionParams& params = *launch.params;
  const int64_t item_index = static_cast<int64_t>(index);
  const int64_t tile = item_index % launch.tiles_per_head;
  const int64_t head_index = item_index / launch.tiles_per_head;
  cpu::WorkItem item;
  item.batch = head_index / params.q_heads;
  item.head = head_index % params.q_heads;
  item.first_row = tile * launch.kernel.query_tile_rows;
  const int64_t rows_left = params.q_len - item.first_row;
  item.rows = rows_left < launch.kernel.query_tile_rows ? rows_left : launch.kernel.query_tile_rows;
  launch.kernel.run(params, item, ThreadScratch(launch.kernel.scratch_floats));
}

void RunFlashAttention(const AttentionParams& params, const ParallelRunner& runner, KernelSelector select) {
  // Nothing to write. kv_heads must divide q_heads for the head mapping (validated by the caller;
  // checked here only because the mapping divides by it).
  if (params.batch <= 0 || params.q_heads <= 0 || params.q_len <= 0 || params.v_head_dim <= 0) return;
  if (params.kv_heads <= 0 || params.q_heads % params.kv_heads != 0) return;

  const cpu::QueryTileKernel kernel = select(params);
  if (kernel.run == nullptr) return;
  const int64_t tiles_per_head = (params.q_len + kernel.query_tile_rows - 1) / kernel.query_tile_rows;
  Launch launch{&params, kernel, tiles_per_head};
  const size_t total = static_cast<size_t>(params.batch * params.q_heads * tiles_per_head);
  if (runner.parallel_for != nullptr) {
    runner.parallel_for(runner.self, &RunWorkItem, total, &launch);
  } else {
    for (size_t i = 0; i < total; ++i) RunWorkItem(&launch, i);
  }
}

}  // namespace

namespace cpu {

// __builtin_cpu_init in case these run from a static initialiser, before libgcc's. The support
// bits include the OS saving the vector state (XCR0), not only CPUID.
bool CpuSupportsAvx512() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool CpuSupportsAvx2Fma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

}  // namespace cpu

void flash_attention_cpu(const AttentionParams& params, const ParallelRunner& runner) {
  RunFlashAttention(params, runner, DispatchedSelector());
}

const char* flash_attention_cpu_isa() {
  return cpu::CpuSupportsAvx512() ? "avx512" : cpu::CpuSupportsAvx2Fma() ? "avx2-fma" : "portable";
}

void flash_attention_cpu_avx512(const AttentionParams& params, const ParallelRunner& runner) {
  RunFlashAttention(params, runner, &cpu::avx512::SelectQueryTileKernel);
}

void flash_attention_cpu_avx2(const AttentionParams& params, const ParallelRunner& runner) {
  RunFlashAttention(params, runner, &cpu::avx2::SelectQueryTileKernel);
}

void flash_attention_cpu_portable(const AttentionParams& params, const ParallelRunner& runner) {
  RunFlashAttention(params, runner, &cpu::portable::SelectQueryTileKernel);
}

}  // namespace ortflash

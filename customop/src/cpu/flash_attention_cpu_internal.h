// OrtFlash CPU kernel: declarations shared by its translation units and its tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "ortflash/attention_params.h"

namespace ortflash {
namespace cpu {

// One unit of parallel work: query rows [first_row, first_row + rows) of each of the query heads
// [head, head + heads) of one batch, heads that share one kv head. The item's rows are packed head
// by head: its row r is query first_row + r % rows of head head + r / rows. heads > 1 only where
// heads * rows fits the kernel's query tile (decoding with GQA/MQA), so that each key and value
// tile is loaded and transposed once for those heads instead of once per head.
// A contiguous run of bytes for a work item to bring into cache.
struct PrefetchRun {
  const char* first = nullptr;
  int64_t bytes = 0;
};

// The inputs and output of the work item likely to run next on a thread, as runs of bytes, for the
// item before it to prefetch a cache line at a time while it computes (count 0: none).
struct NextItemBytes {
  const PrefetchRun* runs = nullptr;
  int64_t count = 0;
};

struct WorkItem {
  int64_t batch = 0;
  int64_t head = 0;
  int64_t heads = 1;
  int64_t first_row = 0;
  int64_t rows = 0;
  NextItemBytes next;  // what to prefetch while this item runs
  bool keys_in_place = false;  // the rows past a key-major item's strips: K and V read in place (RowsInPlaceFit)
};

// Alignment in bytes of work-item scratch (a cache line), and of each array the kernel carves from it.
inline constexpr size_t kScratchAlignment = 64;

// The tile kernel an instruction set picked for one call (dtype x head dim), with its launch shape.
struct QueryTileKernel {
  void (*run)(const AttentionParams& params, const WorkItem& item, float* scratch) = nullptr;
  int64_t query_tile_rows = 0;  // rows per work item (the last tile of a head may have fewer)
  size_t scratch_floats = 0;    // fp32 scratch one work item needs, reused between items; aligned to
                                // kScratchAlignment
};

// Each is defined in the translation unit compiled for that instruction set; call avx512:: only
// where CpuSupportsAvx512(), avx2:: only where CpuSupportsAvx2Fma() and neon:: only where CpuSupportsNeon()
// (elsewhere each is a stub that selects no kernel).
namespace avx512 {
QueryTileKernel SelectQueryTileKernel(const AttentionParams& params);
}
namespace avx2 {
QueryTileKernel SelectQueryTileKernel(const AttentionParams& params);
}
namespace neon {
QueryTileKernel SelectQueryTileKernel(const AttentionParams& params);
}
namespace portable {
QueryTileKernel SelectQueryTileKernel(const AttentionParams& params);
}

// How many query heads of one kv-head group a work item takes (WorkItem::heads; 1 = no packing),
// for a kernel whose query tile holds query_tile_rows rows, planning for `threads` threads. Expects
// q_len > 0 and kv_heads dividing q_heads.
int64_t HeadsPerWorkItem(const AttentionParams& params, int64_t query_tile_rows, int64_t threads);

// Run-time checks of what this CPU (and its OS) supports.
bool CpuSupportsAvx512();   // AVX-512 F, BW, VL, DQ plus FMA and F16C
bool CpuSupportsAvx2Fma();  // AVX2, FMA, F16C
bool CpuSupportsNeon();     // AArch64 (Advanced SIMD is part of its base instruction set)

// Test hook: while set, every request for work-item scratch fails as if memory had run out (also
// where a thread's retained block would do), so tests can see the error come back as a message.
void SimulateScratchAllocationFailure(bool fail);

// Test hook: the number of threads the packing of query heads into work items, and the chunks of
// consecutive items each call of the runner's function runs, plan for (see HeadsPerWorkItem and
// ItemsPerChunk in flash_attention_cpu.cc); 0 restores the default, the hardware's thread count.
// 1 packs every group that fits a query tile and makes 16 chunks of more than 16 items; a count of
// at least batch x q_heads packs none and makes chunks of one item.
void SetHeadPackingThreads(int64_t threads);

}  // namespace cpu

// flash_attention_cpu on one instruction-set path, so that tests cover every path the CPU can run
// and benchmarks can compare them. The AVX-512, AVX2 and NEON paths need the CPU support above (without it they
// return an error message and compute nothing). Each returns what flash_attention_cpu returns.
std::string flash_attention_cpu_avx512(const AttentionParams& params, const ParallelRunner& runner = {});
std::string flash_attention_cpu_avx2(const AttentionParams& params, const ParallelRunner& runner = {});
std::string flash_attention_cpu_neon(const AttentionParams& params, const ParallelRunner& runner = {});
std::string flash_attention_cpu_portable(const AttentionParams& params, const ParallelRunner& runner = {});

}  // namespace ortflash

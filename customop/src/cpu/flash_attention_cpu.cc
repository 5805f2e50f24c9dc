// OrtFlash CPU kernel entry: instruction-set dispatch and the parallel launch over work items.
#include "ortflash/flash_attention_cpu.h"

#include <atomic>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "flash_attention_cpu_internal.h"

#if defined(_WIN32)
#include <windows.h>  // FlsAlloc (ThisThreadCache); the build defines NOMINMAX and WIN32_LEAN_AND_MEAN
#endif

namespace ortflash {
namespace {

using KernelSelector = cpu::QueryTileKernel (*)(const AttentionParams&);

KernelSelector DispatchedSelector() {
  static const KernelSelector selector = cpu::CpuSupportsAvx512()    ? &cpu::avx512::SelectQueryTileKernel
                                         : cpu::CpuSupportsAvx2Fma() ? &cpu::avx2::SelectQueryTileKernel
                                         : cpu::CpuSupportsNeon()    ? &cpu::neon::SelectQueryTileKernel
                                                                     : &cpu::portable::SelectQueryTileKernel;
  return selector;
}

// Test hook (SimulateScratchAllocationFailure): every scratch request fails while it is set.
std::atomic<bool> scratch_allocation_fails{false};

// Blocks up to this size stay with the thread that allocated them, for its later work items and
// calls (D = Dv up to about 4000 on every path); larger ones are allocated per work item, so that
// one call with a huge head dim does not leave every pool thread holding its block.
constexpr size_t kRetainedScratchBytes = size_t(8) << 20;

inline int64_t MinOf(int64_t a, int64_t b) { return a < b ? a : b; }

// Scratch blocks start on a cache line, as the kernel's scratch arrays do within them
// (cpu::kScratchAlignment): its full-vector loads and stores then never straddle two lines.
struct AlignedDelete {
  void operator()(float* block) const { ::operator delete[](block, std::align_val_t{cpu::kScratchAlignment}); }
};
using ScratchBlock = std::unique_ptr<float[], AlignedDelete>;

ScratchBlock AllocateScratch(size_t floats) {
  return ScratchBlock(static_cast<float*>(
      ::operator new[](floats * sizeof(float), std::align_val_t{cpu::kScratchAlignment}, std::nothrow)));
}

// What a thread keeps between work items and calls: its scratch block and the list of the next item's bytes.
struct ThreadCache {
  ScratchBlock buffer;
  size_t capacity = 0;
  std::vector<cpu::PrefetchRun> next_runs;
};

#if defined(_WIN32)
// MinGW-w64 runs a thread_local object's destructor after its emulated TLS storage has been freed (both are
// thread-exit callbacks of winpthreads, run in that order), so the destructor would read freed memory and hand
// _aligned_free a stale pointer. Here the cache lives on the heap, found through a trivially destructible
// thread_local pointer, and a fiber-local storage slot's callback frees it: Windows runs that at thread exit with
// the value itself. The slot is freed when the library is unloaded (ONNX Runtime unloads the op library with the last
// session options that registered it), before the callback's code goes: a thread's exit would otherwise call into
// unloaded memory. nullptr when it cannot be allocated.
class CacheSlot {
 public:
  CacheSlot() : index_(FlsAlloc(&Free)) {}
  ~CacheSlot() {
    if (index_ != FLS_OUT_OF_INDEXES) FlsFree(index_);
  }
  CacheSlot(const CacheSlot&) = delete;
  CacheSlot& operator=(const CacheSlot&) = delete;
  void Hold(ThreadCache* cache) const {
    if (index_ != FLS_OUT_OF_INDEXES) FlsSetValue(index_, cache);  // else kept till the process ends
  }

 private:
  static void WINAPI Free(void* cache) { delete static_cast<ThreadCache*>(cache); }
  DWORD index_;
};

ThreadCache* ThisThreadCache() {
  static const CacheSlot slot;
  thread_local ThreadCache* cache = nullptr;
  if (cache == nullptr) {
    cache = new (std::nothrow) ThreadCache;
    if (cache != nullptr) slot.Hold(cache);
  }
  return cache;
}
#else
ThreadCache* ThisThreadCache() {
  thread_local ThreadCache cache;
  return &cache;
}
#endif

// The thread's retained block, grown to `floats`; nullptr when the allocation fails.
float* RetainedScratch(size_t floats) {
  ThreadCache* cache = ThisThreadCache();
  if (cache == nullptr) return nullptr;
  if (cache->capacity < floats) {
    cache->buffer.reset();  // free the old block first: growing never needs both
    cache->capacity = 0;
    cache->buffer = AllocateScratch(floats);
    if (cache->buffer == nullptr) return nullptr;
    cache->capacity = floats;
  }
  return cache->buffer.get();
}

// Scratch for one work item; get() is nullptr when it could not be allocated.
class ScratchLease {
 public:
  explicit ScratchLease(size_t floats) {
    if (scratch_allocation_fails.load(std::memory_order_relaxed)) return;
    if (floats * sizeof(float) <= kRetainedScratchBytes) {
      scratch_ = RetainedScratch(floats);
    } else {
      owned_ = AllocateScratch(floats);
      scratch_ = owned_.get();
    }
  }
  float* get() const { return scratch_; }

 private:
  ScratchBlock owned_;
  float* scratch_ = nullptr;
};

// Test hook (SetHeadPackingThreads): the thread count HeadsPerWorkItem and ItemsPerChunk plan for; 0 = the hardware's.
std::atomic<int64_t> head_packing_threads{0};

int64_t HeadPackingThreads() {
  const int64_t forced = head_packing_threads.load(std::memory_order_relaxed);
  if (forced > 0) return forced;
  // Read once: hardware_concurrency asks the OS, and this runs on every call (decode calls take tens of µs).
  static const int64_t hardware = [] {
    const auto count = static_cast<int64_t>(std::thread::hardware_concurrency());
    return count > 0 ? count : int64_t{1};
  }();
  return hardware;
}

struct Launch {
  const AttentionParams* params;
  cpu::QueryTileKernel kernel;
  int64_t heads_per_item;   // query heads of one group in a work item
  int64_t parts_per_group;  // work items that split one kv-head group's query heads
  int64_t tiles_per_head;   // query tiles of a head (1 where heads_per_item > 1)
  int64_t total;            // work items
  int64_t items_per_chunk;  // consecutive work items one call of the runner's function runs in order

  // The first failure of a work item, reported by the calling thread once every item has returned.
  // Written without allocating (workers may be out of memory) and without throwing.
  std::atomic<bool> failed{false};
  std::atomic_flag message_claimed = ATOMIC_FLAG_INIT;
  char message[320] = {};

  // Later items of a failed call return at once: the call's output is not used.
  __attribute__((format(printf, 2, 3))) void Fail(const char* format, ...) {
    if (!message_claimed.test_and_set(std::memory_order_acq_rel)) {
      va_list args;
      va_start(args, format);
      std::vsnprintf(message, sizeof message, format, args);
      va_end(args);
    }
    failed.store(true, std::memory_order_release);
  }
};

// Work item index = ((batch * kv_heads + kv_head) * parts_per_group + part) * tiles_per_head + query
// tile; without packing (heads_per_item 1) that is (batch * q_heads + head) * tiles_per_head + query
// tile.
cpu::WorkItem WorkItemAt(const Launch& launch, int64_t item_index) {
  const AttentionParams& params = *launch.params;
  const int64_t tile = item_index % launch.tiles_per_head;
  const int64_t part_index = item_index / launch.tiles_per_head;
  const int64_t part = part_index % launch.parts_per_group;
  const int64_t group_index = part_index / launch.parts_per_group;
  const int64_t group = params.q_heads / params.kv_heads;
  cpu::WorkItem item;
  item.batch = group_index / params.kv_heads;
  item.head = (group_index % params.kv_heads) * group + part * launch.heads_per_item;
  item.heads = MinOf(launch.heads_per_item, group - part * launch.heads_per_item);
  item.first_row = tile * launch.kernel.query_tile_rows;
  const int64_t rows_left = params.q_len - item.first_row;
  item.rows = rows_left < launch.kernel.query_tile_rows ? rows_left : launch.kernel.query_tile_rows;
  return item;
}

// An item's inputs and outputs are prefetched where they fit a core's cache with room to spare.
constexpr int64_t kPrefetchedItemBytes = int64_t(256) << 10;
constexpr int64_t kPrefetchedRowBytes = 512;  // rows apart in memory: at least this long each (NextItemRuns)

// Appends `rows` rows of `bytes` bytes each, `stride` bytes apart, to `runs`: one run where the rows are contiguous.
void AddRowRuns(const char* first, int64_t rows, int64_t stride, int64_t bytes, std::vector<cpu::PrefetchRun>& runs) {
  if (rows <= 0 || bytes <= 0) return;
  if (stride == bytes || rows == 1) {
    runs.push_back({first, rows * bytes});
    return;
  }
  for (int64_t r = 0; r < rows; ++r) runs.push_back({first + r * stride, bytes});
}

// The inputs (queries, keys, values) and output rows of `item`, for the item before it to prefetch while it computes
// (memory stalls otherwise: a batch of short sequences whose tensors outgrow the caches ran 2-3x slower than the same
// work on cache-resident tensors). Nothing where they would not fit the cache beside the running item, or where they
// are too long for one item's compute to hide anyway.
cpu::NextItemBytes NextItemRuns(const AttentionParams& p, const cpu::WorkItem& item,
                                std::vector<cpu::PrefetchRun>& runs) {
  runs.clear();
  const int64_t element = p.dtype == DType::kFloat32 ? 4 : 2;
  const int64_t rows = item.heads * item.rows;
  const int64_t bytes = element * (rows + p.kv_len) * (p.head_dim + p.v_head_dim);
  if (bytes > kPrefetchedItemBytes) return {};
  // Rows apart in memory (seq-major layouts) of a few cache lines each: the key-major loops take a slice of one run at
  // a time, so most lines would go in a burst at the end. Left to the hardware, which fetches lines beside the ones
  // read (S = T = 33, 12 heads of 64 seq-major, float16: 14-26% slower prefetched).
  const auto scattered = [&](const int64_t* stride, int64_t dim) {
    return stride[2] != dim && element * dim < kPrefetchedRowBytes;
  };
  if (scattered(p.q_stride, p.head_dim) || scattered(p.k_stride, p.head_dim) || scattered(p.v_stride, p.v_head_dim) ||
      scattered(p.out_stride, p.v_head_dim)) {
    return {};
  }
  const int64_t kv_head = item.head / (p.q_heads / p.kv_heads);
  const auto at = [&](const void* base, const int64_t* stride, int64_t head, int64_t row) {
    return static_cast<const char*>(base) + element * (item.batch * stride[0] + head * stride[1] + row * stride[2]);
  };
  for (int64_t h = item.head; h < item.head + item.heads; ++h) {
    AddRowRuns(at(p.q, p.q_stride, h, item.first_row), item.rows, element * p.q_stride[2], element * p.head_dim, runs);
    AddRowRuns(at(p.out, p.out_stride, h, item.first_row), item.rows, element * p.out_stride[2],
               element * p.v_head_dim, runs);
  }
  AddRowRuns(at(p.k, p.k_stride, kv_head, 0), p.kv_len, element * p.k_stride[2], element * p.head_dim, runs);
  AddRowRuns(at(p.v, p.v_stride, kv_head, 0), p.kv_len, element * p.v_stride[2], element * p.v_head_dim, runs);
  return {runs.data(), static_cast<int64_t>(runs.size())};
}

// Runs work item `item_index`, prefetching `next` (nullptr: none) while it computes.
void RunWorkItem(Launch& launch, int64_t item_index, const cpu::WorkItem* next) noexcept {
  if (launch.failed.load(std::memory_order_relaxed)) return;
  const AttentionParams& params = *launch.params;
  try {
    cpu::WorkItem item = WorkItemAt(launch, item_index);
    ThreadCache* cache = ThisThreadCache();
    if (next != nullptr && cache != nullptr) item.next = NextItemRuns(params, *next, cache->next_runs);
    const ScratchLease scratch(launch.kernel.scratch_floats);
    if (scratch.get() == nullptr) {
      launch.Fail("FlashAttention CPU kernel: allocating %llu bytes of scratch memory failed (head_dim %lld, v_head_dim %lld)",
                  static_cast<unsigned long long>(launch.kernel.scratch_floats * sizeof(float)),
                  static_cast<long long>(params.head_dim),
                  static_cast<long long>(params.v_head_dim));
      return;
    }
    launch.kernel.run(params, item, scratch.get());
  } catch (const std::exception& e) {
    launch.Fail("FlashAttention CPU kernel: work item %lld failed: %s", static_cast<long long>(item_index), e.what());
  } catch (...) {
    launch.Fail("FlashAttention CPU kernel: work item %lld failed with an unknown exception",
                static_cast<long long>(item_index));
  }
}

// Runs chunk `index` of the launch's work items, in order, each prefetching the next. Runs on the runner's threads
// (ONNX Runtime's pool in the op): nothing may propagate out of it.
void RunChunk(void* data, size_t index) noexcept {
  Launch& launch = *static_cast<Launch*>(data);
  const int64_t first = static_cast<int64_t>(index) * launch.items_per_chunk;
  const int64_t end = MinOf(launch.total, first + launch.items_per_chunk);
  for (int64_t i = first; i < end; ++i) {
    if (i + 1 < end) {
      const cpu::WorkItem next = WorkItemAt(launch, i + 1);
      RunWorkItem(launch, i, &next);
    } else {
      RunWorkItem(launch, i, nullptr);
    }
  }
}

// Work items per chunk (RunChunk): consecutive items on one thread, so that each can prefetch the next, and enough
// chunks for the threads to even out (a thread's last chunk is at most 1/16 of its work).
constexpr int64_t kChunksPerThread = 16;

int64_t ItemsPerChunk(int64_t items, int64_t threads) {
  const int64_t chunks = threads * kChunksPerThread;
  return items > chunks ? items / chunks : 1;
}

std::string RunFlashAttention(const AttentionParams& params, const ParallelRunner& runner, KernelSelector select) {
  // Nothing to write. kv_heads must divide q_heads for the head mapping (validated by the caller;
  // checked here only because the mapping divides by it).
  if (params.batch <= 0 || params.q_heads <= 0 || params.q_len <= 0 || params.v_head_dim <= 0) return {};
  if (params.kv_heads <= 0 || params.q_heads % params.kv_heads != 0) return {};

  // Bounds the head dims before the scratch size is computed from them (a product that must not overflow).
  constexpr int64_t kMaxScratchFloats = kMaxCpuScratchBytesPerThread / int64_t(sizeof(float));
  const auto too_much_scratch = [&](const std::string& needs) {
    return "FlashAttention CPU kernel: a work item needs " + needs + " bytes of scratch memory (head_dim " +
           std::to_string(params.head_dim) + ", v_head_dim " + std::to_string(params.v_head_dim) +
           "), more than the limit of " + std::to_string(kMaxCpuScratchBytesPerThread) + " bytes per thread";
  };
  if (params.head_dim < 0) return "FlashAttention CPU kernel: negative head_dim " + std::to_string(params.head_dim);
  if (params.head_dim > kMaxScratchFloats || params.v_head_dim > kMaxScratchFloats)
    return too_much_scratch("more than " + std::to_string(kMaxCpuScratchBytesPerThread));

  const cpu::QueryTileKernel kernel = select(params);
  if (kernel.run == nullptr)
    return "FlashAttention CPU kernel: unsupported dtype " + std::to_string(static_cast<int>(params.dtype));
  if (kernel.scratch_floats > static_cast<size_t>(kMaxScratchFloats))
    return too_much_scratch(std::to_string(kernel.scratch_floats * sizeof(float)));

  const int64_t heads_per_item = cpu::HeadsPerWorkItem(params, kernel.query_tile_rows, HeadPackingThreads());
  const int64_t group = params.q_heads / params.kv_heads;
  const int64_t parts_per_group = (group + heads_per_item - 1) / heads_per_item;
  const int64_t tiles_per_head =
      params.q_len / kernel.query_tile_rows + (params.q_len % kernel.query_tile_rows != 0 ? 1 : 0);
  const int64_t items = params.batch * params.kv_heads * parts_per_group * tiles_per_head;
  const int64_t items_per_chunk = ItemsPerChunk(items, HeadPackingThreads());
  Launch launch{&params, kernel, heads_per_item, parts_per_group, tiles_per_head, items, items_per_chunk};
  const auto chunks = static_cast<size_t>((items + items_per_chunk - 1) / items_per_chunk);
  if (runner.parallel_for != nullptr) {
    runner.parallel_for(runner.self, &RunChunk, chunks, &launch);
  } else {
    for (size_t i = 0; i < chunks && !launch.failed.load(std::memory_order_relaxed); ++i) RunChunk(&launch, i);
  }
  if (!launch.failed.load(std::memory_order_acquire)) return {};
  return launch.message;
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

bool CpuSupportsNeon() {
#if defined(__aarch64__)
  return true;
#else
  return false;
#endif
}

// Packing G query heads into one work item loads and transposes each key and value tile once
// instead of G times, but leaves G times fewer work items: it pays while every thread still gets
// an item. So where the batch x kv_heads groups are fewer than `threads`, each group is split into
// threads / groups parts (rounded up) of ceil(G / parts) heads (whole heads: the last part may
// have fewer, and rounding may leave fewer parts), and no part holds more heads than fit one query
// tile. ONNX Runtime does not tell a kernel how many threads its pool has; the hardware's thread
// count stands in (the pool's default is one thread per core). Measured on 2 cores (AVX-512), op
// time, T = 2048, D = 128, Sq = 1: 32 query heads on 8 kv heads (the GqaDecode benchmark) 820 us
// unpacked, 230-260 us as 8 items of 4 heads; on 1 kv head (MQA) 914 us unpacked, 185 us as one
// item of 32 heads, 117 us as 2 items of 16.
int64_t HeadsPerWorkItem(const AttentionParams& params, int64_t query_tile_rows, int64_t threads) {
  const int64_t group = params.q_heads / params.kv_heads;
  const int64_t fitting = query_tile_rows / params.q_len;
  if (group < 2 || fitting < 2) return 1;
  const int64_t groups = params.batch * params.kv_heads;
  const int64_t parts = MinOf((threads + groups - 1) / groups, group);
  return MinOf((group + parts - 1) / parts, fitting);
}

void SimulateScratchAllocationFailure(bool fail) { scratch_allocation_fails.store(fail, std::memory_order_relaxed); }

void SetHeadPackingThreads(int64_t threads) { head_packing_threads.store(threads, std::memory_order_relaxed); }

}  // namespace cpu

std::string flash_attention_cpu(const AttentionParams& params, const ParallelRunner& runner) {
  return RunFlashAttention(params, runner, DispatchedSelector());
}

const char* flash_attention_cpu_isa() {
  return cpu::CpuSupportsAvx512()    ? "avx512"
         : cpu::CpuSupportsAvx2Fma() ? "avx2-fma"
         : cpu::CpuSupportsNeon()    ? "neon"
                                     : "portable";
}

std::string flash_attention_cpu_avx512(const AttentionParams& params, const ParallelRunner& runner) {
  if (!cpu::CpuSupportsAvx512()) return "the AVX-512 path needs a CPU with AVX-512 F/BW/VL/DQ, FMA and F16C";
  return RunFlashAttention(params, runner, &cpu::avx512::SelectQueryTileKernel);
}

std::string flash_attention_cpu_avx2(const AttentionParams& params, const ParallelRunner& runner) {
  if (!cpu::CpuSupportsAvx2Fma()) return "the AVX2 path needs a CPU with AVX2, FMA and F16C";
  return RunFlashAttention(params, runner, &cpu::avx2::SelectQueryTileKernel);
}

std::string flash_attention_cpu_neon(const AttentionParams& params, const ParallelRunner& runner) {
  if (!cpu::CpuSupportsNeon()) return "the NEON path needs a 64-bit ARM CPU";
  return RunFlashAttention(params, runner, &cpu::neon::SelectQueryTileKernel);
}

std::string flash_attention_cpu_portable(const AttentionParams& params, const ParallelRunner& runner) {
  return RunFlashAttention(params, runner, &cpu::portable::SelectQueryTileKernel);
}

}  // namespace ortflash

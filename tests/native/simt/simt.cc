// simt — the emulator's runtime: fibers and their scheduler, barriers and warp collectives, the
// emulated PTX instructions with their shared-memory checks, device memory and the CUDA runtime
// API subset declared in include/cuda_runtime_api.h. See simt_device.h for what it checks.
#include "include/cuda_runtime_api.h"
#include "include/cuda_fp16.h"

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define SIMT_ASAN 1
#else
#define SIMT_ASAN 0
#endif

namespace simt {
namespace {

constexpr int kWarpSize = 32;
constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kStackGuardBytes = 4096;  // bottom of each fiber stack, checked for overflow
constexpr unsigned char kStackGuard = 0x6b;
constexpr int kDefaultSmemLimit = 48 * 1024;
constexpr unsigned char kUninitialized = 0xff;  // NaN in fp32, fp16 and bf16

// ---- fibers ---------------------------------------------------------------------------------

#if defined(__x86_64__)
// Saves the callee-saved registers of the System V ABI on the current stack, stores the stack
// pointer to *save_sp and resumes the fiber whose stack pointer is load_sp.
extern "C" void simt_switch_context(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl simt_switch_context
  .type simt_switch_context, @function
simt_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size simt_switch_context, .-simt_switch_context
)");

struct Fiber {
  void* sp = nullptr;
  const void* stack_bottom = nullptr;  // for AddressSanitizer's fiber annotations
  size_t stack_bytes = 0;
};

// `leaving_for_good`: the fiber switched away from is never resumed (AddressSanitizer then drops
// its fake stack).
void switch_fiber(Fiber& from, Fiber& to, bool leaving_for_good = false) {
#if SIMT_ASAN
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(leaving_for_good ? nullptr : &fake_stack, to.stack_bottom, to.stack_bytes);
  simt_switch_context(&from.sp, to.sp);
  __sanitizer_finish_switch_fiber(fake_stack, &from.stack_bottom, &from.stack_bytes);
#else
  (void)leaving_for_good;
  simt_switch_context(&from.sp, to.sp);
#endif
}

void prepare_fiber(Fiber& fiber, char* stack, size_t bytes, void (*entry)()) {
  const uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                         // the entry's return address slot (it never returns)
  *--sp = reinterpret_cast<void*>(entry);  // where simt_switch_context's `ret` goes
  for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp, rbx, r12-r15
  fiber.sp = sp;
  fiber.stack_bottom = stack;
  fiber.stack_bytes = bytes;
}
#else
struct Fiber {
  ucontext_t context;
};

void switch_fiber(Fiber& from, Fiber& to, bool = false) { swapcontext(&from.context, &to.context); }

void prepare_fiber(Fiber& fiber, char* stack, size_t bytes, void (*entry)()) {
  getcontext(&fiber.context);
  fiber.context.uc_stack.ss_sp = stack;
  fiber.context.uc_stack.ss_size = bytes;
  fiber.context.uc_link = nullptr;
  makecontext(&fiber.context, entry, 0);
}
#endif

// ---- device memory ----------------------------------------------------------------------------

struct Allocation {
  uintptr_t begin;
  size_t bytes;
};

class DeviceMemory {
 public:
  void* allocate(size_t bytes) {
    // 256-byte aligned as cudaMalloc's, and exactly `bytes` long, so that under AddressSanitizer
    // the first byte past the allocation is already a redzone.
    void* ptr = nullptr;
    if (posix_memalign(&ptr, 256, std::max<size_t>(bytes, 1)) != 0) return nullptr;
    std::memset(ptr, kUninitialized, std::max<size_t>(bytes, 1));  // device memory starts out as garbage
    const std::lock_guard<std::mutex> lock(mutex_);
    allocations_[reinterpret_cast<uintptr_t>(ptr)] = bytes;
    return ptr;
  }

  bool release(void* ptr) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (allocations_.erase(reinterpret_cast<uintptr_t>(ptr)) == 0) return false;
    }
    std::free(ptr);
    return true;
  }

  bool contains(const void* ptr, size_t bytes) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
    const std::lock_guard<std::mutex> lock(mutex_);
    auto it = allocations_.upper_bound(p);
    if (it == allocations_.begin()) return false;
    --it;
    return p >= it->first && p + bytes <= it->first + it->second;
  }

  std::vector<Allocation> snapshot() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return snapshot_locked();
  }

  static bool find(const std::vector<Allocation>& sorted, const void* ptr, size_t bytes) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
    auto it = std::upper_bound(sorted.begin(), sorted.end(), p,
                               [](uintptr_t value, const Allocation& a) { return value < a.begin; });
    if (it == sorted.begin()) return false;
    --it;
    return p >= it->begin && p + bytes <= it->begin + it->bytes;
  }

 private:
  std::vector<Allocation> snapshot_locked() const {
    std::vector<Allocation> out;
    out.reserve(allocations_.size());
    for (const auto& [begin, bytes] : allocations_) out.push_back({begin, bytes});
    return out;
  }

  std::mutex mutex_;
  std::map<uintptr_t, size_t> allocations_;
};

DeviceMemory& device_memory() {
  static DeviceMemory memory;
  return memory;
}

// Per kernel: the dynamic shared memory limit (cudaFuncAttributeMaxDynamicSharedMemorySize).
class FunctionAttributes {
 public:
  int smem_limit(const void* entry) {
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto it = limits_.find(entry);
    return it == limits_.end() ? kDefaultSmemLimit : it->second;
  }
  void set_smem_limit(const void* entry, int bytes) {
    const std::lock_guard<std::mutex> lock(mutex_);
    limits_[entry] = bytes;
  }

 private:
  std::mutex mutex_;
  std::map<const void*, int> limits_;
};

FunctionAttributes& function_attributes() {
  static FunctionAttributes attributes;
  return attributes;
}

// The calling host thread's pending error (what cudaGetLastError returns) and the message of the
// last kernel failure (what cudaGetErrorString(cudaErrorLaunchFailure) returns).
thread_local cudaError_t tl_last_error = cudaSuccess;
thread_local std::string tl_failure_message;

cudaError_t record(cudaError_t error) {
  if (error != cudaSuccess) tl_last_error = error;
  return error;
}

// ---- blocks ---------------------------------------------------------------------------------

struct AsyncCopy {
  uint32_t offset;  // shared memory destination
  const void* src;
  int bytes;  // read from src; the rest of the 16 are zero-filled
};

struct Thread {
  ThreadContext context{};
  Fiber fiber;
  bool done = false;
  const char* waiting_at = nullptr;
  std::vector<AsyncCopy> open_group;
  std::deque<std::vector<AsyncCopy>> groups;  // committed, oldest first
  std::vector<uint32_t> unfenced;  // chunks this thread wrote since its last fence.proxy.async
};

// Deposits of one warp collective. Two slots, used alternately: a lane can only reach the next
// collective's slot after every lane has left the previous one (that needs the barrier between).
struct WarpSlot {
  uint32_t words[kWarpSize][6];
  uint64_t decoded_for = ~uint64_t(0);  // generation whose decoded operands are below
  float a[16][16];                      // mma: A and B as floats
  float b[16][8];
  uint16_t rows[kWarpSize][8];          // ldmatrix: the 16 bytes each lane's address points at
};

// The threads of one collective unit (a warp, a warpgroup) and their current rendezvous (see rendezvous()).
struct Collective {
  int size = 0;
  int alive = 0;
  int arrived = 0;
  uint64_t generation = 0;
  const char* site = nullptr;
};

struct Warp : Collective {
  WarpSlot slots[2];
};

// Shadow state of one 16-byte chunk of dynamic shared memory.
struct Chunk {
  uint32_t write_epoch = 0;  // barrier interval in which the last cp.async landed here
  uint32_t read_epoch = 0;   // barrier interval of the last ldmatrix read
  uint32_t readers = 0;      // warps (bit per warp) that read in read_epoch
  bool pending = false;      // a cp.async to here is in flight
  bool written = false;
  bool async_visible = false;  // the writer ran fence.proxy.async after the last write (in fence_epoch)
  uint32_t fence_epoch = 0;
  uint32_t async_reads = 0;    // wgmma operations in flight that read these bytes
  bool tma = false;            // last written by a TMA copy (async proxy, ordered by its mbarrier)
};

struct TmaCopy {
  uint32_t offset;  // shared destination
  TensorMap map;
  int32_t coords[5];
};

struct MBarrier {
  uint32_t count = 0;
  uint32_t pending = 0;   // arrivals still missing in the current phase
  int64_t tx = 0;         // bytes expected and not yet landed
  uint32_t phase = 0;     // parity of the current (incomplete) phase
  std::vector<TmaCopy> copies;  // issued, not yet landed
};

// One queued wgmma.mma_async of a warpgroup (operands are read, accumulators written, at completion).
constexpr int kWarpGroupSize = 128;
struct WgmmaOp {
  MmaInput type = MmaInput::kFloat16;
  int n = 0;
  bool a_in_regs = false;
  bool trans_b = false;
  bool accumulate = false;
  uint64_t desc_a = 0, desc_b = 0;
  float* d[kWarpGroupSize] = {};
  bool chained[kWarpGroupSize] = {};  // an earlier op in flight writes the same accumulators
  const uint32_t* a_ptr[kWarpGroupSize] = {};
  uint32_t a[kWarpGroupSize][4] = {};
  std::vector<float> d_in;        // kWarpGroupSize x n/2 accumulator inputs (not chained)
  std::vector<uint32_t> chunks;   // shared chunks read (offsets)
};

struct WgDeposit {
  float* d;
  const uint32_t* a_ptr;
  uint64_t desc_a, desc_b;
  uint32_t config;  // n | trans_b << 16 | accumulate << 17 | a_in_regs << 18 | type << 19
};

struct WarpGroup : Collective {
  uint64_t done_for = ~uint64_t(0);  // generation whose collective action ran
  WgDeposit deposits[2][kWarpGroupSize];
  bool fenced = false;  // a wgmma.fence since the last wgmma.wait_group
  std::vector<WgmmaOp> open;
  std::deque<std::vector<WgmmaOp>> committed;
};

using Counters = LaunchStats;

void add(Counters& into, const Counters& from) {
  into.mma += from.mma;
  into.ldmatrix += from.ldmatrix;
  into.ldmatrix_conflicts += from.ldmatrix_conflicts;
  into.cp_async += from.cp_async;
  into.barriers += from.barriers;
  into.wgmma += from.wgmma;
  into.tma += from.tma;
  into.blocks += from.blocks;
  into.launches += from.launches;
  if (from.min_block_threads != 0 && (into.min_block_threads == 0 || from.min_block_threads < into.min_block_threads))
    into.min_block_threads = from.min_block_threads;
  into.max_block_threads = std::max(into.max_block_threads, from.max_block_threads);
}

thread_local LaunchStats tl_last_stats;

struct Launch {
  const char* launcher;
  const std::function<void()>* body;
  dim3 grid, block;
  size_t smem_bytes;
  std::vector<Allocation> allocations;
  uint64_t seed;
  std::atomic<uint64_t> next_block{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;
  std::string failure;
  Counters counters;
};

struct Block {
  Launch* launch = nullptr;
  std::vector<Thread> threads;
  std::vector<Warp> warps;
  std::vector<std::unique_ptr<WarpGroup>> groups;  // warpgroups (128 threads; the last may be partial)
  std::map<uint32_t, MBarrier> mbarriers;          // by shared offset
  struct Named {
    int count = 0;         // threads per phase (0: not in use)
    int arrived = 0;
    uint64_t generation = 0;
  } named[16];
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<unsigned char> smem;
  std::vector<Chunk> chunks;
  Fiber scheduler;
  uint3 block_idx{};
  int alive = 0;
  int barrier_arrived = 0;
  const char* barrier_site = nullptr;
  uint64_t barrier_generation = 0;
  uint32_t epoch = 1;
  uint64_t progress = 0;
  int current = -1;
  std::string failure;
  std::mt19937_64 rng;
  Counters counters;
};

thread_local Block* tl_block = nullptr;

Block& block() { return *tl_block; }
Thread& thread() { return tl_block->threads[static_cast<size_t>(tl_block->current)]; }
int lane_id() { return tl_block->current % kWarpSize; }
int warp_id() { return tl_block->current / kWarpSize; }
Warp& warp() { return tl_block->warps[static_cast<size_t>(warp_id())]; }
WarpGroup& warpgroup() { return *tl_block->groups[static_cast<size_t>(tl_block->current / kWarpGroupSize)]; }

std::string where(const Block& b) {
  std::ostringstream s;
  s << b.launch->launcher << ": block (" << b.block_idx.x << "," << b.block_idx.y << "," << b.block_idx.z << ")";
  if (b.current >= 0) s << " thread " << b.current << " (warp " << b.current / kWarpSize << ", lane " << b.current % kWarpSize << ")";
  return s.str();
}

// Stops the block: records the message and never resumes this fiber.
[[noreturn]] void fail(const std::string& message) {
  Block& b = block();
  if (b.failure.empty()) b.failure = where(b) + ": " + message;
  switch_fiber(thread().fiber, b.scheduler, true);
  std::abort();  // unreachable: a failed block's fibers are never resumed
}

void yield() {
  Block& b = block();
  switch_fiber(thread().fiber, b.scheduler);
}

void release_barrier(Block& b) {
  b.barrier_arrived = 0;
  ++b.barrier_generation;
  ++b.epoch;
  ++b.counters.barriers;
}

void check_full_mask(unsigned mask, const char* what) {
  if (mask != 0xffffffffu) fail(std::string(what) + " with a partial mask: the emulator supports full-warp collectives only");
}

// One rendezvous of all of `unit`'s threads at `site`: the last to arrive releases the others. Returns the
// generation it completed. `kind` ("warp", "warpgroup") and `member` ("lane", "thread") name them in failures.
uint64_t rendezvous(Collective& unit, const char* site, const char* kind, const char* member) {
  if (unit.alive < unit.size) {
    fail(std::string(site) + ": full-" + kind + " collective while " + std::to_string(unit.size - unit.alive) + " " + member +
         "s have exited");
  }
  if (unit.arrived == 0) {
    unit.site = site;
  } else if (unit.site != site) {
    fail(std::string("divergent ") + kind + ": this " + member + " is at " + site + " while other " + member + "s wait at " +
         unit.site);
  }
  ++block().progress;
  const uint64_t generation = unit.generation;
  if (++unit.arrived == unit.size) {
    unit.arrived = 0;
    ++unit.generation;
    return generation;
  }
  thread().waiting_at = site;
  while (unit.generation == generation) yield();
  thread().waiting_at = nullptr;
  return generation;
}

// One warp-wide rendezvous. Returns the slot the lanes deposited into before arriving.
WarpSlot& warp_arrive(const char* site) {
  Warp& w = warp();
  return w.slots[rendezvous(w, site, "warp", "lane") & 1];
}

// The slot a lane deposits into for the next collective.
WarpSlot& deposit_slot() {
  Warp& w = warp();
  return w.slots[w.generation & 1];
}

void fiber_entry();

Chunk& chunk_at(Block& b, uint32_t offset, const char* what) {
  if (offset % 16 != 0) fail(std::string(what) + ": shared address " + std::to_string(offset) + " is not 16-byte aligned");
  if (size_t(offset) + 16 > b.smem.size()) {
    fail(std::string(what) + ": shared bytes [" + std::to_string(offset) + ", " + std::to_string(offset + 16) +
         ") are outside the block's " + std::to_string(b.smem.size()) + " bytes of dynamic shared memory");
  }
  return b.chunks[offset / 16];
}

void complete_group(Block& b, Thread& t, std::vector<AsyncCopy>& group) {
  for (const AsyncCopy& copy : group) {
    Chunk& chunk = b.chunks[copy.offset / 16];
    chunk.async_visible = false;
    chunk.tma = false;
    t.unfenced.push_back(copy.offset);
    if (copy.bytes > 0) std::memcpy(&b.smem[copy.offset], copy.src, static_cast<size_t>(copy.bytes));
    if (copy.bytes < 16) std::memset(&b.smem[copy.offset + copy.bytes], 0, static_cast<size_t>(16 - copy.bytes));
    chunk.pending = false;
    chunk.written = true;
    chunk.write_epoch = b.epoch;
  }
}

void finish_thread() {
  Block& b = block();
  Thread& t = thread();
  Warp& w = warp();
  size_t in_flight = t.open_group.size();
  for (const auto& group : t.groups) in_flight += group.size();
  if (in_flight != 0) fail("exits with " + std::to_string(in_flight) + " cp.async copies never waited for");
  if (w.arrived != 0) fail("exits while " + std::to_string(w.arrived) + " lanes of its warp wait at " + w.site);
  WarpGroup& g = warpgroup();
  if (!g.open.empty() || !g.committed.empty()) fail("exits with wgmma operations of its warpgroup never waited for");
  if (g.arrived != 0) fail("exits while " + std::to_string(g.arrived) + " threads of its warpgroup wait at " + g.site);
  t.done = true;
  --b.alive;
  --w.alive;
  --g.alive;
  ++b.progress;
  if (b.barrier_arrived > 0 && b.barrier_arrived == b.alive) release_barrier(b);
  switch_fiber(t.fiber, b.scheduler, true);
  std::abort();  // a finished fiber is never resumed
}

void fiber_entry() {
#if SIMT_ASAN
  // First entry into this fiber: completes the switch begun by the scheduler.
  __sanitizer_finish_switch_fiber(nullptr, &block().scheduler.stack_bottom, &block().scheduler.stack_bytes);
#endif
  (*block().launch->body)();
  finish_thread();
}

std::string deadlock_report(const Block& b) {
  std::map<std::string, int> waiting;
  for (const Thread& t : b.threads) {
    if (!t.done) ++waiting[t.waiting_at != nullptr ? t.waiting_at : "?"];
  }
  std::ostringstream s;
  s << where(b) << ": deadlock, no thread can proceed;";
  for (const auto& [site, count] : waiting) s << " " << count << " at " << site << ";";
  s << " " << b.barrier_arrived << " of " << b.alive << " live threads at __syncthreads";
  return s.str();
}

void setup_block(Block& b, Launch& launch) {
  const int n = static_cast<int>(launch.block.x);
  b.launch = &launch;
  b.threads.assign(static_cast<size_t>(n), Thread{});
  const int warps = (n + kWarpSize - 1) / kWarpSize;
  b.warps.assign(static_cast<size_t>(warps), Warp{});
  b.groups.clear();
  for (int i = 0; i < (n + kWarpGroupSize - 1) / kWarpGroupSize; ++i) b.groups.push_back(std::make_unique<WarpGroup>());
  b.stacks.clear();
  for (int i = 0; i < n; ++i) b.stacks.emplace_back(new char[kStackBytes]);
  b.smem.assign(std::max<size_t>(launch.smem_bytes, 16), kUninitialized);
  b.chunks.assign((b.smem.size() + 15) / 16, Chunk{});
}

void run_block(Block& b, uint64_t linear) {
  Launch& launch = *b.launch;
  const int n = static_cast<int>(b.threads.size());
  b.block_idx = uint3{static_cast<unsigned>(linear % launch.grid.x),
                      static_cast<unsigned>(linear / launch.grid.x % launch.grid.y),
                      static_cast<unsigned>(linear / launch.grid.x / launch.grid.y)};
  for (int i = 0; i < n; ++i) {
    Thread& t = b.threads[static_cast<size_t>(i)];
    t = Thread{};
    t.context.thread_idx = uint3{static_cast<unsigned>(i), 0, 0};
    t.context.block_idx = b.block_idx;
    t.context.block_dim = uint3{launch.block.x, 1, 1};
    t.context.grid_dim = uint3{launch.grid.x, launch.grid.y, launch.grid.z};
#if SIMT_ASAN
    // Frames of an earlier block's fibers (never unwound) may have left this memory poisoned.
    ASAN_UNPOISON_MEMORY_REGION(b.stacks[static_cast<size_t>(i)].get(), kStackBytes);
#endif
    std::memset(b.stacks[static_cast<size_t>(i)].get(), kStackGuard, kStackGuardBytes);
    prepare_fiber(t.fiber, b.stacks[static_cast<size_t>(i)].get(), kStackBytes, &fiber_entry);
  }
  for (size_t w = 0; w < b.warps.size(); ++w) {
    b.warps[w] = Warp{};
    b.warps[w].size = std::min(kWarpSize, n - static_cast<int>(w) * kWarpSize);
    b.warps[w].alive = b.warps[w].size;
  }
  for (size_t i = 0; i < b.groups.size(); ++i) {
    WarpGroup& g = *b.groups[i];
    g = WarpGroup{};
    g.size = std::min(kWarpGroupSize, n - static_cast<int>(i) * kWarpGroupSize);
    g.alive = g.size;
  }
  std::fill(b.smem.begin(), b.smem.end(), kUninitialized);
  std::fill(b.chunks.begin(), b.chunks.end(), Chunk{});
  b.mbarriers.clear();
  for (auto& named : b.named) named = Block::Named{};
  b.alive = n;
  b.barrier_arrived = 0;
  b.barrier_generation = 0;
  b.epoch = 1;
  b.failure.clear();
  b.rng.seed(launch.seed * 0x9e3779b97f4a7c15ull + linear);

  // Rounds: every live fiber runs until it blocks or finishes, in a random rotation and direction
  // each round. A round in which nothing arrives anywhere is a deadlock.
  while (b.alive > 0 && b.failure.empty()) {
    const uint64_t before = b.progress;
    const uint64_t r = b.rng();
    const int start = static_cast<int>(r % static_cast<uint64_t>(n));
    const bool backwards = (r >> 32) & 1;
    for (int k = 0; k < n && b.failure.empty(); ++k) {
      const int i = backwards ? (start - k + n) % n : (start + k) % n;
      if (b.threads[static_cast<size_t>(i)].done) continue;
      b.current = i;
      switch_fiber(b.scheduler, b.threads[static_cast<size_t>(i)].fiber);
    }
    b.current = -1;
    if (b.failure.empty() && b.alive > 0 && b.progress == before) b.failure = deadlock_report(b);
  }
  for (int id = 1; id < 16 && b.failure.empty(); ++id) {
    if (b.named[id].arrived != 0) {
      b.failure = where(b) + ": named barrier " + std::to_string(id) + " ends with " + std::to_string(b.named[id].arrived) +
                  " arrivals in a phase that never completed";
    }
  }
  for (const auto& [offset, bar] : b.mbarriers) {
    if (b.failure.empty() && !bar.copies.empty()) {
      b.failure = where(b) + ": " + std::to_string(bar.copies.size()) + " TMA copies to the mbarrier at shared offset " +
                  std::to_string(offset) + " never waited for";
    }
  }
  for (int i = 0; i < n && b.failure.empty(); ++i) {
    const char* stack = b.stacks[static_cast<size_t>(i)].get();
    if (std::any_of(stack, stack + kStackGuardBytes, [](char c) { return static_cast<unsigned char>(c) != kStackGuard; })) {
      b.current = i;
      b.failure = where(b) + ": overflowed its " + std::to_string(kStackBytes) + "-byte emulator stack";
    }
  }
  ++b.counters.blocks;
}

void run_worker(Launch& launch) {
  Block b;
  setup_block(b, launch);
  tl_block = &b;
  const uint64_t total = uint64_t(launch.grid.x) * launch.grid.y * launch.grid.z;
  for (;;) {
    if (launch.failed.load(std::memory_order_relaxed)) break;
    const uint64_t linear = launch.next_block.fetch_add(1);
    if (linear >= total) break;
    run_block(b, linear);
    if (!b.failure.empty()) {
      const std::lock_guard<std::mutex> lock(launch.mutex);
      if (launch.failure.empty()) launch.failure = b.failure;
      launch.failed = true;
      break;
    }
  }
  tl_block = nullptr;
  const std::lock_guard<std::mutex> lock(launch.mutex);
  add(launch.counters, b.counters);
}

int worker_count(uint64_t blocks) {
  int workers = static_cast<int>(std::thread::hardware_concurrency());
  if (const char* env = std::getenv("SIMT_THREADS"); env != nullptr && std::atoi(env) > 0) workers = std::atoi(env);
  return static_cast<int>(std::min<uint64_t>(std::max(workers, 1), blocks));
}

int env_int(const char* name, int fallback) {
  const char* env = std::getenv(name);
  return env != nullptr && std::atoi(env) > 0 ? std::atoi(env) : fallback;
}

std::atomic<uint64_t> launch_counter{0};

int compute_capability_major() { return env_int("SIMT_CC_MAJOR", 9); }

// What a block may opt into: 64 KiB on Turing (T4), 163 KiB on the A100, 227 KiB on the H100; SIMT_SMEM_OPTIN_KIB
// overrides it (99 for an sm_86/sm_89 GPU such as the A10 or L4).
int opt_in_smem_limit() {
  const int major = compute_capability_major();
  return env_int("SIMT_SMEM_OPTIN_KIB", major >= 9 ? 227 : major == 8 ? 163 : 64) * 1024;
}

}  // namespace

// ---- device side ------------------------------------------------------------------------------

const ThreadContext& context() { return thread().context; }

LaunchStats take_stats() {
  const LaunchStats stats = tl_last_stats;
  tl_last_stats = LaunchStats{};
  return stats;
}

void syncthreads(const char* site) {
  Block& b = block();
  Warp& w = warp();
  if (w.arrived != 0) fail(std::string("__syncthreads while lanes of its warp wait at ") + w.site);
  if (warpgroup().arrived != 0) fail(std::string("__syncthreads while threads of its warpgroup wait at ") + warpgroup().site);
  if (b.barrier_arrived == 0) {
    b.barrier_site = site;
  } else if (std::strcmp(b.barrier_site, site) != 0) {
    fail(std::string("__syncthreads at ") + site + " while " + std::to_string(b.barrier_arrived) +
         " threads wait at the one at " + b.barrier_site + " (a barrier in divergent code)");
  }
  ++b.progress;
  if (++b.barrier_arrived == b.alive) {
    release_barrier(b);
    return;
  }
  const uint64_t generation = b.barrier_generation;
  thread().waiting_at = site;
  while (b.barrier_generation == generation) yield();
  thread().waiting_at = nullptr;
}

void syncwarp(unsigned mask) {
  check_full_mask(mask, "__syncwarp");
  warp_arrive("__syncwarp");
}

uint32_t shfl_xor(unsigned mask, uint32_t value, int lane_mask) {
  check_full_mask(mask, "__shfl_xor_sync");
  const int lane = lane_id();
  deposit_slot().words[lane][0] = value;
  const WarpSlot& slot = warp_arrive("__shfl_xor_sync");
  const int src = lane ^ lane_mask;
  return src >= 0 && src < kWarpSize ? slot.words[src][0] : value;
}

uint32_t shfl_idx(unsigned mask, uint32_t value, int src_lane) {
  check_full_mask(mask, "__shfl_sync");
  deposit_slot().words[lane_id()][0] = value;
  const WarpSlot& slot = warp_arrive("__shfl_sync");
  return slot.words[src_lane & (kWarpSize - 1)][0];
}

bool vote_any(unsigned mask, bool predicate) {
  check_full_mask(mask, "__any_sync");
  deposit_slot().words[lane_id()][0] = predicate ? 1u : 0u;
  const WarpSlot& slot = warp_arrive("__any_sync");
  for (int l = 0; l < warp().size; ++l) {
    if (slot.words[l][0] != 0) return true;
  }
  return false;
}

uint32_t vote_ballot(unsigned mask, bool predicate) {
  check_full_mask(mask, "__ballot_sync");
  deposit_slot().words[lane_id()][0] = predicate ? 1u : 0u;
  const WarpSlot& slot = warp_arrive("__ballot_sync");
  uint32_t bits = 0;
  for (int l = 0; l < warp().size; ++l) {
    if (slot.words[l][0] != 0) bits |= 1u << l;
  }
  return bits;
}

bool vote_all(unsigned mask, bool predicate) {
  check_full_mask(mask, "__all_sync");
  deposit_slot().words[lane_id()][0] = predicate ? 1u : 0u;
  const WarpSlot& slot = warp_arrive("__all_sync");
  for (int l = 0; l < warp().size; ++l) {
    if (slot.words[l][0] == 0) return false;
  }
  return true;
}

void* dynamic_shared_memory() { return block().smem.data(); }

uint32_t shared_address(const void* ptr) {
  Block& b = block();
  const auto* p = static_cast<const unsigned char*>(ptr);
  if (p < b.smem.data() || p > b.smem.data() + b.smem.size()) {
    fail("__cvta_generic_to_shared of a pointer outside the block's dynamic shared memory");
  }
  return static_cast<uint32_t>(p - b.smem.data());
}

void cp_async_16_prefix(void* smem_dst, const void* gmem_src, int src_bytes) {
  Block& b = block();
  const uint32_t offset = shared_address(smem_dst);
  Chunk& chunk = chunk_at(b, offset, "cp.async");
  if (src_bytes < 0 || src_bytes > 16) fail("cp.async: source size " + std::to_string(src_bytes) + " is not in [0, 16]");
  if (src_bytes > 0) {
    if (reinterpret_cast<uintptr_t>(gmem_src) % 16 != 0) fail("cp.async: global source is not 16-byte aligned");
    if (!DeviceMemory::find(b.launch->allocations, gmem_src, static_cast<size_t>(src_bytes))) {
      std::ostringstream s;
      s << "cp.async reads " << src_bytes << " bytes at " << gmem_src << ", outside every device allocation";
      fail(s.str());
    }
  }
  if (chunk.pending) fail("cp.async to shared bytes [" + std::to_string(offset) + ", +16) while another copy to them is in flight");
  if (chunk.async_reads != 0) {
    fail("cp.async overwrites shared bytes [" + std::to_string(offset) + ", +16) that a wgmma in flight reads (missing wgmma.wait_group)");
  }
  const uint32_t me = 1u << warp_id();
  if (chunk.read_epoch == b.epoch && (chunk.readers & ~me) != 0) {
    fail("cp.async overwrites shared bytes [" + std::to_string(offset) +
         ", +16) that another warp read since the last __syncthreads (write-after-read race)");
  }
  chunk.pending = true;
  thread().open_group.push_back(AsyncCopy{offset, gmem_src, src_bytes});
  ++b.counters.cp_async;
}

void cp_async_16(void* smem_dst, const void* gmem_src, bool valid) { cp_async_16_prefix(smem_dst, gmem_src, valid ? 16 : 0); }

namespace {
// Checks a read of `bytes` (a description) in `chunk` by warp bit `me` — written by a cp.async (or store)
// that was waited for and published by a __syncthreads — and records the warp as a reader in this
// barrier interval (for the write-after-read checks of later copies).
void note_shared_read(Block& b, Chunk& chunk, const char* site, const std::string& bytes, uint32_t me) {
  if (chunk.pending) fail(std::string(site) + " reads " + bytes + " while a cp.async to them is in flight (missing cp.async.wait)");
  if (!chunk.written) fail(std::string(site) + " reads " + bytes + " that nothing wrote");
  if (!chunk.tma && chunk.write_epoch == b.epoch) {  // TMA data is ordered by its mbarrier instead
    fail(std::string(site) + " reads " + bytes + " that a cp.async completed after the last __syncthreads (read-after-write race)");
  }
  if (chunk.read_epoch != b.epoch) {
    chunk.read_epoch = b.epoch;
    chunk.readers = 0;
  }
  chunk.readers |= me;
}

// A plain shared-memory load of `size` bytes (2 or 4), checked like ldmatrix: the bytes were written by
// a cp.async that was waited for and published by a __syncthreads; marks the warp as a reader.
uint32_t checked_shared_load(const void* smem_src, uint32_t size, const char* site) {
  Block& b = block();
  const uint32_t offset = shared_address(smem_src);
  if (offset % size != 0) fail(std::string(site) + ": shared address " + std::to_string(offset) + " is misaligned");
  Chunk& chunk = chunk_at(b, offset & ~15u, site);
  note_shared_read(b, chunk, site, "shared bytes [" + std::to_string(offset) + ", +" + std::to_string(size) + ")",
                   1u << warp_id());
  uint32_t value = 0;
  std::memcpy(&value, &b.smem[offset], size);
  return value;
}
}  // namespace

void shared_store(void* smem_dst, const void* src, int bytes) {
  Block& b = block();
  const uint32_t offset = shared_address(smem_dst);
  if (bytes != 1 && bytes != 2 && bytes != 4) fail("st.shared: unsupported size " + std::to_string(bytes));
  if (offset % static_cast<uint32_t>(bytes) != 0) fail("st.shared: shared address " + std::to_string(offset) + " is misaligned");
  Chunk& chunk = chunk_at(b, offset & ~15u, "st.shared");
  if (chunk.pending) fail("st.shared to shared bytes [" + std::to_string(offset) + ", +" + std::to_string(bytes) + ") while a cp.async to them is in flight");
  if (chunk.read_epoch == b.epoch && (chunk.readers & ~(1u << warp_id())) != 0) {
    fail("st.shared overwrites shared bytes [" + std::to_string(offset) +
         ") that another warp read since the last __syncthreads (write-after-read race)");
  }
  if (chunk.async_reads != 0) {
    fail("st.shared overwrites shared bytes [" + std::to_string(offset) + ") that a wgmma in flight reads (missing wgmma.wait_group)");
  }
  std::memcpy(&b.smem[offset], src, static_cast<size_t>(bytes));
  chunk.written = true;
  chunk.write_epoch = b.epoch;
  chunk.async_visible = false;
  chunk.tma = false;
  thread().unfenced.push_back(offset & ~15u);
}

uint32_t shared_load_u32(const void* smem_src) { return checked_shared_load(smem_src, 4, "ld.shared.b32"); }
uint16_t shared_load_u16(const void* smem_src) {
  return static_cast<uint16_t>(checked_shared_load(smem_src, 2, "ld.shared.b16"));
}

void cp_async_commit() {
  Thread& t = thread();
  t.groups.push_back(std::move(t.open_group));
  t.open_group.clear();
}

void cp_async_wait(int pending_groups) {
  Block& b = block();
  Thread& t = thread();
  while (t.groups.size() > static_cast<size_t>(std::max(pending_groups, 0))) {
    complete_group(b, t, t.groups.front());
    t.groups.pop_front();
  }
}

void ldmatrix_x4(uint32_t (&r)[4], uint32_t smem_addr, bool trans) {
  Block& b = block();
  const int lane = lane_id();
  deposit_slot().words[lane][0] = smem_addr;
  const char* site = trans ? "ldmatrix.x4.trans" : "ldmatrix.x4";
  WarpSlot& slot = warp_arrive(site);
  Warp& w = warp();
  if (slot.decoded_for != w.generation) {  // the first lane past the rendezvous reads for the warp
    slot.decoded_for = w.generation;
    ++b.counters.ldmatrix;
    const uint32_t me = 1u << warp_id();
    for (int l = 0; l < kWarpSize; ++l) {
      const uint32_t offset = slot.words[l][0];
      Chunk& chunk = chunk_at(b, offset, site);
      note_shared_read(b, chunk, site,
                       "shared bytes [" + std::to_string(offset) + ", +16) (row address of lane " + std::to_string(l) + ")", me);
      std::memcpy(slot.rows[l], &b.smem[offset], 16);
    }
    // Bank conflicts: each 8x8 matrix is one shared-memory wavefront when its 8 row addresses fall
    // in 8 distinct 16-byte bank groups (the 32 banks of 4 bytes); every repeat costs one more.
    for (int i = 0; i < 4; ++i) {
      int per_group[8] = {};
      int worst = 0;
      for (int row = 0; row < 8; ++row) worst = std::max(worst, ++per_group[(slot.words[8 * i + row][0] / 16) % 8]);
      b.counters.ldmatrix_conflicts += static_cast<uint64_t>(worst - 1);
    }
  }
  const int g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    if (trans) {
      r[i] = uint32_t(slot.rows[8 * i + 2 * t][g]) | (uint32_t(slot.rows[8 * i + 2 * t + 1][g]) << 16);
    } else {
      r[i] = uint32_t(slot.rows[8 * i + g][2 * t]) | (uint32_t(slot.rows[8 * i + g][2 * t + 1]) << 16);
    }
  }
}

namespace {

// A tf32 mma's sum of c and its products as the tensor cores form it: every addend is aligned to the largest one
// and cut (toward zero) below a window of sum_window_bits() under its leading bit, the aligned addends are added
// exactly, and the sum is rounded toward zero to fp32 — not one round-to-nearest of the exact sum. Seen on an H200:
// 3xTF32 scores near 1e4, summed by three mma per k-step into one accumulator, drifted past the fp32 tolerance
// (PaddingThatOutscoresItsBiasStaysLive, worst error 1.0974469887947969 times its bound). Round-to-nearest, a final
// truncation alone, or a window of 24 or 23 bits do not reproduce that here; a window of 22 bits reproduces that
// number to the last digit. SIMT_MMA_WINDOW_BITS sets another. The 16-bit mma (and wgmma) keep one round-to-nearest
// of the exact sum: with a 22-bit window, fp16 scores started at a finfo.min bias over the scale lost what the H200
// kept (its runs of LowestFiniteBiasIsAnOrdinaryNumber and MasksInTheScoreAccumulatorsMatchTheReference passed).
int sum_window_bits() {
  static const int bits = [] {
    const char* value = std::getenv("SIMT_MMA_WINDOW_BITS");
    return value != nullptr ? std::atoi(value) : 22;
  }();
  return bits;
}

float tf32_tensor_core_sum(double c, const double* products, int count) {
  double largest = std::fabs(c);
  bool finite = std::isfinite(c);
  for (int i = 0; i < count; ++i) {
    largest = std::max(largest, std::fabs(products[i]));
    finite = finite && std::isfinite(products[i]);
  }
  double sum = 0.0;
  if (!finite || largest == 0.0) {  // inf and NaN as IEEE arithmetic gives them; zeros add to zero
    sum = c;
    for (int i = 0; i < count; ++i) sum += products[i];
    return static_cast<float>(sum);
  }
  int exponent = 0;
  std::frexp(largest, &exponent);  // largest = m · 2^exponent, m in [0.5, 1)
  const double quantum = std::ldexp(1.0, exponent - sum_window_bits());
  const auto cut = [quantum](double x) { return std::trunc(x / quantum) * quantum; };
  sum = cut(c);
  for (int i = 0; i < count; ++i) sum += cut(products[i]);  // exact: a few dozen bits at most
  float rounded = static_cast<float>(sum);
  if (std::isfinite(rounded) && std::fabs(double(rounded)) > std::fabs(sum)) rounded = std::nextafter(rounded, 0.0f);
  if (std::isinf(rounded)) rounded = std::copysign(FLT_MAX, rounded);  // a finite sum past FLT_MAX, toward zero
  return rounded;
}

// The common part of the mma.sync emulations: each lane deposits its fragment words (a0..a3, b0, b1), the warp
// meets at `site`, the first lane past it fills the slot's A (16 x k) and B (k x 8) from every lane's words with
// decode(words, g, t, slot), and each lane sums its four accumulators over k: exactly with one rounding (16-bit
// inputs), or as tf32_tensor_core_sum does.
template <class Decode>
void mma_sync(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, const char* site, int k, bool tf32,
              Decode decode) {
  Block& b = block();
  const int lane = lane_id();
  uint32_t* words = deposit_slot().words[lane];
  for (int i = 0; i < 4; ++i) words[i] = a[i];
  words[4] = b0;
  words[5] = b1;
  WarpSlot& slot = warp_arrive(site);
  Warp& w = warp();
  if (slot.decoded_for != w.generation) {
    slot.decoded_for = w.generation;
    ++b.counters.mma;
    for (int l = 0; l < kWarpSize; ++l) decode(slot.words[l], l / 4, l % 4, slot);
  }
  const int g = lane / 4, t = lane % 4;
  for (int e = 0; e < 4; ++e) {
    // Tensor cores do not round an accumulator near the top of the float range the IEEE way: starting
    // scores at -FLT_MAX (a clamped bfloat16 finfo.min) gave NaN on an H200 where this emulator's exact
    // sum gave -FLT_MAX. Such accumulators are refused here, so that no kernel relies on them.
    if (std::isfinite(c[e]) && std::fabs(c[e]) > 0x1p126f) {
      fail("mma accumulator " + std::to_string(c[e]) + " within a factor 2 of FLT_MAX: tensor cores do not round there");
    }
    const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
    double products[16];  // products of 16-bit or tf32 inputs are exact in double
    for (int i = 0; i < k; ++i) products[i] = double(slot.a[row][i]) * double(slot.b[i][col]);
    if (tf32) {
      c[e] = tf32_tensor_core_sum(c[e], products, k);
    } else {
      double sum = c[e];  // one rounding of the exact sum
      for (int i = 0; i < k; ++i) sum += products[i];
      c[e] = static_cast<float>(sum);
    }
  }
}

}  // namespace

void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, MmaInput type) {
  const auto element = [type](uint32_t word, int half) {
    const uint16_t bits = static_cast<uint16_t>(word >> (16 * half));
    return type == MmaInput::kFloat16 ? half_bits_to_float(bits) : bits_float(uint32_t(bits) << 16);
  };
  mma_sync(c, a, b0, b1, type == MmaInput::kFloat16 ? "mma.m16n8k16.f16" : "mma.m16n8k16.bf16", 16, false,
           [&](const uint32_t* in, int g, int t, WarpSlot& slot) {
             for (int h = 0; h < 2; ++h) {
               slot.a[g][2 * t + h] = element(in[0], h);
               slot.a[g + 8][2 * t + h] = element(in[1], h);
               slot.a[g][2 * t + 8 + h] = element(in[2], h);
               slot.a[g + 8][2 * t + 8 + h] = element(in[3], h);
               slot.b[2 * t + h][g] = element(in[4], h);
               slot.b[2 * t + 8 + h][g] = element(in[5], h);
             }
           });
}

void mma_m16n8k8_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  // The tensor cores read the top 19 bits of each operand word (sign, exponent, 10 mantissa bits): the low
  // 13 bits of a finite operand are dropped (truncation), as the kernels' split into tf32 parts assumes.
  const auto element = [](uint32_t word) {
    const float x = bits_float(word);
    return std::isfinite(x) ? bits_float(word & ~0x1fffu) : x;
  };
  mma_sync(c, a, b0, b1, "mma.m16n8k8.tf32", 8, true, [&](const uint32_t* in, int g, int t, WarpSlot& slot) {
    slot.a[g][t] = element(in[0]);
    slot.a[g + 8][t] = element(in[1]);
    slot.a[g][t + 4] = element(in[2]);
    slot.a[g + 8][t + 4] = element(in[3]);
    slot.b[t][g] = element(in[4]);
    slot.b[t + 4][g] = element(in[5]);
  });
}

// ---- wgmma (sm_90a) ------------------------------------------------------------------------------

namespace {

// A NaN whose bits mark accumulators a wgmma in flight will write: a read before wgmma.wait_group sees
// NaN, and a write in between is detected at completion.
constexpr uint32_t kInFlightBits = 0x7fd0bad0u;

bool in_flight_poison(float x) { return to_word(x) == kInFlightBits; }

// One warpgroup-wide rendezvous (all threads of the warpgroup at the same site). Returns true for the one
// thread that performs the collective's action (the first past the rendezvous, before any other leaves).
bool warpgroup_arrive(const char* site) {
  WarpGroup& g = warpgroup();
  if (g.size != kWarpGroupSize) fail(std::string(site) + ": the block's threads do not form whole warpgroups of 128");
  if (warp().arrived != 0) fail(std::string(site) + ": warpgroup collective while lanes of its warp wait at " + warp().site);
  const uint64_t generation = rendezvous(g, site, "warpgroup", "thread");
  if (g.done_for == generation) return false;
  g.done_for = generation;
  return true;
}

WgDeposit& warpgroup_deposit() {
  WarpGroup& g = warpgroup();
  return g.deposits[g.generation & 1][block().current % kWarpGroupSize];
}

uint32_t descriptor_field(uint64_t desc, int shift) { return static_cast<uint32_t>((desc >> shift) & 0x3fffu) << 4; }

// Byte offset (after the 128-byte swizzle: bits 4-6 XOR bits 7-9) of element (row, k) of a K-major
// operand: 8-row groups SBO apart, rows 128 bytes apart, k contiguous within one 128-byte row.
uint32_t kmajor_offset(uint64_t desc, int row, int k) {
  const uint32_t logical = descriptor_field(desc, 0) + uint32_t(row / 8) * descriptor_field(desc, 32) + uint32_t(row % 8) * 128 +
                           uint32_t(k) * 2;
  return logical ^ (((logical >> 7) & 7u) << 4);
}

// Element (k, n) of an N-major operand: 64 consecutive n per 128-byte row, n-blocks of 64 LBO apart, rows
// (k) 128 bytes apart, 8-row groups of k SBO apart.
uint32_t nmajor_offset(uint64_t desc, int k, int n) {
  const uint32_t logical = descriptor_field(desc, 0) + uint32_t(n % 64) * 2 + uint32_t(n / 64) * descriptor_field(desc, 16) +
                           uint32_t(k % 8) * 128 + uint32_t(k / 8) * descriptor_field(desc, 32);
  return logical ^ (((logical >> 7) & 7u) << 4);
}

void check_descriptor(uint64_t desc, bool n_major, const char* operand) {
  if ((desc >> 62) != 1) fail(std::string("wgmma: ") + operand + " descriptor: the emulator supports the 128-byte swizzle only (mode 1)");
  if (((desc >> 49) & 7u) != 0) fail(std::string("wgmma: ") + operand + " descriptor: base offset must be 0");
  const uint32_t start = descriptor_field(desc, 0);
  if (n_major ? start % 128 != 0 : start % 128 + 32 > 128) {
    fail(std::string("wgmma: ") + operand + " descriptor start " + std::to_string(start) +
         (n_major ? " is not at a 128-byte row" : ": 16 k-elements would cross a 128-byte swizzle row"));
  }
  if (descriptor_field(desc, 32) % 1024 != 0) {
    fail(std::string("wgmma: ") + operand + " descriptor stride byte offset is not a multiple of 1024 (8 swizzled rows)");
  }
}

float element_at(Block& b, uint32_t offset, MmaInput type) {
  if (size_t(offset) + 2 > b.smem.size()) fail("wgmma reads shared byte " + std::to_string(offset) + " outside dynamic shared memory");
  uint16_t bits;
  std::memcpy(&bits, &b.smem[offset], 2);
  return type == MmaInput::kFloat16 ? half_bits_to_float(bits) : bits_float(uint32_t(bits) << 16);
}

// The shared chunks an operation reads, each checked as an async-proxy read at issue.
void note_wgmma_reads(Block& b, WgmmaOp& op) {
  std::vector<uint32_t> offsets;
  const auto add = [&](uint32_t offset) { offsets.push_back(offset & ~15u); };
  for (int k = 0; k < 16; ++k) {
    if (!op.a_in_regs) {
      for (int m = 0; m < 64; ++m) add(kmajor_offset(op.desc_a, m, k));
    }
    for (int n = 0; n < op.n; ++n) add(op.trans_b ? nmajor_offset(op.desc_b, k, n) : kmajor_offset(op.desc_b, n, k));
  }
  std::sort(offsets.begin(), offsets.end());
  offsets.erase(std::unique(offsets.begin(), offsets.end()), offsets.end());
  const int first_warp = (b.current / kWarpGroupSize) * 4;
  const uint32_t warps = 0xfu << first_warp;
  for (uint32_t offset : offsets) {
    Chunk& chunk = chunk_at(b, offset, "wgmma.mma_async");
    const std::string bytes = "shared bytes [" + std::to_string(offset) + ", +16)";
    if (chunk.pending) fail("wgmma.mma_async reads " + bytes + " while a cp.async to them is in flight (missing cp.async.wait)");
    if (!chunk.written) fail("wgmma.mma_async reads " + bytes + " that nothing wrote");
    if (!chunk.tma && chunk.write_epoch == b.epoch) {
      fail("wgmma.mma_async reads " + bytes + " written after the last __syncthreads (read-after-write race)");
    }
    if (!chunk.tma && (!chunk.async_visible || chunk.fence_epoch == b.epoch)) {
      fail("wgmma.mma_async reads " + bytes +
           " that were not published to the async proxy (fence.proxy.async by the writer, then a barrier)");
    }
    if (chunk.read_epoch != b.epoch) {
      chunk.read_epoch = b.epoch;
      chunk.readers = 0;
    }
    chunk.readers |= warps;
    ++chunk.async_reads;
  }
  op.chunks = std::move(offsets);
}

void complete_wgmma(Block& b, WgmmaOp& op) {
  for (uint32_t offset : op.chunks) --b.chunks[offset / 16].async_reads;
  float a[64][16];
  std::vector<float> bm(size_t(16) * size_t(op.n));
  for (int k = 0; k < 16; ++k) {
    if (!op.a_in_regs) {
      for (int m = 0; m < 64; ++m) a[m][k] = element_at(b, kmajor_offset(op.desc_a, m, k), op.type);
    }
    for (int n = 0; n < op.n; ++n) {
      bm[size_t(k) * op.n + n] = element_at(b, op.trans_b ? nmajor_offset(op.desc_b, k, n) : kmajor_offset(op.desc_b, n, k), op.type);
    }
  }
  const auto element = [&op](uint32_t word, int half) {
    const uint16_t bits = static_cast<uint16_t>(word >> (16 * half));
    return op.type == MmaInput::kFloat16 ? half_bits_to_float(bits) : bits_float(uint32_t(bits) << 16);
  };
  if (op.a_in_regs) {
    for (int i = 0; i < kWarpGroupSize; ++i) {
      for (int r = 0; r < 4; ++r) {
        if (op.a_ptr[i][r] != op.a[i][r]) fail("the A registers of a wgmma in flight changed before wgmma.wait_group");
      }
      const int w = i / 32, g = (i % 32) / 4, t = i % 4;
      for (int h = 0; h < 2; ++h) {
        a[16 * w + g][2 * t + h] = element(op.a[i][0], h);
        a[16 * w + g + 8][2 * t + h] = element(op.a[i][1], h);
        a[16 * w + g][2 * t + 8 + h] = element(op.a[i][2], h);
        a[16 * w + g + 8][2 * t + 8 + h] = element(op.a[i][3], h);
      }
    }
  }
  const int regs = op.n / 2;
  for (int i = 0; i < kWarpGroupSize; ++i) {
    const int w = i / 32, g = (i % 32) / 4, t = i % 4;
    float* d = op.d[i];
    for (int e = 0; e < regs; ++e) {
      const int row = 16 * w + g + 8 * ((e >> 1) & 1);
      const int col = 8 * (e >> 2) + 2 * t + (e & 1);
      float in = 0.0f;
      if (op.chained[i]) {
        in = d[e];  // the previous operation's result, just written
      } else {
        if (!in_flight_poison(d[e])) fail("an accumulator of a wgmma in flight was written before wgmma.wait_group");
        in = op.d_in[size_t(i) * regs + e];
      }
      if (!op.accumulate) in = 0.0f;
      if (std::isfinite(in) && std::fabs(in) > 0x1p126f) {
        fail("wgmma accumulator " + std::to_string(in) + " within a factor 2 of FLT_MAX: tensor cores do not round there");
      }
      double sum = in;  // exact products, one rounding of the whole sum
      for (int k = 0; k < 16; ++k) sum += double(a[row][k]) * double(bm[size_t(k) * op.n + col]);
      d[e] = static_cast<float>(sum);
    }
  }
}

}  // namespace

void wgmma_fence() {
  if (warpgroup_arrive("wgmma.fence")) warpgroup().fenced = true;
}

void wgmma_mma_async(float* d, int n, uint64_t desc_a, const uint32_t* a_regs, uint64_t desc_b, bool trans_b, bool accumulate,
                     MmaInput type) {
  WgDeposit& mine = warpgroup_deposit();
  mine.d = d;
  mine.a_ptr = a_regs;
  mine.desc_a = desc_a;
  mine.desc_b = desc_b;
  mine.config = uint32_t(n) | uint32_t(trans_b) << 16 | uint32_t(accumulate) << 17 | uint32_t(a_regs != nullptr) << 18 |
                uint32_t(type) << 19;
  WarpGroup& g = warpgroup();
  const WgDeposit* deposits = g.deposits[g.generation & 1];
  if (!warpgroup_arrive("wgmma.mma_async")) return;
  Block& b = block();
  if (!g.fenced) fail("wgmma.mma_async without a wgmma.fence since the last wgmma.wait_group");
  if (n < 8 || n > 256 || n % 8 != 0) fail("wgmma.mma_async: n = " + std::to_string(n) + " is not a multiple of 8 in [8, 256]");
  WgmmaOp op;
  op.type = type;
  op.n = n;
  op.a_in_regs = a_regs != nullptr;
  op.trans_b = trans_b;
  op.accumulate = accumulate;
  op.desc_a = desc_a;
  op.desc_b = desc_b;
  for (int i = 0; i < kWarpGroupSize; ++i) {
    const WgDeposit& dep = deposits[i];
    if (dep.config != deposits[0].config || dep.desc_b != desc_b || (!op.a_in_regs && dep.desc_a != desc_a)) {
      fail("wgmma.mma_async: the threads of the warpgroup disagree on shape, type or descriptors");
    }
  }
  if (!op.a_in_regs) check_descriptor(desc_a, false, "A");
  check_descriptor(desc_b, trans_b, "B");
  const int regs = n / 2;
  op.d_in.assign(size_t(kWarpGroupSize) * regs, 0.0f);
  // Accumulators an earlier operation in flight writes (same registers): this one is chained to it.
  std::vector<const float*> in_flight;
  for (const auto& group : g.committed) {
    for (const WgmmaOp& earlier : group) in_flight.insert(in_flight.end(), earlier.d, earlier.d + kWarpGroupSize);
  }
  for (const WgmmaOp& earlier : g.open) in_flight.insert(in_flight.end(), earlier.d, earlier.d + kWarpGroupSize);
  for (int i = 0; i < kWarpGroupSize; ++i) {
    float* acc = deposits[i].d;
    op.d[i] = acc;
    op.chained[i] = std::find(in_flight.begin(), in_flight.end(), acc) != in_flight.end();
    for (int e = 0; e < regs; ++e) {
      if (op.chained[i] && !in_flight_poison(acc[e])) {
        fail("an accumulator of a wgmma in flight was written before wgmma.wait_group");
      }
      if (!op.chained[i]) op.d_in[size_t(i) * regs + e] = acc[e];
      acc[e] = from_word<float>(kInFlightBits);
    }
    if (op.a_in_regs) {
      op.a_ptr[i] = deposits[i].a_ptr;
      for (int r = 0; r < 4; ++r) op.a[i][r] = deposits[i].a_ptr[r];
    }
  }
  note_wgmma_reads(b, op);
  ++b.counters.wgmma;
  g.open.push_back(std::move(op));
}

void wgmma_commit() {
  if (!warpgroup_arrive("wgmma.commit_group")) return;
  WarpGroup& g = warpgroup();
  g.committed.push_back(std::move(g.open));
  g.open.clear();
}

void wgmma_wait(int pending_groups) {
  if (!warpgroup_arrive("wgmma.wait_group")) return;
  Block& b = block();
  WarpGroup& g = warpgroup();
  while (g.committed.size() > static_cast<size_t>(std::max(pending_groups, 0))) {
    for (WgmmaOp& op : g.committed.front()) complete_wgmma(b, op);
    g.committed.pop_front();
  }
  g.fenced = false;
}

void setmaxnreg(int regs) {
  if (regs < 24 || regs > 256 || regs % 8 != 0) fail("setmaxnreg: " + std::to_string(regs) + " is not a multiple of 8 in 24..256");
  warpgroup_arrive("setmaxnreg");
}

void fence_proxy_async() {
  Block& b = block();
  Thread& t = thread();
  for (uint32_t offset : t.unfenced) {
    Chunk& chunk = b.chunks[offset / 16];
    chunk.async_visible = true;
    chunk.fence_epoch = b.epoch;
  }
  t.unfenced.clear();
}

namespace {
Block::Named& named_barrier(int id, int count, const char* what) {
  Block& b = block();
  if (id < 1 || id > 15) fail(std::string(what) + ": barrier id " + std::to_string(id) + " outside 1..15 (0 is __syncthreads)");
  if (count <= 0 || count % 32 != 0 || count > 1024) {
    fail(std::string(what) + ": thread count " + std::to_string(count) + " is not a positive multiple of 32");
  }
  Block::Named& named = b.named[id];
  if (named.arrived != 0 && named.count != count) {
    fail(std::string(what) + ": barrier " + std::to_string(id) + " used with counts " + std::to_string(named.count) + " and " +
         std::to_string(count) + " in one phase");
  }
  named.count = count;
  return named;
}

// One arrival; returns the phase it joined. Completes the phase when it is the count-th.
uint64_t named_arrive(Block::Named& named) {
  ++block().progress;
  const uint64_t generation = named.generation;
  if (++named.arrived == named.count) {
    named.arrived = 0;
    ++named.generation;
  }
  return generation;
}
}  // namespace

void named_barrier_sync(int id, int count) {
  Block::Named& named = named_barrier(id, count, "bar.sync");
  const uint64_t generation = named_arrive(named);
  thread().waiting_at = "bar.sync (named)";
  while (named.generation == generation) yield();
  thread().waiting_at = nullptr;
}

void named_barrier_arrive(int id, int count) { named_arrive(named_barrier(id, count, "bar.arrive")); }

// ---- mbarriers and TMA (sm_90) ---------------------------------------------------------------------

namespace {

MBarrier& mbarrier_at(void* bar, const char* what) {
  Block& b = block();
  const uint32_t offset = shared_address(bar);
  if (offset % 8 != 0) fail(std::string(what) + ": mbarrier at shared offset " + std::to_string(offset) + " is not 8-byte aligned");
  const auto it = b.mbarriers.find(offset);
  if (it == b.mbarriers.end()) fail(std::string(what) + ": no mbarrier.init at shared offset " + std::to_string(offset));
  return it->second;
}

void complete_phase_if_done(MBarrier& bar) {
  if (bar.pending == 0 && bar.tx == 0) {
    bar.phase ^= 1u;
    bar.pending = bar.count;
  }
}

// Shared bytes a TMA box covers, from `offset`: the box's elements in order, densely, then swizzled.
uint32_t tma_box_bytes(const TensorMap& map) {
  uint32_t elems = 1;
  for (int i = 0; i < map.rank; ++i) elems *= map.box[i];
  return elems * uint32_t(map.elem_bytes);
}

uint32_t swizzle128(uint32_t offset) { return offset ^ (((offset >> 7) & 7u) << 4); }

// Lands one copy: reads the box (zeros outside the tensor), writes it swizzled, marks the chunks.
void land_tma(Block& b, const TmaCopy& copy) {
  const TensorMap& map = copy.map;
  const uint32_t bytes = tma_box_bytes(map);
  std::vector<unsigned char> data(bytes, 0);
  uint32_t index[5] = {};
  const uint32_t elems = bytes / uint32_t(map.elem_bytes);
  for (uint32_t e = 0; e < elems; ++e) {
    uint32_t rest = e;
    bool inside = true;
    uint64_t src = 0;
    for (int i = 0; i < map.rank; ++i) {
      index[i] = rest % map.box[i];
      rest /= map.box[i];
      const int64_t coord = int64_t(copy.coords[i]) + index[i];
      if (coord < 0 || uint64_t(coord) >= map.dims[i]) inside = false;
      src += uint64_t(coord) * map.strides[i];
    }
    if (!inside) continue;
    const auto* from = static_cast<const unsigned char*>(map.base) + src;
    if (!DeviceMemory::find(b.launch->allocations, from, size_t(map.elem_bytes))) {
      fail("TMA reads an element outside every device allocation");
    }
    std::memcpy(&data[size_t(e) * size_t(map.elem_bytes)], from, size_t(map.elem_bytes));
  }
  for (uint32_t c = 0; c < bytes; c += 16) {
    const uint32_t logical = copy.offset + c;
    const uint32_t physical = map.swizzle128 ? swizzle128(logical) : logical;
    std::memcpy(&b.smem[physical], &data[c], 16);
    Chunk& chunk = b.chunks[physical / 16];
    chunk.pending = false;
    chunk.written = true;
    chunk.tma = true;
    chunk.write_epoch = b.epoch;
  }
}

}  // namespace

void mbarrier_init(void* bar, uint32_t count) {
  Block& b = block();
  const uint32_t offset = shared_address(bar);
  if (offset % 8 != 0) fail("mbarrier.init: shared offset " + std::to_string(offset) + " is not 8-byte aligned");
  if (count == 0) fail("mbarrier.init with a count of 0");
  MBarrier fresh;
  fresh.count = fresh.pending = count;
  b.mbarriers[offset] = fresh;
}

void mbarrier_arrive(void* bar) {
  MBarrier& m = mbarrier_at(bar, "mbarrier.arrive");
  if (m.pending == 0) fail("mbarrier.arrive: more arrivals than the barrier's count in one phase");
  --m.pending;
  ++block().progress;
  complete_phase_if_done(m);
}

void mbarrier_arrive_expect_tx(void* bar, uint32_t bytes) {
  MBarrier& m = mbarrier_at(bar, "mbarrier.arrive.expect_tx");
  if (m.pending == 0) fail("mbarrier.arrive.expect_tx: more arrivals than the barrier's count in one phase");
  m.tx += bytes;
  --m.pending;
  ++block().progress;
  complete_phase_if_done(m);
}

void mbarrier_wait(void* bar, uint32_t parity) {
  Block& b = block();
  const uint32_t offset = shared_address(bar);
  thread().waiting_at = "mbarrier.try_wait.parity";
  for (;;) {
    MBarrier& m = mbarrier_at(bar, "mbarrier.try_wait.parity");
    if (!m.copies.empty()) {  // the copies this barrier counts land now
      std::vector<TmaCopy> copies = std::move(m.copies);
      m.copies.clear();
      for (const TmaCopy& copy : copies) {
        land_tma(b, copy);
        MBarrier& again = b.mbarriers.at(offset);
        again.tx -= tma_box_bytes(copy.map);
        ++b.progress;
      }
      MBarrier& landed = b.mbarriers.at(offset);
      if (landed.tx < 0) fail("TMA copies landed more bytes than mbarrier.arrive.expect_tx announced");
      complete_phase_if_done(landed);
    }
    if (b.mbarriers.at(offset).phase != (parity & 1u)) break;  // the phase of that parity has completed
    yield();
  }
  thread().waiting_at = nullptr;
}

void tma_load(void* smem_dst, const TensorMap* map, const int32_t* coords, void* bar) {
  Block& b = block();
  if (map == nullptr || map->base == nullptr || map->rank < 1 || map->rank > 5) fail("cp.async.bulk.tensor: invalid tensor map");
  const uint32_t offset = shared_address(smem_dst);
  if (offset % (map->swizzle128 ? 1024u : 128u) != 0) {
    fail("cp.async.bulk.tensor: shared destination " + std::to_string(offset) + " is not " +
         (map->swizzle128 ? "1024" : "128") + "-byte aligned");
  }
  const uint32_t bytes = tma_box_bytes(*map);
  if (size_t(offset) + bytes > b.smem.size()) fail("cp.async.bulk.tensor: the box does not fit in dynamic shared memory");
  MBarrier& m = mbarrier_at(bar, "cp.async.bulk.tensor");
  for (uint32_t c = 0; c < bytes; c += 16) {
    const uint32_t physical = map->swizzle128 ? swizzle128(offset + c) : offset + c;
    Chunk& chunk = b.chunks[physical / 16];
    if (chunk.pending) fail("cp.async.bulk.tensor to shared bytes [" + std::to_string(physical) + ", +16) while a copy to them is in flight");
    if (chunk.async_reads != 0) {
      fail("cp.async.bulk.tensor overwrites shared bytes [" + std::to_string(physical) + ", +16) that a wgmma in flight reads");
    }
    chunk.pending = true;
  }
  TmaCopy copy;
  copy.offset = offset;
  copy.map = *map;
  for (int i = 0; i < 5; ++i) copy.coords[i] = i < map->rank ? coords[i] : 0;
  m.copies.push_back(copy);
  ++b.counters.tma;
}

const char* encode_tensor_map(TensorMap* map, const void* base, int elem_bytes, int rank, const uint64_t* dims,
                              const uint64_t* byte_strides, const uint32_t* box, bool swizzle128_mode) {
  if (rank < 1 || rank > 5) return "rank outside 1..5";
  if (elem_bytes != 1 && elem_bytes != 2) return "the emulator takes elements of 1 or 2 bytes";
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0) return "global address not 16-byte aligned";
  TensorMap m;
  m.base = base;
  m.rank = rank;
  m.elem_bytes = elem_bytes;
  m.swizzle128 = swizzle128_mode;
  for (int i = 0; i < rank; ++i) {
    if (dims[i] == 0 || dims[i] > (uint64_t(1) << 32)) return "a dimension outside 1..2^32";
    if (box[i] == 0 || box[i] > 256) return "a box dimension outside 1..256";
    m.dims[i] = dims[i];
    m.box[i] = box[i];
    m.strides[i] = i == 0 ? uint64_t(elem_bytes) : byte_strides[i - 1];
    if (i > 0 && (m.strides[i] % 16 != 0 || m.strides[i] >= (uint64_t(1) << 40))) return "a stride not a multiple of 16 below 2^40";
  }
  const uint32_t inner_bytes = box[0] * uint32_t(elem_bytes);
  if (swizzle128_mode && inner_bytes > 128u) return "the inner box dimension exceeds the 128-byte swizzle span";
  if (inner_bytes % 16 != 0) return "the inner box dimension is not a multiple of 16 bytes";
  *map = m;
  return nullptr;
}

// ---- host side --------------------------------------------------------------------------------

// ---- stream capture ---------------------------------------------------------------------------

using GraphOp = std::function<cudaError_t(cudaStream_t)>;

// What a capturing stream has recorded.
struct Capture {
  cudaStreamCaptureMode mode;
  std::vector<GraphOp> ops;
  std::vector<void*> allocations;  // cudaMallocAsync blocks made while capturing: the graph's, freed with it
  bool invalidated = false;
};

// Captures begun by this thread in the global or thread-local mode: the ones its unsafe calls invalidate.
thread_local std::vector<Capture*> tl_strict_captures;

Capture* capture_of(cudaStream_t stream);

cudaError_t capture_op(cudaStream_t stream, GraphOp op) {
  capture_of(stream)->ops.push_back(std::move(op));
  return cudaSuccess;
}

// A call that would synchronise: refused while this thread captures in a strict mode, which invalidates the capture.
bool refused_while_capturing() {
  if (tl_strict_captures.empty()) return false;
  for (Capture* capture : tl_strict_captures) capture->invalidated = true;
  tl_failure_message = "simt: a synchronising call (cudaMalloc, cudaFree, cudaMemcpy, cudaMemset or a synchronisation) "
                       "while a stream captures";
  std::fprintf(stderr, "%s\n", tl_failure_message.c_str());
  return true;
}

cudaError_t launch_erased(const char* launcher, const void* entry, dim3 grid, dim3 block_dim, size_t dynamic_smem_bytes,
                          cudaStream_t stream, std::function<void()> body) {
  const auto misconfigured = [launcher](const std::string& message) {
    tl_failure_message = std::string("simt: ") + launcher + ": " + message;
    std::fprintf(stderr, "%s\n", tl_failure_message.c_str());
    return record(cudaErrorInvalidConfiguration);
  };
  if (stream == nullptr) return misconfigured("launch on the legacy default stream (kernels must run on the caller's stream)");
  if (block_dim.y != 1 || block_dim.z != 1) return misconfigured("the emulator runs 1-D thread blocks only");
  if (block_dim.x == 0 || block_dim.x > 1024) return misconfigured("block of " + std::to_string(block_dim.x) + " threads");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
    return misconfigured("grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) + ", " + std::to_string(grid.z) + ")");
  }
  const int limit = function_attributes().smem_limit(entry);
  if (dynamic_smem_bytes > size_t(limit)) {
    tl_failure_message = std::string("simt: ") + launcher + ": " + std::to_string(dynamic_smem_bytes) +
                         " bytes of dynamic shared memory exceed the kernel's limit of " + std::to_string(limit) +
                         " (cudaFuncAttributeMaxDynamicSharedMemorySize)";
    std::fprintf(stderr, "%s\n", tl_failure_message.c_str());
    return record(cudaErrorInvalidValue);
  }
  if (capture_of(stream) != nullptr) {  // recorded, validated as at capture; runs at each cudaGraphLaunch
    return capture_op(stream, [=](cudaStream_t replay) {
      return launch_erased(launcher, entry, grid, block_dim, dynamic_smem_bytes, replay, body);
    });
  }

  Launch launch;
  launch.launcher = launcher;
  launch.body = &body;
  launch.grid = grid;
  launch.block = block_dim;
  launch.smem_bytes = dynamic_smem_bytes;
  launch.allocations = device_memory().snapshot();
  launch.seed = uint64_t(env_int("SIMT_SEED", 1)) * 1000003u + launch_counter.fetch_add(1);
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  const int workers = worker_count(blocks);
  std::vector<std::thread> pool;
  for (int i = 1; i < workers; ++i) pool.emplace_back(run_worker, std::ref(launch));
  run_worker(launch);
  for (std::thread& worker : pool) worker.join();

  if (std::getenv("SIMT_VERBOSE") != nullptr) {
    std::fprintf(stderr,
                 "simt: %s grid %u x %u x %u, %u threads, %zu B smem: %llu mma, %llu ldmatrix (%llu bank-conflict "
                 "wavefronts), %llu cp.async, %llu barriers, %llu wgmma, %llu tma\n",
                 launcher, grid.x, grid.y, grid.z, block_dim.x, dynamic_smem_bytes,
                 static_cast<unsigned long long>(launch.counters.mma), static_cast<unsigned long long>(launch.counters.ldmatrix),
                 static_cast<unsigned long long>(launch.counters.ldmatrix_conflicts),
                 static_cast<unsigned long long>(launch.counters.cp_async),
                 static_cast<unsigned long long>(launch.counters.barriers),
                 static_cast<unsigned long long>(launch.counters.wgmma),
                 static_cast<unsigned long long>(launch.counters.tma));
  }
  launch.counters.launches = 1;
  launch.counters.min_block_threads = launch.counters.max_block_threads = block_dim.x;
  add(tl_last_stats, launch.counters);
  if (launch.failed) {
    tl_failure_message = "simt: " + launch.failure;
    std::fprintf(stderr, "%s\n", tl_failure_message.c_str());
    tl_last_error = cudaErrorLaunchFailure;  // reported by the next synchronisation, as a kernel fault is
  }
  return cudaSuccess;
}

}  // namespace simt

// ---- CUDA runtime API -------------------------------------------------------------------------

using simt::record;

struct CUstream_st {
  unsigned flags;
  std::unique_ptr<simt::Capture> capture;  // while capturing
};

// The blocks a graph's cudaMallocAsync made: shared by the graph and its instances, freed with the last of them.
struct GraphBlocks {
  std::vector<void*> blocks;
  ~GraphBlocks() {
    for (void* block : blocks) simt::device_memory().release(block);
  }
};

struct CUgraph_st {
  std::vector<simt::GraphOp> ops;
  std::shared_ptr<GraphBlocks> blocks;
};

struct CUgraphExec_st {
  std::vector<simt::GraphOp> ops;
  std::shared_ptr<GraphBlocks> blocks;
};

simt::Capture* simt::capture_of(cudaStream_t stream) { return stream != nullptr ? stream->capture.get() : nullptr; }

using simt::refused_while_capturing;

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return record(device == 0 ? cudaSuccess : cudaErrorInvalidDevice); }

// The emulated device: an H100 by default (SIMT_SM_COUNT, SIMT_CC_MAJOR override).
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return record(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = simt::env_int("SIMT_SM_COUNT", 132); return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = simt::compute_capability_major(); return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = simt::opt_in_smem_limit(); return cudaSuccess;
  }
  return record(cudaErrorInvalidValue);
}

cudaError_t cudaDeviceSynchronize() {
  if (refused_while_capturing()) return record(cudaErrorStreamCaptureUnsupported);
  return simt::tl_last_error;
}
cudaError_t cudaDeviceReset() { return cudaSuccess; }

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (refused_while_capturing()) return record(cudaErrorStreamCaptureUnsupported);
  *ptr = simt::device_memory().allocate(bytes);
  return record(*ptr != nullptr ? cudaSuccess : cudaErrorMemoryAllocation);
}

cudaError_t cudaFree(void* ptr) {
  if (refused_while_capturing()) return record(cudaErrorStreamCaptureUnsupported);
  if (ptr == nullptr) return cudaSuccess;
  return record(simt::device_memory().release(ptr) ? cudaSuccess : cudaErrorInvalidValue);
}

cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t stream) {
  simt::Capture* capture = simt::capture_of(stream);
  if (capture == nullptr) return cudaMalloc(ptr, bytes);
  *ptr = simt::device_memory().allocate(bytes);
  if (*ptr == nullptr) return record(cudaErrorMemoryAllocation);
  capture->allocations.push_back(*ptr);
  void* block = *ptr;
  return simt::capture_op(stream, [block, bytes](cudaStream_t) {  // each replay's block starts out as garbage
    std::memset(block, simt::kUninitialized, std::max<size_t>(bytes, 1));
    return cudaSuccess;
  });
}

cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream) {
  simt::Capture* capture = simt::capture_of(stream);
  if (capture == nullptr) return cudaFree(ptr);
  const auto& own = capture->allocations;
  if (std::find(own.begin(), own.end(), ptr) != own.end()) return cudaSuccess;  // the graph's: freed with it
  if (!simt::device_memory().contains(ptr, 1)) return record(cudaErrorInvalidValue);
  return simt::capture_op(stream, [ptr](cudaStream_t) { return cudaFree(ptr); });
}

namespace {

// A copy or memset done at once (kernels run to completion inside their launch, so every stream is idle).
cudaError_t copy_now(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  auto& memory = simt::device_memory();
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (bytes > 0 && ((dst_device && !memory.contains(dst, bytes)) || (src_device && !memory.contains(src, bytes)))) {
    return record(cudaErrorInvalidValue);
  }
  if (bytes > 0) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t set_now(void* ptr, int value, size_t bytes) {
  if (bytes > 0 && !simt::device_memory().contains(ptr, bytes)) return record(cudaErrorInvalidValue);
  if (bytes > 0) std::memset(ptr, value, bytes);
  return cudaSuccess;
}

}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (refused_while_capturing()) return record(cudaErrorStreamCaptureUnsupported);
  return copy_now(dst, src, bytes, kind);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (simt::capture_of(stream) != nullptr) {
    return simt::capture_op(stream, [=](cudaStream_t) { return copy_now(dst, src, bytes, kind); });
  }
  return copy_now(dst, src, bytes, kind);
}

cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  if (refused_while_capturing()) return record(cudaErrorStreamCaptureUnsupported);
  return set_now(ptr, value, bytes);
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  if (simt::capture_of(stream) != nullptr) {
    return simt::capture_op(stream, [=](cudaStream_t) { return set_now(ptr, value, bytes); });
  }
  return set_now(ptr, value, bytes);
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  *stream = new CUstream_st{flags, nullptr};
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (stream != nullptr && stream->capture != nullptr) return record(cudaErrorIllegalState);
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (simt::capture_of(stream) != nullptr || refused_while_capturing()) {
    if (simt::Capture* capture = simt::capture_of(stream)) capture->invalidated = true;
    return record(cudaErrorStreamCaptureUnsupported);
  }
  return simt::tl_last_error;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  if (stream == nullptr || stream->capture != nullptr) return record(cudaErrorIllegalState);  // not the legacy stream
  stream->capture = std::make_unique<simt::Capture>();
  stream->capture->mode = mode;
  if (mode != cudaStreamCaptureModeRelaxed) simt::tl_strict_captures.push_back(stream->capture.get());
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  if (stream == nullptr || stream->capture == nullptr) return record(cudaErrorIllegalState);
  std::unique_ptr<simt::Capture> capture = std::move(stream->capture);
  auto& strict = simt::tl_strict_captures;
  strict.erase(std::remove(strict.begin(), strict.end(), capture.get()), strict.end());
  if (capture->invalidated) {
    for (void* block : capture->allocations) simt::device_memory().release(block);
    *graph = nullptr;
    return record(cudaErrorStreamCaptureInvalidated);
  }
  auto blocks = std::make_shared<GraphBlocks>();
  blocks->blocks = std::move(capture->allocations);
  *graph = new CUgraph_st{std::move(capture->ops), std::move(blocks)};
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  const simt::Capture* capture = simt::capture_of(stream);
  *status = capture == nullptr       ? cudaStreamCaptureStatusNone
            : capture->invalidated ? cudaStreamCaptureStatusInvalidated
                                   : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (graph == nullptr) return record(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->ops, graph->blocks};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (exec == nullptr || stream == nullptr) return record(cudaErrorInvalidValue);
  if (simt::capture_of(stream) != nullptr) return record(cudaErrorStreamCaptureUnsupported);  // no nested graphs here
  for (const simt::GraphOp& op : exec->ops) {
    if (const cudaError_t error = op(stream); error != cudaSuccess) return record(error);
  }
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGetLastError() {
  const cudaError_t error = simt::tl_last_error;
  simt::tl_last_error = cudaSuccess;
  return error;
}

cudaError_t cudaPeekAtLastError() { return simt::tl_last_error; }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t error) {
  if (error != cudaSuccess && !simt::tl_failure_message.empty()) return simt::tl_failure_message.c_str();
  return cudaGetErrorName(error);
}

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attributes, const void* entry) {
  *attributes = cudaFuncAttributes{};
  attributes->maxThreadsPerBlock = 1024;
  attributes->maxDynamicSharedSizeBytes = simt::function_attributes().smem_limit(entry);
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* entry, cudaFuncAttribute attribute, int value) {
  if (attribute != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > simt::opt_in_smem_limit()) {
    return record(cudaErrorInvalidValue);
  }
  simt::function_attributes().set_smem_limit(entry, value);
  return cudaSuccess;
}

// simt — a host emulator of the CUDA execution model, for running OrtFlash's CUDA kernels (their
// real sources, compiled as C++) on machines without a GPU. Device side: the CUDA keywords, the
// built-in variables and the warp/block intrinsics the kernels use, and the emulated forms of the
// few PTX instructions they issue (cp.async, ldmatrix, mma.sync m16n8k16).
//
// sm_90a's warpgroup MMA (wgmma.mma_async with shared-memory descriptors in the 128-byte swizzle,
// fence/commit/wait, fence.proxy.async) is emulated too, with its asynchrony made visible: operands are
// read and accumulators written when the group is waited for, accumulators hold a NaN pattern while in
// flight, and shared memory a wgmma reads must have been published to the async proxy.
//
// Each thread block runs as one cooperative fiber per CUDA thread. Barriers and warp collectives
// switch fibers; fibers are resumed in a random order every round, so code that relies on an
// unsynchronised ordering sees it broken. Shared memory reached through cp.async and ldmatrix is
// shadowed in 16-byte chunks and every such access is checked (a small racecheck/initcheck):
// reads of bytes never written, reads while a cp.async is in flight to them, reads of bytes
// written in the same barrier interval, cp.async overwriting bytes another warp read in the same
// barrier interval, cp.async from outside any device allocation, divergent warp collectives,
// block barriers some threads never reach, copies never waited for. A failure stops the launch
// and is reported by the next cudaStreamSynchronize / cudaGetLastError with a message.
//
// Included (through the shim cuda_*.h headers in include/) only when ORTFLASH_SIMT is defined.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// Static __shared__ variables: one copy per OS thread, and a worker thread runs one block at a
// time, so every fiber of a block sees the same copy.
#define __shared__ static thread_local
#define __grid_constant__

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct alignas(8) float2 {
  float x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }

struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

namespace simt {

struct ThreadContext {
  uint3 thread_idx;
  uint3 block_idx;
  uint3 block_dim;
  uint3 grid_dim;
};

// The running fiber's indices (only valid inside a kernel).
const ThreadContext& context();

// `site`: "file:line" of the call, so that threads meeting at different __syncthreads are caught.
void syncthreads(const char* site);

// What the launches of the calling host thread did since the last call (warp-level instruction
// counts over every block). ldmatrix_conflicts: shared-memory wavefronts beyond one per 8x8 matrix.
struct LaunchStats {
  uint64_t mma = 0, ldmatrix = 0, ldmatrix_conflicts = 0, cp_async = 0, barriers = 0, blocks = 0;
  uint64_t wgmma = 0;  // warpgroup-level wgmma.mma_async instructions
  uint64_t tma = 0;    // cp.async.bulk.tensor copies
  uint64_t launches = 0;
  uint32_t min_block_threads = 0, max_block_threads = 0;  // over the launches (0: none)
};
LaunchStats take_stats();
void syncwarp(unsigned mask);
uint32_t shfl_xor(unsigned mask, uint32_t value, int lane_mask);
uint32_t shfl_idx(unsigned mask, uint32_t value, int src_lane);
bool vote_any(unsigned mask, bool predicate);
bool vote_all(unsigned mask, bool predicate);
uint32_t vote_ballot(unsigned mask, bool predicate);  // bit l: lane l's predicate

void* dynamic_shared_memory();
uint32_t shared_address(const void* ptr);  // __cvta_generic_to_shared

void cp_async_16(void* smem_dst, const void* gmem_src, bool valid);
// Reads the first src_bytes (0..16) of the 16-byte chunk and zero-fills the rest.
void cp_async_16_prefix(void* smem_dst, const void* gmem_src, int src_bytes);
void cp_async_commit();
// A 4-byte shared-memory load, checked like ldmatrix: the bytes were written by a cp.async that was
// waited for and published by a __syncthreads; marks the warp as a reader (for write-after-read checks).
uint32_t shared_load_u32(const void* smem_src);
uint16_t shared_load_u16(const void* smem_src);
// A plain shared-memory store of `bytes` (1, 2 or 4) bytes, checked for write-after-read races like a
// cp.async; the bytes count as written in this barrier interval.
void shared_store(void* smem_dst, const void* src, int bytes);
void cp_async_wait(int pending_groups);
void ldmatrix_x4(uint32_t (&r)[4], uint32_t smem_addr, bool trans);

enum class MmaInput { kFloat16, kBFloat16 };
// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32, accumulator in place.
void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, MmaInput type);
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, accumulator in place. Fragments (PTX ISA, "Matrix Fragments
// for mma.m16n8k8", .tf32), g = lane / 4, t = lane % 4: a0 = A[g][t], a1 = A[g+8][t], a2 = A[g][t+4],
// a3 = A[g+8][t+4]; b0 = B[t][g], b1 = B[t+4][g]; C as for m16n8k16. Of each operand word only the top 19 bits
// (a tf32 value) are read: the low 13 mantissa bits of a finite operand are dropped.
void mma_m16n8k8_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

// ---- sm_90a warpgroup MMA (PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate") ----
// Collectives of the 128 threads of a warpgroup (threads 128i..128i+127 of the block).
// wgmma.fence.sync.aligned: required before the first wgmma.mma_async after a wgmma.wait_group (the
// accumulator and A registers may have been touched in between).
void wgmma_fence();
// wgmma.mma_async.sync.aligned.m64n<n>k16.f32.<type>.<type>: d (n / 2 fp32 registers per thread) =
// A·B (+ d when `accumulate`). A: 64x16 from shared memory (desc_a, K-major) or, when a_regs is not null,
// from registers (4 words per thread, the mma.m16n8k16 A fragment of the thread's warp's 16 rows). B:
// 16 x n from shared memory (desc_b), K-major or, with trans_b, N-major. Descriptors use the 128-byte
// swizzle. The operation is only queued: it runs when its group is waited for.
void wgmma_mma_async(float* d, int n, uint64_t desc_a, const uint32_t* a_regs, uint64_t desc_b, bool trans_b,
                     bool accumulate, MmaInput type);
void wgmma_commit();                // wgmma.commit_group.sync.aligned
void wgmma_wait(int pending_groups);  // wgmma.wait_group.sync.aligned N
// fence.proxy.async.shared::cta: this thread's shared-memory writes so far become visible to the async
// proxy (wgmma) once a barrier follows.
void fence_proxy_async();
// setmaxnreg.{inc,dec}.sync.aligned: a warpgroup collective (checked as one); registers are not modelled.
void setmaxnreg(int regs);

// Named barriers (bar.sync / bar.arrive with an id 1..15 and a thread count, a multiple of 32): bar.sync waits until
// `count` threads have arrived at barrier `id` (itself included), bar.arrive arrives without waiting. No memory
// ordering is modelled for them (the kernels order shared memory by __syncthreads and mbarriers).
void named_barrier_sync(int id, int count);
void named_barrier_arrive(int id, int count);

// ---- sm_90 mbarriers and TMA (cp.async.bulk.tensor) ----
// A tensor map as cuTensorMapEncodeTiled describes it (elements of 1 or 2 bytes): dims[0] innermost (contiguous),
// strides in bytes of dims 1..rank-1, a box of box[i] elements, the 128-byte swizzle or none; elements outside
// the tensor read as zeros. Lives in kernel parameters (__grid_constant__), as the real one.
struct alignas(64) TensorMap {
  const void* base = nullptr;
  int rank = 0;
  int elem_bytes = 2;
  bool swizzle128 = false;
  uint64_t dims[5] = {};
  uint64_t strides[5] = {};  // bytes; strides[0] = elem_bytes
  uint32_t box[5] = {};
};
// Host side: fills `map` or returns a message naming what the hardware would refuse.
const char* encode_tensor_map(TensorMap* map, const void* base, int elem_bytes, int rank, const uint64_t* dims,
                              const uint64_t* byte_strides, const uint32_t* box, bool swizzle128);
// mbarrier.init (count arrivals per phase), mbarrier.arrive, mbarrier.arrive.expect_tx (an arrival that also
// expects `bytes` of TMA copies), and a blocking wait for the completion of the phase of parity `parity`
// (mbarrier.try_wait.parity in a loop). The 8 bytes at `bar` in shared memory identify the barrier.
void mbarrier_init(void* bar, uint32_t count);
void mbarrier_arrive(void* bar);
void mbarrier_arrive_expect_tx(void* bar, uint32_t bytes);
void mbarrier_wait(void* bar, uint32_t parity);
// cp.async.bulk.tensor.<rank>d.shared::cluster.global.tile.mbarrier::complete_tx::bytes: the box at `coords`
// into shared memory at `smem_dst` (1024-byte aligned with the swizzle); completes (the bytes land and count
// against the barrier's expected bytes) no earlier than when some thread waits on `bar`.
void tma_load(void* smem_dst, const TensorMap* map, const int32_t* coords, void* bar);

template <class T>
uint32_t to_word(T value) {
  static_assert(sizeof(T) == 4, "simt shuffles 32-bit values");
  uint32_t word;
  std::memcpy(&word, &value, 4);
  return word;
}

template <class T>
T from_word(uint32_t word) {
  T value;
  std::memcpy(&value, &word, 4);
  return value;
}

}  // namespace simt

#define threadIdx (::simt::context().thread_idx)
#define blockIdx (::simt::context().block_idx)
#define blockDim (::simt::context().block_dim)
#define gridDim (::simt::context().grid_dim)
constexpr int warpSize = 32;

#define SIMT_STRINGIFY_(x) #x
#define SIMT_STRINGIFY(x) SIMT_STRINGIFY_(x)
#define __syncthreads() ::simt::syncthreads(__FILE__ ":" SIMT_STRINGIFY(__LINE__))
inline void __syncwarp(unsigned mask = 0xffffffffu) { simt::syncwarp(mask); }

template <class T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  (void)width;
  return simt::from_word<T>(simt::shfl_xor(mask, simt::to_word(value), lane_mask));
}

template <class T>
T __shfl_sync(unsigned mask, T value, int src_lane, int width = 32) {
  (void)width;
  return simt::from_word<T>(simt::shfl_idx(mask, simt::to_word(value), src_lane));
}

// A float multiply rounded once, never contracted into an FMA (host float arithmetic is not contracted here).
inline float __fmul_rn(float a, float b) { return a * b; }
inline int __any_sync(unsigned mask, int predicate) { return simt::vote_any(mask, predicate != 0) ? 1 : 0; }
inline int __all_sync(unsigned mask, int predicate) { return simt::vote_all(mask, predicate != 0) ? 1 : 0; }
inline unsigned __ballot_sync(unsigned mask, int predicate) { return simt::vote_ballot(mask, predicate != 0); }

inline float __int_as_float(int x) { return simt::from_word<float>(static_cast<uint32_t>(x)); }
inline int __float_as_int(float x) { return static_cast<int>(simt::to_word(x)); }
inline size_t __cvta_generic_to_shared(const void* ptr) { return simt::shared_address(ptr); }

// CUDA's integer min/max overloads (device code calls them unqualified).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

// OrtFlash CUDA — the sm_90a (Hopper) instructions of the wgmma forward kernel, each behind a named
// wrapper: warpgroup MMA (wgmma.mma_async m64nNk16, fp32 accumulators) with shared-memory operand
// descriptors, its fence / commit / wait, fence.proxy.async, mbarriers and TMA tile loads. Compiled for real only in the sm_90a
// translation unit (nvcc >= 12.3); on the emulator (ORTFLASH_SIMT) each is its emulated form.
//
// Shared-memory operands use the 128-byte swizzle (PTX ISA, "Shared Memory Matrix Layout"): a tile of
// rows x 64 16-bit elements keeps each row's 64 elements in one 128-byte row, 16-byte chunk c of row r at
// chunk c ^ (r % 8), rows 128 bytes apart, in 1024-byte-aligned groups of 8 rows (swizzle_offset below).
// Tiles wider than 64 elements are stored as consecutive 64-column blocks of all their rows.
//   K-major operand (Q for Q·Kᵀ, K as B): descriptor start at (row block, column 16·kstep), stride byte
//     offset 1024 (between 8-row groups); the leading byte offset is unused with swizzling (1).
//   N-major operand (V as B of P·V: k = key, n = value column): start at key row 16·kstep, stride byte
//     offset 1024 (between 8-key groups), leading byte offset = the distance between 64-column blocks.
// Accumulators of m64nN: thread 32w + 4g + t of the warpgroup holds d[4j + 2h + b] = D[16w + g + 8h][8j + 2t
// + b] — per warp the mma.m16n8k16 C layout, key/column tile j; an A operand in registers uses the
// m16n8k16 A fragment of the warp's 16 rows.
#pragma once

#include <cstdint>
#include <type_traits>

#if !defined(ORTFLASH_SIMT)
#include <cuda.h>  // CUtensorMap
#endif

#include "mma_primitives.cuh"

namespace ortflash::cuda {

// Byte offset of 16-byte chunk `chunk` of row `row` in a swizzled tile of `rows` rows.
__device__ __forceinline__ uint32_t swizzle_offset(int rows, int row, int chunk) {
  return uint32_t(((chunk >> 3) * rows + row) * 128 + (((chunk & 7) ^ (row & 7)) << 4));
}

// A shared-memory matrix descriptor, 128-byte swizzle (mode 1 in bits 62-63); addresses and offsets in
// bytes (multiples of 16).
__device__ __forceinline__ uint64_t smem_descriptor(uint32_t smem_addr, uint32_t leading_bytes, uint32_t stride_bytes) {
  return uint64_t((smem_addr >> 4) & 0x3fffu) | uint64_t((leading_bytes >> 4) & 0x3fffu) << 16 |
         uint64_t((stride_bytes >> 4) & 0x3fffu) << 32 | uint64_t(1) << 62;
}

#if defined(ORTFLASH_SIMT)
template <class T>
constexpr simt::MmaInput simt_mma_input() {
  return std::is_same_v<T, __half> ? simt::MmaInput::kFloat16 : simt::MmaInput::kBFloat16;
}
#endif

#if defined(ORTFLASH_SIMT) || !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ORTFLASH_SM90A_ASM(...) __VA_ARGS__
#else
// Device code for any other target (never launched there: the host checks the kernel's image).
#define ORTFLASH_SM90A_ASM(...) __trap()
#endif

__device__ __forceinline__ void wgmma_fence() {
#if defined(ORTFLASH_SIMT)
  simt::wgmma_fence();
#else
  ORTFLASH_SM90A_ASM(asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"));
#endif
}

__device__ __forceinline__ void wgmma_commit() {
#if defined(ORTFLASH_SIMT)
  simt::wgmma_commit();
#else
  ORTFLASH_SM90A_ASM(asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"));
#endif
}

// Waits until at most kPending committed wgmma groups are in flight.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
#if defined(ORTFLASH_SIMT)
  simt::wgmma_wait(kPending);
#else
  ORTFLASH_SM90A_ASM(asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory"));
#endif
}

// Makes this thread's earlier shared-memory writes (cp.async included) visible to wgmma's operand reads,
// once a barrier follows.
__device__ __forceinline__ void fence_proxy_async() {
#if defined(ORTFLASH_SIMT)
  simt::fence_proxy_async();
#else
  ORTFLASH_SM90A_ASM(asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"));
#endif
}

// ---- mbarriers and TMA ----------------------------------------------------------------------------

// A TMA tensor map (cuTensorMapEncodeTiled's CUtensorMap), passed to kernels as a __grid_constant__ parameter.
#if defined(ORTFLASH_SIMT)
using TmaDescriptor = simt::TensorMap;
#else
using TmaDescriptor = CUtensorMap;
#endif

__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t count) {
#if defined(ORTFLASH_SIMT)
  simt::mbarrier_init(bar, count);
#else
  ORTFLASH_SM90A_ASM(asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_address(bar)), "r"(count) : "memory"));
#endif
}

// Makes the mbarrier.init of this thread visible to the other threads (and the async proxy); a barrier follows.
__device__ __forceinline__ void fence_barrier_init() {
#if !defined(ORTFLASH_SIMT)
  ORTFLASH_SM90A_ASM(asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"));
#endif
}

__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
#if defined(ORTFLASH_SIMT)
  simt::mbarrier_arrive(bar);
#else
  ORTFLASH_SM90A_ASM(asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_address(bar)) : "memory"));
#endif
}

// An arrival that also announces `bytes` of TMA copies the phase waits for.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#if defined(ORTFLASH_SIMT)
  simt::mbarrier_arrive_expect_tx(bar, bytes);
#else
  ORTFLASH_SM90A_ASM(asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_address(bar)),
                                  "r"(bytes) : "memory"));
#endif
}

// Blocks until the barrier's phase of parity `parity` has completed (a fresh barrier is in phase 0: waiting for
// parity 1 returns at once). A wait that never ends (a phase nobody completes: a bug) traps after about 2^26
// tries — seconds, where a real wait takes microseconds — so that the launch fails with an error instead of
// hanging the process.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t parity) {
#if defined(ORTFLASH_SIMT)
  simt::mbarrier_wait(bar, parity);
#else
  const uint32_t addr = smem_address(bar);
  for (uint32_t tries = 0;; ++tries) {
    uint32_t done = 0;
    ORTFLASH_SM90A_ASM(asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done) : "r"(addr), "r"(parity) : "memory"));
    if (done != 0) break;
    if (tries == (1u << 26)) __trap();
  }
#endif
}

// TMA: the box of `map` at element coordinates (c0 innermost .. c3) into shared memory at `dst` (1024-byte
// aligned: the map's 128-byte swizzle), counted against `bar`'s expected bytes.
__device__ __forceinline__ void tma_load_4d(void* dst, const TmaDescriptor* map, uint64_t* bar, int c0, int c1, int c2, int c3) {
#if defined(ORTFLASH_SIMT)
  const int32_t coords[4] = {c0, c1, c2, c3};
  simt::tma_load(dst, map, coords, bar);
#else
  ORTFLASH_SM90A_ASM(asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], [%2];\n"
      ::"r"(smem_address(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_address(bar)), "r"(c0), "r"(c1), "r"(c2),
      "r"(c3) : "memory"));
#endif
}

// setmaxnreg (a warpgroup collective): this warpgroup's registers per thread become kRegs (a multiple of 8 in
// 24..256); dec gives registers back to the SM's pool, inc waits for them there.
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg takes multiples of 8 in 24..256");
#if defined(ORTFLASH_SIMT)
  simt::setmaxnreg(kRegs);
#else
  ORTFLASH_SM90A_ASM(asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs)));
#endif
}

template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg takes multiples of 8 in 24..256");
#if defined(ORTFLASH_SIMT)
  simt::setmaxnreg(kRegs);
#else
  ORTFLASH_SM90A_ASM(asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs)));
#endif
}

// ---- named barriers (sm_70+): bar.sync waits until `count` threads arrived at barrier `id` (1..15; 0 is
// __syncthreads'), bar.arrive arrives without waiting ----

__device__ __forceinline__ void named_barrier_sync(int id, int count) {
#if defined(ORTFLASH_SIMT)
  simt::named_barrier_sync(id, count);
#else
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
#endif
}

__device__ __forceinline__ void named_barrier_arrive(int id, int count) {
#if defined(ORTFLASH_SIMT)
  simt::named_barrier_arrive(id, count);
#else
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
#endif
}

// Keeps the compiler from moving register accesses across a wgmma issue or wait: the registers are
// "read and written" here, in program order with the (volatile) wgmma instructions.
template <int N>
__device__ __forceinline__ void fence_registers(float (&r)[N]) {
#if !defined(ORTFLASH_SIMT)
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
#endif
  (void)r;
}

template <int N>
__device__ __forceinline__ void fence_registers(uint32_t (&r)[N]) {
#if !defined(ORTFLASH_SIMT)
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
#endif
  (void)r;
}

// wgmma.mma_async m64nNk16 with fp32 accumulators, element type T (__half or __nv_bfloat16):
//   ss:         d = A (shared, K-major, desc_a) · B (shared, K-major, desc_b) [+ d]
//   rs_n_major: d = A (registers) · B (shared, N-major, desc_b) [+ d]
// `accumulate` false: d is overwritten (scale-d = 0).
template <class T, int N>
struct Wgmma {
#if defined(ORTFLASH_SIMT)
  static void ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
    simt::wgmma_mma_async(d, N, desc_a, nullptr, desc_b, false, accumulate, simt_mma_input<T>());
  }
  static void rs_n_major(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b, bool accumulate) {
    simt::wgmma_mma_async(d, N, 0, a, desc_b, true, accumulate, simt_mma_input<T>());
  }
#endif
};

#if !defined(ORTFLASH_SIMT) && (!defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL))
// The accumulator register lists of m64n64 (32 per thread), m64n96 (48), m64n128 (64) and m64n256 (128): asm
// templates and operands.
#define ORTFLASH_WGMMA_REGS_32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define ORTFLASH_WGMMA_REGS_64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define ORTFLASH_WGMMA_OPERANDS_32 \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
  "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
  "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define ORTFLASH_WGMMA_REGS_48 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}"
#define ORTFLASH_WGMMA_REGS_128 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"
#define ORTFLASH_WGMMA_OPERANDS_48 \
  ORTFLASH_WGMMA_OPERANDS_32, \
  "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
  "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
#define ORTFLASH_WGMMA_OPERANDS_64 \
  ORTFLASH_WGMMA_OPERANDS_32, \
  "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
  "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
  "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
#define ORTFLASH_WGMMA_OPERANDS_128 \
  ORTFLASH_WGMMA_OPERANDS_64, \
  "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
  "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
  "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
  "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), \
  "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), \
  "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
  "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
  "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])

// Wgmma<T, N> for element type T, whose PTX type name is TYPE ("f16" or "bf16"), with R = N / 2 accumulators;
// A0..A5: the asm operand numbers after the accumulators ("%32".. for R = 32).
#define ORTFLASH_WGMMA(T, TYPE, N, R, A0, A1, A2, A3, A4, A5)                                                       \
  template <>                                                                                                   \
  struct Wgmma<T, N> {                                                                                          \
    __device__ __forceinline__ static void ss(float (&d)[R], uint64_t desc_a, uint64_t desc_b, bool accumulate) {  \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " A2 ", 0;\n"                                              \
                   "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TYPE "." TYPE " " ORTFLASH_WGMMA_REGS_##R ", " \
                   A0 ", " A1 ", p, 1, 1, 0, 0;\n}\n"                                                           \
                   : ORTFLASH_WGMMA_OPERANDS_##R                                                                \
                   : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)));                                          \
    }                                                                                                           \
    __device__ __forceinline__ static void rs_n_major(float (&d)[R], const uint32_t (&a)[4], uint64_t desc_b,    \
                                                      bool accumulate) {                                        \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " A5 ", 0;\n"                                              \
                   "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TYPE "." TYPE " " ORTFLASH_WGMMA_REGS_##R ", " \
                   "{" A0 ", " A1 ", " A2 ", " A3 "}, " A4 ", p, 1, 1, 1;\n}\n"                                   \
                   : ORTFLASH_WGMMA_OPERANDS_##R                                                                \
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int(accumulate)));            \
    }                                                                                                           \
  };

ORTFLASH_WGMMA(__half, "f16", 64, 32, "%32", "%33", "%34", "%35", "%36", "%37")
ORTFLASH_WGMMA(__nv_bfloat16, "bf16", 64, 32, "%32", "%33", "%34", "%35", "%36", "%37")
ORTFLASH_WGMMA(__half, "f16", 96, 48, "%48", "%49", "%50", "%51", "%52", "%53")
ORTFLASH_WGMMA(__nv_bfloat16, "bf16", 96, 48, "%48", "%49", "%50", "%51", "%52", "%53")
ORTFLASH_WGMMA(__half, "f16", 128, 64, "%64", "%65", "%66", "%67", "%68", "%69")
ORTFLASH_WGMMA(__nv_bfloat16, "bf16", 128, 64, "%64", "%65", "%66", "%67", "%68", "%69")
ORTFLASH_WGMMA(__half, "f16", 256, 128, "%128", "%129", "%130", "%131", "%132", "%133")
ORTFLASH_WGMMA(__nv_bfloat16, "bf16", 256, 128, "%128", "%129", "%130", "%131", "%132", "%133")
#undef ORTFLASH_WGMMA
#elif !defined(ORTFLASH_SIMT)
// Other device targets: the kernel body is never run there (see ORTFLASH_SM90A_ASM).
template <class T>
struct Wgmma<T, 64> {
  __device__ __forceinline__ static void ss(float (&)[32], uint64_t, uint64_t, bool) { __trap(); }
  __device__ __forceinline__ static void rs_n_major(float (&)[32], const uint32_t (&)[4], uint64_t, bool) { __trap(); }
};
template <class T>
struct Wgmma<T, 96> {
  __device__ __forceinline__ static void ss(float (&)[48], uint64_t, uint64_t, bool) { __trap(); }
  __device__ __forceinline__ static void rs_n_major(float (&)[48], const uint32_t (&)[4], uint64_t, bool) { __trap(); }
};
template <class T>
struct Wgmma<T, 128> {
  __device__ __forceinline__ static void ss(float (&)[64], uint64_t, uint64_t, bool) { __trap(); }
  __device__ __forceinline__ static void rs_n_major(float (&)[64], const uint32_t (&)[4], uint64_t, bool) { __trap(); }
};
template <class T>
struct Wgmma<T, 256> {
  __device__ __forceinline__ static void ss(float (&)[128], uint64_t, uint64_t, bool) { __trap(); }
  __device__ __forceinline__ static void rs_n_major(float (&)[128], const uint32_t (&)[4], uint64_t, bool) { __trap(); }
};
#endif

}  // namespace ortflash::cuda

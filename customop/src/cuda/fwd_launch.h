// OrtFlash CUDA — launch entry points of the forward kernels and the tile configuration chosen per
// head dim. Declarations only: the kernels are instantiated in fwd_hdim*.cu and generic_launch.cu
// (one file per head dim, so they compile in parallel), and called from the single dispatch in
// flash_attention_cuda.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <string>

#include "fwd_params.cuh"
#include "fwd_traits.cuh"
#include "tiled_kernel.cuh"

namespace ortflash::cuda {

// The message for a failed CUDA call. The failure is reported through this message, so it is also
// taken off the runtime's per-thread last error, where the next launch's check would otherwise find
// it and blame an unrelated launch (a sticky error stays, as it must).
inline std::string cuda_failure(const char* what, cudaError_t status) {
  (void)cudaGetLastError();
  return std::string(what) + " failed: " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")";
}

// Head-dim capacities with a tensor-core instantiation. A call takes the smallest one that holds
// max(D, Dv) (80 → 96, 40 → 64, ...); the zero-filled columns cost compute, not correctness.
constexpr int kTensorCoreHeadDims[] = {32, 64, 96, 128, 256};

// Tile shapes per head-dim capacity, 4 warps each, chosen so that ptxas keeps the accumulators in
// registers. nvcc 11.8, registers per thread on sm_80 (sm_90), spill bytes stored/loaded:
//   32: 128x64 202 (211)   64: 128x64 250 (254)   96: 128x32 246 (252)   256: 64x64 254 (255), none
//   128: 128x32 255 (255), none on sm_80/86/89; 36/44 on sm_90 (about 6 local accesses per key tile)
// Rejected because they spill on sm_80: 32 at 128x128 (132 B), 96 at 128x64 (164 B), 128 at 128x64
// (200 B). FlashAttention-2 runs head dim 128 at 128x64; a variant without the bias/softcap/keep
// code (8 B of spills at 128x64) is the first tuning step for a session that can measure.
struct TileShape {
  int block_m;
  int block_n;
  int warps;
};
// Tuning builds replace entries: CMake's ORTFLASH_CUDA_TILES (e.g. "128=128,64,4;64=128,128,4")
// defines ORTFLASH_TILE_<capacity>_{M,N,WARPS}, so a session with a GPU can time
// candidate shapes without editing code; FwdTraits' static_asserts reject shapes that cannot work.
constexpr TileShape tile_shape(int head_dim_capacity) {
#if defined(ORTFLASH_TILE_32_M)
  if (head_dim_capacity == 32) return TileShape{ORTFLASH_TILE_32_M, ORTFLASH_TILE_32_N, ORTFLASH_TILE_32_WARPS};
#endif
#if defined(ORTFLASH_TILE_64_M)
  if (head_dim_capacity == 64) return TileShape{ORTFLASH_TILE_64_M, ORTFLASH_TILE_64_N, ORTFLASH_TILE_64_WARPS};
#endif
#if defined(ORTFLASH_TILE_96_M)
  if (head_dim_capacity == 96) return TileShape{ORTFLASH_TILE_96_M, ORTFLASH_TILE_96_N, ORTFLASH_TILE_96_WARPS};
#endif
#if defined(ORTFLASH_TILE_128_M)
  if (head_dim_capacity == 128) return TileShape{ORTFLASH_TILE_128_M, ORTFLASH_TILE_128_N, ORTFLASH_TILE_128_WARPS};
#endif
#if defined(ORTFLASH_TILE_256_M)
  if (head_dim_capacity == 256) return TileShape{ORTFLASH_TILE_256_M, ORTFLASH_TILE_256_N, ORTFLASH_TILE_256_WARPS};
#endif
  return head_dim_capacity == 256  ? TileShape{64, 64, 4}
         : head_dim_capacity >= 96 ? TileShape{128, 32, 4}
                                   : TileShape{128, 64, 4};
}

// kMaskInputs: the variant that reads bias/keep and applies softcap (see FwdTraits). Without that code
// ptxas (nvcc 11.8) needs, sm_80 (sm_90): 64: 228 (230)  96: 228 (233)  128: 242 (244)  256: 248 (250)
// registers, no spills — head dim 128 on sm_90 loses the general variant's 36/44 bytes of spills.
// Head dim 32 has no such variant: without the mask code ptxas spills 12 bytes on sm_90, with it none.
constexpr bool has_plain_variant(int head_dim_capacity) { return head_dim_capacity != 32; }

template <class T, int kHeadDim, bool kMaskInputs>
using FwdTraitsFor = FwdTraits<T, kHeadDim, tile_shape(kHeadDim).block_m, tile_shape(kHeadDim).block_n,
                               tile_shape(kHeadDim).warps, kMaskInputs>;

// Each returns "" on success or a message naming the failed CUDA call. All launch on `stream`.
template <class Tr>
std::string launch_flash_fwd(const FwdParams& p, cudaStream_t stream);

template <class T>
std::string launch_generic_fwd(const FwdParams& p, cudaStream_t stream);

// The tiled SIMT kernel (tiled_kernel.cuh): fp32 arithmetic on any element type, head dims up to a
// capacity of 64 or 128. Keys per tile 64 or 32 (70 / 79 KiB of shared memory), or with kSmallSmem,
// for GPUs whose blocks may use at most 64 KiB (Turing), 32 or 16 (44 / 58 KiB).
constexpr int kTiledHeadDims[] = {64, 128};
constexpr int tiled_block_n(int head_dim_capacity, bool small_smem) {
  return head_dim_capacity <= 64 ? (small_smem ? 32 : 64) : (small_smem ? 16 : 32);
}
template <class T, int kHeadDim, bool kSmallSmem>
using TiledTraitsFor = TiledTraits<T, kHeadDim, tiled_block_n(kHeadDim, kSmallSmem)>;

template <class Tr>
std::string launch_tiled_fwd(const FwdParams& p, cudaStream_t stream);

template <class T>
std::string launch_combine_splits(const FwdParams& p, cudaStream_t stream);

}  // namespace ortflash::cuda

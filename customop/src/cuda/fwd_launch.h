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
constexpr TileShape tile_shape(int head_dim_capacity, bool mask_inputs) {
  // General-variant-only overrides (macros ORTFLASH_GENERAL_TILE_<capacity>_{M,N,WARPS}, e.g. through
  // tile_sweep.sh's +MACRO=VALUE), for shapes worth timing for softcap and the masks the accumulators do
  // not take: head dim 256 with bias/keep tiles needs 64x32 to fit them.
#if defined(ORTFLASH_GENERAL_TILE_256_M)
  if (mask_inputs && head_dim_capacity == 256) {
    return TileShape{ORTFLASH_GENERAL_TILE_256_M, ORTFLASH_GENERAL_TILE_256_N, ORTFLASH_GENERAL_TILE_256_WARPS};
  }
#endif
#if defined(ORTFLASH_GENERAL_TILE_128_M)
  if (mask_inputs && head_dim_capacity == 128) {
    return TileShape{ORTFLASH_GENERAL_TILE_128_M, ORTFLASH_GENERAL_TILE_128_N, ORTFLASH_GENERAL_TILE_128_WARPS};
  }
#endif
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
  // Measured on an H200 (fp16, S 2k/8k, ratio to PyTorch SDPA flash in the same run): head dim 64 at
  // 64x64 0.86-0.91 vs 128x64 0.80-0.82 (64x128: the same as 64x64); head dim 128 (plain variant) at
  // 128x64 0.89-0.97 vs 128x32 0.80-0.86 and 64x64 0.83-0.93; head dim 96 (plain) at 128x64 0.74-0.85
  // vs 128x32 0.67-0.75 and 64x64 0.54-0.60; head dim 256 at 64x64 0.95-1.03 vs 64x32 0.83-0.98.
  // The general variants of 96 and 128 at 128x64 spill 156 / 208 B (nvcc 13), so they keep 128x32.
  switch (head_dim_capacity) {
    case 256: return TileShape{64, 64, 4};
    case 128:
    case 96: return mask_inputs ? TileShape{128, 32, 4} : TileShape{128, 64, 4};
    case 64: return TileShape{64, 64, 4};
    default: return TileShape{128, 64, 4};
  }
}

// kMaskInputs: the general variant (softcap, and masks where no masks-in-accumulator variant applies;
// see FwdTraits). Without that code
// ptxas (nvcc 11.8) needs, sm_80 (sm_90): 64: 228 (230)  96: 228 (233)  128: 242 (244)  256: 248 (250)
// registers, no spills — head dim 128 on sm_90 loses the general variant's 36/44 bytes of spills.
// Head dim 32 has no such variant: without the mask code ptxas spills 12 bytes on sm_90, with it none.
constexpr bool has_plain_variant(int head_dim_capacity) { return head_dim_capacity != 32; }

// Decoding: when a head has at most kDecodeMaxRows query rows (one token, or a GQA group folded into
// rows), a 128-row block would compute mostly padding and, with few such blocks, keep too little K/V
// in flight to reach the memory bandwidth that bounds decoding. Then one warp per block owns 16 rows
// and streams 64-key tiles (36 KiB of shared memory at head dim 128: six blocks per SM), and the keys
// are split so that there are about kDecodeBlocksPerSm blocks per SM (flash-decoding). Heads with
// 17-64 rows take several 16-row blocks, which read the same K/V tiles close together in time (L2).
// Measured on an H200 (decode table of bench_attention.py, one run each): with 8 blocks per SM, at
// least 3 tiles per split beat 1 at kv_len 16k (1708 vs 1404 GB/s, B 1, 32:8; 322 vs 277 at 32:1) and
// lost at 1k (226 vs 287; 29 vs 38), hence 1 below kDecodeLongTiles tiles and 3 from there; 6 blocks
// per SM with 1 tile won at B 1, 64k (2915 vs 2395) but lost at B 8 (3390 vs 3673 at 32:8, 4097 vs
// 4433 at 32:32); 128-key tiles spill and lost everywhere; two warps (32 rows) won on 32:8 at B 8
// (+3-8%) and lost on 32:1 at B 8, 16k (-21%). Second lease (one sweep, fp16, ratio to cuDNN, results/
// h200-2026-11-session5.md): 3 tiles per split from 64 tiles on instead of 128 won at kv_len 4k (32:8 B 1
// 0.79 vs 0.70, 32:1 B 8 0.80 vs 0.64, 32:32 B 1 0.98 vs 0.90) and matched elsewhere; 6 blocks per SM
// again won some rows (32:1 B 8, 64k: 1.01 vs 0.79) and lost others (32:8 B 8: 0.84-0.86 vs 0.92-0.95);
// 12 matched 8.
constexpr int kDecodeMaxRows = 64;
// Tuning builds may override these (e.g. CMAKE_CUDA_FLAGS=-DORTFLASH_DECODE_MIN_TILES=1; tile_sweep.sh).
#if !defined(ORTFLASH_DECODE_BLOCKS_PER_SM)
#define ORTFLASH_DECODE_BLOCKS_PER_SM 8
#endif
#if !defined(ORTFLASH_DECODE_LONG_TILES)
#define ORTFLASH_DECODE_LONG_TILES 64
#endif
#if !defined(ORTFLASH_DECODE_MIN_TILES)
#define ORTFLASH_DECODE_MIN_TILES 3
#endif
#if !defined(ORTFLASH_DECODE_BLOCK_N)
#define ORTFLASH_DECODE_BLOCK_N 64
#endif
#if !defined(ORTFLASH_DECODE_WARPS)
#define ORTFLASH_DECODE_WARPS 1
#endif
constexpr int kDecodeBlocksPerSm = ORTFLASH_DECODE_BLOCKS_PER_SM;
// Fewest key tiles per split, for key ranges of at least kDecodeLongTiles tiles (shorter ones: 1).
constexpr int kDecodeMinTilesPerSplit = ORTFLASH_DECODE_MIN_TILES;
constexpr int kDecodeLongTiles = ORTFLASH_DECODE_LONG_TILES;
// Head dims 96 and 256 take 32-key tiles: with 64 one warp's cp.async addressing spills (152 / 168 B).
constexpr TileShape decode_tile_shape(int head_dim_capacity) {
  return TileShape{16 * ORTFLASH_DECODE_WARPS, head_dim_capacity == 96 || head_dim_capacity == 256 ? 32 : ORTFLASH_DECODE_BLOCK_N,
                   ORTFLASH_DECODE_WARPS};
}

// The masks-in-accumulator variants (FwdTraits, kAccumMasks) take the plain variant's tiles plus bias and
// keep tiles; head dim 256's would not fit the 99 KiB, and 32 has no plain variant.
constexpr bool has_mask_accum_variant(int head_dim_capacity) {
  return head_dim_capacity == 64 || head_dim_capacity == 96 || head_dim_capacity == 128;
}

// float32 on tensor cores (3xTF32: mma.sync m16n8k8 .tf32 three times per product, about fp32's accuracy; see
// mma_primitives.cuh), prefill calls at head-dim capacities 64 and 128: the plain and general variants of the same
// kernel (its masks apply after Q·Kᵀ). Float tiles take twice the shared memory of 16-bit ones: 64 query rows (4
// warps of 16) and 64 keys at 64 (70 KiB with the bias and keep tiles), 32 keys at 128 (76 KiB). The default for
// float32 prefill (flash_attention_cuda.cu; on an H200 2-2.5x the tiled SIMT kernel). Tuning builds may override the
// shapes.
constexpr int kFloat32TensorCoreHeadDims[] = {64, 128};
// nvcc 11.8, registers (spill bytes) sm_80 / sm_90: 64 at 64x64: 166-168 / 158-168 (12 B in the general variant on
// sm_90); 128 at 64x32: 166-200 / 164-204. Untimed alternatives: 64 at 128x64 (two 16-row tiles per warp: each K/V
// fragment split serves both; 237-255 registers, no spills, but the general variant's bias and keep tiles no longer
// fit the 99 KiB); 128 at 128x32 spills 28-120 B.
#if !defined(ORTFLASH_FLOAT32_TILE_64_M)
#define ORTFLASH_FLOAT32_TILE_64_M 64
#endif
#if !defined(ORTFLASH_FLOAT32_TILE_64_N)
#define ORTFLASH_FLOAT32_TILE_64_N 64
#endif
#if !defined(ORTFLASH_FLOAT32_TILE_128_M)
#define ORTFLASH_FLOAT32_TILE_128_M 64
#endif
#if !defined(ORTFLASH_FLOAT32_TILE_128_N)
#define ORTFLASH_FLOAT32_TILE_128_N 32
#endif
constexpr TileShape float32_tile_shape(int head_dim_capacity) {
  return head_dim_capacity <= 64 ? TileShape{ORTFLASH_FLOAT32_TILE_64_M, ORTFLASH_FLOAT32_TILE_64_N, 4}
                                 : TileShape{ORTFLASH_FLOAT32_TILE_128_M, ORTFLASH_FLOAT32_TILE_128_N, 4};
}
// kSplitTiles: K and V split into tf32 parts once per block (FwdTraits), ORTFLASH_CUDA_FLOAT32_TENSOR_CORES=2; at
// these shapes 102 KiB (64, with the mask tiles) and 108 KiB (128): sm_80 and sm_90, not sm_86/sm_89's 99 KiB.
// kTf32Passes 1: one TF32 product instead of 3xTF32 (ortflash.cuda.float32_tensor_cores = 3), at the same tiles.
template <int kHeadDim, bool kMaskInputs, bool kSplitTiles = false, int kTf32Passes = 3>
using Float32TraitsFor = FwdTraits<float, kHeadDim, float32_tile_shape(kHeadDim).block_m, float32_tile_shape(kHeadDim).block_n,
                                   float32_tile_shape(kHeadDim).warps, kMaskInputs, 0, kSplitTiles, kTf32Passes>;

template <class T, int kHeadDim, bool kMaskInputs, int kAccumMasks = 0>
using DecodeTraitsFor = FwdTraits<T, kHeadDim, decode_tile_shape(kHeadDim).block_m, decode_tile_shape(kHeadDim).block_n,
                                  decode_tile_shape(kHeadDim).warps, kMaskInputs, kAccumMasks>;

template <class T, int kHeadDim, bool kMaskInputs, int kAccumMasks = 0>
using FwdTraitsFor = FwdTraits<T, kHeadDim, tile_shape(kHeadDim, kMaskInputs).block_m,
                               tile_shape(kHeadDim, kMaskInputs).block_n, tile_shape(kHeadDim, kMaskInputs).warps, kMaskInputs,
                               kAccumMasks>;

// Each returns "" on success or a message naming the failed CUDA call. All launch on `stream`.
template <class Tr>
std::string launch_flash_fwd(const FwdParams& p, cudaStream_t stream);

template <class T>
std::string launch_generic_fwd(const FwdParams& p, cudaStream_t stream);

// The Hopper path (hopper_kernel.cuh, built for sm_90a where nvcc >= 12.3; ORTFLASH_HAVE_HOPPER): wgmma for
// the plain variant's prefill calls and (TMA kernel) its masks-in-accumulator variants, at head-dim capacities
// 64, 96 (in tiles of 128 columns), 128 and 256. Two warpgroups (128 query rows) x 128 keys (64 at head dim 256, whose O takes 128
// accumulators per thread): 161 KiB of shared memory at head dim 128 with two K/V stages (225 with three), 193 KiB at 256.
// Tuning builds may override the shape.
#if !defined(ORTFLASH_HOPPER_BLOCK_N)
#define ORTFLASH_HOPPER_BLOCK_N 128
#endif
#if !defined(ORTFLASH_HOPPER_BLOCK_N_256)
#define ORTFLASH_HOPPER_BLOCK_N_256 64
#endif
#if !defined(ORTFLASH_HOPPER_WARPGROUPS)
#define ORTFLASH_HOPPER_WARPGROUPS 2
#endif
// The TMA kernel's overlap of one tile's Q·Kᵀ with the previous tile's P·V (FlashAttention-3, more live
// registers): 0 or 1, to be timed.
#if !defined(ORTFLASH_HOPPER_OVERLAP)
#define ORTFLASH_HOPPER_OVERLAP 0
#endif
// With the overlap, the two warpgroups' turns at the tensor cores (FlashAttention-3's pingpong): 0 or 1, to be timed.
#if !defined(ORTFLASH_HOPPER_PINGPONG)
#define ORTFLASH_HOPPER_PINGPONG 0
#endif
constexpr bool has_hopper_variant(int head_dim_capacity) {
  return head_dim_capacity == 64 || head_dim_capacity == 96 || head_dim_capacity == 128 || head_dim_capacity == 256;
}
constexpr int hopper_block_n(int head_dim_capacity) {
  return head_dim_capacity == 256 ? ORTFLASH_HOPPER_BLOCK_N_256 : ORTFLASH_HOPPER_BLOCK_N;
}
// The TMA kernel's K/V stages: 3 for the plain variant at head dims 64 and 128 (an H200 sweep: +0-6% over 2, its
// outputs checked; 225 KiB at 128), 2 elsewhere (the mask tiles, 96 and 256 untimed at 3). A tuning build's
// ORTFLASH_HOPPER_STAGES sets every one. (The cp.async kernel always has 2.)
constexpr int hopper_stages(int head_dim_capacity, int accum_masks) {
#if defined(ORTFLASH_HOPPER_STAGES)
  (void)head_dim_capacity;
  (void)accum_masks;
  return ORTFLASH_HOPPER_STAGES;
#else
  return accum_masks == 0 && (head_dim_capacity == 64 || head_dim_capacity == 128) ? 3 : 2;
#endif
}
template <class T, int kHeadDim, int kAccumMasks = 0>
using HopperTraitsFor = HopperTraits<T, kHeadDim, hopper_block_n(kHeadDim), ORTFLASH_HOPPER_WARPGROUPS,
                                     hopper_stages(kHeadDim, kAccumMasks), ORTFLASH_HOPPER_OVERLAP != 0, kAccumMasks,
                                     ORTFLASH_HOPPER_PINGPONG != 0>;
// Whether the TMA kernel's tiles with these masks fit at head-dim capacity 64, 96 or 128.
template <int kAccumMasks>
constexpr bool hopper_masks_fit(int head_dim_capacity) {
  return head_dim_capacity == 64   ? HopperTraitsFor<__half, 64, kAccumMasks>::kFits
         : head_dim_capacity == 96 ? HopperTraitsFor<__half, 96, kAccumMasks>::kFits
                                   : HopperTraitsFor<__half, 128, kAccumMasks>::kFits;
}
// Whether the TMA kernel takes these masks (kAccumBias | kAccumKeep) at this capacity: the mma.sync kernel has the
// variant to decline to (has_mask_accum_variant), and the tiles fit.
constexpr bool has_hopper_mask_variant(int head_dim_capacity, int accum_masks) {
  if (accum_masks == 0) return has_hopper_variant(head_dim_capacity);
  if (!has_mask_accum_variant(head_dim_capacity) || !has_hopper_variant(head_dim_capacity)) return false;
  switch (accum_masks) {
    case kAccumBias: return hopper_masks_fit<kAccumBias>(head_dim_capacity);
    case kAccumKeep: return hopper_masks_fit<kAccumKeep>(head_dim_capacity);
    case kAccumBias | kAccumKeep: return hopper_masks_fit<kAccumBias | kAccumKeep>(head_dim_capacity);
    default: return false;
  }
}
constexpr TileShape hopper_tile_shape(int head_dim_capacity) {
  return TileShape{64 * ORTFLASH_HOPPER_WARPGROUPS, hopper_block_n(head_dim_capacity), 4 * ORTFLASH_HOPPER_WARPGROUPS};
}

template <class Tr>
std::string launch_hopper_fwd(const FwdParams& p, cudaStream_t stream);
// Warp-specialised with TMA loads (falls back to launch_hopper_fwd where tensor maps cannot describe the inputs).
// With masks (Tr::kBiasIn / kKeepIn) it needs their rows in 16-byte chunks (FwdParams::bias_chunks, keep_chunks) and
// strides TMA takes; otherwise it launches nothing and sets *declined (the caller runs the mma.sync kernel).
template <class Tr>
std::string launch_hopper_tma_fwd(const FwdParams& p, cudaStream_t stream, bool* declined);
// Whether this build has the Hopper kernels and the current device runs them (an sm_90a image exists for it).
bool hopper_fwd_available();


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

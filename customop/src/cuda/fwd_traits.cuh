// OrtFlash CUDA — compile-time shape of the tensor-core forward kernel: tile sizes, warps, the
// shared-memory row layout, and the checks that keep them consistent. The chosen configuration per
// head dim lives in fwd_launch.h (tile_shape).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "cuda_compat.cuh"

namespace ortflash::cuda {

// Layout of one tile row (kChunks 16-byte chunks of 8 16-bit elements or 4 floats) in shared memory, chosen so that
// ldmatrix (8 rows x one chunk per 8x8 matrix) and the cp.async stores hit 8 distinct 16-byte
// bank groups:
//  - kChunks a multiple of 8: rows stay dense and chunk c of row r lives at c ^ (r % 8) (XOR
//    swizzle within each group of 8 chunks), no padding — needed to fit head dim 256 tiles into
//    the 99 KiB an sm_86/sm_89 block may use;
//  - otherwise (head dim 32, 96): each row is padded to an odd number of chunks, so 8 consecutive
//    rows start in 8 different bank groups.
// kChunkElems: elements per chunk (8 of 16 bits, 4 floats).
template <int kChunks, int kChunkElems = 8>
struct SmemRowLayout {
  static constexpr bool kSwizzled = kChunks % 8 == 0;
  static constexpr int kRowChunks = kSwizzled ? kChunks : (kChunks % 2 == 0 ? kChunks + 1 : kChunks);
  static constexpr int kRowElems = kRowChunks * kChunkElems;

  // Element offset of chunk `chunk` of row `row`.
  __device__ __forceinline__ static int offset(int row, int chunk) {
    const int physical = kSwizzled ? (chunk ^ (row & 7)) : chunk;
    return (row * kRowChunks + physical) * kChunkElems;
  }
};

// Shared-memory byte addresses of one lane's ldmatrix rows. Every ldmatrix.x4 of the kernel reads
// rows `lane_row + 8i` (i known at compile time) and chunks `2 * step + lane_chunk` (step known at
// compile time, lane_chunk 0 or 1). Since lane_row % 8 is then the lane's row % 8, the swizzled
// chunk is `(2 * step) & ~7` plus one of four per-lane values, so every address is a register plus
// an immediate. (Without this table ptxas keeps one XOR-ed address per (step, tile) pair live
// across the key loop and spills: 255 registers and 1 KiB of spills at head dim 256.)
template <class Layout>
struct LdmatrixAddress {
  uint32_t row_base;      // byte address of (lane_row, chunk 0)
  uint32_t chunk_off[4];  // byte offset of chunk 2j + lane_chunk in the lane's rows (j = 0..3)

  __device__ __forceinline__ LdmatrixAddress(uint32_t tile_base, int lane_row, int lane_chunk) {
    row_base = tile_base + uint32_t(lane_row * Layout::kRowChunks * 16);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int chunk = 2 * j + lane_chunk;
      chunk_off[j] = uint32_t((Layout::kSwizzled ? (chunk ^ (lane_row & 7)) : chunk) * 16);
    }
  }

  // Address of rows lane_row + row_offset (row_offset a multiple of 8), chunks 2 * step + lane_chunk.
  __device__ __forceinline__ uint32_t at(int row_offset, int step) const {
    return row_base + uint32_t((row_offset * Layout::kRowChunks + 2 * (step & ~3)) * 16) + chunk_off[step & 3];
  }
};

// kMaskInputs_: the general variant, which applies softcap and adds bias and keep after Q·Kᵀ (log2
// units). Since the masks-in-accumulator variants below, it runs only for softcap, a scale <= 0, head
// dims 32 and 256, and bfloat16 biases with scale * log2(e) > 1. Calls without any mask (most causal
// decoder calls) take the plain variant, compiled without that code: fewer live registers.
// kAccumMasks_ (with kMaskInputs_ false): the plain variant plus a bias (bit kAccumBias) and/or a keep
// mask (bit kAccumKeep), which start the score accumulators — bias / scale where the key is kept, -inf
// where it is hidden — so that Q·Kᵀ lands on them and the plain variant's raw-score softmax applies
// unchanged: the exported encoder's padding mask at the plain variant's tiles. One instantiation per
// combination keeps each key loop as short as the plain one plus its masks (instruction cache). Not for
// softcap (it applies before the bias) or a scale <= 0; with a bfloat16 bias only for scale * log2(e) <= 1
// (see accum_masks in flash_attention_cuda.cu).
constexpr int kAccumBias = 1;
constexpr int kAccumKeep = 2;

// kSplitTiles_ (float32 only): each K and V tile is split into its tf32 parts once per block, in shared memory
// (the hi parts in place, the lo parts in two more tiles), instead of by every warp for its fragments: two more
// barriers per key tile and twice the K/V shared memory, for fewer non-mma instructions in the warps (at head dim 128,
// estimated from the SASS: about two per mma instead of five; on an H200 3-20% faster than the per-warp splits in the
// second run, 5% slower to 17% faster in the first).
// kTf32Passes_ (float32 only): 3 (3xTF32, fp32's accuracy) or 1 (one TF32 product: operands rounded to 10 mantissa
// bits, about 1e-3 relative, as the CUDA provider's TF32 MatMuls; a session that asks for it).
template <class T_, int kHeadDim_, int kBlockM_, int kBlockN_, int kWarps_, bool kMaskInputs_ = true,
          int kAccumMasks_ = 0, bool kSplitTiles_ = false, int kTf32Passes_ = 3>
struct FwdTraits {
  using T = T_;
  static constexpr bool kMaskInputs = kMaskInputs_;
  static constexpr bool kMaskAccum = kAccumMasks_ != 0;
  static constexpr bool kAccumBiasIn = (kAccumMasks_ & kAccumBias) != 0;
  static constexpr bool kAccumKeepIn = (kAccumMasks_ & kAccumKeep) != 0;
  static constexpr int kHeadDim = kHeadDim_;  // capacity: D and Dv up to this, multiples of 8
  static constexpr int kBlockM = kBlockM_;    // query rows per thread block
  static constexpr int kBlockN = kBlockN_;    // keys per K/V tile
  static constexpr int kWarps = kWarps_;
  static constexpr int kThreads = kWarps * 32;

  // float32: mma.sync m16n8k8 .tf32 three times per product (3xTF32, mma_primitives.cuh); 16-bit: m16n8k16.
  static constexpr bool kTf32 = sizeof(T) == 4;
  static constexpr bool kSplitTiles = kSplitTiles_;
  static constexpr int kTf32Passes = kTf32Passes_;
  static constexpr int kMmaK = kTf32 ? 8 : 16;
  static constexpr int kChunkElems = 16 / int(sizeof(T));

  static constexpr int kRowsPerWarp = kBlockM / kWarps;
  static constexpr int kMTiles = kRowsPerWarp / 16;  // 16-row mma tiles each warp owns
  static constexpr int kNTiles = kBlockN / 8;        // 8-key column tiles of S
  static constexpr int kDTiles = kHeadDim / 8;       // 8-column tiles of the output
  static constexpr int kKSteps = kHeadDim / kMmaK;   // k-steps of Q·Kᵀ (two chunks each)
  static constexpr int kChunks = kHeadDim / kChunkElems;  // 16-byte chunks per row
  // Chunks per row as the tile loads see them: rounded up to a power of two (head dim 96: 12 -> 16), so
  // that every thread keeps one column of a tile (the threads of columns 12-15 copy nothing).
  static constexpr int kLoadColumns = kChunks <= 4 ? 4 : kChunks <= 8 ? 8 : kChunks <= 16 ? 16 : 32;

  using Layout = SmemRowLayout<kChunks, kChunkElems>;
  using Address = LdmatrixAddress<Layout>;
  static constexpr int kQTileElems = kBlockM * Layout::kRowElems;
  static constexpr int kKvTileElems = kBlockN * Layout::kRowElems;
  // Q, one K tile, one V tile. K and V are loaded alternately: V(n) streams in during Q·K(n)ᵀ and
  // the softmax, K(n-1) during P·V(n).
  static constexpr size_t kQkvSmemBytes = (size_t(kQTileElems) + 2 * size_t(kKvTileElems)) * sizeof(T);
  // The general variant's bias (T) and keep (bytes) tiles, kBlockM x kBlockN, streamed in with K(n)
  // by cp.async. Rows are padded by 16 bytes so that the 8 rows a quad of lanes reads fall in 8
  // distinct bank groups. A bias broadcast over query rows takes one row. Where the tiles would not
  // fit the 99 KiB (head dim 256), the kernel reads bias and keep from global memory instead.
  static constexpr int kBiasPitch = kBlockN + 16 / int(sizeof(T));  // elements
  static constexpr int kKeepPitch = kBlockN + 16;                   // bytes
  static constexpr size_t kBiasTileBytes = size_t(kBlockM) * kBiasPitch * sizeof(T);
  static constexpr size_t kKeepTileBytes = size_t(kBlockM) * kKeepPitch;
  static constexpr bool kMaskTiles = kMaskInputs && kQkvSmemBytes + kBiasTileBytes + kKeepTileBytes <= 99 * 1024;
  static constexpr bool kBiasTile = kMaskTiles || kAccumBiasIn;  // a bias tile in shared memory
  static constexpr bool kKeepTile = kMaskTiles || kAccumKeepIn;  // a keep tile in shared memory
  // kSplitTiles: the lo parts of K and V, after the mask tiles.
  static constexpr size_t kSplitTileBytes = kSplitTiles ? 2 * size_t(kKvTileElems) * sizeof(T) : 0;
  static constexpr size_t kSmemBytes =
      kQkvSmemBytes + (kBiasTile ? kBiasTileBytes : 0) + (kKeepTile ? kKeepTileBytes : 0) + kSplitTileBytes;

  static_assert((sizeof(T) == 2 || std::is_same_v<T, float>) && Layout::kRowElems * sizeof(T) % 16 == 0,
                "the tensor-core kernel takes fp16, bf16 and (3xTF32) float32 elements");
  static_assert(kHeadDim % 16 == 0, "head dim capacity must be a multiple of 16");
  static_assert(!kTf32 || kAccumMasks_ == 0, "float32 applies its masks after Q·Kᵀ (general variant)");
  static_assert(kHeadDim <= 256, "accumulators for head dims above 256 do not fit in registers");
  static_assert(kBlockM % (16 * kWarps) == 0, "each warp owns whole 16-row mma tiles");
  static_assert(kBlockN % 16 == 0, "K/V tiles are consumed 16 keys (two 8-key mma tiles) at a time");
  static_assert((kBlockM * kChunks) % kThreads == 0 && (kBlockN * kChunks) % kThreads == 0,
                "every thread issues the same number of cp.async per tile");
  // The split-tile variant may need more (sm_80: 163 KiB, sm_90: 227 KiB): it runs where the device allows it.
  static_assert(kSmemBytes <= (kSplitTiles ? 227 : 99) * 1024, "tiles must fit the 99 KiB per block of sm_86/sm_89");
  static_assert(!kSplitTiles || kTf32, "only float32 tiles are split into tf32 parts");
  static_assert(kTf32Passes == 3 || (kTf32Passes == 1 && kTf32 && !kSplitTiles),
                "one TF32 pass (float32 only) reads K and V as they are: no tiles split into parts");
  static_assert(!kMaskAccum || !kMaskInputs, "the masks-in-accumulator variant is the plain variant's");
  static_assert(kAccumMasks_ >= 0 && kAccumMasks_ <= (kAccumBias | kAccumKeep), "kAccumMasks: bits kAccumBias, kAccumKeep");
};

// Shape of the Hopper (wgmma) forward kernels, hopper_kernel.cuh: kWarpGroups warpgroups of 64 query rows,
// kBlockN keys per K/V tile. kAccumMasks_ (TMA kernel only): a bias (kAccumBias) and/or keep mask (kAccumKeep)
// staged per tile beside K and V and started in the score accumulators, as fwd_kernel.cuh's variants do.
template <class T_, int kHeadDim_, int kBlockN_, int kWarpGroups_, int kStages_ = 2, bool kOverlap_ = false,
          int kAccumMasks_ = 0, bool kPingpong_ = false>
struct HopperTraits {
  using T = T_;
  static constexpr int kHeadDim = kHeadDim_;  // capacity: D and Dv up to this (the MMAs' k and n)
  // Columns of the shared tiles: whole 64-column (128-byte) swizzle blocks, the ones past kHeadDim zeros (96: 128).
  static constexpr int kTileCols = (kHeadDim + 63) / 64 * 64;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kWarpGroups = kWarpGroups_;
  static constexpr int kBlockM = 64 * kWarpGroups;
  static constexpr int kThreads = 128 * kWarpGroups;
  static constexpr int kChunks = kTileCols / 8;      // 16-byte chunks per tile row
  static constexpr int kDTiles = kHeadDim / 8;       // 8-column accumulator tiles of O
  static constexpr int kQTileBytes = kBlockM * kTileCols * 2;
  static constexpr int kKvTileBytes = kBlockN * kTileCols * 2;
  static constexpr int kStages = kStages_;  // K/V buffers (cp.async kernel: 2)
  static constexpr bool kOverlap = kOverlap_;  // TMA kernel: Q·Kᵀ of tile i in flight with P·V of tile i-1
  // With kOverlap and two consumer warpgroups: they take turns issuing their GEMMs (named barriers), so that one's
  // softmax runs while the other's GEMMs do (FlashAttention-3's pingpong).
  static constexpr bool kPingpong = kPingpong_ && kOverlap_ && kWarpGroups_ == 2;
  static constexpr bool kBiasIn = (kAccumMasks_ & kAccumBias) != 0;
  static constexpr bool kKeepIn = (kAccumMasks_ & kAccumKeep) != 0;
  // Mask tiles: kBlockM rows (one for a mask broadcast over query rows) of kBlockN keys, in 128-byte swizzled
  // blocks of 64 bias elements / 128 keep bytes per row, as TMA writes them.
  static constexpr int kBiasTileBytes = kBiasIn ? kBlockM * kBlockN * 2 : 0;
  static constexpr int kKeepTileBytes = kKeepIn ? kBlockM * kBlockN : 0;
  static constexpr int kStageBytes = 2 * kKvTileBytes + kBiasTileBytes + kKeepTileBytes;  // K, V, bias, keep
  // The tiles need 1024-byte alignment (the swizzle pattern repeats every 8 rows of 128 bytes), which
  // dynamic shared memory does not promise: 1 KiB of slack. The TMA kernel adds its mbarriers (Q, and per
  // stage K full, V full, empty) and a producer warpgroup.
  static constexpr size_t kTileBytes = size_t(kQTileBytes) + size_t(kStages) * kStageBytes;
  static constexpr size_t kSmemBytes = 1024 + size_t(kQTileBytes) + 2 * 2 * size_t(kKvTileBytes);  // cp.async: 2 stages
  static constexpr int kBarriers = 1 + 3 * kStages;
  static constexpr size_t kTmaSmemBytes = 1024 + kTileBytes + 8 * size_t(kBarriers);
  // The TMA kernel's block: the consumer warpgroups and a producer warpgroup. With 12 warps, 3 share each of an
  // SM's 4 register-file partitions (16K registers): 168 registers per thread at launch; the producer then gives
  // back all but kProducerRegs, and the consumers take kConsumerRegs (setmaxnreg; 24 + 2 x 240 <= 512).
  // (With one consumer warpgroup, 8 warps get 255 registers each from the start: no setmaxnreg.)
  static constexpr int kTmaThreads = kThreads + 128;
  static constexpr bool kRegisterSplit = kWarpGroups == 2;
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;
  // Whether the TMA kernel's tiles fit the 227 KiB an sm_90 block may use (with both masks at head dim 128
  // they do not: such calls stay on the mma.sync kernel).
  // Keep boxes are 128 keys wide (one swizzle span of bytes): they need kBlockN a multiple of 128.
  static constexpr bool kFits = kTmaSmemBytes <= 227 * 1024 && (!kKeepIn || kBlockN % 128 == 0);

  static_assert(sizeof(T) == 2, "wgmma takes 16-bit elements here (fp16, bf16)");
  static_assert(kHeadDim == 64 || kHeadDim == 96 || kHeadDim == 128 || kHeadDim == 256,
                "Wgmma is instantiated for n = 64, 96, 128 and 256");
  static_assert(kBlockN == 64 || kBlockN == 128, "Q·Kᵀ runs at n = 64 or 128");
  static_assert((kBlockM * kChunks) % kThreads == 0 && (kBlockN * kChunks) % kThreads == 0,
                "every thread issues the same number of cp.async per tile");
  static_assert(kSmemBytes <= 227 * 1024, "the cp.async kernel's tiles must fit the 227 KiB an sm_90 block may use");
  static_assert(kStages >= 2, "the next K/V tile streams in while this one is used");
  static_assert(kAccumMasks_ >= 0 && kAccumMasks_ <= (kAccumBias | kAccumKeep), "kAccumMasks: bits kAccumBias, kAccumKeep");
};

}  // namespace ortflash::cuda

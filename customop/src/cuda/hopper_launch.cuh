// OrtFlash CUDA — the Hopper (wgmma) forward kernels' launches: the cp.async kernel, and the TMA one with its
// tensor maps. Included only by the sm_90a translation units fwd_hopper*.cu (nvcc >= 12.3; see cuda.cmake), which
// instantiate them per head dim, and on the emulator.
#pragma once

#include <cuda_runtime_api.h>

#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "fwd_launch.cuh"
#include "hopper_kernel.cuh"
#include "tma_maps.cuh"

namespace ortflash::cuda {

template <class Tr>
inline DynamicSmemLimit hopper_fwd_smem_limit;

template <class Tr>
std::string launch_hopper_fwd(const FwdParams& p, cudaStream_t stream) {
  return launch_row_blocks<Tr>(&hopper_fwd_kernel<Tr>, hopper_fwd_smem_limit<Tr>, "hopper_fwd_kernel", Tr::kThreads,
                               Tr::kSmemBytes, p, stream);
}

template <class Tr>
inline DynamicSmemLimit hopper_tma_fwd_smem_limit;

// q, k or v as (head-dim column, row, head, batch); boxes of 64 columns by box_rows rows.
template <class T>
std::string encode_input_map(TmaDescriptor& map, const void* base, int cols, int rows, int heads, int batch,
                             const int64_t (&stride)[3], int box_rows) {
  const uint64_t dims[4] = {uint64_t(cols), uint64_t(rows), uint64_t(heads), uint64_t(batch)};
  return encode_map<T>(map, base, dims, {stride[2], stride[1], stride[0]}, {64, uint32_t(box_rows)});
}

// A bias (E = T) or keep mask (bytes) as (key, query row, head, batch), broadcast dimensions of extent 1; boxes
// of one 128-byte span of keys by kBlockM rows, or 1 row when broadcast over query rows. Keys must be contiguous.
template <class E, class Tr>
std::string encode_mask_map(TmaDescriptor& map, const void* base, const int64_t (&stride)[4], const FwdParams& p) {
  if (stride[3] != 1) return "keys not contiguous";
  const uint64_t dims[4] = {uint64_t(p.kv_len), stride[2] == 0 ? 1u : uint64_t(p.q_len), stride[1] == 0 ? 1u : uint64_t(p.q_heads),
                            stride[0] == 0 ? 1u : uint64_t(p.batch)};
  const uint32_t box[2] = {uint32_t(128 / sizeof(E)), stride[2] == 0 ? 1u : uint32_t(Tr::kBlockM)};
  return encode_map<E>(map, base, dims, {stride[2], stride[1], stride[0]}, box);
}

// The TMA kernel; where the inputs cannot be described by tensor maps (strides TMA refuses), the cp.async one,
// or with masks nothing: *declined is set and the caller runs the mma.sync kernel (whose kernels must not be
// instantiated here: this file's device code is sm_90a only).
template <class Tr>
std::string launch_hopper_tma_fwd(const FwdParams& p, cudaStream_t stream, bool* declined) {
  using T = typename Tr::T;
  constexpr bool kMasks = Tr::kBiasIn || Tr::kKeepIn;
  *declined = false;
  const auto fallback = [&]() {
    if constexpr (kMasks) {
      *declined = true;
      return std::string();
    } else {
      return launch_hopper_fwd<Tr>(p, stream);
    }
  };
  if constexpr (!Tr::kFits) {
    return fallback();
  } else {
    HopperTmaMaps maps{};  // the mask maps stay zero where there are no masks
    std::string refused = encode_input_map<T>(maps.q, p.q, p.head_dim, p.q_len, p.q_heads, p.batch, p.q_stride, Tr::kBlockM);
    if (refused.empty() && p.kv_len > 0) {
      refused = encode_input_map<T>(maps.k, p.k, p.head_dim, p.kv_len, p.kv_heads, p.batch, p.k_stride, Tr::kBlockN);
    }
    if (refused.empty() && p.kv_len > 0) {
      refused = encode_input_map<T>(maps.v, p.v, p.v_head_dim, p.kv_len, p.kv_heads, p.batch, p.v_stride, Tr::kBlockN);
    }
    if (Tr::kBiasIn && refused.empty() && p.kv_len > 0) {
      refused = p.bias_chunks ? encode_mask_map<T, Tr>(maps.bias, p.bias, p.bias_stride, p) : "bias rows not in 16-byte chunks";
    }
    if (Tr::kKeepIn && refused.empty() && p.kv_len > 0) {
      refused = p.keep_chunks ? encode_mask_map<uint8_t, Tr>(maps.keep, p.keep, p.keep_stride, p) : "keep rows not in 16-byte chunks";
    }
    if (!refused.empty()) return fallback();
    return launch_row_blocks<Tr>(&hopper_tma_fwd_kernel<Tr>, hopper_tma_fwd_smem_limit<Tr>, "hopper_tma_fwd_kernel",
                                 Tr::kTmaThreads, Tr::kTmaSmemBytes, p, stream, maps);
  }
}

// The explicit instantiations of one element type and head dim (fwd_hopper*.cu): both kernels, without masks and
// (TMA kernel) with bias (1), keep (2) or both (3); instantiations whose tiles do not fit (HopperTraits::kFits)
// decline at run time.
#define ORTFLASH_HOPPER_INSTANCES(T, D)                                                                       \
  template std::string launch_hopper_fwd<HopperTraitsFor<T, D>>(const FwdParams&, cudaStream_t);               \
  template std::string launch_hopper_tma_fwd<HopperTraitsFor<T, D>>(const FwdParams&, cudaStream_t, bool*);    \
  template std::string launch_hopper_tma_fwd<HopperTraitsFor<T, D, 1>>(const FwdParams&, cudaStream_t, bool*); \
  template std::string launch_hopper_tma_fwd<HopperTraitsFor<T, D, 2>>(const FwdParams&, cudaStream_t, bool*); \
  template std::string launch_hopper_tma_fwd<HopperTraitsFor<T, D, 3>>(const FwdParams&, cudaStream_t, bool*);

}  // namespace ortflash::cuda

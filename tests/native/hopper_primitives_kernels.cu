// The kernels behind hopper_primitives_kernels.h: OrtFlash's wrappers of the sm_90a instructions
// (wgmma_primitives.cuh, tma_maps.cuh), used the way the Hopper kernels use them. Built for sm_90a where nvcc >=
// 12.3 (tests/native/cuda.cmake) and as C++ on the emulator.
#include "hopper_primitives_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_compat.cuh"
#include "tma_maps.cuh"
#include "wgmma_primitives.cuh"

namespace ortflash_test {
namespace {

using namespace ortflash::cuda;

constexpr int kSs = kWgmmaSs, kRs = kWgmmaRs;

__device__ unsigned char* aligned_1024(unsigned char* raw) {
  return raw + ((1024u - (smem_address(raw) & 1023u)) & 1023u);
}

// SS: D (64x64) = init + A (64x64, K-major at 0) · B (B[k][n] as 64 K-major rows n at 8192), 4 k-steps.
// RS: D (64x128) = init + A (64x32, registers) · B (32 x 128, N-major at 8192), 2 k-steps.
template <class T>
__global__ void wgmma_kernel(const uint16_t* a_img, const uint16_t* b_img, const uint16_t* a_plain, float* out, int mode) {
  ORTFLASH_DYNAMIC_SMEM(unsigned char, raw);
  unsigned char* const smem = aligned_1024(raw);
  const int tid = static_cast<int>(threadIdx.x);
  for (int i = tid; i < 1024; i += 128) cp_async_16(smem + i * 16, i < 512 ? a_img + i * 8 : b_img + (i - 512) * 8, true);
  cp_async_commit();
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();
  const uint32_t base = smem_address(smem);
  float d[64];
  const int n = mode == kSs ? 64 : 128;
  for (int e = 0; e < 64; ++e) d[e] = e < n / 2 ? 0.25f * float(e + 1) : 0.0f;
  if (mode == kSs) {
    float (&d32)[32] = reinterpret_cast<float (&)[32]>(d);
    wgmma_fence();
    for (int ks = 0; ks < 4; ++ks) {
      Wgmma<T, 64>::ss(d32, smem_descriptor(base + 32 * ks, 16, 1024), smem_descriptor(base + 8192 + 32 * ks, 16, 1024), true);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(d32);
  } else {
    const int w = tid / 32, g = (tid % 32) / 4, t = tid % 4;
    const auto pair = [&](int row, int col) {
      return uint32_t(a_plain[row * 32 + col]) | uint32_t(a_plain[row * 32 + col + 1]) << 16;
    };
    uint32_t af[2][4];
    for (int ks = 0; ks < 2; ++ks) {
      af[ks][0] = pair(16 * w + g, 16 * ks + 2 * t);
      af[ks][1] = pair(16 * w + g + 8, 16 * ks + 2 * t);
      af[ks][2] = pair(16 * w + g, 16 * ks + 2 * t + 8);
      af[ks][3] = pair(16 * w + g + 8, 16 * ks + 2 * t + 8);
    }
    wgmma_fence();
    for (int ks = 0; ks < 2; ++ks) Wgmma<T, 128>::rs_n_major(d, af[ks], smem_descriptor(base + 8192 + 2048 * ks, 4096, 1024), true);
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(d);
    fence_registers(af[0]);
    fence_registers(af[1]);
  }
  const int w = tid / 32, g = (tid % 32) / 4, t = tid % 4;
  for (int e = 0; e < n / 2; ++e) out[(16 * w + g + 8 * ((e >> 1) & 1)) * n + 8 * (e >> 2) + 2 * t + (e & 1)] = d[e];
}

// A 64 x 16 box of a (cols x rows x planes) tensor with rows `pitch` elements apart, at (c0, c1, plane 1).
__global__ void tma_kernel(const __grid_constant__ TmaDescriptor map, int c0, int c1, uint16_t* out) {
  ORTFLASH_DYNAMIC_SMEM(unsigned char, raw);
  unsigned char* const smem = aligned_1024(raw);
  uint64_t* const bar = reinterpret_cast<uint64_t*>(smem + 4096);
  const int lane = static_cast<int>(threadIdx.x);
  if (lane == 0) {
    mbarrier_init(bar, 1);
    fence_barrier_init();
  }
  __syncthreads();
  if (lane == 0) {
    mbarrier_arrive_expect_tx(bar, 2048);
    tma_load_4d(smem, &map, bar, c0, c1, 1, 0);
  }
  mbarrier_wait(bar, 0);
  for (int i = lane; i < 512; i += 32) {
    const uint32_t word = shared_load_u32(smem + 4 * i);
    out[2 * i] = static_cast<uint16_t>(word);
    out[2 * i + 1] = static_cast<uint16_t>(word >> 16);
  }
}

}  // namespace

cudaError_t launch_wgmma_probe(const uint16_t* a_img, const uint16_t* b_img, const uint16_t* a_plain, float* out, int mode,
                               bool bf16, cudaStream_t stream) {
  constexpr size_t kSmem = 16384 + 1024;
  if (bf16) {
    auto kernel = &wgmma_kernel<__nv_bfloat16>;
    ORTFLASH_LAUNCH(kernel, 1u, 128u, kSmem, stream, a_img, b_img, a_plain, out, mode);
  } else {
    auto kernel = &wgmma_kernel<__half>;
    ORTFLASH_LAUNCH(kernel, 1u, 128u, kSmem, stream, a_img, b_img, a_plain, out, mode);
  }
  return cudaGetLastError();
}

std::string launch_tma_probe(const uint16_t* tensor, int cols, int rows, int planes, int pitch, int c0, int c1, uint16_t* out,
                             cudaStream_t stream, cudaError_t* status) {
  TmaDescriptor map;
  const uint64_t dims[4] = {uint64_t(cols), uint64_t(rows), uint64_t(planes), 1};
  const std::string refused = encode_map<__half>(map, tensor, dims, {pitch, int64_t(pitch) * rows, 0}, {64, 16});
  if (!refused.empty()) return refused;
  auto kernel = &tma_kernel;
  ORTFLASH_LAUNCH(kernel, 1u, 32u, size_t(4096 + 1024 + 64), stream, map, c0, c1, out);
  *status = cudaGetLastError();
  return "";
}

}  // namespace ortflash_test

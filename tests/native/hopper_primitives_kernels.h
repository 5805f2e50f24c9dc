// Launchers of the kernels that exercise the Hopper instructions' wrappers on their own (see
// hopper_primitives_test.cc). Host declarations only: the kernels are built for sm_90a, or on the emulator.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace ortflash_test {

constexpr int kWgmmaSs = 0;  // D (64x64) = init + A (64x64, K-major, shared at 0) · B (64 K-major rows n, at 8192)
constexpr int kWgmmaRs = 1;  // D (64x128) = init + A (64x32, registers) · B (32 x 128, N-major at 8192)

// One warpgroup: copies the 8 KiB images a_img and b_img to shared memory (1024-byte aligned) and runs the
// wgmma sequence of `mode` (element type bf16 or fp16); the accumulators start at d[e] = 0.25 (e + 1) and land
// in `out` as D (row-major, 64 x n).
cudaError_t launch_wgmma_probe(const uint16_t* a_img, const uint16_t* b_img, const uint16_t* a_plain, float* out, int mode,
                               bool bf16, cudaStream_t stream);

// TMA: a (cols x rows x planes) fp16 tensor whose rows are `pitch` elements apart; the 64 x 16 box at
// (c0, c1, plane 1) through an mbarrier, read back from shared memory as it landed (2048 bytes) into `out`.
// Returns the tensor map's refusal, or "" and the launch status in *status.
std::string launch_tma_probe(const uint16_t* tensor, int cols, int rows, int planes, int pitch, int c0, int c1, uint16_t* out,
                             cudaStream_t stream, cudaError_t* status);

}  // namespace ortflash_test

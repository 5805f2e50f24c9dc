// The Hopper instructions behind the wgmma kernels, each on its own through OrtFlash's wrappers
// (wgmma_primitives.cuh, tma_maps.cuh), against the PTX ISA's layouts written out independently here: wgmma
// with both operands in shared memory (K-major, 128-byte swizzle, k-steps by descriptor offsets), with A in
// registers and B N-major (two 64-column blocks, two 8-key groups), and a TMA box through an mbarrier. Built for
// sm_90a where nvcc >= 12.3 (run on a compute capability 9 GPU, skipped elsewhere) and on the simt emulator.
// When the Hopper kernels disagree with the reference on a GPU, these say which piece is wrong.
//
// Layouts: a K-major operand keeps each row's 64 k-elements in one 128-byte row, its 16-byte chunk c at
// c ^ (row % 8), rows 128 bytes apart (8-row groups 1024 apart); an N-major one keeps 64 n-elements of one k
// per 128-byte row the same way, k-rows 128 bytes apart, blocks of 64 n 4096 bytes apart here. Accumulators
// (m64nN): thread 32w + 4g + t holds d[4j + 2h + b] = D[16w + g + 8h][8j + 2t + b].
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "hopper_primitives_kernels.h"

namespace {

using ortflash_test::kWgmmaRs;
using ortflash_test::kWgmmaSs;

bool has_sm90_device() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    return false;
  }
  int major = 0;
  return cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) == cudaSuccess && major == 9;
}

#define SKIP_WITHOUT_SM90() \
  if (!has_sm90_device()) GTEST_SKIP() << "no compute capability 9 device (the sm_90a instructions need one)"

template <class T>
cudaError_t device_alloc(T** ptr, size_t bytes) {
  void* raw = nullptr;
  const cudaError_t status = cudaMalloc(&raw, bytes);
  *ptr = static_cast<T*>(raw);
  return status;
}

uint32_t kmajor_byte(int row, int k) { return uint32_t(row * 128 + (((k / 8) ^ (row % 8)) * 16) + (k % 8) * 2); }
uint32_t nmajor_byte(int k, int n) { return uint32_t((n / 64) * 4096 + k * 128 + ((((n % 64) / 8) ^ (k % 8)) * 16) + (n % 8) * 2); }

// 16-bit values by their bits (host conversions written out here): fp16 or bf16 of small exact values.
uint16_t to_bits(float x, bool bf16) {
  if (bf16) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return static_cast<uint16_t>(u >> 16);  // exact: the values below have at most 8 significant bits
  }
  // fp16 of k / 16 for |k| < 32 * 16: sign, exponent, 10-bit mantissa.
  if (x == 0.0f) return 0;
  const uint16_t sign = x < 0 ? 0x8000 : 0;
  float a = std::fabs(x);
  int e = 0;
  while (a >= 2.0f) a /= 2.0f, ++e;
  while (a < 1.0f) a *= 2.0f, --e;
  return static_cast<uint16_t>(sign | uint16_t((e + 15) << 10) | uint16_t(std::lround((a - 1.0f) * 1024.0f)));
}

void expect_wgmma_matches_product(int mode, bool bf16) {
  // Values k / 16 with |k| < 32: exact in both types, products and their sums exact in fp32.
  uint32_t state = 21u + uint32_t(mode) + (bf16 ? 100u : 0u);
  const auto value = [&state]() {
    state = state * 1664525u + 1013904223u;
    return float(int((state >> 8) % 63u) - 31) / 16.0f;
  };
  const int n = mode == kWgmmaSs ? 64 : 128, kdim = mode == kWgmmaSs ? 64 : 32;
  std::vector<float> a(size_t(64) * kdim), b(size_t(kdim) * n);
  std::vector<uint16_t> a_img(4096, 0), b_img(4096, 0), a_plain(size_t(64) * 32, 0);
  for (int m = 0; m < 64; ++m) {
    for (int k = 0; k < kdim; ++k) {
      a[size_t(m) * kdim + k] = value();
      (mode == kWgmmaSs ? a_img[kmajor_byte(m, k) / 2] : a_plain[size_t(m) * 32 + k]) = to_bits(a[size_t(m) * kdim + k], bf16);
    }
  }
  for (int k = 0; k < kdim; ++k) {
    for (int j = 0; j < n; ++j) {
      b[size_t(k) * n + j] = value();
      b_img[(mode == kWgmmaSs ? kmajor_byte(j, k) : nmajor_byte(k, j)) / 2] = to_bits(b[size_t(k) * n + j], bf16);
    }
  }
  uint16_t *da = nullptr, *db = nullptr, *dp = nullptr;
  float* dout = nullptr;
  ASSERT_EQ(device_alloc(&da, 8192), cudaSuccess);
  ASSERT_EQ(device_alloc(&db, 8192), cudaSuccess);
  ASSERT_EQ(device_alloc(&dp, a_plain.size() * 2), cudaSuccess);
  ASSERT_EQ(device_alloc(&dout, size_t(64) * n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(da, a_img.data(), 8192, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(db, b_img.data(), 8192, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dp, a_plain.data(), a_plain.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(ortflash_test::launch_wgmma_probe(da, db, dp, dout, mode, bf16, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess) << cudaGetErrorString(cudaGetLastError());
  std::vector<float> got(size_t(64) * n);
  ASSERT_EQ(cudaMemcpy(got.data(), dout, got.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  int wrong = 0;
  for (int m = 0; m < 64; ++m) {
    for (int j = 0; j < n; ++j) {
      const int e = 4 * (j / 8) + 2 * ((m % 16) / 8) + (j % 2);
      double want = 0.25 * (e + 1);
      for (int k = 0; k < kdim; ++k) want += double(a[size_t(m) * kdim + k]) * double(b[size_t(k) * n + j]);
      if (got[size_t(m) * n + j] != want && ++wrong <= 5) {
        ADD_FAILURE() << "D[" << m << "][" << j << "] = " << got[size_t(m) * n + j] << ", want " << want;
      }
    }
  }
  EXPECT_EQ(wrong, 0) << "elements off (mode " << mode << ", " << (bf16 ? "bf16" : "fp16") << ")";
  cudaStreamDestroy(stream);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dp);
  cudaFree(dout);
}

TEST(HopperPrimitives, WgmmaFromSharedKMajorOperandsIsTheMatrixProduct) {
  SKIP_WITHOUT_SM90();
  expect_wgmma_matches_product(kWgmmaSs, false);
  expect_wgmma_matches_product(kWgmmaSs, true);
}

TEST(HopperPrimitives, WgmmaWithRegisterAAndNMajorBIsTheMatrixProduct) {
  SKIP_WITHOUT_SM90();
  expect_wgmma_matches_product(kWgmmaRs, false);
  expect_wgmma_matches_product(kWgmmaRs, true);
}

void expect_tma_box(int c0, int c1) {
  const int cols = 100, rows = 40, pitch = 104, planes = 2;  // rows 208 bytes apart: a multiple of 16
  std::vector<uint16_t> host(size_t(pitch) * rows * planes);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<uint16_t>(i * 7 + 1);
  uint16_t* tensor = nullptr;
  uint16_t* out = nullptr;
  ASSERT_EQ(device_alloc(&tensor, host.size() * 2), cudaSuccess);
  ASSERT_EQ(device_alloc(&out, 2048), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(tensor, host.data(), host.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cudaError_t launched = cudaErrorInvalidValue;
  ASSERT_EQ(ortflash_test::launch_tma_probe(tensor, cols, rows, planes, pitch, c0, c1, out, stream, &launched), "");
  ASSERT_EQ(launched, cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess) << cudaGetErrorString(cudaGetLastError());
  std::vector<uint16_t> got(1024);
  ASSERT_EQ(cudaMemcpy(got.data(), out, 2048, cudaMemcpyDeviceToHost), cudaSuccess);
  int wrong = 0;
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 64; ++c) {
      const int col = c0 + c, row = c1 + r;
      const uint16_t want =
          col >= 0 && col < cols && row >= 0 && row < rows ? host[size_t(pitch) * rows + size_t(row) * pitch + col] : 0;
      if (got[kmajor_byte(r, c) / 2] != want && ++wrong <= 5) {
        ADD_FAILURE() << "box element (" << r << ", " << c << ") = " << got[kmajor_byte(r, c) / 2] << ", want " << want;
      }
    }
  }
  EXPECT_EQ(wrong, 0) << "elements off at (" << c0 << ", " << c1 << ")";
  cudaStreamDestroy(stream);
  cudaFree(tensor);
  cudaFree(out);
}

TEST(HopperPrimitives, TmaBoxesLandSwizzledWithZerosOutsideTheTensor) {
  SKIP_WITHOUT_SM90();
  expect_tma_box(0, 0);
  expect_tma_box(64, 30);  // columns 100.. and rows 40.. outside
  expect_tma_box(-8, -3);
}

}  // namespace

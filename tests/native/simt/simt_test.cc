// Tests of the simt emulator itself: its emulated instructions against the PTX ISA's fragment
// layouts written out independently here, and every check it claims to make, each provoked by a
// small faulty kernel (and passed by the corrected kernel, so no check fires spuriously).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace {

// ---- helpers ----------------------------------------------------------------------------------

template <class T>
T* device_alloc(size_t count) {
  void* ptr = nullptr;
  EXPECT_EQ(cudaMalloc(&ptr, count * sizeof(T)), cudaSuccess);
  return static_cast<T*>(ptr);
}

template <class T>
std::vector<T> download(const T* device, size_t count) {
  std::vector<T> host(count);
  EXPECT_EQ(cudaMemcpy(host.data(), device, count * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}

template <class T>
T* upload(const std::vector<T>& host) {
  T* device = device_alloc<T>(host.size());
  EXPECT_EQ(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return device;
}

class Stream {
 public:
  Stream() { EXPECT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess); }
  ~Stream() { cudaStreamDestroy(stream_); }
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// Runs `kernel` on one block and returns "" or the emulator's failure message.
template <class... Params, class... Args>
std::string run(void (*kernel)(Params...), unsigned threads, size_t smem, Args... args) {
  Stream stream;
  const cudaError_t launched = simt::launch("test kernel", kernel, 1u, threads, smem, stream.get(), args...);
  if (launched != cudaSuccess) return cudaGetErrorString(launched);
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess ? std::string() : std::string(cudaGetErrorString(status));
}

uint16_t bits_of(__half h) { return h.__x; }
uint16_t bits_of(__nv_bfloat16 h) { return h.__x; }

// ---- mma.sync.m16n8k16: fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16") ----------
// Lane l, g = l / 4, t = l % 4. A (16x16, row major): a0 = A[g][2t, 2t+1], a1 = A[g+8][2t..],
// a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]. B (16x8, K x N): b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g].
// C/D (16x8): c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1]. The lower element is in the
// lower 16 bits.

// Stores lane `lane`'s accumulators c0..c3 into the 16x8 row-major D.
void store_accumulators(float* d, const float (&c)[4], int lane) {
  const int g = lane / 4, t = lane % 4;
  d[g * 8 + 2 * t] = c[0];
  d[g * 8 + 2 * t + 1] = c[1];
  d[(g + 8) * 8 + 2 * t] = c[2];
  d[(g + 8) * 8 + 2 * t + 1] = c[3];
}

// Checks the 16x8 D of an mma against C + A·B in double: C as mma_kernel and mma_tf32_kernel start it (the lane's
// accumulators 1, 2, 3, 4), A 16 x k and B k x 8 row-major, as a(i, kk) and b(kk, j) give them.
template <class A, class B>
void expect_accumulated_product(const std::vector<float>& d, int k, A a, B b, double relative) {
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      double want = (i >= 8 ? 2 : 0) + (j % 2) + 1;  // the initial c of the lane holding D[i][j]
      for (int kk = 0; kk < k; ++kk) want += a(i, kk) * b(kk, j);
      EXPECT_NEAR(d[i * 8 + j], want, relative * (1 + std::fabs(want))) << "D[" << i << "][" << j << "]";
    }
  }
}

template <class T>
__global__ void mma_kernel(const T* a, const T* b, float* d) {
  const int lane = static_cast<int>(threadIdx.x), g = lane / 4, t = lane % 4;
  const auto pair = [](T lo, T hi) { return uint32_t(bits_of(lo)) | (uint32_t(bits_of(hi)) << 16); };
  const uint32_t fa[4] = {pair(a[g * 16 + 2 * t], a[g * 16 + 2 * t + 1]),
                          pair(a[(g + 8) * 16 + 2 * t], a[(g + 8) * 16 + 2 * t + 1]),
                          pair(a[g * 16 + 2 * t + 8], a[g * 16 + 2 * t + 9]),
                          pair(a[(g + 8) * 16 + 2 * t + 8], a[(g + 8) * 16 + 2 * t + 9])};
  const uint32_t b0 = pair(b[(2 * t) * 8 + g], b[(2 * t + 1) * 8 + g]);
  const uint32_t b1 = pair(b[(2 * t + 8) * 8 + g], b[(2 * t + 9) * 8 + g]);
  float c[4] = {1.0f, 2.0f, 3.0f, 4.0f};  // accumulated onto
  simt::mma_m16n8k16(c, fa, b0, b1, std::is_same_v<T, __half> ? simt::MmaInput::kFloat16 : simt::MmaInput::kBFloat16);
  store_accumulators(d, c, lane);
}

template <class T, class Convert, class Back>
void expect_mma_matches_matrix_product(Convert to_t, Back to_float) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
  std::vector<T> a(16 * 16), b(16 * 8);
  for (T& x : a) x = to_t(uniform(rng));
  for (T& x : b) x = to_t(uniform(rng));
  T* da = upload(a);
  T* db = upload(b);
  float* dd = device_alloc<float>(16 * 8);
  ASSERT_EQ(run(&mma_kernel<T>, 32, 0, static_cast<const T*>(da), static_cast<const T*>(db), dd), "");
  expect_accumulated_product(
      download(dd, 16 * 8), 16, [&](int i, int k) { return double(to_float(a[i * 16 + k])); },
      [&](int k, int j) { return double(to_float(b[k * 8 + j])); }, 1e-5);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dd);
}

TEST(Simt, MmaFloat16MatchesTheMatrixProductUnderThePtxFragmentLayout) {
  expect_mma_matches_matrix_product<__half>([](float f) { return __float2half_rn(f); },
                                            [](__half h) { return __half2float(h); });
}

TEST(Simt, MmaBFloat16MatchesTheMatrixProductUnderThePtxFragmentLayout) {
  expect_mma_matches_matrix_product<__nv_bfloat16>([](float f) { return __float2bfloat16_rn(f); },
                                                   [](__nv_bfloat16 h) { return __bfloat162float(h); });
}

// ---- mma.sync.m16n8k8 .tf32: a0 = A[g][t], a1 = A[g+8][t], a2 = A[g][t+4], a3 = A[g+8][t+4] (A 16x8, row
// major); b0 = B[t][g], b1 = B[t+4][g] (B 8x8, K x N); C as above. Operands are fp32 words holding tf32 values.

uint32_t word_of(float x) {
  uint32_t w;
  std::memcpy(&w, &x, sizeof(w));
  return w;
}

// Rounds to tf32 (10 explicit mantissa bits), to nearest with ties away from zero, as cvt.rna.tf32.f32.
float round_to_tf32(float x) {
  const uint32_t w = (word_of(x) + 0x1000u) & ~0x1fffu;
  float y;
  std::memcpy(&y, &w, sizeof(y));
  return y;
}

__global__ void mma_tf32_kernel(const float* a, const float* b, float* d) {
  const int lane = static_cast<int>(threadIdx.x), g = lane / 4, t = lane % 4;
  const uint32_t fa[4] = {word_of(a[g * 8 + t]), word_of(a[(g + 8) * 8 + t]), word_of(a[g * 8 + t + 4]),
                          word_of(a[(g + 8) * 8 + t + 4])};
  float c[4] = {1.0f, 2.0f, 3.0f, 4.0f};  // accumulated onto
  simt::mma_m16n8k8_tf32(c, fa, word_of(b[t * 8 + g]), word_of(b[(t + 4) * 8 + g]));
  store_accumulators(d, c, lane);
}

TEST(Simt, MmaTf32MatchesTheMatrixProductUnderThePtxFragmentLayout) {
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
  std::vector<float> a(16 * 8), b(8 * 8);
  for (float& x : a) x = round_to_tf32(uniform(rng));
  for (float& x : b) x = round_to_tf32(uniform(rng));
  float* da = upload(a);
  float* db = upload(b);
  float* dd = device_alloc<float>(16 * 8);
  ASSERT_EQ(run(&mma_tf32_kernel, 32, 0, static_cast<const float*>(da), static_cast<const float*>(db), dd), "");
  const auto a_at = [&](int i, int k) { return double(a[i * 8 + k]); };
  const auto b_at = [&](int k, int j) { return double(b[k * 8 + j]); };
  // The sum keeps 22 bits under its largest addend (tf32_tensor_core_sum): 9 addends cut by less than 2^-21 of it each.
  constexpr double kSumError = 1e-5;
  expect_accumulated_product(download(dd, 16 * 8), 8, a_at, b_at, kSumError);
  // A plain float operand is read as tf32 by dropping its low 13 mantissa bits (truncation, not rounding).
  a[0] = 1.0f + 0x1p-10f + 0x1p-11f + 0x1p-20f;  // reads as 1 + 2^-10
  cudaMemcpy(da, a.data(), a.size() * sizeof(float), cudaMemcpyHostToDevice);
  ASSERT_EQ(run(&mma_tf32_kernel, 32, 0, static_cast<const float*>(da), static_cast<const float*>(db), dd), "");
  expect_accumulated_product(
      download(dd, 16 * 8), 8, [&](int i, int k) { return i == 0 && k == 0 ? double(1.0f + 0x1p-10f) : a_at(i, k); },
      b_at, kSumError);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dd);
}

// A tf32 sum as the tensor cores form it (tf32_tensor_core_sum): addends cut below a window of 22 bits under the largest
// one, then the sum truncated toward zero. D[0][0] = 1 + 2^-21 + 2^-22: the 2^-22 falls off (to nearest: 1 + 2^-20);
// D[0][1] = 2 + 2^-20 + 2^-21 + 2^-22 (c = 2): cut to 2 + 2^-20 (to nearest: 2 + 2^-19); D[8][1] = 4 - 3·2^-23: the
// product vanishes next to 4.
TEST(Simt, MmaSumsAreCutAndTruncatedTowardZero) {
  std::vector<float> a(16 * 8, 0.0f), b(8 * 8, 0.0f);
  a[0 * 8 + 0] = 0x1p-10f, a[0 * 8 + 1] = 0x1p-10f;
  b[0 * 8 + 0] = 0x1p-11f, b[1 * 8 + 0] = 0x1p-12f;                             // D[0][0]: 2^-21 + 2^-22
  b[0 * 8 + 1] = 0x1p-10f + 0x1p-11f, b[1 * 8 + 1] = 0x1p-12f;                  // D[0][1]: 2^-20 + 2^-21 + 2^-22
  a[8 * 8 + 0] = -0x1p-10f;                                                     // D[8][1]: -2^-10 · (2^-10 + 2^-11)
  float* da = upload(a);
  float* db = upload(b);
  float* dd = device_alloc<float>(16 * 8);
  ASSERT_EQ(run(&mma_tf32_kernel, 32, 0, static_cast<const float*>(da), static_cast<const float*>(db), dd), "");
  const std::vector<float> d = download(dd, 16 * 8);
  EXPECT_EQ(d[0 * 8 + 0], 1.0f + 0x1p-21f);
  EXPECT_EQ(d[0 * 8 + 1], 2.0f + 0x1p-20f);
  EXPECT_EQ(d[8 * 8 + 1], 4.0f);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dd);
}

// ---- ldmatrix.x4: lanes 8i..8i+7 address the rows of matrix i; register i of lane (g, t) holds
// row g, columns 2t, 2t+1 of matrix i, or with .trans rows 2t, 2t+1 of column g.

__global__ void ldmatrix_kernel(const uint16_t* src, uint32_t* out, bool trans) {
  uint16_t* smem = static_cast<uint16_t*>(simt::dynamic_shared_memory());
  const int lane = static_cast<int>(threadIdx.x);
  // 32 rows of 8 elements: row r at element 8r; rows are loaded by the lane of the same index.
  simt::cp_async_16(smem + 8 * lane, src + 8 * lane, true);
  simt::cp_async_commit();
  simt::cp_async_wait(0);
  __syncthreads();
  uint32_t r[4];
  // Lane l addresses row (l * 5) % 32, so rows are not in lane order.
  simt::ldmatrix_x4(r, simt::shared_address(smem + 8 * ((lane * 5) % 32)), trans);
  for (int i = 0; i < 4; ++i) out[lane * 4 + i] = r[i];
}

TEST(Simt, LdmatrixDeliversRowsOrTheirTransposeToTheFragmentLanes) {
  std::vector<uint16_t> rows(32 * 8);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<uint16_t>(1000 + i);
  uint16_t* src = upload(rows);
  uint32_t* out = device_alloc<uint32_t>(32 * 4);
  for (bool trans : {false, true}) {
    ASSERT_EQ(run(&ldmatrix_kernel, 32, 32 * 16, static_cast<const uint16_t*>(src), out, trans), "");
    const std::vector<uint32_t> got = download(out, 32 * 4);
    const auto element = [&](int matrix, int row, int col) {
      const int lane_with_address = 8 * matrix + row;
      return rows[size_t(8 * ((lane_with_address * 5) % 32) + col)];
    };
    for (int lane = 0; lane < 32; ++lane) {
      const int g = lane / 4, t = lane % 4;
      for (int i = 0; i < 4; ++i) {
        const uint16_t lo = trans ? element(i, 2 * t, g) : element(i, g, 2 * t);
        const uint16_t hi = trans ? element(i, 2 * t + 1, g) : element(i, g, 2 * t + 1);
        EXPECT_EQ(got[size_t(lane * 4 + i)], uint32_t(lo) | (uint32_t(hi) << 16)) << "lane " << lane << " reg " << i << " trans " << trans;
      }
    }
  }
  cudaFree(src);
  cudaFree(out);
}

// ---- shuffles and votes -----------------------------------------------------------------------

__global__ void shuffle_kernel(int* out) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int base = static_cast<int>(threadIdx.x) - lane;
  out[threadIdx.x * 5 + 0] = __shfl_xor_sync(0xffffffffu, lane * 10, 5);
  out[threadIdx.x * 5 + 1] = __shfl_sync(0xffffffffu, lane * 10 + base, 7);
  out[threadIdx.x * 5 + 2] = __any_sync(0xffffffffu, lane == 31 && base == 32);
  out[threadIdx.x * 5 + 3] = __all_sync(0xffffffffu, lane != 3 || base == 0);
  out[threadIdx.x * 5 + 4] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0 && (base == 0 || lane < 8)));
}

TEST(Simt, ShufflesAndVotesExchangeWithinEachWarp) {
  int* out = device_alloc<int>(64 * 5);
  ASSERT_EQ(run(&shuffle_kernel, 64, 0, out), "");
  const std::vector<int> got = download(out, 64 * 5);
  for (int tid = 0; tid < 64; ++tid) {
    const int lane = tid % 32, warp = tid / 32;
    EXPECT_EQ(got[size_t(tid * 5 + 0)], (lane ^ 5) * 10);
    EXPECT_EQ(got[size_t(tid * 5 + 1)], 70 + warp * 32);
    EXPECT_EQ(got[size_t(tid * 5 + 2)], warp == 1 ? 1 : 0);
    EXPECT_EQ(got[size_t(tid * 5 + 3)], warp == 0 ? 1 : 0);
    EXPECT_EQ(static_cast<uint32_t>(got[size_t(tid * 5 + 4)]), warp == 0 ? 0x49249249u : 0x49u);  // lanes 0, 3, 6, ...
  }
  cudaFree(out);
}

// ---- the checks -------------------------------------------------------------------------------

enum Fault : int {
  kNone,
  kNoWait,            // ldmatrix while the cp.async is in flight
  kNoBarrier,         // another warp reads what a cp.async just completed, without __syncthreads
  kOverwriteWhileRead,  // cp.async into bytes another warp read in the same barrier interval
  kUninitialized,     // ldmatrix of bytes nothing wrote
  kDivergentBarrier,  // half the block at one __syncthreads, half at another
  kDivergentWarp,     // lanes of one warp at different collectives
  kOutOfBounds,       // cp.async from past the end of the allocation
  kNeverWaited,       // exits with a committed group never waited for
  kLaneExits,         // a lane leaves while its warp is in a full-warp collective
};

// Two warps. Warp 0 stages 32 rows of 8 halves into shared memory; warp 1 reads them.
__global__ void staged_kernel(const uint16_t* src, uint32_t* out, int fault) {
  uint16_t* smem = static_cast<uint16_t*>(simt::dynamic_shared_memory());
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  if (fault == kLaneExits && tid == 37) return;
  if (warp == 0) {
    const int row = fault == kOutOfBounds ? lane + 1 : lane;
    simt::cp_async_16(smem + 8 * lane, src + 8 * row, true);
    simt::cp_async_commit();
    if (fault == kNeverWaited) return;
    if (fault != kNoWait) simt::cp_async_wait(0);
  }
  if (fault == kDivergentBarrier && warp == 1) {
    __syncthreads();
  } else if (fault != kNoWait && fault != kNoBarrier) {
    __syncthreads();
  }
  uint32_t r[4] = {0, 0, 0, 0};
  // One warp-wide step first: by the time warp 1 has done it, every thread of warp 0 has had a turn
  // since the barrier, so which fault is seen does not depend on the fibers' random order.
  if (warp == 1 && fault != kDivergentWarp) __syncwarp();
  if (fault == kDivergentWarp && warp == 1 && lane < 16) {
    r[0] = static_cast<uint32_t>(__any_sync(0xffffffffu, 1));
  } else if (warp == 1 || fault == kNoWait || fault == kOverwriteWhileRead) {
    const int row = fault == kUninitialized ? lane + 32 : lane;
    simt::ldmatrix_x4(r, simt::shared_address(smem + 8 * row), false);
  }
  if (fault == kOverwriteWhileRead && warp == 1) {
    __syncwarp();  // after warp 0's read (see above)
    simt::cp_async_16(smem + 8 * lane, src + 8 * lane, true);
    simt::cp_async_commit();
    simt::cp_async_wait(0);
  }
  if (fault == kNoWait && warp == 0) simt::cp_async_wait(0);
  for (int i = 0; i < 4; ++i) out[tid * 4 + i] = r[i];
}

std::string run_staged(Fault fault) {
  std::vector<uint16_t> rows(32 * 8);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<uint16_t>(i);
  uint16_t* src = upload(rows);
  uint32_t* out = device_alloc<uint32_t>(64 * 4);
  const std::string message = run(&staged_kernel, 64, 64 * 16, static_cast<const uint16_t*>(src), out, static_cast<int>(fault));
  if (fault == kNone && message.empty()) {
    const std::vector<uint32_t> got = download(out, 64 * 4);
    for (int lane = 0; lane < 32; ++lane) {  // warp 1, matrix 0: row g, columns 2t, 2t+1
      const int g = lane / 4, t = lane % 4;
      EXPECT_EQ(got[size_t((32 + lane) * 4)], uint32_t(rows[size_t(g * 8 + 2 * t)]) | (uint32_t(rows[size_t(g * 8 + 2 * t + 1)]) << 16));
    }
  }
  cudaFree(src);
  cudaFree(out);
  return message;
}

TEST(Simt, TheCorrectlySynchronisedKernelPasses) { EXPECT_EQ(run_staged(kNone), ""); }

TEST(Simt, ReadingWhileACopyIsInFlightIsReported) {
  EXPECT_NE(run_staged(kNoWait).find("while a cp.async to them is in flight"), std::string::npos);
}

TEST(Simt, ReadingAnotherThreadsCopyWithoutABarrierIsReported) {
  EXPECT_NE(run_staged(kNoBarrier).find("read-after-write race"), std::string::npos);
}

TEST(Simt, OverwritingWhatAnotherWarpReadInTheSameIntervalIsReported) {
  EXPECT_NE(run_staged(kOverwriteWhileRead).find("write-after-read race"), std::string::npos);
}

TEST(Simt, ReadingSharedMemoryNothingWroteIsReported) {
  EXPECT_NE(run_staged(kUninitialized).find("that nothing wrote"), std::string::npos);
}

TEST(Simt, ABarrierInDivergentCodeIsReported) {
  EXPECT_NE(run_staged(kDivergentBarrier).find("a barrier in divergent code"), std::string::npos);
}

TEST(Simt, LanesOfOneWarpAtDifferentCollectivesAreReported) {
  EXPECT_NE(run_staged(kDivergentWarp).find("divergent warp"), std::string::npos);
}

TEST(Simt, CopyingFromOutsideEveryAllocationIsReported) {
  EXPECT_NE(run_staged(kOutOfBounds).find("outside every device allocation"), std::string::npos);
}

TEST(Simt, CopiesNeverWaitedForAreReported) {
  EXPECT_NE(run_staged(kNeverWaited).find("never waited for"), std::string::npos);
}

TEST(Simt, ALaneLeavingItsWarpsCollectiveIsReported) {
  EXPECT_NE(run_staged(kLaneExits).find("lanes have exited"), std::string::npos);
}

// ---- partial copies, plain shared loads and stores, accumulators near FLT_MAX ---------------------

// Lane l copies the first 2 * (l % 9) bytes (0..16) of its 16-byte row and reads the chunk back with
// plain checked loads; with `no_wait` the reads come before the copy landed.
__global__ void prefix_kernel(const uint8_t* src, uint32_t* out, bool no_wait) {
  uint8_t* smem = static_cast<uint8_t*>(simt::dynamic_shared_memory());
  const int lane = static_cast<int>(threadIdx.x);
  simt::cp_async_16_prefix(smem + 16 * lane, src + 16 * lane, 2 * (lane % 9));
  simt::cp_async_commit();
  if (!no_wait) {
    simt::cp_async_wait(0);
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) out[4 * lane + i] = simt::shared_load_u32(smem + 16 * lane + 4 * i);
  if (no_wait) simt::cp_async_wait(0);
}

TEST(Simt, PartialCopiesReadTheirPrefixAndZeroTheRest) {
  std::vector<uint8_t> rows(32 * 16);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<uint8_t>(1 + i % 251);
  uint8_t* src = upload(rows);
  uint32_t* out = device_alloc<uint32_t>(32 * 4);
  ASSERT_EQ(run(&prefix_kernel, 32, 32 * 16, static_cast<const uint8_t*>(src), out, false), "");
  const std::vector<uint32_t> got = download(out, 32 * 4);
  for (int lane = 0; lane < 32; ++lane) {
    for (int byte = 0; byte < 16; ++byte) {
      const uint8_t value = static_cast<uint8_t>(got[size_t(4 * lane + byte / 4)] >> (8 * (byte % 4)));
      const uint8_t want = byte < 2 * (lane % 9) ? rows[size_t(16 * lane + byte)] : 0;
      EXPECT_EQ(value, want) << "lane " << lane << " byte " << byte;
    }
  }
  EXPECT_NE(run(&prefix_kernel, 32, 32 * 16, static_cast<const uint8_t*>(src), out, true).find("in flight"),
            std::string::npos);
  cudaFree(src);
  cudaFree(out);
}

// Thread t stores a 16-bit value at element t; after a barrier every thread reads element t + 8 (mod 64).
// With `no_barrier` the reads race the stores.
__global__ void store_kernel(uint32_t* out, bool no_barrier) {
  uint16_t* smem = static_cast<uint16_t*>(simt::dynamic_shared_memory());
  const int tid = static_cast<int>(threadIdx.x);
  const uint16_t value = static_cast<uint16_t>(100 + tid);
  simt::shared_store(smem + tid, &value, 2);
  if (!no_barrier) __syncthreads();
  out[tid] = simt::shared_load_u16(smem + (tid + 8) % 64);
}

TEST(Simt, PlainSharedStoresAreReadBackAfterABarrier) {
  uint32_t* out = device_alloc<uint32_t>(64);
  ASSERT_EQ(run(&store_kernel, 64, 128, out, false), "");
  const std::vector<uint32_t> got = download(out, 64);
  for (int tid = 0; tid < 64; ++tid) EXPECT_EQ(got[size_t(tid)], 100u + (tid + 8) % 64) << tid;
  // Without the barrier a read finds its bytes either not yet stored or stored in the same interval.
  const std::string message = run(&store_kernel, 64, 128, out, true);
  EXPECT_TRUE(message.find("read-after-write race") != std::string::npos ||
              message.find("that nothing wrote") != std::string::npos)
      << message;
  cudaFree(out);
}

__global__ void huge_accumulator_kernel(float start) {
  const uint32_t a[4] = {0, 0, 0, 0};
  float c[4] = {start, 0.0f, 0.0f, 0.0f};
  simt::mma_m16n8k16(c, a, 0, 0, simt::MmaInput::kBFloat16);
}

// Tensor cores returned NaN from an accumulator at -FLT_MAX (an H200): the emulator refuses them.
TEST(Simt, MmaAccumulatorsNearFloatMaxAreRefused) {
  EXPECT_EQ(run(&huge_accumulator_kernel, 32, 0, -0x1p100f), "");
  EXPECT_EQ(run(&huge_accumulator_kernel, 32, 0, -INFINITY), "");
  EXPECT_NE(run(&huge_accumulator_kernel, 32, 0, -FLT_MAX).find("FLT_MAX"), std::string::npos);
}

// ---- wgmma (sm_90a): descriptors, fragment layouts and the asynchrony checks ---------------------
// Shared layouts written out here from the PTX ISA's canonical 128-byte-swizzle layouts: a K-major
// operand stores each row's 64 k-elements in one 128-byte row, its 16-byte chunk c at c ^ (row % 8),
// rows 128 bytes apart (8-row groups 1024 apart); an N-major one stores 64 n-elements of one k per
// 128-byte row the same way, k-rows 128 bytes apart, blocks of 64 n 4096 bytes apart here. Accumulators
// (m64nN): thread 32w + 4g + t holds d[4j + 2h + b] = D[16w + g + 8h][8j + 2t + b].

uint32_t kmajor_byte(int row, int k) { return uint32_t(row * 128 + (((k / 8) ^ (row % 8)) * 16) + (k % 8) * 2); }
uint32_t nmajor_byte(int k, int n) { return uint32_t((n / 64) * 4096 + k * 128 + ((((n % 64) / 8) ^ (k % 8)) * 16) + (n % 8) * 2); }
uint64_t smem_desc(uint32_t start, uint32_t lbo, uint32_t sbo) {
  return uint64_t(start >> 4) | uint64_t(lbo >> 4) << 16 | uint64_t(sbo >> 4) << 32 | uint64_t(1) << 62;
}

enum WgFault { kWgNone, kWgNoProxyFence, kWgNoFence, kWgTouchAccumulator, kWgOverwriteInFlight, kWgBadStart };
constexpr int kWgSs = 0, kWgRs = 1;

// SS: D (64x64) += A (64x64, K-major at 0) · B (B[k][n] as 64 K-major rows n at 8192), 4 k-steps.
// RS: D (64x128) += A (64x32, registers) · B (32 x 128, N-major at 8192), 2 k-steps.
__global__ void wgmma_kernel(const uint16_t* a_img, const uint16_t* b_img, const uint16_t* a_plain, float* out, int mode,
                             int fault, int bf16) {
  const int tid = static_cast<int>(threadIdx.x);
  auto* smem = static_cast<unsigned char*>(simt::dynamic_shared_memory());
  for (int i = tid; i < 1024; i += 128) simt::cp_async_16(smem + i * 16, i < 512 ? a_img + i * 8 : b_img + (i - 512) * 8, true);
  simt::cp_async_commit();
  simt::cp_async_wait(0);
  if (fault != kWgNoProxyFence) simt::fence_proxy_async();
  __syncthreads();
  const simt::MmaInput type = bf16 ? simt::MmaInput::kBFloat16 : simt::MmaInput::kFloat16;
  const int n = mode == kWgSs ? 64 : 128;
  float d[64];
  for (int e = 0; e < n / 2; ++e) d[e] = 0.25f * float(e + 1);
  if (fault != kWgNoFence) simt::wgmma_fence();
  uint32_t af[2][4];
  if (mode == kWgSs) {
    for (int ks = 0; ks < 4; ++ks) {
      const uint32_t start_a = fault == kWgBadStart ? 112u : uint32_t(32 * ks);
      simt::wgmma_mma_async(d, n, smem_desc(start_a, 16, 1024), nullptr, smem_desc(8192 + 32 * ks, 16, 1024), false, true, type);
    }
  } else {
    const int w = tid / 32, g = (tid % 32) / 4, t = tid % 4;
    const auto pair = [&](int row, int col) { return uint32_t(a_plain[row * 32 + col]) | uint32_t(a_plain[row * 32 + col + 1]) << 16; };
    for (int ks = 0; ks < 2; ++ks) {
      af[ks][0] = pair(16 * w + g, 16 * ks + 2 * t);
      af[ks][1] = pair(16 * w + g + 8, 16 * ks + 2 * t);
      af[ks][2] = pair(16 * w + g, 16 * ks + 2 * t + 8);
      af[ks][3] = pair(16 * w + g + 8, 16 * ks + 2 * t + 8);
      simt::wgmma_mma_async(d, n, 0, af[ks], smem_desc(8192 + 2048 * ks, 4096, 1024), true, true, type);
    }
  }
  simt::wgmma_commit();
  if (fault == kWgTouchAccumulator) d[0] = 1.0f;
  if (fault == kWgOverwriteInFlight) {
    simt::cp_async_16(smem + 8192 + tid * 16, b_img, true);
    simt::cp_async_commit();
    simt::cp_async_wait(0);
  }
  simt::wgmma_wait(0);
  const int w = tid / 32, g = (tid % 32) / 4, t = tid % 4;
  for (int e = 0; e < n / 2; ++e) out[(16 * w + g + 8 * ((e >> 1) & 1)) * n + 8 * (e >> 2) + 2 * t + (e & 1)] = d[e];
}

template <class T>
std::string run_wgmma(int mode, WgFault fault) {
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  const auto to_t = [](float x) { if constexpr (kBf16) return __float2bfloat16_rn(x); else return __float2half_rn(x); };
  const auto to_f = [](T x) { if constexpr (kBf16) return __bfloat162float(x); else return __half2float(x); };
  std::mt19937 rng(11 + mode);
  std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
  const int n = mode == kWgSs ? 64 : 128, kdim = mode == kWgSs ? 64 : 32;
  std::vector<float> a(size_t(64) * kdim), b(size_t(kdim) * n);  // A[m][k], B[k][n]
  std::vector<uint16_t> a_img(4096, 0), b_img(4096, 0), a_plain(size_t(64) * 32, 0);
  for (int m = 0; m < 64; ++m) {
    for (int k = 0; k < kdim; ++k) {
      const T x = to_t(uniform(rng));
      a[size_t(m) * kdim + k] = to_f(x);
      if (mode == kWgSs) a_img[kmajor_byte(m, k) / 2] = bits_of(x); else a_plain[size_t(m) * 32 + k] = bits_of(x);
    }
  }
  for (int k = 0; k < kdim; ++k) {
    for (int j = 0; j < n; ++j) {
      const T x = to_t(uniform(rng));
      b[size_t(k) * n + j] = to_f(x);
      b_img[(mode == kWgSs ? kmajor_byte(j, k) : nmajor_byte(k, j)) / 2] = bits_of(x);
    }
  }
  uint16_t* da = upload(a_img);
  uint16_t* db = upload(b_img);
  uint16_t* dp = upload(a_plain);
  float* dout = device_alloc<float>(size_t(64) * n);
  const std::string message = run(&wgmma_kernel, 128, 16384, static_cast<const uint16_t*>(da), static_cast<const uint16_t*>(db),
                                  static_cast<const uint16_t*>(dp), dout, mode, static_cast<int>(fault), kBf16 ? 1 : 0);
  if (message.empty()) {
    const std::vector<float> got = download(dout, size_t(64) * n);
    for (int m = 0; m < 64; ++m) {
      for (int j = 0; j < n; ++j) {
        const int e = 4 * (j / 8) + 2 * ((m % 16) / 8) + (j % 2);
        double want = 0.25 * (e + 1);
        for (int k = 0; k < kdim; ++k) want += double(a[size_t(m) * kdim + k]) * double(b[size_t(k) * n + j]);
        EXPECT_NEAR(got[size_t(m) * n + j], want, 1e-4 * (1 + std::fabs(want))) << "D[" << m << "][" << j << "] mode " << mode;
      }
    }
  }
  cudaFree(da);
  cudaFree(db);
  cudaFree(dp);
  cudaFree(dout);
  return message;
}

TEST(Simt, WgmmaSharedOperandsFollowTheKMajor128ByteSwizzleAndAccumulate) {
  EXPECT_EQ(run_wgmma<__half>(kWgSs, kWgNone), "");
  EXPECT_EQ(run_wgmma<__nv_bfloat16>(kWgSs, kWgNone), "");
}

TEST(Simt, WgmmaRegisterAAndNMajorBFollowTheFragmentAndSwizzleLayouts) {
  EXPECT_EQ(run_wgmma<__half>(kWgRs, kWgNone), "");
  EXPECT_EQ(run_wgmma<__nv_bfloat16>(kWgRs, kWgNone), "");
}

TEST(Simt, WgmmaReadingCopiesNotPublishedToTheAsyncProxyIsReported) {
  EXPECT_NE(run_wgmma<__half>(kWgSs, kWgNoProxyFence).find("async proxy"), std::string::npos);
}

TEST(Simt, WgmmaWithoutAFenceIsReported) {
  EXPECT_NE(run_wgmma<__half>(kWgRs, kWgNoFence).find("without a wgmma.fence"), std::string::npos);
}

TEST(Simt, WgmmaAccumulatorsWrittenInFlightAreReported) {
  EXPECT_NE(run_wgmma<__half>(kWgSs, kWgTouchAccumulator).find("written before wgmma.wait_group"), std::string::npos);
}

TEST(Simt, OverwritingSharedOperandsOfAWgmmaInFlightIsReported) {
  EXPECT_NE(run_wgmma<__half>(kWgSs, kWgOverwriteInFlight).find("a wgmma in flight reads"), std::string::npos);
}

TEST(Simt, WgmmaDescriptorsCrossingASwizzleRowAreRefused) {
  EXPECT_NE(run_wgmma<__half>(kWgSs, kWgBadStart).find("cross a 128-byte swizzle row"), std::string::npos);
}

// ---- mbarriers and TMA ------------------------------------------------------------------------------
// A 3-d tensor (cols x rows x planes, 16-bit) whose rows are `pitch` elements apart; the box (64 x 16 x 1)
// lands densely in box order, each 128-byte row's 16-byte chunk c at c ^ (row % 8) with the swizzle;
// elements outside the tensor land as zeros.

enum TmaFault { kTmaNone, kTmaNoWait, kTmaReadBeforeWait, kTmaNeverCompletes };

__global__ void tma_kernel(const simt::TensorMap map, int c0, int c1, int c2, uint16_t* out, int fault) {
  auto* smem = static_cast<unsigned char*>(simt::dynamic_shared_memory());
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + 4096);
  const int lane = static_cast<int>(threadIdx.x);
  if (lane == 0) simt::mbarrier_init(bar, 1);
  __syncthreads();
  if (lane == 0) {
    const int32_t coords[3] = {c0, c1, c2};
    simt::mbarrier_arrive_expect_tx(bar, fault == kTmaNeverCompletes ? 4096u : 2048u);
    simt::tma_load(smem, &map, coords, bar);
  }
  if (fault == kTmaNoWait) return;
  if (fault == kTmaReadBeforeWait) __syncwarp();  // issued, not waited for
  if (fault != kTmaReadBeforeWait) simt::mbarrier_wait(bar, 0);
  for (int i = lane; i < 512; i += 32) {
    const uint32_t word = simt::shared_load_u32(smem + 4 * i);
    out[2 * i] = static_cast<uint16_t>(word);
    out[2 * i + 1] = static_cast<uint16_t>(word >> 16);
  }
}

std::string run_tma(int c0, int c1, TmaFault fault = kTmaNone) {
  const int cols = 100, rows = 40, pitch = 104, planes = 2;  // row pitch 208 bytes: a multiple of 16
  std::vector<uint16_t> host(size_t(pitch) * rows * planes);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<uint16_t>(i * 7 + 1);
  uint16_t* tensor = upload(host);
  uint16_t* out = device_alloc<uint16_t>(1024);
  simt::TensorMap map;
  const uint64_t dims[3] = {cols, rows, planes};
  const uint64_t strides[2] = {pitch * 2, uint64_t(pitch) * rows * 2};
  const uint32_t box[3] = {64, 16, 1};
  const char* refused = simt::encode_tensor_map(&map, tensor, 2, 3, dims, strides, box, true);
  EXPECT_EQ(refused, nullptr);
  const std::string message = run(&tma_kernel, 32, 4096 + 16, map, c0, c1, 1, out, static_cast<int>(fault));
  if (message.empty()) {
    const std::vector<uint16_t> got = download(out, 1024);
    for (int r = 0; r < 16; ++r) {
      for (int c = 0; c < 64; ++c) {
        const int col = c0 + c, row = c1 + r;
        const uint16_t want = col >= 0 && col < cols && row >= 0 && row < rows ? host[size_t(pitch) * rows + size_t(row) * pitch + col] : 0;
        const size_t at = size_t(r * 128 + (((c / 8) ^ (r % 8)) * 16) + (c % 8) * 2) / 2;
        EXPECT_EQ(got[at], want) << "box element (" << r << ", " << c << ")";
      }
    }
  }
  cudaFree(tensor);
  cudaFree(out);
  return message;
}

TEST(Simt, TmaBoxesLandSwizzledWithZerosOutsideTheTensor) {
  EXPECT_EQ(run_tma(0, 0), "");
  EXPECT_EQ(run_tma(64, 30), "");  // columns 100.. and rows 40.. outside
  EXPECT_EQ(run_tma(-8, -3), "");
}

TEST(Simt, TmaCopiesNeverWaitedForAreReported) { EXPECT_NE(run_tma(0, 0, kTmaNoWait).find("never waited for"), std::string::npos); }

TEST(Simt, ReadingATmaDestinationBeforeItsBarrierIsReported) {
  EXPECT_NE(run_tma(0, 0, kTmaReadBeforeWait).find("in flight"), std::string::npos);
}

TEST(Simt, AnMbarrierPhaseThatNeverCompletesIsADeadlock) {
  EXPECT_NE(run_tma(0, 0, kTmaNeverCompletes).find("deadlock"), std::string::npos);
}

TEST(Simt, TensorMapsTheHardwareWouldRefuseAreRefused) {
  simt::TensorMap map;
  uint16_t* tensor = device_alloc<uint16_t>(4096);
  const uint64_t dims[2] = {64, 32};
  const uint32_t box[2] = {64, 16};
  const uint64_t odd_stride[1] = {130};
  EXPECT_NE(simt::encode_tensor_map(&map, tensor, 2, 2, dims, odd_stride, box, true), nullptr);
  const uint64_t stride[1] = {128};
  const uint32_t wide_box[2] = {128, 16};
  EXPECT_NE(simt::encode_tensor_map(&map, tensor, 2, 2, dims, stride, wide_box, true), nullptr);
  EXPECT_EQ(simt::encode_tensor_map(&map, tensor, 2, 2, dims, stride, box, true), nullptr);
  cudaFree(tensor);
}

// ---- named barriers -------------------------------------------------------------------------------

// Warp 1 writes, then arrives at barrier 1 (64 threads); warp 0 waits there, then reads. With `count` 96 nobody
// ever completes the phase: a deadlock.
__global__ void named_barrier_kernel(int* flag, int* seen, int count) {
  const int tid = static_cast<int>(threadIdx.x);
  if (tid >= 32) {
    if (tid == 32) *flag = 7;
    __syncwarp();
    simt::named_barrier_arrive(1, count);
  } else {
    simt::named_barrier_sync(1, count);
    seen[tid] = *flag;
  }
}

TEST(Simt, NamedBarriersOrderTheWarpsThatArriveBeforeTheOnesThatSync) {
  for (uint64_t seed = 1; seed <= 4; ++seed) {  // several fiber orders
    int* flag = device_alloc<int>(1);
    int* seen = device_alloc<int>(32);
    EXPECT_EQ(cudaMemset(flag, 0, sizeof(int)), cudaSuccess);
    EXPECT_EQ(run(&named_barrier_kernel, 64, 0, flag, seen, 64), "");
    for (int v : download(seen, 32)) EXPECT_EQ(v, 7);
    cudaFree(flag);
    cudaFree(seen);
  }
  int* flag = device_alloc<int>(1);
  int* seen = device_alloc<int>(32);
  EXPECT_NE(run(&named_barrier_kernel, 64, 0, flag, seen, 96).find("deadlock"), std::string::npos);
  cudaFree(flag);
  cudaFree(seen);
}

// ---- launch configuration -----------------------------------------------------------------------

__global__ void empty_kernel(int) {}

TEST(Simt, LaunchesOnTheLegacyDefaultStreamAreRefused) {
  EXPECT_EQ(simt::launch("test kernel", &empty_kernel, 1u, 32u, 0, nullptr, 0), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // read once
}

TEST(Simt, DynamicSharedMemoryAboveTheKernelsLimitNeedsTheOptIn) {
  Stream stream;
  void (*kernel)(int) = &empty_kernel;
  cudaFuncAttributes attributes;
  ASSERT_EQ(cudaFuncGetAttributes(&attributes, kernel), cudaSuccess);
  EXPECT_EQ(attributes.maxDynamicSharedSizeBytes, 48 * 1024);
  EXPECT_EQ(simt::launch("test kernel", kernel, 1u, 32u, 64 * 1024, stream.get(), 0), cudaErrorInvalidValue);
  cudaGetLastError();
  ASSERT_EQ(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024), cudaSuccess);
  EXPECT_EQ(simt::launch("test kernel", kernel, 1u, 32u, 64 * 1024, stream.get(), 0), cudaSuccess);
  EXPECT_EQ(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024), cudaErrorInvalidValue);
  cudaGetLastError();
}

// ---- stream capture ----------------------------------------------------------------------------

__global__ void add_one_kernel(float* data, int count) {
  for (int i = threadIdx.x; i < count; i += blockDim.x) data[i] += 1.0f;
}

TEST(Simt, CapturedWorkRunsAtEachGraphLaunchNotAtCapture) {
  Stream stream;
  float* data = upload(std::vector<float>(40, 1.0f));
  ASSERT_EQ(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeGlobal), cudaSuccess);
  cudaStreamCaptureStatus status;
  ASSERT_EQ(cudaStreamIsCapturing(stream.get(), &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusActive);
  ASSERT_EQ(cudaMemsetAsync(data, 0, 40 * sizeof(float), stream.get()), cudaSuccess);
  ASSERT_EQ(simt::launch("test kernel", &add_one_kernel, 1u, 32u, 0, stream.get(), data, 40), cudaSuccess);
  ASSERT_EQ(simt::launch("test kernel", &add_one_kernel, 1u, 32u, 0, stream.get(), data, 20), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream.get(), &graph), cudaSuccess);
  EXPECT_EQ(download(data, 40), std::vector<float>(40, 1.0f));  // nothing ran yet
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiateWithFlags(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  for (int launch = 0; launch < 2; ++launch) {
    ASSERT_EQ(cudaMemcpy(data, std::vector<float>(40, 7.0f).data(), 40 * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, stream.get()), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream.get()), cudaSuccess);
    std::vector<float> expected(40, 1.0f);
    std::fill(expected.begin(), expected.begin() + 20, 2.0f);
    EXPECT_EQ(download(data, 40), expected);
  }
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaFree(data), cudaSuccess);
}

TEST(Simt, SynchronisingWhileCapturingInvalidatesTheCapture) {
  Stream stream;
  float* data = device_alloc<float>(8);
  for (int call = 0; call < 3; ++call) {
    ASSERT_EQ(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
    void* other = nullptr;
    const cudaError_t refused = call == 0   ? cudaStreamSynchronize(stream.get())
                                : call == 1 ? cudaMalloc(&other, 64)
                                            : cudaMemset(data, 0, 8 * sizeof(float));
    EXPECT_EQ(refused, cudaErrorStreamCaptureUnsupported) << "call " << call;
    cudaGraph_t graph = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(stream.get(), &graph), cudaErrorStreamCaptureInvalidated) << "call " << call;
    EXPECT_EQ(graph, nullptr);
    cudaGetLastError();
  }
  // A relaxed capture refuses only what touches the capturing stream itself.
  ASSERT_EQ(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT_EQ(cudaMemset(data, 0, 8 * sizeof(float)), cudaSuccess);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(stream.get(), &graph), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaFree(data), cudaSuccess);
}

TEST(Simt, ScratchAllocatedWhileCapturingIsGarbageAtEachReplay) {
  Stream stream;
  float* out = device_alloc<float>(4);
  ASSERT_EQ(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeGlobal), cudaSuccess);
  void* scratch = nullptr;
  ASSERT_EQ(cudaMallocAsync(&scratch, 4 * sizeof(float), stream.get()), cudaSuccess);
  // Reads the scratch (as a kernel that forgot to initialise it would), then adds one to it.
  ASSERT_EQ(simt::launch("test kernel", &add_one_kernel, 1u, 32u, 0, stream.get(), static_cast<float*>(scratch), 4),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(out, scratch, 4 * sizeof(float), cudaMemcpyDeviceToDevice, stream.get()), cudaSuccess);
  ASSERT_EQ(cudaFreeAsync(scratch, stream.get()), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream.get(), &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiateWithFlags(&exec, graph, 0), cudaSuccess);
  for (int launch = 0; launch < 2; ++launch) {
    ASSERT_EQ(cudaGraphLaunch(exec, stream.get()), cudaSuccess);
    for (float x : download(out, 4)) EXPECT_TRUE(std::isnan(x)) << "launch " << launch << ": " << x;
  }
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaFree(out), cudaSuccess);
}

// ---- 16-bit conversions -------------------------------------------------------------------------

// Round to nearest even onto the grid of a format with `mantissa_bits` and minimum normal exponent
// `min_exp` (no overflow handling: callers stay in range), computed in double.
double round_to_format(double x, int mantissa_bits, int min_exp) {
  if (x == 0) return x;
  int e;
  std::frexp(std::fabs(x), &e);  // |x| = m * 2^e, m in [0.5, 1)
  const int quantum_exp = std::max(e - 1, min_exp) - mantissa_bits;
  return std::ldexp(std::nearbyint(std::ldexp(x, -quantum_exp)), quantum_exp);
}

TEST(Simt, Float16ConversionsRoundTripAndRoundToNearestEven) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const __half h{static_cast<uint16_t>(bits)};
    const float f = __half2float(h);
    if (std::isnan(f)) {
      EXPECT_TRUE((bits & 0x7c00) == 0x7c00 && (bits & 0x3ff) != 0);
      continue;
    }
    EXPECT_EQ(__float2half_rn(f).__x, bits) << bits;
  }
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> exponent(-26, 15.9);
  for (int i = 0; i < 200000; ++i) {
    const float f = static_cast<float>((i % 2 ? -1 : 1) * std::exp2(exponent(rng)));
    const double want = round_to_format(f, 10, -14);
    EXPECT_EQ(double(__half2float(__float2half_rn(f))), want) << f;
  }
  EXPECT_EQ(__float2half_rn(65519.0f).__x, 0x7bff);
  EXPECT_EQ(__float2half_rn(65520.0f).__x, 0x7c00);
  EXPECT_EQ(__float2half_rn(-std::numeric_limits<float>::infinity()).__x, 0xfc00);
}

TEST(Simt, BFloat16ConversionsRoundToNearestEven) {
  std::mt19937 rng(4);
  std::uniform_real_distribution<double> exponent(-120, 120);
  for (int i = 0; i < 200000; ++i) {
    const float f = static_cast<float>((i % 2 ? -1 : 1) * std::exp2(exponent(rng)));
    EXPECT_EQ(double(__bfloat162float(__float2bfloat16_rn(f))), round_to_format(f, 7, -126)) << f;
  }
  EXPECT_TRUE(std::isnan(__bfloat162float(__float2bfloat16_rn(std::numeric_limits<float>::quiet_NaN()))));
}

}  // namespace

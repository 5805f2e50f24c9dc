// The machine's fp32 FMA peak, measured: independent chains of vector FMAs, enough of them to
// cover the FMA latency on every port, so the loop runs at the issue rate.
//
// Compiled for AVX-512 / AVX2 with target attributes and called only after a run-time check, as
// the kernel's own instruction-set files are.
#include "fma_peak.h"

#include <chrono>
#include <cstdint>

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#include <immintrin.h>

namespace ortflash::bench {
namespace {

// 16 independent accumulators: latency 4 x 2 FMA ports needs 8, 16 also covers 2 x 6.
template <class Vec, Vec (*Fma)(Vec, Vec, Vec), Vec (*Set1)(float)>
float FmaChains(int64_t iterations) {
  const Vec a = Set1(0.999999f);
  const Vec b = Set1(1e-7f);
  Vec acc[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) acc[i] = Set1(static_cast<float>(i));
  // Without fast-math the compiler may not reassociate the chains, so they stay 16 FMAs an
  // iteration, in registers.
  for (int64_t n = 0; n < iterations; ++n) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = Fma(acc[i], a, b);
  }
#pragma GCC unroll 8
  for (int width = 8; width > 0; width /= 2) {
#pragma GCC unroll 8
    for (int i = 0; i < width; ++i) acc[i] = Fma(acc[i + width], a, acc[i]);
  }
  const Vec sum = acc[0];
  float lanes[sizeof(Vec) / sizeof(float)];
  __builtin_memcpy(lanes, &sum, sizeof lanes);
  return lanes[0];
}

__m512 Fma512(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
__m512 Set512(float x) { return _mm512_set1_ps(x); }
__m256 Fma256(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
__m256 Set256(float x) { return _mm256_set1_ps(x); }

}  // namespace

double MeasureFmaPeakGflops(int vector_bits) {
  const int lanes = vector_bits / 32;
  const int64_t iterations = 2'000'000;
  double best = 0.0;
  volatile float sink = 0.0f;
  for (int attempt = 0; attempt < 40; ++attempt) {
    const auto start = std::chrono::steady_clock::now();
    sink = vector_bits == 512 ? FmaChains<__m512, Fma512, Set512>(iterations)
                              : FmaChains<__m256, Fma256, Set256>(iterations);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double gflops = 2.0 * 16 * lanes * static_cast<double>(iterations) / seconds * 1e-9;
    best = gflops > best ? gflops : best;
  }
  (void)sink;
  return best;
}

}  // namespace ortflash::bench
#pragma GCC pop_options
#else
namespace ortflash::bench {
double MeasureFmaPeakGflops(int) { return 0.0; }
}  // namespace ortflash::bench
#endif

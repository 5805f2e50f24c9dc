#pragma once

namespace ortflash::bench {

// Single-thread fp32 GFLOP/s of a loop of independent vector FMAs (2 flops per lane) of
// vector_bits (512 or 256). Call with 512 only where AVX-512F runs, with 256 only where AVX2 + FMA
// runs. The best of 40 short attempts (about 8 ms each at 4 GHz): the loop cannot go faster
// than the hardware, only slower when the core is shared, and short attempts find the core free.
double MeasureFmaPeakGflops(int vector_bits);

}  // namespace ortflash::bench

// One call of the CPU kernel on one path, single-threaded, on random inputs: for counting the instructions a path
// executes (benchmarks/cpu/qemu_instruction_count.py runs it under qemu-user, where there is no ARM machine to time
// the NEON path on). Prints a checksum of the output (paths round differently: FMA or not, so theirs differ).
//   ortflash_cpu_one_call PATH DTYPE HEADS Q_LEN KV_LEN HEAD_DIM [causal]
//   PATH: dispatch|avx512|avx2|neon|portable, or none (everything but the call: the count to subtract);
//   DTYPE: f32|f16|bf16
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "flash_attention_cpu_internal.h"
#include "ortflash/flash_attention_cpu.h"

namespace {

using namespace ortflash;

// fp32 -> the storage type's bits (truncating: the inputs only need to be the same for every path).
uint16_t HalfBits(float x, DType dtype) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if (dtype == DType::kBFloat16) return static_cast<uint16_t>(bits >> 16);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const int32_t exponent = static_cast<int32_t>((bits >> 23) & 0xFFu) - 127 + 15;
  if (exponent <= 0) return static_cast<uint16_t>(sign);
  return static_cast<uint16_t>(sign | static_cast<uint32_t>(exponent) << 10 | ((bits >> 13) & 0x3FFu));
}

std::vector<uint8_t> RandomTensor(int64_t elements, DType dtype, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const size_t width = dtype == DType::kFloat32 ? 4 : 2;
  std::vector<uint8_t> bytes(static_cast<size_t>(elements) * width);
  for (int64_t i = 0; i < elements; ++i) {
    const float x = normal(rng);
    if (width == 4) {
      std::memcpy(&bytes[static_cast<size_t>(i) * 4], &x, 4);
    } else {
      const uint16_t h = HalfBits(x, dtype);
      std::memcpy(&bytes[static_cast<size_t>(i) * 2], &h, 2);
    }
  }
  return bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: %s PATH f32|f16|bf16 HEADS Q_LEN KV_LEN HEAD_DIM [causal]\n", argv[0]);
    return 2;
  }
  const std::string path = argv[1], type = argv[2];
  AttentionParams p;
  p.dtype = type == "f16" ? DType::kFloat16 : type == "bf16" ? DType::kBFloat16 : DType::kFloat32;
  p.batch = 1;
  p.q_heads = p.kv_heads = std::atoll(argv[3]);
  p.q_len = std::atoll(argv[4]);
  p.kv_len = std::atoll(argv[5]);
  p.head_dim = p.v_head_dim = std::atoll(argv[6]);
  p.scale = 1.0f / std::sqrt(static_cast<float>(p.head_dim));
  if (argc > 7 && std::string(argv[7]) == "causal") p.causal = CausalAlignment::kLowerRight;
  SetDenseStrides(p);
  std::mt19937 rng(7);
  std::vector<uint8_t> q = RandomTensor(p.q_heads * p.q_len * p.head_dim, p.dtype, rng);
  std::vector<uint8_t> k = RandomTensor(p.kv_heads * p.kv_len * p.head_dim, p.dtype, rng);
  std::vector<uint8_t> v = RandomTensor(p.kv_heads * p.kv_len * p.v_head_dim, p.dtype, rng);
  std::vector<uint8_t> out(static_cast<size_t>(p.q_heads * p.q_len * p.v_head_dim) * (p.dtype == DType::kFloat32 ? 4 : 2));
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.out = out.data();
  cpu::SetHeadPackingThreads(1);
  const std::string error = path == "none"       ? std::string()
                            : path == "avx512"   ? flash_attention_cpu_avx512(p)
                            : path == "avx2"     ? flash_attention_cpu_avx2(p)
                            : path == "neon"     ? flash_attention_cpu_neon(p)
                            : path == "portable" ? flash_attention_cpu_portable(p)
                                                 : flash_attention_cpu(p);
  if (!error.empty()) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  uint64_t checksum = 1469598103934665603ull;  // FNV-1a of the output bytes
  for (uint8_t byte : out) checksum = (checksum ^ byte) * 1099511628211ull;
  std::printf("output FNV-1a %016llx\n", static_cast<unsigned long long>(checksum));
  return 0;
}

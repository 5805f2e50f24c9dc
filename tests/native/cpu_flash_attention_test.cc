// The CPU FlashAttention kernel against a naive double-precision reference of the op contract,
// on every instruction-set path this CPU can run (AVX-512, AVX2, portable). Tolerances (see
// attention_reference.h): per row, a bound on the error of an fp32 evaluation of the contract
// (dot products, fp32 bias addition, softcap, exponentials, the weighted sum), plus half an ulp
// of the output type for fp16 (2^-11 relative) and bf16 (2^-8); masked rows must be exactly 0 or
// all NaN.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "flash_attention_cpu_internal.h"
#include "attention_case.h"
#include "attention_reference.h"
#include "ortflash/flash_attention_cpu.h"

namespace ortflash::testing {
namespace {

#ifdef ORTFLASH_SANITIZED
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

const DType kAllDtypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

enum class KernelPath { kAvx512, kAvx2, kNeon, kPortable };

const char* Name(KernelPath path) {
  switch (path) {
    case KernelPath::kAvx512:
      return "avx512";
    case KernelPath::kAvx2:
      return "avx2-fma";
    case KernelPath::kNeon:
      return "neon";
    case KernelPath::kPortable:
      break;
  }
  return "portable";
}

// The paths this CPU can run, widest first; the dispatch picks the first.
std::vector<KernelPath> SupportedPaths() {
  std::vector<KernelPath> paths;
  if (cpu::CpuSupportsAvx512()) paths.push_back(KernelPath::kAvx512);
  if (cpu::CpuSupportsAvx2Fma()) paths.push_back(KernelPath::kAvx2);
  if (cpu::CpuSupportsNeon()) paths.push_back(KernelPath::kNeon);
  paths.push_back(KernelPath::kPortable);
  return paths;
}

// The kernel's error message ("" on success).
std::string RunPath(const AttentionParams& params, KernelPath path, const ParallelRunner& runner = {}) {
  switch (path) {
    case KernelPath::kAvx512:
      return flash_attention_cpu_avx512(params, runner);
    case KernelPath::kAvx2:
      return flash_attention_cpu_avx2(params, runner);
    case KernelPath::kNeon:
      return flash_attention_cpu_neon(params, runner);
    case KernelPath::kPortable:
      break;
  }
  return flash_attention_cpu_portable(params, runner);
}

cpu::QueryTileKernel SelectedKernel(const AttentionParams& params, KernelPath path) {
  switch (path) {
    case KernelPath::kAvx512:
      return cpu::avx512::SelectQueryTileKernel(params);
    case KernelPath::kAvx2:
      return cpu::avx2::SelectQueryTileKernel(params);
    case KernelPath::kNeon:
      return cpu::neon::SelectQueryTileKernel(params);
    case KernelPath::kPortable:
      break;
  }
  return cpu::portable::SelectQueryTileKernel(params);
}

std::vector<double> RunKernel(AttentionTensors& tensors, KernelPath path, const ParallelRunner& runner = {}) {
  EXPECT_EQ(RunPath(tensors.Params(), path, runner), "");
  return tensors.Output();
}

// Runs the case on every supported path, each on fresh tensors, and checks each against the
// reference.
void ExpectEveryPathMatchesReference(const AttentionCase& c) {
  for (KernelPath path : SupportedPaths()) {
    SCOPED_TRACE(std::string(Name(path)) + " path: " + c.Describe());
    AttentionTensors tensors(c);
    ExpectMatchesReference(tensors, RunKernel(tensors, path));
  }
}

size_t CountMaskedRows(const AttentionCase& c) {
  const AttentionTensors tensors(c);
  const ReferenceAttention ref = ComputeReference(tensors);
  size_t masked = 0;
  for (char m : ref.masked) masked += m != 0;
  return masked;
}

AttentionCase Shape(DType dtype, int64_t q_len, int64_t kv_len, int64_t head_dim, int64_t v_head_dim) {
  AttentionCase c;
  c.dtype = dtype;
  c.q_len = q_len;
  c.kv_len = kv_len;
  c.head_dim = head_dim;
  c.v_head_dim = v_head_dim;
  return c;
}

TEST(CpuFlashAttention, ReportsTheInstructionSetItDispatchesTo) {
#if defined(__x86_64__) || defined(__i386__)
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  const bool avx512 = false;
  const bool avx2 = false;
#endif
#if defined(__aarch64__)
  const bool neon = true;
#else
  const bool neon = false;
#endif
  EXPECT_STREQ(flash_attention_cpu_isa(), avx512 ? "avx512" : (avx2 ? "avx2-fma" : (neon ? "neon" : "portable")));
  EXPECT_STREQ(flash_attention_cpu_isa(), Name(SupportedPaths().front()));
}

// The public entry runs the path it reports: bit-identical output.
TEST(CpuFlashAttention, DispatchedPathIsTheReportedOne) {
  AttentionCase c = Shape(DType::kFloat16, 70, 90, 80, 80);
  c.bias = Broadcast::kBatchKey;
  c.causal = CausalAlignment::kLowerRight;
  AttentionTensors dispatched_tensors(c);
  EXPECT_EQ(flash_attention_cpu(dispatched_tensors.Params()), "");
  const std::vector<double> dispatched = dispatched_tensors.Output();
  AttentionTensors path_tensors(c);
  const std::vector<double> reported = RunKernel(path_tensors, SupportedPaths().front());
  ASSERT_EQ(dispatched.size(), reported.size());
  EXPECT_EQ(std::memcmp(dispatched.data(), reported.data(), dispatched.size() * sizeof(double)), 0);
}

// A path this CPU cannot run (an x86 path on ARM, NEON on x86) says so and leaves the output as it was, instead of
// executing instructions the CPU does not have (or a stub that selects no kernel).
TEST(CpuFlashAttention, PathsThisCpuCannotRunSayWhyAndWriteNothing) {
  const std::vector<KernelPath> supported = SupportedPaths();
  int unsupported = 0;
  for (KernelPath path : {KernelPath::kAvx512, KernelPath::kAvx2, KernelPath::kNeon}) {
    if (std::find(supported.begin(), supported.end(), path) != supported.end()) continue;
    SCOPED_TRACE(Name(path));
    ++unsupported;
    AttentionTensors tensors(Shape(DType::kFloat32, 9, 17, 32, 32));
    const std::vector<double> before = tensors.Output();
    const std::string message = RunPath(tensors.Params(), path);
    EXPECT_NE(message.find("path needs"), std::string::npos) << message;
    const std::vector<double> after = tensors.Output();
    ASSERT_EQ(before.size(), after.size());
    EXPECT_EQ(std::memcmp(before.data(), after.data(), before.size() * sizeof(double)), 0);
  }
  EXPECT_GE(unsupported, 1);  // no CPU is both x86 and ARM
}

// 140 queries = full query tiles and a partial one, 270 keys = full key tiles and a partial one,
// both for the 64 x 64 tiles (AVX2, NEON, portable) and for the 128 x 128 tiles (AVX-512).
TEST(CpuFlashAttention, MatchesReferenceForEveryDtypeAndHeadDim) {
  for (DType dtype : kAllDtypes) {
    for (int64_t head_dim : {1, 7, 32, 33, 64, 80, 96, 128, 200, 256}) {
      AttentionCase c = Shape(dtype, 140, 270, head_dim, head_dim);
      c.batch = 2;
      c.q_heads = c.kv_heads = 2;
      c.seed = static_cast<uint32_t>(head_dim);
      ExpectEveryPathMatchesReference(c);
    }
  }
}

TEST(CpuFlashAttention, ValueHeadDimMayDifferFromHeadDim) {
  const int64_t pairs[][2] = {{64, 32}, {32, 64}, {7, 33}, {128, 80}, {96, 1}, {16, 200}, {256, 64}};
  for (DType dtype : kAllDtypes) {
    for (const auto& dims : pairs) {
      AttentionCase c = Shape(dtype, 33, 75, dims[0], dims[1]);
      c.seed = static_cast<uint32_t>(dims[0] * 1000 + dims[1]);
      ExpectEveryPathMatchesReference(c);
    }
  }
}

// Each query head must read kv head h / (Hq / Hkv); the kv heads hold different data.
TEST(CpuFlashAttention, GroupedAndMultiQueryHeadsReadTheirKvHead) {
  for (DType dtype : kAllDtypes) {
    for (int64_t kv_heads : {2, 1}) {
      AttentionCase c = Shape(dtype, 21, 45, 64, 64);
      c.batch = 2;
      c.q_heads = 8;
      c.kv_heads = kv_heads;
      c.seed = static_cast<uint32_t>(kv_heads);
      ExpectEveryPathMatchesReference(c);
    }
  }
}

// Rank-3 inputs (N, S, D) reach the kernel as B = N, H = 1, with bias/keep of (N, Sq, Skv) or (Sq, Skv).
TEST(CpuFlashAttention, SingleHeadRank3Style) {
  for (DType dtype : kAllDtypes) {
    for (Broadcast bias : {Broadcast::kBatchQueryKey, Broadcast::kQueryKey}) {
      AttentionCase c = Shape(dtype, 40, 40, 32, 32);
      c.batch = 3;
      c.bias = bias;
      c.keep = Broadcast::kBatchQueryKey;
      c.causal = CausalAlignment::kUpperLeft;
      ExpectEveryPathMatchesReference(c);
    }
  }
}

const Broadcast kBroadcastPatterns[] = {Broadcast::kFull,         Broadcast::kBatchKey, Broadcast::kBatchQueryKey,
                                        Broadcast::kHeadQueryKey, Broadcast::kQueryKey, Broadcast::kScalar,
                                        Broadcast::kQueryRow};

TEST(CpuFlashAttention, BiasBroadcastsThroughZeroStrides) {
  for (DType dtype : kAllDtypes) {
    for (Broadcast pattern : kBroadcastPatterns) {
      AttentionCase c = Shape(dtype, 20, 77, 32, 32);
      c.batch = 2;
      c.q_heads = 3;
      c.kv_heads = 3;
      c.bias = pattern;
      c.seed = static_cast<uint32_t>(pattern);
      ExpectEveryPathMatchesReference(c);
    }
  }
}

TEST(CpuFlashAttention, KeepBroadcastsThroughZeroStrides) {
  for (DType dtype : kAllDtypes) {
    for (Broadcast pattern : kBroadcastPatterns) {
      AttentionCase c = Shape(dtype, 20, 77, 32, 32);
      c.batch = 2;
      c.q_heads = 3;
      c.kv_heads = 3;
      c.keep = pattern;
      c.masked_rows = MaskedRows::kNaN;
      c.seed = static_cast<uint32_t>(pattern);
      ExpectEveryPathMatchesReference(c);
    }
  }
}

TEST(CpuFlashAttention, CausalAlignmentsForEveryLengthRelation) {
  const int64_t lengths[][2] = {{70, 70}, {100, 37}, {37, 100}, {1, 70}, {70, 1}, {130, 200}, {200, 130}};
  for (DType dtype : kAllDtypes) {
    for (CausalAlignment causal : {CausalAlignment::kUpperLeft, CausalAlignment::kLowerRight}) {
      for (const auto& len : lengths) {
        AttentionCase c = Shape(dtype, len[0], len[1], 64, 64);
        c.causal = causal;
        c.masked_rows = MaskedRows::kNaN;
        c.seed = static_cast<uint32_t>(len[0] * 7 + len[1]);
        ExpectEveryPathMatchesReference(c);
      }
    }
  }
}

// A bias and a keep mask that vary only with batch and key (an encoder's padding mask), which every
// query row reads alike, with each causal alignment and softcap, over full and partial query and
// key tiles and head dims that are no multiple of a vector.
TEST(CpuFlashAttention, PaddingMaskSharedByEveryQueryRow) {
  for (DType dtype : kAllDtypes) {
    for (CausalAlignment causal :
         {CausalAlignment::kNone, CausalAlignment::kUpperLeft, CausalAlignment::kLowerRight}) {
      for (float softcap : {0.0f, 20.0f}) {
        AttentionCase c = Shape(dtype, 140, 270, 33, 40);
        c.batch = 2;
        c.q_heads = 4;
        c.kv_heads = 2;
        c.bias = Broadcast::kBatchKey;
        c.keep = Broadcast::kBatchKey;
        c.causal = causal;
        c.softcap = softcap;
        c.masked_rows = MaskedRows::kNaN;
        c.seed = static_cast<uint32_t>(causal) * 10 + (softcap > 0 ? 1 : 0);
        ExpectEveryPathMatchesReference(c);
      }
    }
  }
}

// Left padding in an encoder's (B, 1, 1, Skv) mask: the key-major path starts its key loop past the leading keys
// that weigh nothing for every row (LeadingDeadKeys), and past those keep hides. Under upper-left causality the first
// rows see only padding (a softmax over finfo.min or -10000 biases, or masked rows with keep), and their items keep
// every key; large queries (magnitude 8) leave the bound less room.
TEST(CpuFlashAttention, LeftPaddingMatchesTheReference) {
  uint32_t seed = 800;
  for (DType dtype : kAllDtypes) {
    for (RowEffect effect : {RowEffect::kBiasLowestOnFirstHalf, RowEffect::kBiasMinus10000OnFirstHalf}) {
      for (CausalAlignment causal : {CausalAlignment::kNone, CausalAlignment::kUpperLeft}) {
        AttentionCase c = Shape(dtype, 200, 200, 64, 64);
        c.batch = 2, c.q_heads = 2, c.kv_heads = 1, c.seed = ++seed;
        c.bias = Broadcast::kBatchKey, c.row_effect = effect, c.causal = causal, c.masked_rows = MaskedRows::kNaN;
        if (seed % 2 == 0) c.keep = Broadcast::kBatchKey;
        if (seed % 3 == 0) c.magnitude = 8.0;
        ExpectEveryPathMatchesReference(c);
      }
    }
  }
}

// Batched prompts of an exported decoder: left padding and the causal mask in one (B, 1, S, T) bias (finfo.min or
// -10000), as Llama, Qwen2 and GPT-2 exports hold them, or the padding alone beside the causal attribute, or in a keep
// mask. The key-major path starts an item's key loop past the keys its rows all leave out (LeadingDeadKeysByRow).
// Sequence 1's first 150 rows see only padding (a softmax over the fill, or masked rows), so whole items and items
// that straddle the padding's end keep every key; "ragged" pads each row by its own count (0 to 89), so that later
// rows lower an item's count; large queries (magnitude 8) leave the bound less room. A second mask, the same for every
// row, starts at the strip's first key too.
TEST(CpuFlashAttention, LeftPaddedDecoderMasksMatchTheReference) {
  enum class Mask { kCausalInBias, kBiasBesideCausal, kKeep, kRagged };
  const int64_t padding[] = {0, 150, 37};
  uint32_t seed = 1000;
  for (DType dtype : kAllDtypes) {
    for (Mask mask : {Mask::kCausalInBias, Mask::kBiasBesideCausal, Mask::kKeep, Mask::kRagged}) {
      for (double fill : {LowestFinite(dtype), -10000.0}) {
        if (mask == Mask::kKeep && fill != LowestFinite(dtype)) continue;
        AttentionCase c = Shape(dtype, 300, 300, 64, 64);
        c.batch = 3, c.q_heads = 2, c.kv_heads = 1, c.seed = ++seed, c.masked_rows = MaskedRows::kNaN;
        // Beside the mask that differs by row, one that does not: a bias, or (every other case) a keep mask.
        if (mask == Mask::kKeep) {
          c.keep = Broadcast::kBatchQueryKey, c.bias = Broadcast::kBatchKey;
        } else {
          c.bias = Broadcast::kBatchQueryKey;
          if (seed % 2 == 0) c.keep = Broadcast::kBatchKey;
        }
        if (mask != Mask::kCausalInBias) c.causal = CausalAlignment::kUpperLeft;
        if (seed % 3 == 0) c.magnitude = 8.0;
        const auto pad = [&](int64_t b, int64_t i) {
          return mask == Mask::kRagged ? (i * 37 + b * 11) % 90 : padding[b];
        };
        for (KernelPath path : SupportedPaths()) {
          SCOPED_TRACE(std::string(Name(path)) + ": mask " + std::to_string(static_cast<int>(mask)) + " fill " +
                       std::to_string(fill) + " " + c.Describe());
          AttentionTensors tensors(c);
          if (mask == Mask::kKeep) {
            // The first 64 rows keep every key, so that the strips past them start later than the item.
            tensors.SetKeep([&](int64_t b, int64_t, int64_t i, int64_t j) { return i < 64 || j >= pad(b, i); });
          } else {
            tensors.SetBias([&](int64_t b, int64_t, int64_t i, int64_t j, double x) {
              return j < pad(b, i) || (mask == Mask::kCausalInBias && j > i) ? fill : x;
            });
          }
          ExpectMatchesReference(tensors, RunKernel(tensors, path));
        }
      }
    }
  }
}

// Every 16th row (the first of a strip) hides its first 4 keys and biases the next 2 by -10000; the other rows keep
// and see every key alike. Those 4 keys still count for the other rows: a strip's first row leaves out only what each
// row does (LeadingDeadKeysByRow, where the count is too small to be worth the other rows' scans too).
TEST(CpuFlashAttention, KeysAStripsFirstRowHidesStillCountForTheOthers) {
  for (DType dtype : kAllDtypes) {
    for (int64_t head_dim : {int64_t{64}, int64_t{256}}) {  // 6 keys below the threshold, and above it
      AttentionCase c = Shape(dtype, 64, 64, head_dim, head_dim);
      c.bias = Broadcast::kBatchQueryKey, c.keep = Broadcast::kBatchQueryKey, c.seed = 1200;
      for (KernelPath path : SupportedPaths()) {
        SCOPED_TRACE(std::string(Name(path)) + ": " + c.Describe());
        AttentionTensors tensors(c);
        tensors.SetKeep([](int64_t, int64_t, int64_t i, int64_t j) { return i % 16 != 0 || j >= 4; });
        tensors.SetBias([](int64_t, int64_t, int64_t i, int64_t j, double x) {
          return i % 16 == 0 && j < 6 ? -10000.0 : x;
        });
        ExpectMatchesReference(tensors, RunKernel(tensors, path));
      }
    }
  }
}

// Left padding in a (B, 1, S, T) bias of -10000 whose keys score far above it (key rows of 20000s, query rows of
// either sign) still counts for the rows where it outscores the real keys: the bound on the dot products leaves
// those keys in (LeadingDeadKeysByRow).
TEST(CpuFlashAttention, LeftPaddingThatOutscoresItsRowBiasStaysLive) {
  for (DType dtype : kAllDtypes) {
    AttentionCase c = Shape(dtype, 64, 200, 32, 32);
    c.bias = Broadcast::kBatchQueryKey, c.seed = 1100;
    for (KernelPath path : SupportedPaths()) {
      SCOPED_TRACE(std::string(Name(path)) + ": " + c.Describe());
      AttentionTensors tensors(c);
      tensors.SetBias([](int64_t, int64_t, int64_t i, int64_t j, double x) {
        return j < 50 || j > i + 136 ? -10000.0 : x;
      });
      for (int64_t j = 0; j < 50; ++j) {
        for (int64_t d = 0; d < c.head_dim; ++d) tensors.SetKey(0, 0, j, d, 20000.0);
      }
      ExpectMatchesReference(tensors, RunKernel(tensors, path));
    }
  }
}

// A causal mask held in the bias (finfo.min or -10000 above the diagonal, as decoder exports build it) on the
// row-major path, which leaves out the key tiles that weigh nothing for every row of a tile (TileWeighsNothing):
// the stored (B,1,S,S), (1,H,S,S) and (B,H,S,S) shapes, with softcap, a keep mask beside it, and large queries
// (magnitude 8: scores near 64·8 = 512 beside a -10000 bias still leave those keys at weight 0; the norm bound
// keeps more of them).
TEST(CpuFlashAttention, CausalMaskInTheBiasMatchesTheReference) {
  uint32_t seed = 700;
  for (DType dtype : kAllDtypes) {
    for (RowEffect effect : {RowEffect::kBiasLowestAboveDiagonal, RowEffect::kBiasMinus10000AboveDiagonal}) {
      for (Broadcast bias : {Broadcast::kBatchQueryKey, Broadcast::kHeadQueryKey, Broadcast::kFull}) {
        AttentionCase c = Shape(dtype, 300, 300, 64, 64);
        c.batch = 2, c.q_heads = 2, c.kv_heads = 1;
        c.bias = bias, c.row_effect = effect, c.masked_rows = MaskedRows::kNaN, c.seed = ++seed;
        if (seed % 3 == 0) c.softcap = 30.0f;
        if (seed % 4 == 0) c.keep = Broadcast::kBatchKey;
        if (seed % 5 == 0) c.magnitude = 8.0;
        ExpectEveryPathMatchesReference(c);
      }
    }
  }
}

// With |q|, |k| ~ 3 the scores (~9) saturate a cap of 1.5 and reach well into tanh's curve for 30;
// with ~1 they stay where tanh is nearly linear. The cap applies before bias and masks.
TEST(CpuFlashAttention, SoftcapAppliesBeforeBiasAndMasks) {
  for (DType dtype : kAllDtypes) {
    for (float softcap : {1.5f, 30.0f}) {
      for (double magnitude : {1.0, 3.0}) {
        AttentionCase c = Shape(dtype, 45, 90, 64, 64);
        c.magnitude = magnitude;
        c.softcap = softcap;
        c.bias = Broadcast::kFull;
        c.causal = CausalAlignment::kLowerRight;
        ExpectEveryPathMatchesReference(c);
      }
    }
  }
}

TEST(CpuFlashAttention, MaskedRowsFollowThePolicy) {
  for (DType dtype : kAllDtypes) {
    for (MaskedRows policy : {MaskedRows::kZero, MaskedRows::kNaN}) {
      AttentionCase keep_none = Shape(dtype, 30, 50, 32, 32);
      keep_none.keep = Broadcast::kBatchQueryKey;
      keep_none.row_effect = RowEffect::kKeepNone;
      AttentionCase bias_inf = Shape(dtype, 30, 50, 32, 32);
      bias_inf.bias = Broadcast::kQueryKey;
      bias_inf.row_effect = RowEffect::kBiasNegInf;
      // Lower-right with Sq > Skv: the first Sq - Skv rows see no key.
      AttentionCase causal = Shape(dtype, 90, 20, 32, 32);
      causal.causal = CausalAlignment::kLowerRight;
      for (AttentionCase c : {keep_none, bias_inf, causal}) {
        c.masked_rows = policy;
        ASSERT_GT(CountMaskedRows(c), 0u) << c.Describe();
        ExpectEveryPathMatchesReference(c);
      }
    }
  }
}

// -10000 and finfo.min are numbers, not masks: the NaN policy would show any row taken as masked.
TEST(CpuFlashAttention, LargeFiniteBiasIsAnOrdinaryNumber) {
  for (DType dtype : kAllDtypes) {
    for (RowEffect effect : {RowEffect::kBiasMinus10000, RowEffect::kBiasLowest, RowEffect::kBiasLowestOnLastHalf}) {
      for (CausalAlignment causal : {CausalAlignment::kNone, CausalAlignment::kUpperLeft}) {
        AttentionCase c = Shape(dtype, 30, 70, 64, 64);
        c.bias = Broadcast::kQueryKey;
        c.row_effect = effect;
        c.causal = causal;
        c.masked_rows = MaskedRows::kNaN;
        ASSERT_EQ(CountMaskedRows(c), 0u) << c.Describe();
        ExpectEveryPathMatchesReference(c);
      }
    }
  }
}

// finfo.min swallows every score in fp32, so such a row is the plain average of its values.
// A padding mask written as bias on the last half of the keys (-10000 as BERT writes it, or
// finfo.min), shared by every query row, over several key tiles: the padded keys weigh exactly 0,
// whether or not they are computed.
TEST(CpuFlashAttention, PaddingBiasOnTheLastKeys) {
  for (DType dtype : kAllDtypes) {
    for (RowEffect effect : {RowEffect::kBiasMinus10000OnLastHalf, RowEffect::kBiasLowestOnLastHalf}) {
      for (CausalAlignment causal : {CausalAlignment::kNone, CausalAlignment::kLowerRight}) {
        AttentionCase c = Shape(dtype, 100, 300, 64, 48);
        c.batch = 2;
        c.q_heads = 4;
        c.kv_heads = 2;
        c.bias = Broadcast::kBatchKey;
        c.row_effect = effect;
        c.causal = causal;
        c.masked_rows = MaskedRows::kNaN;
        ExpectEveryPathMatchesReference(c);
      }
    }
  }
}

// Value element 3 of `key` (batch 0, head 0) NaN: every output row of that head has NaN in column 3, as 0 · NaN
// gives in the unfused graph for rows that weigh the key 0, and column 4 finite.
void ExpectNaNValueReachesEveryRow(AttentionTensors& tensors, KernelPath path, int64_t key) {
  const AttentionCase& c = tensors.attention_case();
  tensors.SetValue(0, 0, key, 3, std::nan(""));
  const std::vector<double> out = RunKernel(tensors, path);
  ExpectMatchesReference(tensors, out);
  for (int64_t row = 0; row < c.q_len; ++row) {
    EXPECT_TRUE(std::isnan(out[static_cast<size_t>(row * c.v_head_dim + 3)])) << "row " << row;
    EXPECT_FALSE(std::isnan(out[static_cast<size_t>(row * c.v_head_dim + 4)])) << "row " << row;
  }
}

void ExpectNaNValueReachesEveryRow(const AttentionCase& c, KernelPath path, int64_t key) {
  AttentionTensors tensors(c);
  ExpectNaNValueReachesEveryRow(tensors, path, key);
}

// A NaN value of a padded key reaches every row: padded keys are left out only where their values are finite.
TEST(CpuFlashAttention, NaNValueBehindPaddingBiasReachesEveryRow) {
  for (KernelPath path : SupportedPaths()) {
    SCOPED_TRACE(Name(path));
    AttentionCase c = Shape(DType::kFloat32, 40, 300, 32, 32);
    c.bias = Broadcast::kBatchKey;
    c.row_effect = RowEffect::kBiasMinus10000OnLastHalf;
    ExpectNaNValueReachesEveryRow(c, path, 290);
  }
}

// A NaN value of a left-padded key reaches every row under a (B, 1, S, T) bias that holds the padding and the causal
// mask (ExpectNaNValueReachesEveryRow): the leading keys are left out only where their values are finite.
TEST(CpuFlashAttention, NaNValueInTheLeftPaddingOfARowBiasReachesEveryRow) {
  for (KernelPath path : SupportedPaths()) {
    SCOPED_TRACE(Name(path));
    AttentionCase c = Shape(DType::kFloat32, 200, 200, 32, 32);
    c.bias = Broadcast::kBatchQueryKey;
    AttentionTensors tensors(c);
    tensors.SetBias([](int64_t, int64_t, int64_t i, int64_t j, double x) {
      return j < 60 || j > i ? LowestFinite(DType::kFloat32) : x;
    });
    ExpectNaNValueReachesEveryRow(tensors, path, 20);
  }
}

// DeBERTa's mask: a padding mask's outer product with itself, (B, 1, S, S), so that padded query rows keep nothing
// (masked rows, 0) and the others keep the real keys; beside it a position bias per head and row. Both differ by
// row and go to the key-major path strip by strip (LoadStripKeepBits, LoadStripBiasTransposed), grouped heads packed.
TEST(CpuFlashAttention, PaddingOuterProductKeepMatchesTheReference) {
  uint32_t seed = 900;
  const int64_t real[] = {77, 50, 9};
  for (DType dtype : kAllDtypes) {
    for (int64_t q_heads : {int64_t{2}, int64_t{4}}) {
      AttentionCase c = Shape(dtype, 77, 77, 64, 64);
      c.batch = 3, c.q_heads = q_heads, c.kv_heads = 2, c.seed = ++seed;
      c.keep = Broadcast::kBatchQueryKey, c.bias = Broadcast::kHeadQueryKey, c.masked_rows = MaskedRows::kZero;
      for (KernelPath path : SupportedPaths()) {
        SCOPED_TRACE(std::string(Name(path)) + ": " + c.Describe());
        AttentionTensors tensors(c);
        tensors.SetKeep([&](int64_t b, int64_t, int64_t i, int64_t j) { return i < real[b] && j < real[b]; });
        const std::vector<double> out = RunKernel(tensors, path);
        ExpectMatchesReference(tensors, out);
        for (int64_t b = 0; b < c.batch; ++b) {
          for (int64_t h = 0; h < c.q_heads; ++h) {
            for (int64_t i = real[b]; i < c.q_len; ++i) {
              const size_t row = static_cast<size_t>(((b * c.q_heads + h) * c.q_len + i) * c.v_head_dim);
              for (int64_t d = 0; d < c.v_head_dim; ++d) ASSERT_EQ(out[row + static_cast<size_t>(d)], 0.0);
            }
          }
        }
      }
    }
  }
}

// A causal mask held in the bias: a NaN value of the last key reaches every row too, those above the diagonal that
// weigh it 0 included (ExpectNaNValueReachesEveryRow). Keys past a row's diagonal are left out only where the key tile's values are finite
// (StripBiasedKeys on the key-major path, TileWeighsNothing on the row-major one).
TEST(CpuFlashAttention, NaNValueAboveACausalBiasReachesEveryRow) {
  for (KernelPath path : SupportedPaths()) {
    for (RowEffect effect : {RowEffect::kBiasLowestAboveDiagonal, RowEffect::kBiasMinus10000AboveDiagonal}) {
      for (int64_t q_len : {int64_t{6}, int64_t{300}}) {  // the row-major and the key-major path
        SCOPED_TRACE(std::string(Name(path)) + " S " + std::to_string(q_len));
        AttentionCase c = Shape(DType::kFloat32, q_len, 300, 32, 32);
        c.bias = Broadcast::kQueryKey;
        c.row_effect = effect;
        ExpectNaNValueReachesEveryRow(c, path, 299);
      }
    }
  }
}

// A NaN bias above the diagonal of a causal mask held in the bias makes that row NaN (its score is NaN), and only
// that row: keys past the diagonal are left out only where each bias is known to lie far enough below
// (StripBiasedKeys, TileBiasesBelowRowMaxima), which a NaN is not.
TEST(CpuFlashAttention, NaNBiasAboveTheDiagonalReachesItsRow) {
  for (KernelPath path : SupportedPaths()) {
    SCOPED_TRACE(Name(path));
    AttentionCase c = Shape(DType::kFloat32, 300, 300, 32, 32);
    c.bias = Broadcast::kQueryKey;
    c.row_effect = RowEffect::kBiasLowestAboveDiagonal;
    AttentionTensors tensors(c);
    tensors.SetQueryKeyBias(5, 262, std::nan(""));
    const std::vector<double> out = RunKernel(tensors, path);
    ExpectMatchesReference(tensors, out);
    EXPECT_TRUE(std::isnan(out[5 * 32]));
    EXPECT_FALSE(std::isnan(out[4 * 32]));
    EXPECT_FALSE(std::isnan(out[6 * 32]));
  }
}

TEST(CpuFlashAttention, LowestFiniteBiasRowAveragesTheValues) {
  for (KernelPath path : SupportedPaths()) {
    AttentionCase c = Shape(DType::kFloat32, 6, 40, 32, 16);
    c.bias = Broadcast::kQueryKey;
    c.row_effect = RowEffect::kBiasLowest;
    AttentionTensors tensors(c);
    const std::vector<double> out = RunKernel(tensors, path);
    for (int64_t i = 0; i < c.q_len; ++i) {
      if (!IsEffectRow(i)) continue;
      for (int64_t d = 0; d < c.v_head_dim; ++d) {
        double mean = 0.0;
        for (int64_t j = 0; j < c.kv_len; ++j) mean += tensors.value()[static_cast<size_t>(j * c.v_head_dim + d)];
        mean /= static_cast<double>(c.kv_len);
        EXPECT_NEAR(out[static_cast<size_t>(i * c.v_head_dim + d)], mean, 1e-5) << Name(path) << " row " << i;
      }
    }
  }
}

// Two keys with equal scores (D = 0) and values one ulp apart: each output is exactly halfway
// between them and must round to the neighbour with the even last bit. Dv = 11 covers the
// vectorised stores and the scalar tail. Bit patterns include subnormals and the largest finite.
TEST(CpuFlashAttention, SixteenBitOutputsRoundHalfToEven) {
  const uint16_t half_bits[] = {0x3C00, 0x3C01, 0x0003, 0x0004, 0x7BFE, 0xBC00, 0x4A55, 0x2E3B, 0x03FF, 0x5000, 0x1234};
  const uint16_t bfloat_bits[] = {0x3F80, 0x3F81, 0x0003, 0x0004, 0x7E7E, 0xBF80,
                                  0x4A55, 0x2E3B, 0x007F, 0x5000, 0x1234};
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    for (KernelPath path : SupportedPaths()) {
      const uint16_t* bits = dtype == DType::kFloat16 ? half_bits : bfloat_bits;
      const auto to_double = [dtype](uint16_t b) -> double {
        return dtype == DType::kFloat16 ? Ort::Float16_t::FromBits(b).ToFloat()
                                        : Ort::BFloat16_t::FromBits(b).ToFloat();
      };
      AttentionCase c = Shape(dtype, 1, 2, 0, 11);
      AttentionTensors tensors(c);
      for (int64_t d = 0; d < 11; ++d) {
        tensors.SetValue(0, 0, 0, d, to_double(bits[d]));
        tensors.SetValue(0, 0, 1, d, to_double(static_cast<uint16_t>(bits[d] + 1)));
      }
      const std::vector<double> out = RunKernel(tensors, path);
      for (int64_t d = 0; d < 11; ++d) {
        const uint16_t even = (bits[d] & 1) == 0 ? bits[d] : static_cast<uint16_t>(bits[d] + 1);
        EXPECT_EQ(out[static_cast<size_t>(d)], to_double(even))
            << DtypeName(dtype) << " " << Name(path) << " bits 0x" << std::hex << bits[d];
      }
    }
  }
}

TEST(CpuFlashAttention, DecodeShortAndPrimeLengths) {
  const int64_t q_lengths[] = {1, 3, 17, 61};
  const int64_t kv_lengths[] = {1, 3, 17, 61, 127, 257};
  for (DType dtype : kAllDtypes) {
    for (int64_t q_len : q_lengths) {
      for (int64_t kv_len : kv_lengths) {
        AttentionCase c = Shape(dtype, q_len, kv_len, q_len == 1 ? 64 : 33, q_len == 1 ? 64 : 33);
        c.q_heads = 4;
        c.kv_heads = 2;
        c.causal = q_len == 1 ? CausalAlignment::kNone : CausalAlignment::kLowerRight;
        c.keep = Broadcast::kBatchKey;
        c.seed = static_cast<uint32_t>(q_len * 1000 + kv_len);
        ExpectEveryPathMatchesReference(c);
      }
    }
  }
}

// One decoding row per head with a key/value head of its own reads K and V where they are, a vector of keys at a
// time (16-bit rows converted as loaded), except in key tiles that a padding bias may make weigh nothing, which
// take the transposed path: every head dim with a compiled kernel, others of whole vectors (48; 64 with Dv 32),
// lengths around whole vectors and tiles, padding at either end by -10000 or finfo.min, keep, softcap, masked
// rows, strided and sequence-major layouts, large queries.
TEST(CpuFlashAttention, UngroupedDecodingRowsMatchTheReference) {
  struct Dims {
    int64_t head_dim, v_head_dim;
  };
  const Dims dims[] = {{32, 32}, {48, 48}, {64, 64}, {64, 32}, {80, 80}, {96, 96}, {128, 128}, {256, 256}};
  const int64_t kv_lengths[] = {1, 15, 17, 128, 129, 300};
  const RowEffect effects[] = {RowEffect::kNone, RowEffect::kBiasMinus10000OnLastHalf, RowEffect::kBiasLowestOnFirstHalf,
                               RowEffect::kBiasMinus10000OnFirstHalf, RowEffect::kKeepNone};
  uint32_t seed = 1300;
  for (DType dtype : kAllDtypes) {
    for (const Dims& d : dims) {
      for (int64_t kv_len : kv_lengths) {
        AttentionCase c = Shape(dtype, 1, kv_len, d.head_dim, d.v_head_dim);
        c.batch = 2, c.q_heads = 3, c.kv_heads = 3, c.seed = ++seed;
        c.row_effect = effects[seed % 5];
        if (c.row_effect == RowEffect::kKeepNone) {
          c.keep = Broadcast::kBatchKey;
        } else if (c.row_effect != RowEffect::kNone) {
          c.bias = Broadcast::kBatchKey;
        }
        c.causal = seed % 2 == 0 ? CausalAlignment::kLowerRight : CausalAlignment::kNone;
        if (seed % 3 == 0) c.keep = Broadcast::kBatchKey;
        if (seed % 4 == 1) c.softcap = 20.0f;
        if (seed % 7 == 0) c.masked_rows = MaskedRows::kNaN;
        if (seed % 6 == 1) c.layout = Layout::kPaddedRows;
        if (seed % 6 == 4) c.layout = Layout::kSeqMajor;
        if (seed % 5 == 2) c.magnitude = 8.0;
        ExpectEveryPathMatchesReference(c);
      }
    }
  }
}

// Calls with fewer queries than a vector (S < 16 on AVX-512, S < 8 on AVX2) read K and V in place for all their rows,
// scored in blocks of up to 8 rows: every length from 2 to 15 (more than one block of rows on AVX-512), masks that
// vary by row (a causal bias, keep per query) and by key only, both causal alignments, softcap, masked rows, layouts,
// and head dims of whole vectors and not (those keep the transposed tiles).
TEST(CpuFlashAttention, FewQueriesReadingKAndVInPlaceMatchTheReference) {
  const int64_t head_dims[] = {64, 80, 128, 48, 40};
  const RowEffect effects[] = {RowEffect::kNone, RowEffect::kBiasMinus10000OnLastHalf, RowEffect::kBiasLowestOnFirstHalf,
                               RowEffect::kKeepNone};
  uint32_t seed = 1900;
  for (DType dtype : kAllDtypes) {
    for (int64_t q_len = 2; q_len <= 15; ++q_len) {
      const int64_t head_dim = head_dims[seed % 5];
      AttentionCase c = Shape(dtype, q_len, q_len + (seed % 3) * 37, head_dim, head_dim);
      c.batch = 2, c.q_heads = 3, c.kv_heads = 3, c.seed = ++seed;
      c.row_effect = effects[seed % 4];
      if (c.row_effect == RowEffect::kKeepNone) {
        c.keep = seed % 2 == 0 ? Broadcast::kBatchKey : Broadcast::kBatchQueryKey;
      } else if (c.row_effect != RowEffect::kNone) {
        c.bias = seed % 2 == 0 ? Broadcast::kBatchKey : Broadcast::kHeadQueryKey;
      }
      c.causal = seed % 3 == 0 ? CausalAlignment::kLowerRight : seed % 3 == 1 ? CausalAlignment::kUpperLeft
                                                                              : CausalAlignment::kNone;
      if (seed % 4 == 1) c.softcap = 20.0f;
      if (seed % 7 == 0) c.masked_rows = MaskedRows::kNaN;
      if (seed % 5 == 1) c.layout = Layout::kPaddedRows;
      if (seed % 5 == 3) c.layout = Layout::kSeqMajor;
      ExpectEveryPathMatchesReference(c);
    }
  }
}

// Key-major items (masks shared by every row) whose last strip would hold only a few rows run those rows one by one,
// K and V read in place: lengths a few rows past whole strips (AVX-512 strips are 32 rows, AVX2 16), an item left
// with only such rows (130 = 128 + 2), both causal alignments with fewer or more keys than queries, a padding bias or
// keep mask, softcap and masked rows; grouped heads (packed, so not split) beside them.
TEST(CpuFlashAttention, FewRowsPastWholeStripsMatchTheReference) {
  const int64_t q_lengths[] = {17, 33, 36, 40, 68, 130, 161};
  uint32_t seed = 1500;
  for (DType dtype : kAllDtypes) {
    for (int64_t q_len : q_lengths) {
      const int64_t head_dim = seed % 3 == 0 ? 128 : 64;
      const int64_t kv_len = q_len + static_cast<int64_t>(seed % 4) * 19 - 9;
      AttentionCase c = Shape(dtype, q_len, kv_len, head_dim, seed % 5 == 0 ? 32 : head_dim);
      c.batch = 2, c.q_heads = 2, c.kv_heads = seed % 6 == 0 ? 1 : 2, c.seed = ++seed;
      c.causal = seed % 3 == 0 ? CausalAlignment::kNone
                               : (seed % 3 == 1 ? CausalAlignment::kUpperLeft : CausalAlignment::kLowerRight);
      // Masks the same for every row, or differing by row (read strip by strip, and by the rows past the strips).
      c.bias = seed % 3 == 2 ? Broadcast::kHeadQueryKey : Broadcast::kBatchKey;
      if (seed % 2 == 0) c.row_effect = RowEffect::kBiasMinus10000OnLastHalf;
      if (seed % 5 == 4) c.row_effect = RowEffect::kBiasLowestAboveDiagonal;
      if (seed % 4 == 1) c.keep = seed % 8 == 1 ? Broadcast::kBatchQueryKey : Broadcast::kBatchKey;
      if (seed % 5 == 2) c.softcap = 20.0f;
      if (seed % 7 == 3) c.masked_rows = MaskedRows::kNaN;
      ExpectEveryPathMatchesReference(c);
    }
  }
}

// No keys at all: every row is masked, and K/V (null here) are never read.
TEST(CpuFlashAttention, EmptyKeysMaskEveryRow) {
  for (DType dtype : kAllDtypes) {
    for (MaskedRows policy : {MaskedRows::kZero, MaskedRows::kNaN}) {
      AttentionCase c = Shape(dtype, 9, 0, 32, 24);
      c.q_heads = 2;
      c.kv_heads = 1;
      c.bias = Broadcast::kFull;
      c.keep = Broadcast::kBatchKey;
      c.masked_rows = policy;
      ExpectEveryPathMatchesReference(c);
    }
  }
}

// Tensors with a zero dim: nothing to compute and nothing to write (pointers are null).
TEST(CpuFlashAttention, EmptyTensorsAreANoOp) {
  for (DType dtype : kAllDtypes) {
    AttentionCase no_queries = Shape(dtype, 0, 10, 32, 32);
    AttentionCase no_batch = Shape(dtype, 10, 10, 32, 32);
    no_batch.batch = 0;
    AttentionCase no_heads = Shape(dtype, 10, 10, 32, 32);
    no_heads.q_heads = 0;
    AttentionCase no_value_dims = Shape(dtype, 10, 10, 32, 0);
    for (AttentionCase c : {no_queries, no_batch, no_heads, no_value_dims}) {
      c.bias = Broadcast::kFull;
      c.causal = CausalAlignment::kLowerRight;
      ExpectEveryPathMatchesReference(c);
    }
  }
}

// With D = 0 every score is 0 (an empty dot product): the output is the mean of the visible values.
TEST(CpuFlashAttention, ZeroHeadDimAveragesTheVisibleValues) {
  for (DType dtype : kAllDtypes) {
    AttentionCase c = Shape(dtype, 12, 30, 0, 8);
    c.causal = CausalAlignment::kUpperLeft;
    ExpectEveryPathMatchesReference(c);
  }
}

// |q|, |k| ~ 1e3 give scores ~1e5: no overflow, and rows whose best score wins by a wide margin
// are exactly that key's value row.
TEST(CpuFlashAttention, LargeMagnitudeInputsStayFinite) {
  for (DType dtype : kAllDtypes) {
    for (KernelPath path : SupportedPaths()) {
      AttentionCase c = Shape(dtype, 40, 61, 64, 64);
      c.magnitude = 1e3;
      c.causal = CausalAlignment::kLowerRight;
      AttentionTensors tensors(c);
      const std::vector<double> out = RunKernel(tensors, path);
      const ReferenceAttention ref = ComputeReference(tensors);
      size_t decisive_rows = 0;
      for (size_t row = 0; row < ref.masked.size(); ++row) {
        for (int64_t d = 0; d < c.v_head_dim; ++d) {
          ASSERT_TRUE(std::isfinite(out[row * 64 + static_cast<size_t>(d)])) << Name(path) << " " << c.Describe();
        }
        // e^-200 is 0 in fp32, and 200 is far beyond the fp32 score error (~1e5 * 2^-24 * 20).
        if (ref.score_gap[row] < 200.0) continue;
        ++decisive_rows;
        for (int64_t d = 0; d < c.v_head_dim; ++d) {
          const size_t e = row * 64 + static_cast<size_t>(d);
          EXPECT_EQ(out[e], RoundToDtype(dtype, ref.out[e])) << Name(path) << " row " << row << " " << c.Describe();
        }
      }
      EXPECT_GT(decisive_rows, ref.masked.size() * 3 / 4) << c.Describe();
    }
  }
}

// q/k/v/out in BSHD and in rows with gaps (the input gaps hold NaN, the output gaps must stay
// untouched): only the strides decide what is read and written.
TEST(CpuFlashAttention, StridesAreHonoured) {
  for (DType dtype : kAllDtypes) {
    for (Layout layout : {Layout::kSeqMajor, Layout::kPaddedRows}) {
      for (int64_t head_dim : {64, 7}) {
        AttentionCase c = Shape(dtype, 70, 67, head_dim, head_dim == 64 ? 64 : 12);
        c.batch = 2;
        c.q_heads = 4;
        c.kv_heads = 2;
        c.layout = layout;
        c.bias = Broadcast::kBatchKey;
        c.causal = CausalAlignment::kUpperLeft;
        ExpectEveryPathMatchesReference(c);
      }
    }
  }
}

// A NaN key poisons exactly the rows that see it, as the naive formula does; rows that causality
// hides it from are unaffected.
TEST(CpuFlashAttention, NaNInAKeyReachesOnlyRowsThatSeeIt) {
  for (DType dtype : kAllDtypes) {
    for (KernelPath path : SupportedPaths()) {
      AttentionCase c = Shape(dtype, 40, 40, 32, 32);
      c.causal = CausalAlignment::kUpperLeft;
      AttentionTensors tensors(c);
      tensors.SetKey(0, 0, 20, 5, std::nan(""));
      const std::vector<double> out = RunKernel(tensors, path);
      SCOPED_TRACE(Name(path));
      ExpectMatchesReference(tensors, out);
      EXPECT_TRUE(std::isnan(out[20 * 32])) << "row 20 sees the NaN key";
      EXPECT_FALSE(std::isnan(out[19 * 32])) << "row 19 does not";
    }
  }
}

// Items run in a shuffled order on 4 threads give bit-identical output: no item depends on another.
TEST(CpuFlashAttention, ShuffledParallelItemsGiveIdenticalOutput) {
  for (KernelPath path : SupportedPaths()) {
    AttentionCase c = Shape(DType::kFloat16, kSanitized ? 70 : 150, kSanitized ? 90 : 190, 64, 64);
    c.batch = 2;
    c.q_heads = 4;
    c.kv_heads = 2;
    c.bias = Broadcast::kBatchQueryKey;
    c.keep = Broadcast::kBatchKey;
    c.causal = CausalAlignment::kLowerRight;
    AttentionTensors serial_tensors(c);
    const std::vector<double> serial = RunKernel(serial_tensors, path);
    AttentionTensors parallel_tensors(c);
    ShuffledThreadRunner runner(4, 17);
    const std::vector<double> parallel = RunKernel(parallel_tensors, path, runner.runner());
    EXPECT_EQ(runner.calls(), 1u);
    ASSERT_EQ(serial.size(), parallel.size());
    EXPECT_EQ(std::memcmp(serial.data(), parallel.data(), serial.size() * sizeof(double)), 0) << Name(path);
    ExpectMatchesReference(parallel_tensors, parallel);
  }
}

// ---- Failures come back as messages ------------------------------------------------------------------

// Sets the scratch-failure hook for one scope, so that a failing assertion cannot leave it set.
class SimulatedScratchFailure {
 public:
  SimulatedScratchFailure() { cpu::SimulateScratchAllocationFailure(true); }
  ~SimulatedScratchFailure() { cpu::SimulateScratchAllocationFailure(false); }
  SimulatedScratchFailure(const SimulatedScratchFailure&) = delete;
  SimulatedScratchFailure& operator=(const SimulatedScratchFailure&) = delete;
};

// Scratch that cannot be allocated, serially or on 4 threads, is an error message naming the size;
// no exception reaches the runner, and the next call (the hook cleared) computes the right answer.
TEST(CpuFlashAttention, ScratchAllocationFailureIsReportedWithItsSize) {
  for (KernelPath path : SupportedPaths()) {
    SCOPED_TRACE(Name(path));
    AttentionCase c = Shape(DType::kFloat32, 130, 70, 64, 64);
    c.q_heads = 4;
    c.kv_heads = 4;
    AttentionTensors tensors(c);
    const std::string bytes = std::to_string(SelectedKernel(tensors.Params(), path).scratch_floats * sizeof(float));
    const std::string expected = "FlashAttention CPU kernel: allocating " + bytes +
                                 " bytes of scratch memory failed (head_dim 64, v_head_dim 64)";
    {
      const SimulatedScratchFailure failure;
      EXPECT_EQ(RunPath(tensors.Params(), path), expected);
      ShuffledThreadRunner runner(4, 5);
      EXPECT_EQ(RunPath(tensors.Params(), path, runner.runner()), expected);
      EXPECT_EQ(runner.calls(), 1u);
    }
    ExpectMatchesReference(tensors, RunKernel(tensors, path));
  }
}

// A head dim whose work-item scratch would pass the per-thread limit fails before anything is
// allocated or read (the tensors here are far smaller than the shape says).
TEST(CpuFlashAttention, ScratchBeyondThePerThreadLimitIsReportedWithoutAllocating) {
  float unread[8] = {};
  AttentionParams params;
  params.q = params.k = params.v = params.out = unread;
  params.batch = params.q_heads = params.kv_heads = params.q_len = params.kv_len = 1;
  params.head_dim = 1;
  params.v_head_dim = int64_t(1) << 22;  // 4M value dims: at least 64 rows x 4M x 4 bytes of accumulators
  SetDenseStrides(params);
  const std::string limit = "more than the limit of " + std::to_string(kMaxCpuScratchBytesPerThread) + " bytes per thread";
  for (KernelPath path : SupportedPaths()) {
    SCOPED_TRACE(Name(path));
    const std::string bytes = std::to_string(SelectedKernel(params, path).scratch_floats * sizeof(float));
    EXPECT_EQ(RunPath(params, path), "FlashAttention CPU kernel: a work item needs " + bytes +
                                         " bytes of scratch memory (head_dim 1, v_head_dim 4194304), " + limit);
  }
  // Head dims whose scratch size would not even fit in 64 bits are refused before it is computed.
  params.head_dim = params.v_head_dim = int64_t(1) << 60;
  SetDenseStrides(params);
  for (KernelPath path : SupportedPaths()) {
    EXPECT_NE(RunPath(params, path).find(limit), std::string::npos) << Name(path);
  }
}

// ---- Query heads of a kv-head group packed into one work item (GQA/MQA decode) -----------------------

// Plans the packing of query heads for `threads` threads for one scope (1: every group that fits a
// query tile is one work item), so that a failing assertion cannot leave the plan set.
class HeadPackingPlannedFor {
 public:
  explicit HeadPackingPlannedFor(int64_t threads) { cpu::SetHeadPackingThreads(threads); }
  ~HeadPackingPlannedFor() { cpu::SetHeadPackingThreads(0); }
  HeadPackingPlannedFor(const HeadPackingPlannedFor&) = delete;
  HeadPackingPlannedFor& operator=(const HeadPackingPlannedFor&) = delete;
};

// At least batch x q_heads threads: every query head is its own work item, as without packing.
constexpr int64_t kNoPacking = int64_t(1) << 40;

AttentionCase GroupedQueries(DType dtype, int64_t group, int64_t kv_heads, int64_t q_len, int64_t kv_len,
                             int64_t head_dim) {
  AttentionCase c = Shape(dtype, q_len, kv_len, head_dim, head_dim);
  c.kv_heads = kv_heads;
  c.q_heads = kv_heads * group;
  return c;
}

// Query heads packed into one item, each with its own left padding in a (B, H, S, T) bias (finfo.min), under the
// causal attribute: an item's strips cross from one head to the next, so that a row read with another head's bias
// (LeadingDeadKeysByRow steps its rows' head and query along) would leave out keys its own head counts.
TEST(CpuFlashAttention, LeftPaddingThatDiffersByPackedHeadMatchesTheReference) {
  const HeadPackingPlannedFor one_thread(1);
  for (DType dtype : kAllDtypes) {
    AttentionCase c = GroupedQueries(dtype, 4, 1, 20, 200, 64);
    c.batch = 2, c.bias = Broadcast::kFull, c.causal = CausalAlignment::kLowerRight, c.seed = 1300;
    for (KernelPath path : SupportedPaths()) {
      SCOPED_TRACE(std::string(Name(path)) + ": " + c.Describe());
      AttentionTensors tensors(c);
      const double fill = LowestFinite(dtype);
      tensors.SetBias([&](int64_t b, int64_t h, int64_t, int64_t j, double x) {
        return j < (b * 3 + h) * 37 % 150 ? fill : x;
      });
      ExpectMatchesReference(tensors, RunKernel(tensors, path));
    }
  }
}

// Whole groups while batch x kv_heads groups give every thread an item; otherwise each group split
// into threads / groups parts (rounded up) of whole heads; never more heads than fit one query tile.
TEST(CpuFlashAttention, HeadPackingKeepsEveryThreadBusy) {
  AttentionParams p;
  p.batch = 1;
  p.q_heads = 32;
  p.kv_heads = 8;
  p.q_len = 1;
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 128, 1), 4);
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 128, 8), 4);
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 128, 9), 2);
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 128, 16), 2);
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 128, 17), 2);  // 3 parts of 4 heads round to 2 parts of 2
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 128, 33), 1);
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 128, kNoPacking), 1);
  p.batch = 4;
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 128, 32), 4);
  p.batch = 1;
  p.kv_heads = 1;  // MQA
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 128, 1), 32);
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 128, 2), 16);
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 128, 3), 11);
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 16, 1), 16);
  p.q_len = 20;
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 64, 1), 3);
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 128, 1), 6);
  p.q_len = 33;  // only one such query run fits a 64-row tile
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 64, 1), 1);
  p.q_heads = p.kv_heads = 4;  // no group to pack
  p.q_len = 1;
  EXPECT_EQ(cpu::HeadsPerWorkItem(p, 128, 1), 1);
}

// Group sizes 2, 4, 8 on 2 kv heads and on 1 (MQA); 1-3 queries per head, 20 (groups split into
// parts of 3 or 6 heads by the tile size) and 65 (no packing on any path); every causal alignment.
// The bias differs per head and the keep mask is shared by the heads.
TEST(CpuFlashAttention, PackedQueryHeadsMatchReference) {
  const HeadPackingPlannedFor whole_groups(1);
  for (DType dtype : kAllDtypes) {
    for (int64_t group : {2, 4, 8}) {
      for (int64_t kv_heads : {2, 1}) {
        for (int64_t q_len : {1, 2, 3, 20, 65}) {
          for (CausalAlignment causal :
               {CausalAlignment::kNone, CausalAlignment::kUpperLeft, CausalAlignment::kLowerRight}) {
            AttentionCase c = GroupedQueries(dtype, group, kv_heads, q_len, kSanitized ? 70 : 150, 64);
            c.causal = causal;
            c.bias = Broadcast::kFull;
            c.keep = Broadcast::kBatchQueryKey;
            c.masked_rows = MaskedRows::kNaN;
            c.seed = static_cast<uint32_t>(group * 1000 + kv_heads * 100 + q_len);
            ExpectEveryPathMatchesReference(c);
          }
        }
      }
    }
  }
}

// The run-time head dim path (odd dims, D != Dv) and every compiled one, packed.
TEST(CpuFlashAttention, PackedQueryHeadsMatchReferenceForEveryHeadDim) {
  const HeadPackingPlannedFor whole_groups(1);
  const int64_t dims[][2] = {{1, 1},    {7, 7},   {32, 32},   {33, 33}, {64, 64}, {80, 80},  {96, 96},
                             {128, 128}, {200, 200}, {256, 256}, {64, 32}, {7, 33}, {128, 80}};
  for (DType dtype : kAllDtypes) {
    for (const auto& dim : dims) {
      for (int64_t q_len : {1, 3}) {
        AttentionCase c = GroupedQueries(dtype, 4, 2, q_len, 150, dim[0]);
        c.v_head_dim = dim[1];
        c.causal = CausalAlignment::kLowerRight;
        c.bias = Broadcast::kBatchKey;
        c.seed = static_cast<uint32_t>(dim[0] * 1000 + dim[1] + q_len);
        ExpectEveryPathMatchesReference(c);
      }
    }
  }
}

// Each packed row reads the bias and keep rows of its own head and query, whether they broadcast
// over heads (stride 0) or differ per head; 3 queries per head put the row effects (query 1) in the
// middle of each head's rows.
TEST(CpuFlashAttention, PackedQueryHeadsReadTheirOwnBiasAndKeepRows) {
  const HeadPackingPlannedFor whole_groups(1);
  for (DType dtype : kAllDtypes) {
    for (Broadcast pattern : kBroadcastPatterns) {
      AttentionCase biased = GroupedQueries(dtype, 4, 2, 3, 77, 32);
      biased.batch = 2;
      biased.bias = pattern;
      biased.seed = static_cast<uint32_t>(pattern);
      AttentionCase kept = biased;
      kept.bias = Broadcast::kAbsent;
      kept.keep = pattern;
      kept.masked_rows = MaskedRows::kNaN;
      ExpectEveryPathMatchesReference(biased);
      ExpectEveryPathMatchesReference(kept);
    }
  }
}

TEST(CpuFlashAttention, PackedQueryHeadsMaskRowsAndSoftcap) {
  const HeadPackingPlannedFor whole_groups(1);
  for (DType dtype : kAllDtypes) {
    for (MaskedRows policy : {MaskedRows::kZero, MaskedRows::kNaN}) {
      AttentionCase keep_none = GroupedQueries(dtype, 4, 2, 3, 50, 32);
      keep_none.keep = Broadcast::kFull;
      keep_none.row_effect = RowEffect::kKeepNone;
      AttentionCase bias_inf = GroupedQueries(dtype, 8, 1, 2, 50, 32);
      bias_inf.bias = Broadcast::kHeadQueryKey;
      bias_inf.row_effect = RowEffect::kBiasNegInf;
      // No keys: every row of every head is masked.
      AttentionCase no_keys = GroupedQueries(dtype, 4, 2, 1, 0, 32);
      for (AttentionCase c : {keep_none, bias_inf, no_keys}) {
        c.masked_rows = policy;
        ASSERT_GT(CountMaskedRows(c), 0u) << c.Describe();
        ExpectEveryPathMatchesReference(c);
      }
    }
    for (float softcap : {1.5f, 30.0f}) {
      AttentionCase c = GroupedQueries(dtype, 4, 1, 2, 90, 64);
      c.magnitude = 3.0;
      c.softcap = softcap;
      c.bias = Broadcast::kBatchQueryKey;
      c.causal = CausalAlignment::kLowerRight;
      ExpectEveryPathMatchesReference(c);
    }
  }
}

// Packing changes which work item and which register block a row is computed in, never its
// arithmetic: whole groups, groups split for 2 and 3 threads (parts of unequal size) and no
// packing give bit-identical output, items run shuffled on 4 threads.
TEST(CpuFlashAttention, PackedAndUnpackedWorkItemsGiveIdenticalOutput) {
  AttentionCase decode = GroupedQueries(DType::kFloat32, 4, 2, 1, 300, 128);
  decode.bias = Broadcast::kBatchKey;
  AttentionCase mqa = GroupedQueries(DType::kFloat16, 8, 1, 3, 150, 33);
  mqa.causal = CausalAlignment::kUpperLeft;
  mqa.keep = Broadcast::kFull;
  mqa.softcap = 20.0f;
  AttentionCase strided = GroupedQueries(DType::kBFloat16, 2, 2, 2, 70, 64);
  strided.batch = 2;
  strided.causal = CausalAlignment::kLowerRight;
  strided.bias = Broadcast::kHeadQueryKey;
  strided.layout = Layout::kSeqMajor;
  AttentionCase ragged = GroupedQueries(DType::kFloat32, 8, 1, 20, 90, 80);
  ragged.causal = CausalAlignment::kLowerRight;
  ragged.keep = Broadcast::kBatchQueryKey;
  ragged.row_effect = RowEffect::kKeepNone;
  ragged.masked_rows = MaskedRows::kNaN;
  ragged.layout = Layout::kPaddedRows;
  AttentionCase padding_mask = GroupedQueries(DType::kFloat16, 8, 1, 20, 150, 64);
  padding_mask.bias = Broadcast::kBatchKey;
  padding_mask.causal = CausalAlignment::kLowerRight;
  // Decoding reads K and V in place up to 8 heads a group, in blocks of 1, 2, 4 or 8 rows whichever the packing:
  // each score's arithmetic must not depend on the block. Padding tiles that may weigh nothing (tested per item's
  // rows) and a keep mask per head beside it; 16 heads a group take the transposed tiles.
  AttentionCase padded_decode = GroupedQueries(DType::kFloat16, 3, 2, 1, 300, 64);
  padded_decode.bias = Broadcast::kBatchKey;
  padded_decode.row_effect = RowEffect::kBiasMinus10000OnLastHalf;
  padded_decode.magnitude = 4.0;
  AttentionCase head_keep_decode = GroupedQueries(DType::kBFloat16, 8, 1, 1, 145, 128);
  head_keep_decode.keep = Broadcast::kFull;
  head_keep_decode.softcap = 20.0f;
  head_keep_decode.layout = Layout::kPaddedRows;
  AttentionCase wide_group_decode = GroupedQueries(DType::kFloat32, 16, 1, 1, 200, 64);
  wide_group_decode.bias = Broadcast::kBatchKey;
  // Scores near 100 beside a bias near 0: whether a tile may weigh nothing (its biases far enough below the row's
  // max) differs by head, so packed and unpacked items take that test, and its transposed tile, on different tiles.
  AttentionCase large_score_decode = GroupedQueries(DType::kFloat32, 4, 2, 1, 400, 64);
  large_score_decode.bias = Broadcast::kBatchKey;
  large_score_decode.magnitude = 6.5;
  // Key-major rows past whole strips go in one vector where they fit: unpacked, S = 16 in a narrow strip on AVX-512
  // and S = 8 on AVX2 (strips of 16 rows); packed with the group's other heads, whole strips, and narrow tails such
  // as 3 heads x 12 rows = 32 + 4 on AVX2.
  AttentionCase narrow_strip = GroupedQueries(DType::kFloat32, 4, 2, 16, 100, 128);
  narrow_strip.bias = Broadcast::kBatchKey;
  narrow_strip.causal = CausalAlignment::kLowerRight;
  AttentionCase narrow_tail = GroupedQueries(DType::kFloat32, 6, 1, 12, 45, 64);
  narrow_tail.keep = Broadcast::kBatchKey;
  narrow_tail.softcap = 30.0f;
  AttentionCase narrow_avx2 = GroupedQueries(DType::kFloat16, 6, 1, 8, 70, 80);
  narrow_avx2.bias = Broadcast::kBatchKey;
  narrow_avx2.row_effect = RowEffect::kBiasMinus10000OnLastHalf;
  for (KernelPath path : SupportedPaths()) {
    for (const AttentionCase& c :
         {decode, mqa, strided, ragged, padding_mask, padded_decode, head_keep_decode, wide_group_decode,
          large_score_decode, narrow_strip, narrow_tail, narrow_avx2}) {
      SCOPED_TRACE(std::string(Name(path)) + " path: " + c.Describe());
      std::vector<double> unpacked;
      {
        const HeadPackingPlannedFor plan(kNoPacking);
        AttentionTensors tensors(c);
        ShuffledThreadRunner runner(4, 3);
        unpacked = RunKernel(tensors, path, runner.runner());
        EXPECT_EQ(runner.last_total(), static_cast<size_t>(c.batch * c.q_heads));
        ExpectMatchesReference(tensors, unpacked);
      }
      for (int64_t threads : {1, 2, 3}) {
        const HeadPackingPlannedFor plan(threads);
        AttentionTensors tensors(c);
        ShuffledThreadRunner runner(4, 11);
        const std::vector<double> packed = RunKernel(tensors, path, runner.runner());
        EXPECT_LT(runner.last_total(), static_cast<size_t>(c.batch * c.q_heads)) << threads << " threads";
        EXPECT_GE(runner.last_total(), static_cast<size_t>(threads)) << threads << " threads";
        ASSERT_EQ(packed.size(), unpacked.size());
        EXPECT_EQ(std::memcmp(packed.data(), unpacked.data(), packed.size() * sizeof(double)), 0)
            << threads << " threads";
        EXPECT_TRUE(tensors.OutputGapsUntouched()) << threads << " threads";
      }
    }
  }
}

// Calls with many work items run them in chunks of consecutive items, each item prefetching the next (RunChunk): the
// chunks must cover every item once, in any order across threads, and give the output of one item per call. Heads
// of one kv head each (no packing, which the planned thread count also steers), key-major and row-major rows, a
// padding bias, causal, rows past whole strips, seq-major strides.
TEST(CpuFlashAttention, ChunkedWorkItemsGiveTheOutputOfSingleOnes) {
  AttentionCase key_major = Shape(DType::kFloat32, 40, 40, 64, 64);
  key_major.batch = 3;
  key_major.q_heads = key_major.kv_heads = 13;  // 39 items: chunks of 2 and a last of 1
  key_major.bias = Broadcast::kBatchKey;
  key_major.row_effect = RowEffect::kBiasMinus10000OnLastHalf;
  AttentionCase rows = Shape(DType::kFloat16, 7, 90, 80, 80);
  rows.batch = 5;
  rows.q_heads = rows.kv_heads = 7;
  rows.causal = CausalAlignment::kLowerRight;
  rows.layout = Layout::kSeqMajor;
  AttentionCase tiles = Shape(DType::kBFloat16, 150, 150, 32, 32);
  tiles.batch = 3;
  tiles.q_heads = tiles.kv_heads = 11;  // 66 items (two query tiles a head): chunks of 4 and a last of 2
  tiles.causal = CausalAlignment::kUpperLeft;
  for (KernelPath path : SupportedPaths()) {
    for (const AttentionCase& c : {key_major, rows, tiles}) {
      SCOPED_TRACE(std::string(Name(path)) + " path: " + c.Describe());
      std::vector<double> single;
      size_t items = 0;
      {
        const HeadPackingPlannedFor plan(kNoPacking);  // more threads planned than items: chunks of one item
        AttentionTensors tensors(c);
        ShuffledThreadRunner runner(3, 5);
        single = RunKernel(tensors, path, runner.runner());
        items = runner.last_total();
        EXPECT_GE(items, static_cast<size_t>(c.batch * c.q_heads));
        ExpectMatchesReference(tensors, single);
      }
      const HeadPackingPlannedFor plan(1);  // chunks of items / 16 items (rounded down)
      AttentionTensors tensors(c);
      ShuffledThreadRunner runner(3, 9);
      const std::vector<double> chunked = RunKernel(tensors, path, runner.runner());
      const size_t per_chunk = items / 16;
      EXPECT_EQ(runner.last_total(), (items + per_chunk - 1) / per_chunk);
      ASSERT_EQ(chunked.size(), single.size());
      EXPECT_EQ(std::memcmp(chunked.data(), single.data(), chunked.size() * sizeof(double)), 0);
      EXPECT_TRUE(tensors.OutputGapsUntouched());
    }
  }
}

// ---- Randomised sweep over every feature at once ----------------------------------------------------

// Decoding with grouped heads reads K and V in place for groups of up to 8 query heads (blocks of rows x keys that
// fill a vector of accumulators), the transposed tiles beyond: group sizes that fill a block and that leave rows
// of it empty, whole groups in one item and groups split between threads, every head dim with a compiled kernel and
// a generic one, padding at either end (tiles that may weigh nothing), keep, softcap, masked rows, layouts.
TEST(CpuFlashAttention, GroupedDecodingRowsMatchTheReference) {
  const int64_t groups[] = {2, 3, 4, 5, 8, 16};
  const int64_t head_dims[] = {32, 48, 64, 80, 128};
  const RowEffect effects[] = {RowEffect::kNone, RowEffect::kBiasMinus10000OnLastHalf, RowEffect::kBiasLowestOnFirstHalf,
                               RowEffect::kKeepNone};
  uint32_t seed = 1700;
  for (DType dtype : kAllDtypes) {
    for (int64_t group : groups) {
      for (int64_t head_dim : head_dims) {
        const HeadPackingPlannedFor plan(seed % 2 == 0 ? 1 : 64);
        AttentionCase c = GroupedQueries(dtype, group, seed % 3 == 0 ? 1 : 2, 1, 17 + (seed % 5) * 61, head_dim);
        c.seed = ++seed;
        c.row_effect = effects[seed % 4];
        if (c.row_effect == RowEffect::kKeepNone) {
          c.keep = Broadcast::kBatchKey;
        } else if (c.row_effect != RowEffect::kNone) {
          c.bias = Broadcast::kBatchKey;
        }
        c.causal = seed % 2 == 0 ? CausalAlignment::kLowerRight : CausalAlignment::kNone;
        if (seed % 3 == 1) c.keep = Broadcast::kFull;
        if (seed % 4 == 2) c.softcap = 20.0f;
        if (seed % 7 == 0) c.masked_rows = MaskedRows::kNaN;
        if (seed % 6 == 5) c.layout = Layout::kSeqMajor;
        if (seed % 5 == 3) c.magnitude = 6.0;
        ExpectEveryPathMatchesReference(c);
      }
    }
  }
}

template <class T, size_t N>
T Pick(std::mt19937& rng, const T (&options)[N]) {
  return options[std::uniform_int_distribution<size_t>(0, N - 1)(rng)];
}

AttentionCase RandomCase(std::mt19937& rng, uint32_t seed) {
  const int64_t head_dims[] = {1, 7, 16, 32, 33, 64, 80, 96, 128, 200, 256};
  const int64_t lengths[] = {1, 2, 3, 5, 17, 31, 61, 64, 65, 127, 130};
  const int64_t groups[] = {1, 2, 4};
  const int64_t counts[] = {1, 2};
  const float softcaps[] = {0.0f, 0.0f, 0.0f, 2.5f, 20.0f};
  const float scales[] = {0.0f, 0.0f, 0.0f, 1.0f, 0.25f};
  const CausalAlignment causals[] = {CausalAlignment::kNone, CausalAlignment::kUpperLeft, CausalAlignment::kLowerRight};
  const Broadcast patterns[] = {Broadcast::kAbsent,   Broadcast::kAbsent,        Broadcast::kFull,
                                Broadcast::kBatchKey, Broadcast::kBatchQueryKey, Broadcast::kHeadQueryKey,
                                Broadcast::kQueryKey, Broadcast::kScalar,        Broadcast::kQueryRow};
  const RowEffect effects[] = {RowEffect::kNone,
                               RowEffect::kNone,
                               RowEffect::kKeepNone,
                               RowEffect::kBiasNegInf,
                               RowEffect::kBiasMinus10000,
                               RowEffect::kBiasLowest,
                               RowEffect::kBiasLowestOnLastHalf,
                               RowEffect::kBiasMinus10000OnLastHalf};
  const Layout layouts[] = {Layout::kDense, Layout::kDense, Layout::kSeqMajor, Layout::kPaddedRows};

  AttentionCase c;
  c.dtype = Pick(rng, kAllDtypes);
  c.head_dim = Pick(rng, head_dims);
  c.v_head_dim = std::bernoulli_distribution(0.7)(rng) ? c.head_dim : Pick(rng, head_dims);
  c.batch = Pick(rng, counts);
  c.kv_heads = Pick(rng, counts);
  c.q_heads = c.kv_heads * Pick(rng, groups);
  c.q_len = Pick(rng, lengths);
  c.kv_len = Pick(rng, lengths);
  c.scale = Pick(rng, scales);
  c.softcap = Pick(rng, softcaps);
  c.causal = Pick(rng, causals);
  c.masked_rows = std::bernoulli_distribution(0.5)(rng) ? MaskedRows::kNaN : MaskedRows::kZero;
  c.bias = Pick(rng, patterns);
  c.keep = Pick(rng, patterns);
  c.row_effect = Pick(rng, effects);
  if (c.row_effect == RowEffect::kKeepNone && c.keep == Broadcast::kAbsent) c.keep = Broadcast::kFull;
  if (c.row_effect != RowEffect::kNone && c.row_effect != RowEffect::kKeepNone && c.bias == Broadcast::kAbsent) {
    c.bias = Broadcast::kBatchQueryKey;
  }
  c.layout = Pick(rng, layouts);
  c.seed = seed;
  return c;
}

TEST(CpuFlashAttention, RandomCasesMatchReference) {
  const uint32_t cases = kSanitized ? 40 : 300;
  std::mt19937 rng(2024);
  for (uint32_t n = 0; n < cases; ++n) {
    const AttentionCase c = RandomCase(rng, n + 1);
    ExpectEveryPathMatchesReference(c);
    if (::testing::Test::HasFailure()) break;  // the first failing case is the one to read
  }
}

}  // namespace
}  // namespace ortflash::testing

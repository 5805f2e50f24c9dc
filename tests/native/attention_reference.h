// Naive attention in double precision, straight from the op contract (DESIGN.md), and the check of
// a kernel's output against it. Materialises every row's scores; shares no code with the kernel.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attention_case.h"

namespace ortflash::testing {

// Unit roundoff (half an ulp, relative) of fp32 and of the output types.
constexpr double kFloat32Roundoff = 0x1p-24;

inline double OutputRoundoff(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return 0x1p-11;
    case DType::kBFloat16:
      return 0x1p-8;
    case DType::kFloat32:
      break;
  }
  return 0.0;
}

inline bool CausallyVisible(const AttentionCase& c, int64_t query, int64_t key) {
  switch (c.causal) {
    case CausalAlignment::kUpperLeft:
      return key <= query;
    case CausalAlignment::kLowerRight:
      return key <= query + c.kv_len - c.q_len;
    case CausalAlignment::kNone:
      break;
  }
  return true;
}

struct ReferenceAttention {
  std::vector<double> out;         // (B, Hq, Sq, Dv); 0 in masked rows
  std::vector<char> masked;        // (B, Hq, Sq): no visible key, or all visible scores -inf
  std::vector<double> fp32_error;  // (B, Hq, Sq): bound on the error of an fp32 computation of the row
  std::vector<double> score_gap;   // (B, Hq, Sq): best minus second-best visible score (inf if < 2)
};

// Error model of an fp32 evaluation of the contract, per row (u = 2^-24, V = max |v| over the
// visible keys). A score error e perturbs the output by at most 2·e·V. Score errors: the dot
// product, u·(2·sqrt(D) + 4)·scale·Σ|q·k| (rounding errors of a D-term sum grow like sqrt(D);
// 2x margin); the fp32 bias addition, u·|s + bias| unless the score vanishes against the bias in
// fp32 and in double alike (finfo.min); the softcap tanh, 8·u·softcap. Then the exponentials
// (a few ulp) and the Skv-term weighted sum: u·(16 + 4·sqrt(Skv))·V. Observed errors of the
// kernel reach 12% of this bound on rows biased by -10000 and about 2% on rows without bias.
inline ReferenceAttention ComputeReference(const AttentionTensors& t) {
  const AttentionCase& c = t.attention_case();
  const double scale = c.EffectiveScale();
  const double u = kFloat32Roundoff;
  const int64_t group = c.q_heads / c.kv_heads;
  const size_t rows = static_cast<size_t>(c.batch * c.q_heads * c.q_len);
  ReferenceAttention ref;
  ref.out.assign(rows * static_cast<size_t>(c.v_head_dim), 0.0);
  ref.masked.assign(rows, 0);
  ref.fp32_error.assign(rows, 0.0);
  ref.score_gap.assign(rows, std::numeric_limits<double>::infinity());

  std::vector<double> scores;
  std::vector<int64_t> keys;
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < c.q_heads; ++h) {
      const int64_t kv_head = h / group;
      for (int64_t i = 0; i < c.q_len; ++i) {
        const size_t row = static_cast<size_t>((b * c.q_heads + h) * c.q_len + i);
        const size_t full = row * static_cast<size_t>(c.kv_len);  // (b, h, i, 0) in bias()/keep()
        const double* q = t.query().data() + row * static_cast<size_t>(c.head_dim);
        scores.clear();
        keys.clear();
        double dot_magnitude = 0.0, bias_rounding = 0.0, value_max = 0.0;
        for (int64_t j = 0; j < c.kv_len; ++j) {
          if (!CausallyVisible(c, i, j)) continue;
          if (!t.keep().empty() && !t.keep()[full + static_cast<size_t>(j)]) continue;
          const size_t kv_row = static_cast<size_t>((b * c.kv_heads + kv_head) * c.kv_len + j);
          const double* k = t.key().data() + kv_row * static_cast<size_t>(c.head_dim);
          const double* v = t.value().data() + kv_row * static_cast<size_t>(c.v_head_dim);
          double dot = 0.0, abs_dot = 0.0;
          for (int64_t d = 0; d < c.head_dim; ++d) {
            dot += q[d] * k[d];
            abs_dot += std::fabs(q[d] * k[d]);
          }
          double s = scale * dot;
          if (c.softcap > 0.0f) s = c.softcap * std::tanh(s / c.softcap);
          if (!t.bias().empty()) {
            const double bias = t.bias()[full + static_cast<size_t>(j)];
            const double biased = s + bias;
            if (static_cast<float>(biased) != static_cast<float>(bias)) {
              bias_rounding = std::max(bias_rounding, u * std::fabs(biased));
            }
            s = biased;
          }
          scores.push_back(s);
          keys.push_back(j);
          dot_magnitude = std::max(dot_magnitude, scale * abs_dot);
          for (int64_t d = 0; d < c.v_head_dim; ++d) value_max = std::max(value_max, std::fabs(v[d]));
        }

        double best = -std::numeric_limits<double>::infinity();
        double second = best;
        for (double s : scores) {
          if (s > best) {
            second = best;
            best = s;
          } else if (s > second) {
            second = s;
          }
        }
        if (best == -std::numeric_limits<double>::infinity()) {
          ref.masked[row] = 1;
          continue;
        }
        ref.score_gap[row] = best - second;
        const double score_error = u * (2.0 * std::sqrt(static_cast<double>(c.head_dim)) + 4.0) * dot_magnitude +
                                   bias_rounding + 8.0 * u * c.softcap;
        ref.fp32_error[row] =
            value_max * (2.0 * score_error + u * (16.0 + 4.0 * std::sqrt(static_cast<double>(keys.size()))));

        double sum = 0.0;
        double* out = ref.out.data() + row * static_cast<size_t>(c.v_head_dim);
        for (size_t n = 0; n < keys.size(); ++n) {
          const double w = std::exp(scores[n] - best);  // NaN scores propagate, as in the naive graph
          sum += w;
          const size_t kv_row = static_cast<size_t>((b * c.kv_heads + kv_head) * c.kv_len + keys[n]);
          const double* v = t.value().data() + kv_row * static_cast<size_t>(c.v_head_dim);
          for (int64_t d = 0; d < c.v_head_dim; ++d) out[d] += w * v[d];
        }
        for (int64_t d = 0; d < c.v_head_dim; ++d) out[d] /= sum;
      }
    }
  }
  return ref;
}

// Absolute tolerance for one output element: the row's fp32 error, then rounding to the output
// type (half an ulp of the result, plus half the fp16 subnormal spacing near 0).
inline double Tolerance(DType dtype, double fp32_error, double expected) {
  const double roundoff = OutputRoundoff(dtype);
  const double subnormal = dtype == DType::kFloat16 ? 0x1p-25 : 0.0;
  return fp32_error * (1.0 + roundoff) + roundoff * std::fabs(expected) + subnormal;
}

// The kernel's output `out` (dense, as AttentionTensors::Output gives it) against the reference:
// masked rows exactly 0 or all NaN as the policy says, other rows within Tolerance, and no write
// outside the output tensor.
inline void ExpectMatchesReference(const AttentionTensors& t, const std::vector<double>& out) {
  const AttentionCase& c = t.attention_case();
  const ReferenceAttention ref = ComputeReference(t);
  ASSERT_EQ(out.size(), ref.out.size()) << c.Describe();
  const size_t dims = static_cast<size_t>(c.v_head_dim);
  size_t mismatches = 0;
  for (size_t e = 0; e < out.size(); ++e) {
    const size_t row = e / dims;
    const double expected = ref.out[e];
    bool ok;
    double tolerance = 0.0;
    if (ref.masked[row]) {
      ok = c.masked_rows == MaskedRows::kNaN ? std::isnan(out[e]) : out[e] == 0.0;
    } else if (std::isnan(expected)) {
      ok = std::isnan(out[e]);
    } else {
      tolerance = Tolerance(c.dtype, ref.fp32_error[row], expected);
      ok = std::fabs(out[e] - expected) <= tolerance;
    }
    if (!ok && ++mismatches <= 8) {
      const size_t q_len = static_cast<size_t>(c.q_len);
      ADD_FAILURE() << "out[row " << row << " = (b,h,i) (" << row / q_len / static_cast<size_t>(c.q_heads) << ","
                    << row / q_len % static_cast<size_t>(c.q_heads) << "," << row % q_len << "), d " << e % dims
                    << "] = " << out[e] << ", reference " << expected << (ref.masked[row] ? " (masked row)" : "")
                    << ", tolerance " << tolerance << "\n  case: " << c.Describe();
    }
  }
  EXPECT_EQ(mismatches, 0u) << c.Describe();
  EXPECT_TRUE(t.OutputGapsUntouched()) << "wrote outside the output tensor; case: " << c.Describe();
}

}  // namespace ortflash::testing

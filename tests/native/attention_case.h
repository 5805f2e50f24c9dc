// Test cases for the CPU attention kernel: what a case is, its tensors (logical values for the
// reference, and the kernel's memory in the case's layout with broadcast bias/keep storage), and
// parallel runners. Written from the op contract; shares no code with the kernel.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ortflash/attention_params.h"

namespace ortflash::testing {

// ---- Element types: ONNX Runtime's own conversions, independent of the kernel's --------------------

inline const char* DtypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "?";
}

inline double RoundToDtype(DType dtype, double x) {
  const float f = static_cast<float>(x);
  switch (dtype) {
    case DType::kFloat16:
      return Ort::Float16_t(f).ToFloat();
    case DType::kBFloat16:
      return Ort::BFloat16_t(f).ToFloat();
    case DType::kFloat32:
      break;
  }
  return f;
}

// finfo(T).min: the "large finite" masking value exporters use.
inline double LowestFinite(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return -65504.0;
    case DType::kBFloat16:
      return -3.3895313892515355e38;
    case DType::kFloat32:
      break;
  }
  return -3.4028234663852886e38;
}

// Memory for the elements of one tensor of a case's dtype.
class DtypeBuffer {
 public:
  DtypeBuffer(DType dtype, size_t elements, double fill) : dtype_(dtype) {
    if (dtype == DType::kFloat32) {
      f32_.assign(elements, static_cast<float>(fill));
    } else {
      u16_.assign(elements, 0);
      for (size_t i = 0; i < elements; ++i) Set(i, fill);
    }
  }

  void Set(size_t index, double value) {
    const float f = static_cast<float>(value);
    switch (dtype_) {
      case DType::kFloat32:
        f32_[index] = f;
        break;
      case DType::kFloat16:
        u16_[index] = Ort::Float16_t(f).val;
        break;
      case DType::kBFloat16:
        u16_[index] = Ort::BFloat16_t(f).val;
        break;
    }
  }

  double Get(size_t index) const {
    switch (dtype_) {
      case DType::kFloat16:
        return Ort::Float16_t::FromBits(u16_[index]).ToFloat();
      case DType::kBFloat16:
        return Ort::BFloat16_t::FromBits(u16_[index]).ToFloat();
      case DType::kFloat32:
        break;
    }
    return f32_[index];
  }

  void* data() { return dtype_ == DType::kFloat32 ? static_cast<void*>(f32_.data()) : u16_.data(); }
  // Null for an empty tensor, as ONNX Runtime may hand one over.
  void* data_or_null() { return size() == 0 ? nullptr : data(); }
  size_t size() const { return dtype_ == DType::kFloat32 ? f32_.size() : u16_.size(); }

 private:
  DType dtype_;
  std::vector<float> f32_;
  std::vector<uint16_t> u16_;
};

// ---- What a case is ----------------------------------------------------------------------------------

// How q/k/v/out sit in memory. The logical shape is always (B, H, S, D).
enum class Layout {
  kDense,       // BHSD, packed
  kSeqMajor,    // BSHD: strides {S*H*D, D, H*D}
  kPaddedRows,  // BHSD with gaps after every row and every head (filled with NaN)
};

// Which dims of (B, Hq, Sq, Skv) a bias or keep tensor has; the others broadcast (stride 0).
enum class Broadcast {
  kAbsent,
  kFull,           // (B, Hq, Sq, Skv)
  kBatchKey,       // (B, 1, 1, Skv): padding mask
  kBatchQueryKey,  // (B, 1, Sq, Skv)
  kHeadQueryKey,   // (1, Hq, Sq, Skv)
  kQueryKey,       // (Sq, Skv)
  kScalar,         // (1, 1, 1, 1)
  kQueryRow,       // (B, Hq, Sq, 1): broadcast along the keys
};

// Something done to every third query row (i % 3 == 1) of the bias or keep tensor, on all keys
// (or on the last half of the keys).
enum class RowEffect {
  kNone,
  kKeepNone,              // keep all false: masked rows
  kBiasNegInf,            // bias -inf: masked rows
  kBiasMinus10000,        // an ordinary large negative bias: a normal softmax
  kBiasLowest,            // finfo.min on every key: a (uniform) softmax, not a masked row
  kBiasLowestOnLastHalf,  // finfo.min on keys j >= Skv/2: a padding mask written as bias
  kBiasMinus10000OnLastHalf,  // -10000 on keys j >= Skv/2: a padding mask written as BERT writes it
  kBiasLowestAboveDiagonal,   // finfo.min on keys j > i of every row: a causal mask held in the bias
  kBiasMinus10000AboveDiagonal,  // -10000 on keys j > i of every row
  kBiasLowestOnFirstHalf,        // finfo.min on keys j < Skv/2: left padding written as bias
  kBiasMinus10000OnFirstHalf,    // -10000 on keys j < Skv/2
};

inline const char* Name(Layout x) {
  switch (x) {
    case Layout::kDense:
      return "dense";
    case Layout::kSeqMajor:
      return "BSHD";
    case Layout::kPaddedRows:
      return "padded-rows";
  }
  return "?";
}

inline const char* Name(Broadcast x) {
  switch (x) {
    case Broadcast::kAbsent:
      return "absent";
    case Broadcast::kFull:
      return "(B,H,Sq,Skv)";
    case Broadcast::kBatchKey:
      return "(B,1,1,Skv)";
    case Broadcast::kBatchQueryKey:
      return "(B,1,Sq,Skv)";
    case Broadcast::kHeadQueryKey:
      return "(1,H,Sq,Skv)";
    case Broadcast::kQueryKey:
      return "(Sq,Skv)";
    case Broadcast::kScalar:
      return "(1,1,1,1)";
    case Broadcast::kQueryRow:
      return "(B,H,Sq,1)";
  }
  return "?";
}

inline const char* Name(RowEffect x) {
  switch (x) {
    case RowEffect::kNone:
      return "none";
    case RowEffect::kKeepNone:
      return "keep-none";
    case RowEffect::kBiasNegInf:
      return "bias-inf";
    case RowEffect::kBiasMinus10000:
      return "bias-10000";
    case RowEffect::kBiasLowest:
      return "bias-finfo.min";
    case RowEffect::kBiasLowestOnLastHalf:
      return "bias-finfo.min-last-half";
    case RowEffect::kBiasMinus10000OnLastHalf:
      return "bias-10000-last-half";
    case RowEffect::kBiasLowestAboveDiagonal:
      return "bias-finfo.min-above-diagonal";
    case RowEffect::kBiasMinus10000AboveDiagonal:
      return "bias-10000-above-diagonal";
    case RowEffect::kBiasLowestOnFirstHalf:
      return "bias-finfo.min-first-half";
    case RowEffect::kBiasMinus10000OnFirstHalf:
      return "bias-10000-first-half";
  }
  return "?";
}

inline const char* Name(CausalAlignment x) {
  switch (x) {
    case CausalAlignment::kNone:
      return "none";
    case CausalAlignment::kUpperLeft:
      return "upper-left";
    case CausalAlignment::kLowerRight:
      return "lower-right";
  }
  return "?";
}

struct AttentionCase {
  DType dtype = DType::kFloat32;
  int64_t batch = 1;
  int64_t q_heads = 1;
  int64_t kv_heads = 1;
  int64_t q_len = 1;
  int64_t kv_len = 1;
  int64_t head_dim = 16;
  int64_t v_head_dim = 16;
  float scale = 0.0f;  // 0: 1/sqrt(head_dim)
  float softcap = 0.0f;
  CausalAlignment causal = CausalAlignment::kNone;
  MaskedRows masked_rows = MaskedRows::kZero;
  Broadcast bias = Broadcast::kAbsent;
  Broadcast keep = Broadcast::kAbsent;
  RowEffect row_effect = RowEffect::kNone;
  Layout layout = Layout::kDense;
  double magnitude = 1.0;  // standard deviation of q and k
  uint32_t seed = 1;

  float EffectiveScale() const {
    if (scale != 0.0f) return scale;
    return head_dim > 0 ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim))) : 1.0f;
  }

  std::string Describe() const {
    std::ostringstream s;
    s << DtypeName(dtype) << " B=" << batch << " Hq=" << q_heads << " Hkv=" << kv_heads << " Sq=" << q_len
      << " Skv=" << kv_len << " D=" << head_dim << " Dv=" << v_head_dim << " scale=" << EffectiveScale()
      << " softcap=" << softcap << " causal=" << Name(causal)
      << " masked_rows=" << (masked_rows == MaskedRows::kNaN ? "nan" : "zero") << " bias=" << Name(bias)
      << " keep=" << Name(keep) << " row_effect=" << Name(row_effect) << " layout=" << Name(layout)
      << " magnitude=" << magnitude << " seed=" << seed;
    return s.str();
  }
};

inline bool IsEffectRow(int64_t query) { return query % 3 == 1; }

// ---- A case's tensors --------------------------------------------------------------------------------

// Dense row-major index into a logical 4-D shape.
inline size_t Index4(const int64_t (&dims)[4], int64_t a, int64_t b, int64_t c, int64_t d) {
  return static_cast<size_t>(((a * dims[1] + b) * dims[2] + c) * dims[3] + d);
}

// q/k/v/out: strides {batch, head, seq} for the layout, and the elements the memory needs.
struct SequenceMemory {
  int64_t stride[3];
  size_t elements;
};

inline SequenceMemory MemoryFor(Layout layout, int64_t batch, int64_t heads, int64_t len, int64_t dim) {
  constexpr int64_t kRowGap = 3;
  constexpr int64_t kHeadGap = 5;
  SequenceMemory m{};
  switch (layout) {
    case Layout::kDense:
      m.stride[2] = dim;
      m.stride[1] = len * dim;
      m.stride[0] = heads * len * dim;
      break;
    case Layout::kSeqMajor:
      m.stride[2] = heads * dim;
      m.stride[1] = dim;
      m.stride[0] = len * heads * dim;
      break;
    case Layout::kPaddedRows:
      m.stride[2] = dim + kRowGap;
      m.stride[1] = len * m.stride[2] + kHeadGap;
      m.stride[0] = heads * m.stride[1];
      break;
  }
  m.elements = static_cast<size_t>(batch * m.stride[0]);
  return m;
}

// The stored dims of a broadcast bias/keep tensor (1 where it broadcasts).
inline void StoredDims(Broadcast pattern, const AttentionCase& c, int64_t (&dims)[4]) {
  const int64_t b = c.batch, h = c.q_heads, q = c.q_len, k = c.kv_len;
  const int64_t table[][4] = {{0, 0, 0, 0}, {b, h, q, k}, {b, 1, 1, k}, {b, 1, q, k},
                              {1, h, q, k}, {1, 1, q, k}, {1, 1, 1, 1}, {b, h, q, 1}};
  for (int i = 0; i < 4; ++i) dims[i] = table[static_cast<int>(pattern)][i];
}

// Logical inputs (what the reference reads) and the kernel's view of them.
class AttentionTensors {
 public:
  explicit AttentionTensors(const AttentionCase& c)
      : case_(c),
        q_memory_(MemoryFor(c.layout, c.batch, c.q_heads, c.q_len, c.head_dim)),
        k_memory_(MemoryFor(c.layout, c.batch, c.kv_heads, c.kv_len, c.head_dim)),
        v_memory_(MemoryFor(c.layout, c.batch, c.kv_heads, c.kv_len, c.v_head_dim)),
        out_memory_(MemoryFor(c.layout, c.batch, c.q_heads, c.q_len, c.v_head_dim)),
        q_(c.dtype, q_memory_.elements, std::nan("")),
        k_(c.dtype, k_memory_.elements, std::nan("")),
        v_(c.dtype, v_memory_.elements, std::nan("")),
        out_(c.dtype, out_memory_.elements, kOutputSentinel),
        bias_(c.dtype, 0, 0.0) {
    std::mt19937 rng(c.seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    query_ = FillSequence(q_, q_memory_, c.q_heads, c.q_len, c.head_dim, c.magnitude, rng, normal);
    key_ = FillSequence(k_, k_memory_, c.kv_heads, c.kv_len, c.head_dim, c.magnitude, rng, normal);
    value_ = FillSequence(v_, v_memory_, c.kv_heads, c.kv_len, c.v_head_dim, 1.0, rng, normal);
    if (c.bias != Broadcast::kAbsent) FillBias(rng, normal);
    if (c.keep != Broadcast::kAbsent) FillKeep(rng);
  }

  static constexpr double kOutputSentinel = 7.0;

  // Pointers into this object's memory; empty tensors are passed as null.
  AttentionParams Params() {
    AttentionParams p;
    p.dtype = case_.dtype;
    p.q = q_.data_or_null();
    p.k = k_.data_or_null();
    p.v = v_.data_or_null();
    p.out = out_.data_or_null();
    p.bias = case_.bias == Broadcast::kAbsent ? nullptr : bias_.data();
    p.keep = case_.keep == Broadcast::kAbsent ? nullptr : keep_.get();
    p.batch = case_.batch;
    p.q_heads = case_.q_heads;
    p.kv_heads = case_.kv_heads;
    p.q_len = case_.q_len;
    p.kv_len = case_.kv_len;
    p.head_dim = case_.head_dim;
    p.v_head_dim = case_.v_head_dim;
    std::copy(q_memory_.stride, q_memory_.stride + 3, p.q_stride);
    std::copy(k_memory_.stride, k_memory_.stride + 3, p.k_stride);
    std::copy(v_memory_.stride, v_memory_.stride + 3, p.v_stride);
    std::copy(out_memory_.stride, out_memory_.stride + 3, p.out_stride);
    std::copy(bias_stride_, bias_stride_ + 4, p.bias_stride);
    std::copy(keep_stride_, keep_stride_ + 4, p.keep_stride);
    p.scale = case_.EffectiveScale();
    p.softcap = case_.softcap;
    p.causal = case_.causal;
    p.masked_rows = case_.masked_rows;
    return p;
  }

  const AttentionCase& attention_case() const { return case_; }

  // Logical values, dense (B, H, S, D); bias and keep expanded to (B, Hq, Sq, Skv) (empty if absent).
  const std::vector<double>& query() const { return query_; }
  const std::vector<double>& key() const { return key_; }
  const std::vector<double>& value() const { return value_; }
  const std::vector<double>& bias() const { return bias_full_; }
  const std::vector<char>& keep() const { return keep_full_; }

  // The kernel's output read back through the layout, dense (B, Hq, Sq, Dv).
  std::vector<double> Output() const {
    std::vector<double> out;
    ForEachElement(out_memory_, case_.q_heads, case_.q_len, case_.v_head_dim,
                   [&](size_t offset) { out.push_back(out_.Get(offset)); });
    return out;
  }

  // Whether every element of the output memory outside the logical tensor is still the sentinel.
  bool OutputGapsUntouched() const {
    std::vector<char> logical(out_memory_.elements, 0);
    ForEachElement(out_memory_, case_.q_heads, case_.q_len, case_.v_head_dim,
                   [&](size_t offset) { logical[offset] = 1; });
    for (size_t i = 0; i < logical.size(); ++i) {
      if (!logical[i] && out_.Get(i) != kOutputSentinel) return false;
    }
    return true;
  }

  // Overwrite every stored keep element with keep_at(b, h, i, j) (stored coordinates, 0 along broadcast dims), in
  // the kernel's memory and in the expanded logical values.
  template <class Fn>
  void SetKeep(Fn keep_at) {
    int64_t dims[4];
    StoredDims(case_.keep, case_, dims);
    for (int64_t b = 0; b < dims[0]; ++b) {
      for (int64_t h = 0; h < dims[1]; ++h) {
        for (int64_t i = 0; i < dims[2]; ++i) {
          for (int64_t j = 0; j < dims[3]; ++j) keep_[Index4(dims, b, h, i, j)] = keep_at(b, h, i, j);
        }
      }
    }
    keep_full_.clear();
    ExpandToFull(dims, [&](size_t index) { keep_full_.push_back(keep_[index] ? 1 : 0); });
  }

  // Overwrite every stored bias element with bias_at(b, h, i, j, x), x its value so far (stored coordinates, 0 along
  // broadcast dims), in the kernel's memory and in the expanded logical values.
  template <class Fn>
  void SetBias(Fn bias_at) {
    int64_t dims[4];
    StoredDims(case_.bias, case_, dims);
    std::vector<double> stored(static_cast<size_t>(dims[0] * dims[1] * dims[2] * dims[3]));
    for (int64_t b = 0; b < dims[0]; ++b) {
      for (int64_t h = 0; h < dims[1]; ++h) {
        for (int64_t i = 0; i < dims[2]; ++i) {
          for (int64_t j = 0; j < dims[3]; ++j) {
            const size_t index = Index4(dims, b, h, i, j);
            const double x = bias_at(b, h, i, j, bias_.Get(index));
            bias_.Set(index, x);
            stored[index] = RoundToDtype(case_.dtype, x);
          }
        }
      }
    }
    bias_full_.clear();
    ExpandToFull(dims, [&](size_t index) { bias_full_.push_back(stored[index]); });
  }

  // Overwrite the bias at (query, key) of a (Sq, Skv) bias (Broadcast::kQueryKey), in the kernel's memory and in the
  // expanded logical values.
  void SetQueryKeyBias(int64_t query, int64_t key, double x) {
    bias_.Set(static_cast<size_t>(query * case_.kv_len + key), x);
    const size_t per_head = static_cast<size_t>(case_.q_len * case_.kv_len);
    for (size_t head = 0; head < bias_full_.size() / per_head; ++head) {
      bias_full_[head * per_head + static_cast<size_t>(query * case_.kv_len + key)] = RoundToDtype(case_.dtype, x);
    }
  }

  // Overwrite key / value element (b, h, j, d), in the logical values and in the kernel's memory.
  void SetKey(int64_t b, int64_t h, int64_t j, int64_t d, double x) {
    key_[static_cast<size_t>(((b * case_.kv_heads + h) * case_.kv_len + j) * case_.head_dim + d)] =
        RoundToDtype(case_.dtype, x);
    k_.Set(static_cast<size_t>(b * k_memory_.stride[0] + h * k_memory_.stride[1] + j * k_memory_.stride[2] + d), x);
  }
  void SetValue(int64_t b, int64_t h, int64_t j, int64_t d, double x) {
    value_[static_cast<size_t>(((b * case_.kv_heads + h) * case_.kv_len + j) * case_.v_head_dim + d)] =
        RoundToDtype(case_.dtype, x);
    v_.Set(static_cast<size_t>(b * v_memory_.stride[0] + h * v_memory_.stride[1] + j * v_memory_.stride[2] + d), x);
  }

 private:
  template <class Fn>
  void ForEachElement(const SequenceMemory& m, int64_t heads, int64_t len, int64_t dim, Fn fn) const {
    for (int64_t b = 0; b < case_.batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t s = 0; s < len; ++s) {
          for (int64_t d = 0; d < dim; ++d) {
            fn(static_cast<size_t>(b * m.stride[0] + h * m.stride[1] + s * m.stride[2] + d));
          }
        }
      }
    }
  }

  std::vector<double> FillSequence(DtypeBuffer& memory, const SequenceMemory& m, int64_t heads, int64_t len,
                                   int64_t dim, double magnitude, std::mt19937& rng,
                                   std::normal_distribution<double>& normal) const {
    std::vector<double> logical;
    ForEachElement(m, heads, len, dim, [&](size_t offset) {
      const double x = RoundToDtype(case_.dtype, magnitude * normal(rng));
      memory.Set(offset, x);
      logical.push_back(x);
    });
    return logical;
  }

  // Whether a stored bias/keep element at (query, key) is one the row effect applies to. A tensor
  // without that dim stands for every query (key), so the effect covers all of them.
  bool EffectApplies(const int64_t (&dims)[4], int64_t query, int64_t key) const {
    if (case_.row_effect == RowEffect::kBiasLowestAboveDiagonal || case_.row_effect == RowEffect::kBiasMinus10000AboveDiagonal) {
      return dims[2] > 1 && key > query;
    }
    if (dims[2] > 1 && !IsEffectRow(query)) return false;
    if (case_.row_effect == RowEffect::kBiasLowestOnFirstHalf || case_.row_effect == RowEffect::kBiasMinus10000OnFirstHalf) {
      return dims[3] == 1 || key < case_.kv_len / 2;
    }
    if (case_.row_effect == RowEffect::kBiasLowestOnLastHalf || case_.row_effect == RowEffect::kBiasMinus10000OnLastHalf) {
      return dims[3] == 1 || key >= case_.kv_len / 2;
    }
    return true;
  }

  double EffectBias(double random) const {
    switch (case_.row_effect) {
      case RowEffect::kBiasNegInf:
        return -std::numeric_limits<double>::infinity();
      case RowEffect::kBiasMinus10000:
      case RowEffect::kBiasMinus10000OnLastHalf:
      case RowEffect::kBiasMinus10000AboveDiagonal:
      case RowEffect::kBiasMinus10000OnFirstHalf:
        return -10000.0;
      case RowEffect::kBiasLowest:
      case RowEffect::kBiasLowestOnLastHalf:
      case RowEffect::kBiasLowestAboveDiagonal:
      case RowEffect::kBiasLowestOnFirstHalf:
        return LowestFinite(case_.dtype);
      case RowEffect::kNone:
      case RowEffect::kKeepNone:
        break;
    }
    return random;
  }

  // Dense strides over the stored dims, 0 where a dim broadcasts.
  static void BroadcastStrides(const int64_t (&dims)[4], int64_t (&stride)[4]) {
    int64_t next = 1;
    for (int i = 3; i >= 0; --i) {
      stride[i] = dims[i] == 1 ? 0 : next;
      next *= dims[i];
    }
  }

  template <class Fn>
  void ExpandToFull(const int64_t (&dims)[4], Fn stored_index_to_value) {
    const int64_t full[4] = {case_.batch, case_.q_heads, case_.q_len, case_.kv_len};
    for (int64_t b = 0; b < full[0]; ++b) {
      for (int64_t h = 0; h < full[1]; ++h) {
        for (int64_t i = 0; i < full[2]; ++i) {
          for (int64_t j = 0; j < full[3]; ++j) {
            stored_index_to_value(
                Index4(dims, dims[0] == 1 ? 0 : b, dims[1] == 1 ? 0 : h, dims[2] == 1 ? 0 : i, dims[3] == 1 ? 0 : j));
          }
        }
      }
    }
  }

  void FillBias(std::mt19937& rng, std::normal_distribution<double>& normal) {
    int64_t dims[4];
    StoredDims(case_.bias, case_, dims);
    const size_t elements = static_cast<size_t>(dims[0] * dims[1] * dims[2] * dims[3]);
    bias_ = DtypeBuffer(case_.dtype, elements, 0.0);
    std::vector<double> stored(elements);
    const bool bias_effect = case_.row_effect != RowEffect::kNone && case_.row_effect != RowEffect::kKeepNone;
    for (int64_t b = 0; b < dims[0]; ++b) {
      for (int64_t h = 0; h < dims[1]; ++h) {
        for (int64_t i = 0; i < dims[2]; ++i) {
          for (int64_t j = 0; j < dims[3]; ++j) {
            const double random = 1.5 * normal(rng);
            const double x = bias_effect && EffectApplies(dims, i, j) ? EffectBias(random) : random;
            const size_t index = Index4(dims, b, h, i, j);
            stored[index] = RoundToDtype(case_.dtype, x);
            bias_.Set(index, x);
          }
        }
      }
    }
    BroadcastStrides(dims, bias_stride_);
    ExpandToFull(dims, [&](size_t index) { bias_full_.push_back(stored[index]); });
  }

  void FillKeep(std::mt19937& rng) {
    int64_t dims[4];
    StoredDims(case_.keep, case_, dims);
    const size_t elements = static_cast<size_t>(dims[0] * dims[1] * dims[2] * dims[3]);
    keep_ = std::make_unique<bool[]>(elements == 0 ? 1 : elements);
    std::bernoulli_distribution kept(0.8);
    for (int64_t b = 0; b < dims[0]; ++b) {
      for (int64_t h = 0; h < dims[1]; ++h) {
        for (int64_t i = 0; i < dims[2]; ++i) {
          for (int64_t j = 0; j < dims[3]; ++j) {
            const bool random = kept(rng);
            const bool hide = case_.row_effect == RowEffect::kKeepNone && EffectApplies(dims, i, j);
            keep_[Index4(dims, b, h, i, j)] = random && !hide;
          }
        }
      }
    }
    BroadcastStrides(dims, keep_stride_);
    ExpandToFull(dims, [&](size_t index) { keep_full_.push_back(keep_[index] ? 1 : 0); });
  }

  AttentionCase case_;
  SequenceMemory q_memory_, k_memory_, v_memory_, out_memory_;
  DtypeBuffer q_, k_, v_, out_, bias_;
  std::unique_ptr<bool[]> keep_;
  int64_t bias_stride_[4] = {0, 0, 0, 0};
  int64_t keep_stride_[4] = {0, 0, 0, 0};
  std::vector<double> query_, key_, value_, bias_full_;
  std::vector<char> keep_full_;
};

// ---- Parallel runners --------------------------------------------------------------------------------

// Runs the work items in a shuffled order on several threads, to show that items are independent.
class ShuffledThreadRunner {
 public:
  ShuffledThreadRunner(int threads, uint32_t seed) : threads_(threads), seed_(seed) {}

  ParallelRunner runner() {
    ParallelRunner r;
    r.parallel_for = &ParallelFor;
    r.self = this;
    return r;
  }

  size_t calls() const { return calls_; }
  // How many work items the last call ran.
  size_t last_total() const { return last_total_; }

 private:
  static void ParallelFor(void* self, void (*fn)(void*, size_t), size_t total, void* data) {
    auto& runner = *static_cast<ShuffledThreadRunner*>(self);
    ++runner.calls_;
    runner.last_total_ = total;
    std::vector<size_t> order(total);
    for (size_t i = 0; i < total; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), std::mt19937(runner.seed_));
    std::atomic<size_t> next{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < runner.threads_; ++t) {
      workers.emplace_back([&] {
        for (size_t k = next++; k < total; k = next++) fn(data, order[k]);
      });
    }
    for (auto& worker : workers) worker.join();
  }

  int threads_;
  uint32_t seed_;
  size_t calls_ = 0;
  size_t last_total_ = 0;
};

}  // namespace ortflash::testing

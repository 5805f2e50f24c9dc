// The CUDA FlashAttention kernels against a naive double-precision host reference, over random
// shapes that cover the whole op contract (DESIGN.md). Every test skips, visibly, without a GPU.
//
// Tolerances, per output element, with vmax = max |V| of the case:
//   float32   1e-4 * vmax + 1e-4 * |ref|   (fp32 scores and accumulation, exp2f)
//   float16   2e-3 * vmax + 2e-3 * |ref|   (P rounded to fp16 for P·V: 2^-11 relative; output rounding)
//   bfloat16  1.2e-2 * vmax + 8e-3 * |ref| (P rounded to bf16: 2^-8 relative; output rounding)
// Inputs are generated in the tensor's own type and the reference reads those same values, so input
// rounding is not part of the error.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ortflash/attention_params.h"
#include "ortflash/flash_attention_cuda.h"

namespace {

using ortflash::AttentionParams;
using ortflash::CausalAlignment;
using ortflash::DType;
using ortflash::MaskedRows;

// ---- host element types (independent of the CUDA headers' conversions) ----------------------

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if (std::isnan(f)) return 0x7fc0;
  const uint32_t rounding = 0x7fff + ((u >> 16) & 1);  // round to nearest even
  return static_cast<uint16_t>((u + rounding) >> 16);
}

float bf16_to_float(uint16_t h) { return bits_float(uint32_t(h) << 16); }

float fp16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const int exponent = (h >> 10) & 0x1f;
  const uint32_t mantissa = h & 0x3ff;
  if (exponent == 0x1f) return bits_float(sign | 0x7f800000 | (mantissa << 13));
  if (exponent == 0) {
    const float value = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -value : value;
  }
  return bits_float(sign | (uint32_t(exponent - 15 + 127) << 23) | (mantissa << 13));
}

uint16_t float_to_fp16(float f) {
  if (std::isnan(f)) return 0x7e00;
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(f));
  if (a >= 65520.0) return sign | 0x7c00;  // rounds to infinity
  if (a < std::ldexp(1.0, -25)) return sign;
  int exponent;
  std::frexp(a, &exponent);  // a = m * 2^exponent, m in [0.5, 1)
  // Spacing of fp16 values around a: 2^(exponent - 11) for normals, 2^-24 for subnormals.
  const int spacing_exp = std::max(exponent - 11, -24);
  const double units = std::nearbyint(std::ldexp(a, -spacing_exp));  // round half to even
  const double rounded = std::ldexp(units, spacing_exp);
  if (rounded >= 65520.0) return sign | 0x7c00;
  if (rounded < std::ldexp(1.0, -14)) return sign | static_cast<uint16_t>(units);  // subnormal
  int e2;
  const double m = std::frexp(rounded, &e2);  // rounded = m * 2^e2
  const uint16_t biased = static_cast<uint16_t>(e2 - 1 + 15);
  const uint16_t mant = static_cast<uint16_t>(std::lround((m * 2.0 - 1.0) * 1024.0));
  return sign | static_cast<uint16_t>(biased << 10) | mant;
}

size_t element_size(DType t) { return t == DType::kFloat32 ? 4 : 2; }

// finfo(T).min: what exporters write into additive masks.
float lowest_finite(DType t) {
  switch (t) {
    case DType::kFloat32: return std::numeric_limits<float>::lowest();
    case DType::kFloat16: return -65504.0f;
    case DType::kBFloat16: return bf16_to_float(0xff7f);
  }
  return 0.0f;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
  }
  return "?";
}

// A host tensor of the kernel's element type, stored as raw bytes.
struct HostTensor {
  DType dtype = DType::kFloat32;
  std::vector<unsigned char> bytes;

  HostTensor(DType t, size_t count) : dtype(t), bytes(count * element_size(t)) {}
  size_t size() const { return bytes.size() / element_size(dtype); }

  void set(size_t i, float value) {
    if (dtype == DType::kFloat32) {
      std::memcpy(&bytes[i * 4], &value, 4);
    } else {
      const uint16_t h = dtype == DType::kFloat16 ? float_to_fp16(value) : float_to_bf16(value);
      std::memcpy(&bytes[i * 2], &h, 2);
    }
  }
  double get(size_t i) const {
    if (dtype == DType::kFloat32) {
      float f;
      std::memcpy(&f, &bytes[i * 4], 4);
      return f;
    }
    uint16_t h;
    std::memcpy(&h, &bytes[i * 2], 2);
    return dtype == DType::kFloat16 ? fp16_to_float(h) : bf16_to_float(h);
  }
};

// ---- device memory ---------------------------------------------------------------------------

bool has_cuda_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

#define SKIP_WITHOUT_CUDA_DEVICE() \
  if (!has_cuda_device()) GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount reports none)"

#define ASSERT_CUDA(call)                                                               \
  do {                                                                                  \
    const cudaError_t cuda_status = (call);                                             \
    ASSERT_EQ(cuda_status, cudaSuccess) << #call << ": " << cudaGetErrorString(cuda_status); \
  } while (0)

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes > 0 && cudaMalloc(&ptr_, bytes) != cudaSuccess) ptr_ = nullptr;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Stream-ordered scratch for split-KV, as the op's adapter lends it from ONNX Runtime's allocator.
struct StreamScratch {
  cudaStream_t stream;
  static void* allocate(void* self, size_t bytes) {
    void* ptr = nullptr;
    return cudaMallocAsync(&ptr, bytes, static_cast<StreamScratch*>(self)->stream) == cudaSuccess ? ptr : nullptr;
  }
  static void release(void* self, void* ptr) { cudaFreeAsync(ptr, static_cast<StreamScratch*>(self)->stream); }
};

// ---- cases -----------------------------------------------------------------------------------

enum class Layout {
  kDense,        // BHSD, packed
  kSeqMajor,     // BSHD memory (heads interleaved per position), as many exporters produce
  kPaddedRows,   // rows padded to a multiple of 8 elements plus 8 (still 16-byte aligned)
  kOddStrides,   // rows padded by one element: not 16-byte aligned, tiled SIMT kernel
  kOffsetBase,   // base pointers one element past an aligned address: tiled SIMT kernel
};

// Broadcast shapes of bias/keep over (B, H, Sq, Skv).
enum class Broadcast { kNone, kFull, kPerKey, kPerHead, kPerQuery, kScalar, kPerBatchRows };

struct Case {
  DType dtype = DType::kFloat16;
  int64_t batch = 1, q_heads = 1, kv_heads = 1, q_len = 1, kv_len = 1, head_dim = 64, v_head_dim = 64;
  CausalAlignment causal = CausalAlignment::kNone;
  float softcap = 0.0f;
  MaskedRows masked_rows = MaskedRows::kZero;
  Broadcast bias = Broadcast::kNone;
  Broadcast keep = Broadcast::kNone;
  Layout layout = Layout::kDense;
  float magnitude = 1.0f;        // inputs uniform in [-magnitude, magnitude]
  float keep_probability = 0.8f;
  bool scale_default = true;     // 1/sqrt(D); else a custom scale that keeps scores O(10)
  float scale_override = NAN;    // when not NaN: this scale, whatever scale_default says
  int masked_row_every = 0;      // > 0: keep hides every key from every n-th query row
  bool infinite_bias_row = false;  // bias = -inf over one whole query row
  bool lowest_bias = false;        // bias = the type's lowest finite value: one whole row, ~30% of other keys
  bool lend_scratch = true;        // false: no scratch allocator, so no split-KV
  int64_t mask_pitch = 0;          // > 0: bias/keep rows (per key) this many elements apart instead of kv_len
  // Key padding (with a per-key bias and/or keep): odd batch entries have `padded_keys` keys of padding, their
  // last ones (or first, left_padding), at padding_bias (NaN: the type's lowest finite value) and keep false.
  int64_t padded_keys = 0;
  bool left_padding = false;
  float padding_bias = NAN;
  bool padding_outscores_bias = false;  // every query element and the padding's K rows at +magnitude
  bool infinite_padding_value = false;  // V[key][0] at +inf for the padded key farthest from the real ones
  bool positive_values = false;  // V in [0, magnitude]: sums over the keys only grow (truncated sums err most)
  bool causal_bias = false;  // bias at padding_bias's value above the diagonal (key j > query i): a causal mask in the bias
  int float32_tensor_cores = -1;  // CudaOptions (a session's config entry); -1: the environment decides
  bool graph = false;  // captured into a CUDA graph (global mode, as ONNX Runtime captures) and replayed twice

  bool is_padding(int64_t b, int64_t j) const {
    if (padded_keys == 0 || b % 2 == 0) return false;
    return left_padding ? j < padded_keys : j >= kv_len - padded_keys;
  }

  std::string describe() const {
    std::ostringstream s;
    s << dtype_name(dtype) << " B=" << batch << " Hq=" << q_heads << " Hkv=" << kv_heads << " Sq=" << q_len
      << " Skv=" << kv_len << " D=" << head_dim << " Dv=" << v_head_dim << " causal=" << static_cast<int>(causal)
      << " softcap=" << softcap << " masked_rows=" << (masked_rows == MaskedRows::kNaN ? "nan" : "zero")
      << " bias=" << static_cast<int>(bias) << " keep=" << static_cast<int>(keep)
      << " layout=" << static_cast<int>(layout) << " magnitude=" << magnitude << " scratch=" << lend_scratch
      << " lowest_bias=" << lowest_bias << " mask_pitch=" << mask_pitch << " padded_keys=" << padded_keys
      << (left_padding ? " left" : "") << " padding_bias=" << padding_bias
      << (padding_outscores_bias ? " outscoring" : "") << (infinite_padding_value ? " inf_value" : "")
      << (positive_values ? " positive_values" : "")
      << (causal_bias ? " causal_bias" : "") << (graph ? " graph" : "") << " scale=" << (std::isnan(scale_override) ? std::string("auto")
                                                                                  : std::to_string(scale_override));
    return s.str();
  }
};

// Element strides {b, h, s} and the element count for one of q/k/v/out under a layout.
struct Placement {
  int64_t stride[3];
  int64_t offset;  // elements before the tensor's first element
  size_t count;    // elements to allocate
};

Placement place(Layout layout, int64_t batch, int64_t heads, int64_t len, int64_t dim) {
  Placement p{};
  int64_t row = dim;
  if (layout == Layout::kPaddedRows) row = (dim + 7) / 8 * 8 + 8;
  if (layout == Layout::kOddStrides) row = dim + 1;
  if (layout == Layout::kSeqMajor) {
    p.stride[2] = heads * dim;
    p.stride[1] = dim;
    p.stride[0] = len * heads * dim;
  } else {
    p.stride[2] = row;
    p.stride[1] = len * row;
    p.stride[0] = heads * len * row;
  }
  p.offset = layout == Layout::kOffsetBase ? 1 : 0;
  p.count = static_cast<size_t>(p.offset + batch * p.stride[0]) + 1;
  return p;
}

int64_t offset_of(const Placement& p, int64_t b, int64_t h, int64_t s) {
  return p.offset + b * p.stride[0] + h * p.stride[1] + s * p.stride[2];
}

void broadcast_strides(Broadcast kind, const Case& c, int64_t (&stride)[4], size_t& count) {
  const int64_t H = c.q_heads, Sq = c.q_len, Skv = c.mask_pitch > 0 ? c.mask_pitch : c.kv_len;
  const int64_t none[4] = {0, 0, 0, 0};
  std::copy(none, none + 4, stride);
  count = 1;
  switch (kind) {
    case Broadcast::kNone:
    case Broadcast::kScalar: break;
    case Broadcast::kFull:
      stride[3] = 1, stride[2] = Skv, stride[1] = Sq * Skv, stride[0] = H * Sq * Skv;
      count = static_cast<size_t>(c.batch * H * Sq * Skv);
      break;
    case Broadcast::kPerKey:  // (B, 1, 1, Skv): key padding
      stride[3] = 1, stride[0] = Skv;
      count = static_cast<size_t>(c.batch * Skv);
      break;
    case Broadcast::kPerHead:  // (1, H, Sq, Skv)
      stride[3] = 1, stride[2] = Skv, stride[1] = Sq * Skv;
      count = static_cast<size_t>(H * Sq * Skv);
      break;
    case Broadcast::kPerQuery:  // (B, H, Sq, 1)
      stride[2] = 1, stride[1] = Sq, stride[0] = H * Sq;
      count = static_cast<size_t>(c.batch * H * Sq);
      break;
    case Broadcast::kPerBatchRows:  // (B, 1, Sq, Skv): a decoder export's 4-d mask
      stride[3] = 1, stride[2] = Skv, stride[0] = Sq * Skv;
      count = static_cast<size_t>(c.batch * Sq * Skv);
      break;
  }
}

int64_t mask_index(const int64_t (&stride)[4], int64_t b, int64_t h, int64_t i, int64_t j) {
  return b * stride[0] + h * stride[1] + i * stride[2] + j * stride[3];
}

struct Inputs {
  Placement q, k, v, out;
  HostTensor hq, hk, hv, hbias;
  std::vector<unsigned char> hkeep;
  int64_t bias_stride[4], keep_stride[4];
  float scale;
  double vmax = 0.0;

  explicit Inputs(const Case& c)
      : q(place(c.layout, c.batch, c.q_heads, c.q_len, c.head_dim)),
        k(place(c.layout, c.batch, c.kv_heads, c.kv_len, c.head_dim)),
        v(place(c.layout, c.batch, c.kv_heads, c.kv_len, c.v_head_dim)),
        out(place(c.layout, c.batch, c.q_heads, c.q_len, c.v_head_dim)),
        hq(c.dtype, q.count),
        hk(c.dtype, k.count),
        hv(c.dtype, v.count),
        hbias(c.dtype, 1) {}
};

double reference_output_scale(const Case& c) {
  if (!std::isnan(c.scale_override)) return c.scale_override;
  return c.scale_default ? 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(c.head_dim, 1)))
                         : 8.0 / (double(c.magnitude) * c.magnitude * std::sqrt(double(std::max<int64_t>(c.head_dim, 1))));
}

Inputs make_inputs(const Case& c, uint32_t seed) {
  Inputs in(c);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-c.magnitude, c.magnitude);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Padding and gaps hold NaN: any read outside the logical tensor shows up in the output.
  for (HostTensor* t : {&in.hq, &in.hk, &in.hv}) {
    for (size_t i = 0; i < t->size(); ++i) t->set(i, nan);
  }
  auto fill = [&](HostTensor& t, const Placement& p, int64_t heads, int64_t len, int64_t dim) {
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t s = 0; s < len; ++s)
          for (int64_t d = 0; d < dim; ++d) t.set(static_cast<size_t>(offset_of(p, b, h, s) + d), uniform(rng));
  };
  fill(in.hq, in.q, c.q_heads, c.q_len, c.head_dim);
  fill(in.hk, in.k, c.kv_heads, c.kv_len, c.head_dim);
  fill(in.hv, in.v, c.kv_heads, c.kv_len, c.v_head_dim);
  if (c.positive_values) {
    for (size_t i = 0; i < in.hv.size(); ++i) {
      const double x = in.hv.get(i);
      if (!std::isnan(x)) in.hv.set(i, static_cast<float>(std::fabs(x)));
    }
  }
  if (c.padding_outscores_bias) {
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < c.q_heads; ++h)
        for (int64_t s = 0; s < c.q_len; ++s)
          for (int64_t d = 0; d < c.head_dim; ++d) in.hq.set(static_cast<size_t>(offset_of(in.q, b, h, s) + d), c.magnitude);
  }
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.kv_heads; ++h)
      for (int64_t s = 0; s < c.kv_len; ++s) {
        if (!c.is_padding(b, s)) continue;
        if (c.padding_outscores_bias) {
          for (int64_t d = 0; d < c.head_dim; ++d) in.hk.set(static_cast<size_t>(offset_of(in.k, b, h, s) + d), c.magnitude);
        }
        if (c.infinite_padding_value && s == (c.left_padding ? 0 : c.kv_len - 1)) {
          in.hv.set(static_cast<size_t>(offset_of(in.v, b, h, s)), INFINITY);
        }
      }
  // The absolute tolerance scales with the largest finite value (an infinite one poisons its own column).
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.kv_heads; ++h)
      for (int64_t s = 0; s < c.kv_len; ++s)
        for (int64_t d = 0; d < c.v_head_dim; ++d) {
          const double value = std::fabs(in.hv.get(static_cast<size_t>(offset_of(in.v, b, h, s) + d)));
          if (std::isfinite(value)) in.vmax = std::max(in.vmax, value);
        }

  size_t count = 1;
  broadcast_strides(c.bias, c, in.bias_stride, count);
  in.hbias = HostTensor(c.dtype, count);
  std::uniform_real_distribution<float> bias_value(-3.0f, 3.0f);
  for (size_t i = 0; i < count; ++i) in.hbias.set(i, bias_value(rng));
  if (c.infinite_bias_row && c.bias == Broadcast::kFull) {
    const int64_t row = c.q_len / 2;
    for (int64_t j = 0; j < c.kv_len; ++j) {
      in.hbias.set(static_cast<size_t>(mask_index(in.bias_stride, 0, 0, row, j)), -std::numeric_limits<float>::infinity());
    }
  }

  if (c.lowest_bias && c.bias == Broadcast::kFull) {
    std::bernoulli_distribution hidden(0.3);
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < c.q_heads; ++h)
        for (int64_t i = 0; i < c.q_len; ++i)
          for (int64_t j = 0; j < c.kv_len; ++j) {
            if (i == c.q_len / 2 || hidden(rng)) {
              in.hbias.set(static_cast<size_t>(mask_index(in.bias_stride, b, h, i, j)), lowest_finite(c.dtype));
            }
          }
  }

  // Padding (masks with a batch dim) and a causal mask in the bias, over every row and head the mask stores.
  const float padding = std::isnan(c.padding_bias) ? lowest_finite(c.dtype) : c.padding_bias;
  const bool batched_bias = c.bias == Broadcast::kPerKey || c.bias == Broadcast::kFull || c.bias == Broadcast::kPerBatchRows;
  if ((batched_bias && c.padded_keys > 0) || c.causal_bias) {
    const int64_t rows = in.bias_stride[2] != 0 ? c.q_len : 1, heads = in.bias_stride[1] != 0 ? c.q_heads : 1;
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < c.kv_len; ++j) {
            const bool hidden = (batched_bias && c.is_padding(b, j)) || (c.causal_bias && rows > 1 && j > i);
            if (hidden) in.hbias.set(static_cast<size_t>(mask_index(in.bias_stride, b, h, i, j)), padding);
          }
  }

  broadcast_strides(c.keep, c, in.keep_stride, count);
  in.hkeep.assign(count, 1);
  std::bernoulli_distribution keep_value(c.keep_probability);
  for (size_t i = 0; i < count; ++i) in.hkeep[i] = keep_value(rng) ? 1 : 0;
  const bool batched_keep = c.keep == Broadcast::kPerKey || c.keep == Broadcast::kFull || c.keep == Broadcast::kPerBatchRows;
  if (batched_keep && c.padded_keys > 0) {
    const int64_t rows = in.keep_stride[2] != 0 ? c.q_len : 1, heads = in.keep_stride[1] != 0 ? c.q_heads : 1;
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < c.kv_len; ++j) {
            if (c.is_padding(b, j)) in.hkeep[static_cast<size_t>(mask_index(in.keep_stride, b, h, i, j))] = 0;
          }
  }
  if (c.masked_row_every > 0 && c.keep == Broadcast::kFull) {
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < c.q_heads; ++h)
        for (int64_t i = 0; i < c.q_len; i += c.masked_row_every)
          for (int64_t j = 0; j < c.kv_len; ++j) in.hkeep[static_cast<size_t>(mask_index(in.keep_stride, b, h, i, j))] = 0;
  }
  in.scale = static_cast<float>(reference_output_scale(c));
  return in;
}

// ---- the reference ---------------------------------------------------------------------------

// out[b, h, i, :] in double, exactly as DESIGN.md states the semantics.
std::vector<double> reference(const Case& c, const Inputs& in) {
  const int64_t group = c.q_heads / c.kv_heads;
  std::vector<double> out(static_cast<size_t>(c.batch * c.q_heads * c.q_len * c.v_head_dim));
  std::vector<double> score(static_cast<size_t>(c.kv_len));
  std::vector<char> visible(static_cast<size_t>(c.kv_len));
  const double inf = std::numeric_limits<double>::infinity();
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < c.q_heads; ++h) {
      const int64_t kvh = h / group;
      for (int64_t i = 0; i < c.q_len; ++i) {
        double row_max = -inf;
        for (int64_t j = 0; j < c.kv_len; ++j) {
          bool vis = true;
          if (c.causal == CausalAlignment::kUpperLeft) vis = j <= i;
          if (c.causal == CausalAlignment::kLowerRight) vis = j <= i + c.kv_len - c.q_len;
          if (c.keep != Broadcast::kNone) vis = vis && in.hkeep[static_cast<size_t>(mask_index(in.keep_stride, b, h, i, j))];
          visible[static_cast<size_t>(j)] = vis;
          if (!vis) continue;
          double dot = 0.0;
          for (int64_t d = 0; d < c.head_dim; ++d) {
            dot += in.hq.get(static_cast<size_t>(offset_of(in.q, b, h, i) + d)) *
                   in.hk.get(static_cast<size_t>(offset_of(in.k, b, kvh, j) + d));
          }
          double s = double(in.scale) * dot;
          if (c.softcap > 0.0f) s = double(c.softcap) * std::tanh(s / double(c.softcap));
          if (c.bias != Broadcast::kNone) s += in.hbias.get(static_cast<size_t>(mask_index(in.bias_stride, b, h, i, j)));
          score[static_cast<size_t>(j)] = s;
          row_max = std::max(row_max, s);
        }
        double* o = &out[static_cast<size_t>(((b * c.q_heads + h) * c.q_len + i) * c.v_head_dim)];
        if (row_max == -inf) {  // no visible key, or every visible score is -inf
          const double fill = c.masked_rows == MaskedRows::kNaN ? std::numeric_limits<double>::quiet_NaN() : 0.0;
          std::fill(o, o + c.v_head_dim, fill);
          continue;
        }
        double sum = 0.0;
        std::fill(o, o + c.v_head_dim, 0.0);
        for (int64_t j = 0; j < c.kv_len; ++j) {
          if (!visible[static_cast<size_t>(j)]) continue;
          const double p = std::exp(score[static_cast<size_t>(j)] - row_max);
          sum += p;
          for (int64_t d = 0; d < c.v_head_dim; ++d) o[d] += p * in.hv.get(static_cast<size_t>(offset_of(in.v, b, kvh, j) + d));
        }
        for (int64_t d = 0; d < c.v_head_dim; ++d) o[d] /= sum;
      }
    }
  }
  return out;
}

struct Tolerance {
  double abs_of_vmax, rel;
};

Tolerance tolerance(DType t) {
  switch (t) {
    case DType::kFloat32: return {1e-4, 1e-4};
    case DType::kFloat16: return {2e-3, 2e-3};
    case DType::kBFloat16: return {1.2e-2, 8e-3};
  }
  return {0, 0};
}

// float32 in one TF32 pass (float32_tensor_cores 3, or the environment's 3 where the case names no choice) keeps
// float16's 10 mantissa bits in its products: float16's bound.
constexpr int kFloat32OneTf32Pass = 3;
Tolerance tolerance_of(DType t, int float32_tensor_cores) {
  const char* environment = std::getenv("ORTFLASH_CUDA_FLOAT32_TENSOR_CORES");
  const bool one_pass = float32_tensor_cores >= 0 ? float32_tensor_cores == kFloat32OneTf32Pass
                                                  : environment != nullptr && std::string(environment) == "3";
  return t == DType::kFloat32 && one_pass ? tolerance(DType::kFloat16) : tolerance(t);
}

// Sets an environment variable for its lifetime and restores what was there before (the kernels read their
// switches, such as ORTFLASH_CUDA_FLOAT32_TENSOR_CORES, on every call).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    setenv(name, value, 1);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

#if defined(ORTFLASH_SIMT)
// On the emulator the suite runs the mma.sync and tiled SIMT kernels unless the environment names a kernel: the
// work-count tests count those kernels' instructions, and the CTest entries hopper1, hopper2 and float32_tensor_cores
// run the suite on the others ("default" asks for the library's own choice, as on a GPU).
[[maybe_unused]] const bool kEmulatorPinsKernels = [] {
  setenv("ORTFLASH_CUDA_HOPPER", "0", 0);
  setenv("ORTFLASH_CUDA_FLOAT32_TENSOR_CORES", "0", 0);
  return true;
}();
#endif

// ---- running a case --------------------------------------------------------------------------

constexpr unsigned char kOutputSentinel = 0x5a;

void expect_matches_reference(const Case& c, uint32_t seed) {
  SCOPED_TRACE(c.describe());
  const Inputs in = make_inputs(c, seed);

  DeviceBuffer dq(in.hq.bytes.size()), dk(in.hk.bytes.size()), dv(in.hv.bytes.size());
  DeviceBuffer dbias(in.hbias.bytes.size()), dkeep(in.hkeep.size());
  const size_t out_bytes = in.out.count * element_size(c.dtype);
  DeviceBuffer dout(out_bytes);
  ASSERT_NE(dq.get(), nullptr);
  ASSERT_NE(dout.get(), nullptr);
  ASSERT_CUDA(cudaMemcpy(dq.get(), in.hq.bytes.data(), dq.bytes(), cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(dk.get(), in.hk.bytes.data(), dk.bytes(), cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(dv.get(), in.hv.bytes.data(), dv.bytes(), cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(dbias.get(), in.hbias.bytes.data(), dbias.bytes(), cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(dkeep.get(), in.hkeep.data(), dkeep.bytes(), cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemset(dout.get(), kOutputSentinel, out_bytes));

  const size_t es = element_size(c.dtype);
  AttentionParams p;
  p.dtype = c.dtype;
  p.q = static_cast<char*>(dq.get()) + in.q.offset * es;
  p.k = static_cast<char*>(dk.get()) + in.k.offset * es;
  p.v = static_cast<char*>(dv.get()) + in.v.offset * es;
  p.out = static_cast<char*>(dout.get()) + in.out.offset * es;
  p.bias = c.bias != Broadcast::kNone ? dbias.get() : nullptr;
  p.keep = c.keep != Broadcast::kNone ? static_cast<const bool*>(dkeep.get()) : nullptr;
  p.batch = c.batch, p.q_heads = c.q_heads, p.kv_heads = c.kv_heads;
  p.q_len = c.q_len, p.kv_len = c.kv_len, p.head_dim = c.head_dim, p.v_head_dim = c.v_head_dim;
  std::copy(in.q.stride, in.q.stride + 3, p.q_stride);
  std::copy(in.k.stride, in.k.stride + 3, p.k_stride);
  std::copy(in.v.stride, in.v.stride + 3, p.v_stride);
  std::copy(in.out.stride, in.out.stride + 3, p.out_stride);
  std::copy(in.bias_stride, in.bias_stride + 4, p.bias_stride);
  std::copy(in.keep_stride, in.keep_stride + 4, p.keep_stride);
  p.scale = in.scale;
  p.softcap = c.softcap;
  p.causal = c.causal;
  p.masked_rows = c.masked_rows;

  cudaStream_t stream = nullptr;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  StreamScratch scratch_owner{stream};
  const ortflash::CudaScratch scratch = c.lend_scratch
                                            ? ortflash::CudaScratch{&StreamScratch::allocate, &StreamScratch::release, &scratch_owner}
                                            : ortflash::CudaScratch{};
  ortflash::CudaOptions options;
  options.float32_tensor_cores = c.float32_tensor_cores;
  std::string error;
  cudaError_t sync = cudaSuccess;
  if (c.graph) {
    // Everything the call enqueues (scratch from the stream-ordered allocator included) is captured once, then the
    // graph is replayed twice with the output reset before each: a replay must compute all of it again, from
    // scratch that starts out as garbage, with no call of the library in between.
    ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    error = ortflash::flash_attention_cuda(p, stream, scratch, options);
    cudaGraph_t graph = nullptr;
    const cudaError_t captured = cudaStreamEndCapture(stream, &graph);
    ASSERT_EQ(error, "");
    ASSERT_EQ(captured, cudaSuccess) << cudaGetErrorString(captured);
    cudaGraphExec_t exec = nullptr;
    ASSERT_CUDA(cudaGraphInstantiateWithFlags(&exec, graph, 0));
    ASSERT_CUDA(cudaGraphDestroy(graph));  // an instance outlives its graph
    for (int replay = 0; replay < 2 && sync == cudaSuccess; ++replay) {
      ASSERT_CUDA(cudaMemsetAsync(dout.get(), kOutputSentinel, out_bytes, stream));
      sync = cudaGraphLaunch(exec, stream);
      if (sync == cudaSuccess) sync = cudaStreamSynchronize(stream);
    }
    cudaGraphExecDestroy(exec);
  } else {
    error = ortflash::flash_attention_cuda(p, stream, scratch, options);
    sync = cudaStreamSynchronize(stream);
  }
  cudaStreamDestroy(stream);
  ASSERT_EQ(error, "");
  ASSERT_EQ(sync, cudaSuccess) << cudaGetErrorString(sync);

  HostTensor got(c.dtype, in.out.count);
  ASSERT_CUDA(cudaMemcpy(got.bytes.data(), dout.get(), out_bytes, cudaMemcpyDeviceToHost));

  const std::vector<double> want = reference(c, in);
  const Tolerance tol = tolerance_of(c.dtype, c.float32_tensor_cores);
  std::vector<char> logical(in.out.count, 0);
  int64_t failures = 0;
  double worst = 0.0;  // the largest error over its bound (reported on failure: how far off, not only where)
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.q_heads; ++h)
      for (int64_t i = 0; i < c.q_len; ++i)
        for (int64_t d = 0; d < c.v_head_dim; ++d) {
          const size_t at = static_cast<size_t>(offset_of(in.out, b, h, i) + d);
          logical[at] = 1;
          const double expected = want[static_cast<size_t>(((b * c.q_heads + h) * c.q_len + i) * c.v_head_dim + d)];
          const double actual = got.get(at);
          const double bound = tol.abs_of_vmax * in.vmax + tol.rel * std::fabs(expected);
          const bool ok = std::isnan(expected) ? std::isnan(actual) : std::fabs(actual - expected) <= bound;
          if (!std::isnan(expected)) worst = std::max(worst, std::isnan(actual) ? INFINITY : std::fabs(actual - expected) / bound);
          if (!ok && ++failures <= 5) {
            ADD_FAILURE() << "out[" << b << "," << h << "," << i << "," << d << "] = " << actual << ", expected "
                          << expected << " (vmax " << in.vmax << ")";
          }
        }
  EXPECT_EQ(failures, 0) << "mismatching output elements; the worst error is " << worst << " times its bound";
  // Nothing outside the logical output may be written.
  int64_t stray = 0;
  for (size_t at = 0; at < in.out.count; ++at) {
    if (logical[at]) continue;
    for (size_t byte = 0; byte < es; ++byte) stray += got.bytes[at * es + byte] != kOutputSentinel;
  }
  EXPECT_EQ(stray, 0) << "bytes written outside the output tensor";
}

// Random integer in [lo, hi].
int64_t pick(std::mt19937& rng, int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }

const DType kHalfTypes[] = {DType::kFloat16, DType::kBFloat16};
const DType kAllTypes[] = {DType::kFloat16, DType::kBFloat16, DType::kFloat32};

// ---- tests -----------------------------------------------------------------------------------

TEST(CudaAttention, MatchesReferenceAtEveryTensorCoreHeadDim) {
  SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(1);
  for (DType t : kHalfTypes) {
    for (int64_t d : {32, 64, 96, 128, 256}) {
      Case c;
      c.dtype = t, c.head_dim = c.v_head_dim = d;
      c.batch = pick(rng, 1, 2), c.q_heads = c.kv_heads = pick(rng, 1, 3);
      c.q_len = pick(rng, 1, 300), c.kv_len = pick(rng, 1, 300);
      expect_matches_reference(c, static_cast<uint32_t>(d));
    }
  }
}

TEST(CudaAttention, HeadDimsBetweenKernelsArePaddedToTheNextOne) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kHalfTypes) {
    for (int64_t d : {8, 40, 80, 136, 200}) {
      Case c;
      c.dtype = t, c.head_dim = c.v_head_dim = d, c.batch = 2, c.q_heads = 2, c.kv_heads = 2;
      c.q_len = 131, c.kv_len = 197;
      expect_matches_reference(c, static_cast<uint32_t>(d));
    }
  }
}

// Float32, and 16-bit head dims the tensor cores do not take: the tiled SIMT kernel up to 128, the
// generic kernel above (264).
TEST(CudaAttention, OddHeadDimsAndFloat32RunOnTheSimtKernels) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    for (int64_t d : {1, 7, 33, 100, 264}) {
      Case c;
      c.dtype = t, c.head_dim = c.v_head_dim = d, c.q_heads = 2, c.kv_heads = 1, c.q_len = 37, c.kv_len = 71;
      expect_matches_reference(c, static_cast<uint32_t>(d));
    }
  }
  Case c;
  c.dtype = DType::kFloat32, c.head_dim = c.v_head_dim = 64, c.batch = 2, c.q_heads = 4, c.kv_heads = 2;
  c.q_len = 129, c.kv_len = 257, c.causal = CausalAlignment::kUpperLeft, c.bias = Broadcast::kPerKey;
  expect_matches_reference(c, 3);
}

// The generic kernel takes (D + Dv) x 4 bytes of shared memory per warp: these head dims pass the
// 48 KiB default (and stay under the 99 KiB of sm_86/89), so launches raise the kernel's limit,
// which is remembered per device. A smaller call after a larger one must not lower it, a larger one
// must raise it again, also when calls on several threads raise it at once.
TEST(CudaAttention, SharedMemoryOptInIsRememberedAndOnlyGrows) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const auto run = [](int64_t d, uint32_t seed) {
    Case c;
    c.dtype = DType::kFloat32, c.head_dim = c.v_head_dim = d, c.q_len = 9, c.kv_len = 33;
    expect_matches_reference(c, seed);
  };
  for (int64_t d : {2000, 64, 2900, 1600, 3000}) run(d, static_cast<uint32_t>(d));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&run, t] {
      for (int64_t d : {1600 + 400 * t, 100, 3000 - 300 * t}) run(d, static_cast<uint32_t>(t));
    });
  }
  for (std::thread& thread : threads) thread.join();
}

// A head dim whose generic-kernel tiles exceed what any GPU lets a block use gets a message, and the
// failed reservation is not left behind in the runtime's last error for the next call to trip over.
TEST(CudaAttention, AFailedSharedMemoryReservationDoesNotFailTheNextCall) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t d = 16000;  // (D + Dv) x 4 bytes x 4 warps = 500 KiB of shared memory
  DeviceBuffer q(d * 4), k(d * 4), v(d * 4), out(d * 4);
  AttentionParams p;
  p.dtype = DType::kFloat32;
  p.q = q.get(), p.k = k.get(), p.v = v.get(), p.out = out.get();
  p.batch = p.q_heads = p.kv_heads = p.q_len = p.kv_len = 1;
  p.head_dim = p.v_head_dim = d;
  ortflash::SetDenseStrides(p);
  p.scale = 1.0f;
  cudaStream_t stream = nullptr;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const std::string error = ortflash::flash_attention_cuda(p, stream, ortflash::CudaScratch{});
  cudaStreamDestroy(stream);
  EXPECT_NE(error.find("shared memory"), std::string::npos) << error;
  Case c;
  c.dtype = DType::kFloat32, c.head_dim = c.v_head_dim = 200, c.q_len = 5, c.kv_len = 9;  // the generic kernel again
  expect_matches_reference(c, 77);
}

TEST(CudaAttention, ValueHeadDimMayDifferFromKeyHeadDim) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t dims[][2] = {{64, 32}, {32, 128}, {128, 256}, {48, 80}, {20, 36}, {5, 1}};
  for (DType t : kAllTypes) {
    for (const auto& dd : dims) {
      Case c;
      c.dtype = t, c.head_dim = dd[0], c.v_head_dim = dd[1], c.q_heads = 2, c.kv_heads = 2, c.q_len = 65, c.kv_len = 90;
      expect_matches_reference(c, static_cast<uint32_t>(dd[0] * 1000 + dd[1]));
    }
  }
}

TEST(CudaAttention, GroupedAndMultiQueryHeadsReadTheirSharedKeyValueHead) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    for (int64_t kv_heads : {1, 2, 4}) {
      Case c;
      c.dtype = t, c.batch = 2, c.q_heads = 8, c.kv_heads = kv_heads, c.q_len = 77, c.kv_len = 150;
      c.head_dim = c.v_head_dim = 64;
      c.causal = CausalAlignment::kLowerRight;
      expect_matches_reference(c, static_cast<uint32_t>(kv_heads));
    }
  }
}

TEST(CudaAttention, Rank3InputsAreOneHeadPerBatchEntry) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    Case c;
    c.dtype = t, c.batch = 5, c.q_heads = c.kv_heads = 1, c.q_len = 33, c.kv_len = 45, c.head_dim = c.v_head_dim = 32;
    c.bias = Broadcast::kFull;
    expect_matches_reference(c, 11);
  }
}

TEST(CudaAttention, StridedLayoutsAreReadAsGiven) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    for (Layout layout : {Layout::kSeqMajor, Layout::kPaddedRows, Layout::kOddStrides, Layout::kOffsetBase}) {
      for (int64_t d : {64, 80}) {
        Case c;
        c.dtype = t, c.layout = layout, c.batch = 2, c.q_heads = 4, c.kv_heads = 2, c.q_len = 70, c.kv_len = 133;
        c.head_dim = c.v_head_dim = d;
        expect_matches_reference(c, static_cast<uint32_t>(d + static_cast<int>(layout)));
      }
    }
  }
}

TEST(CudaAttention, BiasIsAddedByItsBroadcastStrides) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    for (Broadcast kind : {Broadcast::kFull, Broadcast::kPerKey, Broadcast::kPerHead, Broadcast::kPerQuery, Broadcast::kScalar}) {
      Case c;
      c.dtype = t, c.bias = kind, c.batch = 2, c.q_heads = 3, c.kv_heads = 3, c.q_len = 67, c.kv_len = 129;
      c.head_dim = c.v_head_dim = 64;
      expect_matches_reference(c, static_cast<uint32_t>(kind));
    }
  }
}

TEST(CudaAttention, KeepMaskHidesKeysByItsBroadcastStrides) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    for (Broadcast kind : {Broadcast::kFull, Broadcast::kPerKey, Broadcast::kPerHead, Broadcast::kPerQuery, Broadcast::kScalar}) {
      Case c;
      c.dtype = t, c.keep = kind, c.batch = 2, c.q_heads = 2, c.kv_heads = 1, c.q_len = 90, c.kv_len = 161;
      c.head_dim = c.v_head_dim = 128, c.keep_probability = 0.6f;
      expect_matches_reference(c, static_cast<uint32_t>(kind) + 100);
    }
  }
}

// Bias and keep rows of whole 16-byte chunks are staged in shared memory with cp.async (FwdTraits::
// kMaskTiles): dense rows of a multiple of 8 (bias) or 16 (keep) keys, and rows padded to such a pitch
// whose last chunk is ragged (the copy reads only the keys that exist). Full, per-key (one tile row)
// and per-head masks, both causal alignments, prefill and decoding tiles, head dims 64 and 128; for
// bfloat16 also finfo.min biases, which must stay finite through the log2(e) multiply.
TEST(CudaAttention, ChunkedBiasAndKeepRowsAreStagedInSharedMemory) {
  SKIP_WITHOUT_CUDA_DEVICE();
  struct Lengths {
    int64_t q_len, kv_len, pitch;
  };
  const Lengths lengths[] = {{70, 128, 0}, {129, 129, 144}, {33, 77, 80}, {1, 1000, 1008}};
  uint32_t seed = 300;
  for (DType t : kAllTypes) {
    for (Broadcast kind : {Broadcast::kFull, Broadcast::kPerKey, Broadcast::kPerHead}) {
      for (const Lengths& len : lengths) {
        ++seed;
        Case c;
        c.dtype = t, c.bias = kind, c.keep = seed % 2 ? kind : Broadcast::kPerKey, c.keep_probability = 0.7f;
        c.batch = 2, c.q_heads = 4, c.kv_heads = 2, c.q_len = len.q_len, c.kv_len = len.kv_len, c.mask_pitch = len.pitch;
        c.head_dim = c.v_head_dim = seed % 3 ? 128 : 64;
        c.causal = seed % 4 == 0 ? CausalAlignment::kUpperLeft : (seed % 4 == 1 ? CausalAlignment::kLowerRight : CausalAlignment::kNone);
        c.masked_rows = MaskedRows::kNaN;
        c.lowest_bias = kind == Broadcast::kFull && t == DType::kBFloat16;
        expect_matches_reference(c, seed);
      }
    }
  }
}

// The masks-in-accumulator variant (scores start at bias / scale, or -inf for a hidden key): every
// broadcast, strided and chunked rows, bias, keep and both, both causal alignments, custom and tiny
// scales, -inf and finfo.min biases (bfloat16's is clamped at FLT_MAX), masked rows, prefill and
// decoding tiles at each of its head dims (64, 80 → 96, 128), float16 and bfloat16.
TEST(CudaAttention, MasksInTheScoreAccumulatorsMatchTheReference) {
  SKIP_WITHOUT_CUDA_DEVICE();
  uint32_t seed = 400;
  for (DType t : {DType::kFloat16, DType::kBFloat16}) {
    for (int64_t d : {64, 80, 128}) {
      for (Broadcast kind : {Broadcast::kFull, Broadcast::kPerKey, Broadcast::kPerHead, Broadcast::kPerQuery}) {
        for (int64_t q_len : {1, 150}) {
          ++seed;
          Case c;
          c.dtype = t, c.head_dim = c.v_head_dim = d, c.q_len = q_len;
          c.bias = seed % 3 == 2 ? Broadcast::kNone : kind;
          c.keep = seed % 3 == 0 ? Broadcast::kNone : (seed % 2 ? kind : Broadcast::kPerKey);
          c.kv_len = seed % 2 ? 200 : 203, c.mask_pitch = seed % 4 == 1 ? 208 : 0, c.keep_probability = 0.7f;
          c.batch = 2, c.q_heads = 4, c.kv_heads = seed % 3 ? 2 : 4, c.masked_rows = MaskedRows::kNaN;
          c.causal = seed % 3 == 0 ? CausalAlignment::kLowerRight : (seed % 3 == 1 ? CausalAlignment::kUpperLeft : CausalAlignment::kNone);
          if (seed % 5 == 0) c.scale_override = 0.5f;   // scale * log2(e) = 0.72: bfloat16 biases too
          if (seed % 7 == 0) c.scale_override = 1e-6f;  // bias / scale = 1e6 x bias
          c.infinite_bias_row = c.bias == Broadcast::kFull && seed % 2 == 0;
          c.lowest_bias = c.bias == Broadcast::kFull && seed % 2 == 1;
          c.masked_row_every = c.keep == Broadcast::kFull ? 7 : 0;
          expect_matches_reference(c, seed);
        }
      }
    }
  }
}

// Head dim 256 with masks runs the general variant (no masks-in-accumulator variant there): bias and keep
// from global memory at the default 64x64 tiles, or from shared tiles under a general-variant tile
// override (ORTFLASH_GENERAL_TILE_256_*). Chunked and strided rows, softcap, both causal alignments.
TEST(CudaAttention, HeadDim256MasksAndSoftcapMatchTheReference) {
  SKIP_WITHOUT_CUDA_DEVICE();
  uint32_t seed = 600;
  for (DType t : {DType::kFloat16, DType::kBFloat16}) {
    for (int64_t pitch : {0, 136}) {
      ++seed;
      Case c;
      c.dtype = t, c.head_dim = c.v_head_dim = 256, c.q_len = 97, c.kv_len = 129, c.mask_pitch = pitch;
      c.bias = Broadcast::kFull, c.keep = Broadcast::kPerKey, c.keep_probability = 0.7f;
      c.softcap = seed % 2 ? 30.0f : 0.0f, c.masked_rows = MaskedRows::kNaN;
      c.causal = seed % 2 ? CausalAlignment::kLowerRight : CausalAlignment::kUpperLeft;
      c.lowest_bias = t == DType::kBFloat16;
      expect_matches_reference(c, seed);
    }
  }
}

TEST(CudaAttention, CausalAlignmentsWithUnequalLengths) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t lengths[][2] = {{1, 1}, {100, 100}, {64, 300}, {300, 64}, {129, 1000}, {1000, 129}, {257, 256}};
  for (DType t : kAllTypes) {
    for (CausalAlignment a : {CausalAlignment::kUpperLeft, CausalAlignment::kLowerRight}) {
      for (const auto& len : lengths) {
        Case c;
        c.dtype = t, c.causal = a, c.q_len = len[0], c.kv_len = len[1], c.q_heads = 2, c.kv_heads = 2;
        c.head_dim = c.v_head_dim = 96;
        expect_matches_reference(c, static_cast<uint32_t>(len[0] + len[1]));
      }
    }
  }
}

TEST(CudaAttention, SoftcapIsAppliedBeforeBiasAndMasks) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    Case c;
    c.dtype = t, c.softcap = 5.0f, c.magnitude = 4.0f, c.bias = Broadcast::kPerKey, c.keep = Broadcast::kPerKey;
    c.causal = CausalAlignment::kUpperLeft, c.q_len = 150, c.kv_len = 150, c.q_heads = 2, c.kv_heads = 2;
    c.head_dim = c.v_head_dim = 128;
    expect_matches_reference(c, 21);
  }
}

TEST(CudaAttention, RowsWithoutVisibleKeysFollowTheMaskedRowsPolicy) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    for (MaskedRows policy : {MaskedRows::kZero, MaskedRows::kNaN}) {
      Case keep_rows;  // keep hides every key from every 5th query row
      keep_rows.dtype = t, keep_rows.masked_rows = policy, keep_rows.keep = Broadcast::kFull, keep_rows.masked_row_every = 5;
      keep_rows.q_len = 41, keep_rows.kv_len = 99, keep_rows.q_heads = keep_rows.kv_heads = 2;
      expect_matches_reference(keep_rows, 31);

      Case infinite_bias;  // every visible score of one row is -inf
      infinite_bias.dtype = t, infinite_bias.masked_rows = policy, infinite_bias.bias = Broadcast::kFull;
      infinite_bias.infinite_bias_row = true, infinite_bias.q_len = 20, infinite_bias.kv_len = 70;
      expect_matches_reference(infinite_bias, 32);

      Case lower_right;  // Sq > Skv: the first Sq - Skv rows see no key
      lower_right.dtype = t, lower_right.masked_rows = policy, lower_right.causal = CausalAlignment::kLowerRight;
      lower_right.q_len = 200, lower_right.kv_len = 50;
      expect_matches_reference(lower_right, 33);

      Case no_keys;  // Skv = 0: every row is masked
      no_keys.dtype = t, no_keys.masked_rows = policy, no_keys.q_len = 9, no_keys.kv_len = 0;
      expect_matches_reference(no_keys, 34);
    }
  }
}

// DESIGN.md: finfo.min is an ordinary number. A row whose every key carries it is a softmax over the
// biased scores — for float32 and bfloat16 (min -3.4e38) all equal, so the plain average of V — not a
// masked row (masked_rows = nan makes that mistake loud); the kernels' log2(e) multiply once
// overflowed to -inf there. Without and with split-KV: 2945 = 46 * 64 + 1 keys leave the last
// tensor-core split one key, which a combine that lost the per-split sums would weigh like 64.
TEST(CudaAttention, LowestFiniteBiasIsAnOrdinaryNumber) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    for (bool split : {false, true}) {
      Case c;
      c.dtype = t, c.bias = Broadcast::kFull, c.lowest_bias = true, c.masked_rows = MaskedRows::kNaN;
      c.batch = 2, c.q_heads = 2, c.kv_heads = 1, c.q_len = split ? 1 : 67, c.kv_len = split ? 2945 : 150;
      c.head_dim = c.v_head_dim = 64, c.lend_scratch = split;
      expect_matches_reference(c, split ? 81 : 82);
    }
  }
}

// Key padding (a (B, 1, 1, Skv) bias at finfo.min or -10000, or keep false) at the end or the start of odd
// batch entries: the key tiles wholly in the padding are skipped (live_keys.cuh) and the output is exact.
// Under upper-left causality with left padding, the first query rows see only padding: their rows are a
// softmax over the padding's biased scores (or masked, with keep), which the blocks that cannot see the
// first real key must still compute.
TEST(CudaAttention, KeyPaddingMasksMatchTheReference) {
  SKIP_WITHOUT_CUDA_DEVICE();
  uint32_t seed = 500;
  for (DType t : kAllTypes) {
    for (int mask = 0; mask < 4; ++mask) {  // finfo.min bias, -10000 bias, keep, both
      for (bool left : {false, true}) {
        ++seed;
        Case c;
        const ScopedEnv live_keys("ORTFLASH_CUDA_LIVE_KEYS", "1");  // the pass at this length too (by default from 1024)
        c.dtype = t, c.batch = 2, c.q_heads = 4, c.kv_heads = 2, c.q_len = 150, c.kv_len = 300;
        c.head_dim = c.v_head_dim = seed % 3 ? 64 : 128, c.keep_probability = 1.0f;
        c.bias = mask == 2 ? Broadcast::kNone : Broadcast::kPerKey;
        c.keep = mask >= 2 ? Broadcast::kPerKey : Broadcast::kNone;
        c.padding_bias = mask == 1 ? -10000.0f : NAN;
        c.padded_keys = seed % 2 ? 140 : 200, c.left_padding = left;
        c.causal = seed % 4 == 0 ? CausalAlignment::kUpperLeft : (seed % 4 == 1 ? CausalAlignment::kLowerRight : CausalAlignment::kNone);
        // Rows that see only keys biased by -10000 lose ~1e-3 relative in float32 (the scores' rounding near
        // 10000, as the contract's fp32 scores do), beyond its tolerance against the double reference.
        if (t == DType::kFloat32 && mask == 1 && left) c.causal = CausalAlignment::kLowerRight;
        c.masked_rows = MaskedRows::kNaN;
        c.lend_scratch = seed % 5 != 0;
        expect_matches_reference(c, seed);
      }
    }
  }
}

// Masks that vary by query row (live_rows.cuh, from 512 keys): a decoder export's (B,1,S,S) bias holding its causal
// mask (finfo.min or -10000 above the diagonal) and the padding, a (B,H,S,S) keep mask with padding under the causal
// attribute, and a T5-style (1,H,S,S) position bias with a padding keep mask; right and left padding, with and
// without split-KV.
TEST(CudaAttention, RowVaryingMasksMatchTheReference) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const ScopedEnv live_rows("ORTFLASH_CUDA_LIVE_ROWS", "1");  // the passes are off by default
  uint32_t seed = 600;
  for (DType t : kAllTypes) {
    for (int variant = 0; variant < 4; ++variant) {
      ++seed;
      Case c;
      c.dtype = t, c.batch = 2, c.q_heads = 2, c.kv_heads = 1, c.q_len = 530, c.kv_len = 530, c.head_dim = c.v_head_dim = 64;
      c.keep_probability = 1.0f, c.padded_keys = 150, c.left_padding = variant == 2, c.masked_rows = MaskedRows::kNaN;
      c.lend_scratch = seed % 3 != 0;
      switch (variant) {
        case 0:
        case 1:
          c.bias = Broadcast::kPerBatchRows, c.causal_bias = true, c.padding_bias = variant == 1 ? -10000.0f : NAN;
          break;
        case 2: c.keep = Broadcast::kFull, c.causal = CausalAlignment::kUpperLeft; break;
        default: c.bias = Broadcast::kPerHead, c.keep = Broadcast::kPerKey; break;
      }
      expect_matches_reference(c, seed);
    }
  }
}

// A padded key whose score beats its -10000 bias (queries and the padding's keys aligned, scores near 12800)
// takes most of the weight: the norm bound must keep it, and the output is the padding's values.
TEST(CudaAttention, PaddingThatOutscoresItsBiasStaysLive) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    for (Broadcast kind : {Broadcast::kPerKey, Broadcast::kPerBatchRows}) {  // the per-head and the per-slice pass
      Case c;
      c.dtype = t, c.batch = 2, c.q_heads = 2, c.kv_heads = 2, c.q_len = 70, c.head_dim = c.v_head_dim = 64;
      const ScopedEnv live_keys("ORTFLASH_CUDA_LIVE_KEYS", "1"), live_rows("ORTFLASH_CUDA_LIVE_ROWS", "1");
      c.kv_len = 520;  // the per-slice passes run from 512 keys; both are asked for (by default: longer calls, no rows)
      c.bias = kind, c.padding_bias = -10000.0f, c.padded_keys = c.kv_len / 2, c.padding_outscores_bias = true;
      c.magnitude = 40.0f, c.scale_override = 0.125f;
      expect_matches_reference(c, 540);
    }
  }
}

// Long sums over the keys of values of one sign, with a nearly flat softmax: the tensor cores truncate every mma's sum
// toward zero, an error relative to the growing accumulator, so P·V's error grows with the number of keys.
TEST(CudaAttention, LongSumsOfValuesOfOneSignStayWithinTheTolerance) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    Case c;
    c.dtype = t, c.q_len = 80, c.kv_len = 8192, c.head_dim = c.v_head_dim = 64, c.positive_values = true;
    expect_matches_reference(c, 544);
  }
}

// 0 · inf is NaN in the unfused graph: a padded key with an infinite value poisons that column of every row,
// so it is never skipped.
TEST(CudaAttention, InfiniteValuesInThePaddingStillPoisonTheirColumn) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    for (Broadcast kind : {Broadcast::kPerKey, Broadcast::kPerBatchRows}) {
      for (bool left : {false, true}) {
        Case c;
        c.dtype = t, c.batch = 2, c.q_heads = 2, c.kv_heads = 1, c.q_len = 70, c.head_dim = c.v_head_dim = 64;
        const ScopedEnv live_keys("ORTFLASH_CUDA_LIVE_KEYS", "1"), live_rows("ORTFLASH_CUDA_LIVE_ROWS", "1");
        c.kv_len = 520;  // the per-slice passes run from 512 keys; both are asked for (by default: longer calls, no rows)
        c.bias = kind, c.padded_keys = c.kv_len / 2, c.left_padding = left, c.infinite_padding_value = true;
        expect_matches_reference(c, left ? 541 : 542);
      }
    }
    // The generic kernel (head dim 130: neither the tensor cores' nor the tiled kernel's), whose P·V walks keys
    // one by one: a weight of exactly 0 still meets its value (0·inf = NaN), as in the unfused graph.
    Case generic;
    generic.dtype = t, generic.batch = 2, generic.q_len = 5, generic.kv_len = 100, generic.head_dim = 130;
    generic.v_head_dim = 130, generic.bias = Broadcast::kPerKey, generic.padded_keys = 40, generic.infinite_padding_value = true;
    expect_matches_reference(generic, 543);
  }
}

TEST(CudaAttention, SingleQueryDecodingSplitsLongKeyRanges) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    for (int64_t d : {64, 128}) {
      for (int64_t kv_len : {1, 4097, 32771}) {
        Case c;
        c.dtype = t, c.q_len = 1, c.kv_len = kv_len, c.head_dim = c.v_head_dim = d;
        c.batch = 1, c.q_heads = 8, c.kv_heads = 2, c.causal = CausalAlignment::kLowerRight;
        c.bias = kv_len > 1 ? Broadcast::kPerKey : Broadcast::kNone;
        expect_matches_reference(c, static_cast<uint32_t>(kv_len + d));
      }
    }
  }
  Case without_scratch;  // no allocator lent: one block walks all keys
  without_scratch.dtype = DType::kBFloat16, without_scratch.kv_len = 9000, without_scratch.head_dim = 128;
  without_scratch.v_head_dim = 128, without_scratch.lend_scratch = false;
  expect_matches_reference(without_scratch, 40);

  Case few_queries;  // a few query rows, one head: also split
  few_queries.dtype = DType::kFloat16, few_queries.q_len = 5, few_queries.kv_len = 20011, few_queries.head_dim = 256;
  few_queries.v_head_dim = 256, few_queries.keep = Broadcast::kPerKey, few_queries.keep_probability = 0.01f;
  expect_matches_reference(few_queries, 41);
}

// ONNX Runtime's CUDA graphs (the provider's enable_cuda_graph) capture the op's work once and replay it: every
// launch the library makes must be capturable (no synchronising call, nothing read back on the host, scratch only
// from the stream-ordered allocator) and a replay must not depend on what the first run left in scratch. Each of the
// paths with extra launches or scratch, captured and replayed: split-KV decoding and its combine, live key ranges,
// masks copied into aligned rows, float32 on both kernels, and the default prefill kernel.
TEST(CudaAttention, EveryPathReplaysFromACudaGraph) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const ScopedEnv live_keys("ORTFLASH_CUDA_LIVE_KEYS", "1");
  Case decode;  // 8 heads on 2 kv heads, one query row: split over the keys, then combined
  decode.dtype = DType::kBFloat16, decode.q_heads = 8, decode.kv_heads = 2, decode.kv_len = 4097;
  decode.head_dim = decode.v_head_dim = 128, decode.bias = Broadcast::kPerKey, decode.causal = CausalAlignment::kLowerRight;
  Case padded;  // a padded encoder batch: the live-key pass before the kernel
  padded.dtype = DType::kFloat16, padded.batch = 2, padded.q_heads = 2, padded.q_len = 200, padded.kv_len = 512;
  padded.bias = Broadcast::kPerKey, padded.keep = Broadcast::kPerKey, padded.keep_probability = 1.0f, padded.padded_keys = 256;
  Case pitched = padded;  // mask rows off 16-byte chunks: copied into aligned rows first
  pitched.kv_len = 509, pitched.padded_keys = 100, pitched.mask_pitch = 517;
  Case prefill;  // the default kernel for this device (TMA on sm_90), causal, grouped heads
  prefill.dtype = DType::kFloat16, prefill.batch = 2, prefill.q_heads = 4, prefill.kv_heads = 2, prefill.q_len = 300;
  prefill.kv_len = 300, prefill.head_dim = prefill.v_head_dim = 128, prefill.causal = CausalAlignment::kUpperLeft;
  Case float32 = prefill;
  float32.dtype = DType::kFloat32, float32.head_dim = float32.v_head_dim = 64, float32.bias = Broadcast::kPerKey;
  uint32_t seed = 500;
  for (Case c : {decode, padded, pitched, prefill, float32}) {
    c.graph = true;
    expect_matches_reference(c, ++seed);
  }
  for (int option : {0, 2}) {  // float32 on the SIMT kernel and on the tensor cores, whatever the environment says
    float32.graph = true, float32.float32_tensor_cores = option;
    expect_matches_reference(float32, ++seed);
  }
}

// One query row with grouped heads runs as `group` rows of one head per key/value head: the per-head
// strides of q, out, bias and keep become row strides. Covers per-head and broadcast masks, the
// sequence-major layout, both causal alignments (upper-left keeps the per-head layout), MQA, splits.
TEST(CudaAttention, GroupedHeadsOfOneDecodingStepShareTheirKeyValueTiles) {
  SKIP_WITHOUT_CUDA_DEVICE();
  struct Shape {
    int64_t q_heads, kv_heads, kv_len;
  };
  const Shape shapes[] = {{8, 2, 300}, {8, 1, 1500}, {32, 8, 129}, {6, 3, 64}, {16, 2, 4100}};
  int trial = 0;
  for (DType t : kAllTypes) {
    for (const Shape& s : shapes) {
      ++trial;
      Case c;
      c.dtype = t, c.batch = 2, c.q_len = 1, c.q_heads = s.q_heads, c.kv_heads = s.kv_heads, c.kv_len = s.kv_len;
      c.head_dim = c.v_head_dim = trial % 2 ? 128 : 64;
      c.bias = trial % 3 == 0 ? Broadcast::kFull : (trial % 3 == 1 ? Broadcast::kPerHead : Broadcast::kPerKey);
      c.keep = trial % 2 ? Broadcast::kFull : Broadcast::kNone;
      c.layout = trial % 4 == 1 ? Layout::kSeqMajor : Layout::kDense;
      c.causal = trial % 5 == 2 ? CausalAlignment::kUpperLeft : CausalAlignment::kLowerRight;
      c.masked_rows = MaskedRows::kNaN, c.keep_probability = 0.7f;
      expect_matches_reference(c, static_cast<uint32_t>(500 + trial));
    }
  }
}

#if defined(ORTFLASH_SIMT)
// On the emulator the launches can be counted: properties of the kernels' work, not of their timing.

TEST(CudaAttentionWork, LdmatrixReadsAreFreeOfBankConflictsAtEveryHeadDim) {
  for (int64_t d : {32, 64, 96, 128, 256}) {
    for (bool with_bias : {false, true}) {  // the plain and the general variant
      Case c;
      c.dtype = DType::kFloat16, c.head_dim = c.v_head_dim = d, c.q_len = 70, c.kv_len = 150;
      c.bias = with_bias ? Broadcast::kPerKey : Broadcast::kNone;
      simt::take_stats();
      expect_matches_reference(c, static_cast<uint32_t>(d));
      const simt::LaunchStats stats = simt::take_stats();
      EXPECT_GT(stats.ldmatrix, 0u) << "D=" << d;
      EXPECT_EQ(stats.ldmatrix_conflicts, 0u) << "D=" << d << " bias=" << with_bias;
    }
  }
  // float32 on the tensor cores: the same chunk addressing over rows of 4-float chunks (with K's lo parts too).
  for (const char* variant : {"1", "2"}) {
    const ScopedEnv tensor_cores("ORTFLASH_CUDA_FLOAT32_TENSOR_CORES", variant);
    for (int64_t d : {64, 128}) {
      Case c;
      c.dtype = DType::kFloat32, c.head_dim = c.v_head_dim = d, c.q_len = 70, c.kv_len = 150, c.bias = Broadcast::kPerKey;
      simt::take_stats();
      expect_matches_reference(c, static_cast<uint32_t>(d));
      const simt::LaunchStats stats = simt::take_stats();
      EXPECT_GT(stats.ldmatrix, 0u) << "float32 D=" << d;
      EXPECT_EQ(stats.ldmatrix_conflicts, 0u) << "float32 D=" << d << " variant " << variant;
    }
  }
}

// Decoding (at most 64 query rows per head after folding the GQA group) runs one-warp 16-row blocks
// over many key splits, plus the combine; 65 rows and more take the 4-warp prefill blocks.
TEST(CudaAttentionWork, DecodingRunsOneWarpBlocksOverManyKeySplits) {
  const auto run = [](int64_t q_heads, int64_t kv_heads, int64_t kv_len = 4096) {
    Case c;
    c.dtype = DType::kFloat16, c.q_len = 1, c.kv_len = kv_len, c.q_heads = q_heads, c.kv_heads = kv_heads;
    c.head_dim = c.v_head_dim = 128;
    simt::take_stats();
    expect_matches_reference(c, 95);
    return simt::take_stats();
  };
  const simt::LaunchStats mha = run(4, 4, 2048);  // 1 row per head
  EXPECT_EQ(mha.launches, 2u);                    // the kernel and the split combine
  EXPECT_EQ(mha.min_block_threads, 32u);
  // 32 key tiles per head (fewer than kDecodeLongTiles): one tile per split; + 4 combine blocks.
  EXPECT_EQ(mha.blocks, 4u * 32u + 4u) << "32 key tiles per head should be split 32 ways";
  // 64 tiles and more: at least kDecodeMinTilesPerSplit (3) tiles per split: at most 21 splits, which
  // rounding makes 16 splits of 4 tiles.
  EXPECT_EQ(run(4, 4, 4096).blocks, 4u * 16u + 4u);
  const simt::LaunchStats group64 = run(64, 1);  // 64 rows: four 16-row blocks per split
  EXPECT_EQ(group64.min_block_threads, 32u);
  const simt::LaunchStats group80 = run(80, 1);  // 80 rows: the prefill blocks
  EXPECT_EQ(group80.min_block_threads, 128u);
}

// Bias and keep rows of whole 16-byte chunks go through cp.async into shared tiles. Rows that are not (an
// odd pitch) are first copied into scratch rows that are (one more launch) when the call lends scratch and
// is not a decoding step, and read from global memory element by element otherwise.
TEST(CudaAttentionWork, ChunkedMaskRowsAreCopiedIntoSharedTiles) {
  const auto run = [](Broadcast bias, Broadcast keep, int64_t pitch, bool lend_scratch = true) {
    Case c;
    c.dtype = DType::kFloat16, c.q_len = 128, c.kv_len = 256, c.head_dim = c.v_head_dim = 64;
    c.bias = bias, c.keep = keep, c.mask_pitch = pitch, c.lend_scratch = lend_scratch;
    simt::take_stats();
    expect_matches_reference(c, 96);
    return simt::take_stats();
  };
  const uint64_t none = run(Broadcast::kNone, Broadcast::kNone, 0).cp_async;
  // 64x64 tiles, 2 query blocks x 4 key tiles: a full bias adds 64 rows x 8 chunks per tile, a full keep
  // 64 x 4, a per-key bias one row of 8.
  EXPECT_EQ(run(Broadcast::kFull, Broadcast::kNone, 0).cp_async, none + 2 * 4 * 64 * 8);
  EXPECT_EQ(run(Broadcast::kNone, Broadcast::kFull, 0).cp_async, none + 2 * 4 * 64 * 4);
  EXPECT_EQ(run(Broadcast::kPerKey, Broadcast::kNone, 0).cp_async, none + 2 * 4 * 8);
  const simt::LaunchStats aligned = run(Broadcast::kFull, Broadcast::kFull, 0);
  const simt::LaunchStats repacked = run(Broadcast::kFull, Broadcast::kFull, 257);
  EXPECT_EQ(repacked.cp_async, aligned.cp_async);
  EXPECT_EQ(repacked.launches, aligned.launches + 2);  // a repack of the bias and one of the keep mask
  const simt::LaunchStats in_place = run(Broadcast::kFull, Broadcast::kFull, 257, false);
  EXPECT_EQ(in_place.cp_async, run(Broadcast::kNone, Broadcast::kNone, 0, false).cp_async);
  EXPECT_EQ(in_place.launches, 1u);
  // Decoding reads its few mask rows in place: no launch added to every step.
  const auto decode = [](Broadcast bias) {
    Case c;
    c.dtype = DType::kFloat16, c.q_len = 1, c.kv_len = 4095, c.q_heads = 8, c.kv_heads = 2, c.bias = bias;
    simt::take_stats();
    expect_matches_reference(c, 98);
    return simt::take_stats().launches;
  };
  EXPECT_EQ(decode(Broadcast::kPerKey), decode(Broadcast::kNone));
}

// Bias and keep without softcap run the plain variant with the masks in its accumulators, at its 128x64
// tiles at head dim 128 (two barriers per key tile); softcap, or a bfloat16 bias with scale * log2(e) > 1,
// takes the general variant's 128x32 tiles: twice the key tiles, twice the barriers.
TEST(CudaAttentionWork, BiasAndKeepRunAtThePlainVariantsTiles) {
  const auto barriers = [](DType dtype, Broadcast bias, Broadcast keep, float softcap = 0.0f, float scale = NAN) {
    Case c;
    c.dtype = dtype, c.q_len = 128, c.kv_len = 512, c.head_dim = c.v_head_dim = 128, c.bias = bias, c.keep = keep;
    c.softcap = softcap, c.scale_override = scale, c.magnitude = 0.25f;
    c.lend_scratch = false;  // one block over all keys, no split-KV
    simt::take_stats();
    expect_matches_reference(c, 97);
    return simt::take_stats().barriers;
  };
  const uint64_t plain = barriers(DType::kFloat16, Broadcast::kNone, Broadcast::kNone);
  EXPECT_EQ(plain, 2u * 512 / 64);
  for (DType t : {DType::kFloat16, DType::kBFloat16}) {
    EXPECT_EQ(barriers(t, Broadcast::kPerKey, Broadcast::kNone), plain) << dtype_name(t);
    EXPECT_EQ(barriers(t, Broadcast::kFull, Broadcast::kNone), plain) << dtype_name(t);
    EXPECT_EQ(barriers(t, Broadcast::kNone, Broadcast::kPerKey), plain) << dtype_name(t);
    EXPECT_EQ(barriers(t, Broadcast::kFull, Broadcast::kFull), plain) << dtype_name(t);
    EXPECT_EQ(barriers(t, Broadcast::kPerKey, Broadcast::kNone, 30.0f), 2 * plain) << dtype_name(t);
  }
  EXPECT_EQ(barriers(DType::kFloat16, Broadcast::kPerKey, Broadcast::kNone, 0.0f, 1.0f), plain);
  EXPECT_EQ(barriers(DType::kBFloat16, Broadcast::kPerKey, Broadcast::kNone, 0.0f, 1.0f), 2 * plain);
  EXPECT_EQ(barriers(DType::kBFloat16, Broadcast::kNone, Broadcast::kPerKey, 0.0f, 1.0f), plain);
}

// Whether float32 prefill calls run on the tensor cores (3xTF32) in this process (on the emulator, where
// ORTFLASH_CUDA_FLOAT32_TENSOR_CORES is 1 or 2: kEmulatorPinsKernels).
bool float32_on_tensor_cores() {
  const char* value = std::getenv("ORTFLASH_CUDA_FLOAT32_TENSOR_CORES");
  return value != nullptr && (std::string(value) == "1" || std::string(value) == "2");
}

// The mma instructions a case runs with the live-key passes on (ORTFLASH_CUDA_LIVE_ROWS=1 too) or off
// (ORTFLASH_CUDA_LIVE_KEYS=0); its output is checked against the reference either way.
uint64_t mma_count(const Case& c, bool live_keys, uint32_t seed) {
  const ScopedEnv keys("ORTFLASH_CUDA_LIVE_KEYS", live_keys ? "1" : "0");
  const ScopedEnv rows("ORTFLASH_CUDA_LIVE_ROWS", "1");  // the per-slice passes too (off by default)
  simt::take_stats();
  expect_matches_reference(c, seed);
  return simt::take_stats().mma;
}

// The key tiles of a padding mask's padding are skipped: with 256 of 512 keys padded in one of two batch
// entries, a quarter of the tensor-core work goes, at either end; ORTFLASH_CUDA_LIVE_KEYS=0 computes them
// all. Where the bound cannot prove the padding's weights 0 (queries large enough to outscore the bias, an
// infinite value), nothing is skipped.
TEST(CudaAttentionWork, PaddedKeyTilesAreSkipped) {
  const auto mma = [](const Case& c, bool live_keys) { return mma_count(c, live_keys, 99); };
  for (DType t : kAllTypes) {
    for (Broadcast keep : {Broadcast::kNone, Broadcast::kPerKey}) {
      for (bool left : {false, true}) {
        SCOPED_TRACE(std::string(dtype_name(t)) + (keep == Broadcast::kNone ? " bias" : " bias+keep") + (left ? " left" : " right"));
        Case c;
        c.dtype = t, c.batch = 2, c.q_len = 128, c.kv_len = 512, c.head_dim = c.v_head_dim = 64, c.keep_probability = 1.0f;
        c.bias = Broadcast::kPerKey, c.keep = keep, c.padded_keys = 256, c.left_padding = left;
        const uint64_t all = mma(c, false);
        if (t != DType::kFloat32 || float32_on_tensor_cores()) {
          EXPECT_EQ(4 * mma(c, true), 3 * all);
        } else {  // the tiled float32 kernel issues no mma: only its output is checked (in mma_count)
          EXPECT_EQ(all, 0u);
        }
      }
    }
  }
  Case c;
  c.dtype = DType::kFloat16, c.batch = 2, c.q_len = 128, c.kv_len = 512, c.head_dim = c.v_head_dim = 64;
  c.bias = Broadcast::kPerKey, c.padded_keys = 256;
  // Causal, left padding: only the query blocks past the padding see the first real key.
  c.causal = CausalAlignment::kUpperLeft, c.left_padding = true, c.q_len = 512, c.masked_rows = MaskedRows::kNaN;
  EXPECT_LT(mma(c, true), mma(c, false));
  c.causal = CausalAlignment::kNone, c.left_padding = false, c.q_len = 128, c.masked_rows = MaskedRows::kZero;
  c.padding_bias = -10000.0f, c.padding_outscores_bias = true, c.magnitude = 40.0f, c.scale_override = 0.125f;
  EXPECT_EQ(mma(c, true), mma(c, false));
  c.padding_outscores_bias = false, c.magnitude = 1.0f, c.scale_override = NAN, c.infinite_padding_value = true;
  EXPECT_EQ(mma(c, true), mma(c, false));
  // The same through the per-slice pass: a (B,1,S,S) bias, from 512 keys.
  c.bias = Broadcast::kPerBatchRows, c.kv_len = 1024, c.padded_keys = 512;
  EXPECT_EQ(mma(c, true), mma(c, false));
  c.infinite_padding_value = false, c.padding_outscores_bias = true, c.magnitude = 40.0f, c.scale_override = 0.125f;
  EXPECT_EQ(mma(c, true), mma(c, false));
  c.padding_outscores_bias = false, c.magnitude = 1.0f, c.scale_override = NAN;
  EXPECT_EQ(4 * mma(c, true), 3 * mma(c, false));
}

// By default the passes run only where they paid off on an H200: for 16-bit inputs a keep mask's from 1024 keys, a
// bias's never, the per-slice ones (row-varying masks) only when ORTFLASH_CUDA_LIVE_ROWS=1 asks; for float32 all of
// them from 512 keys (ORTFLASH_CUDA_LIVE_ROWS=0 turns the per-slice ones off).
TEST(CudaAttentionWork, LivePassesRunByDefaultOnlyWhereTheyPaidOff) {
  const auto mma = [](const Case& c, const char* live_keys, const char* live_rows = "default") {
    const ScopedEnv keys("ORTFLASH_CUDA_LIVE_KEYS", live_keys), rows("ORTFLASH_CUDA_LIVE_ROWS", live_rows);
    simt::take_stats();
    expect_matches_reference(c, 96);
    return simt::take_stats().mma;
  };
  Case c;
  c.dtype = DType::kFloat16, c.batch = 2, c.q_len = 128, c.head_dim = c.v_head_dim = 64, c.keep_probability = 1.0f;
  c.keep = Broadcast::kPerKey, c.kv_len = 512, c.padded_keys = 256;
  EXPECT_EQ(mma(c, "default"), mma(c, "0"));
  EXPECT_LT(mma(c, "1"), mma(c, "0"));
  c.kv_len = 1024, c.padded_keys = 512;
  EXPECT_LT(mma(c, "default"), mma(c, "0"));
  c.keep = Broadcast::kNone, c.bias = Broadcast::kPerKey;
  EXPECT_EQ(mma(c, "default"), mma(c, "0"));
  c.kv_len = 2048, c.padded_keys = 1024;
  EXPECT_EQ(mma(c, "default"), mma(c, "0"));
  EXPECT_LT(mma(c, "1"), mma(c, "0"));

  // float32 on the tensor cores, as a GPU runs it by default (the suite's default here is the SIMT kernel, which
  // counts no mma): a bias's pass and a keep mask's from 512 keys, the per-slice passes too.
  const ScopedEnv tensor_cores("ORTFLASH_CUDA_FLOAT32_TENSOR_CORES", "2");
  Case f32 = c;
  f32.dtype = DType::kFloat32, f32.kv_len = 256, f32.padded_keys = 128;
  EXPECT_EQ(mma(f32, "default"), mma(f32, "0"));
  f32.kv_len = 512, f32.padded_keys = 256;
  EXPECT_LT(mma(f32, "default"), mma(f32, "0"));
  f32.bias = Broadcast::kNone, f32.keep = Broadcast::kPerKey;
  EXPECT_LT(mma(f32, "default"), mma(f32, "0"));

  Case rows;
  rows.dtype = DType::kFloat16, rows.batch = 2, rows.q_len = 512, rows.kv_len = 512, rows.head_dim = rows.v_head_dim = 64;
  rows.bias = Broadcast::kPerBatchRows, rows.causal_bias = true;
  EXPECT_EQ(mma(rows, "default"), mma(rows, "0"));
  EXPECT_LT(mma(rows, "default", "1"), mma(rows, "0"));
  rows.dtype = DType::kFloat32;
  EXPECT_LT(mma(rows, "default"), mma(rows, "0"));
  EXPECT_EQ(mma(rows, "default", "0"), mma(rows, "0"));
}

// A causal mask held in a (B,1,S,S) bias (finfo.min above the diagonal) costs what the causal attribute costs: the
// per-slice ranges end at each block's last row, so the same key tiles run; with ORTFLASH_CUDA_LIVE_KEYS=0 every
// tile runs. With padding as well, fewer still.
TEST(CudaAttentionWork, CausalMasksInTheBiasSkipTheTilesAboveTheDiagonal) {
  const auto mma = [](const Case& c, bool live_keys) { return mma_count(c, live_keys, 98); };
  for (DType t : {DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(dtype_name(t));
    Case c;
    c.dtype = t, c.batch = 2, c.q_len = 512, c.kv_len = 512, c.head_dim = c.v_head_dim = 64;
    c.lend_scratch = true;
    Case attribute = c;
    attribute.causal = CausalAlignment::kUpperLeft;
    c.bias = Broadcast::kPerBatchRows, c.causal_bias = true;
    const uint64_t all = mma(c, false), live = mma(c, true);
    EXPECT_EQ(live, mma(attribute, true));
    EXPECT_LT(2 * live, all + all / 4);  // about half
    c.padded_keys = 256;
    EXPECT_LT(mma(c, true), live);
  }
}

// float32 prefill calls run on the tensor cores (3xTF32: three m16n8k8 per 8x8x8 product) unless
// ORTFLASH_CUDA_FLOAT32_TENSOR_CORES=0 (or a session's choice) says otherwise; decoding stays on the tiled kernel's
// splits.
TEST(CudaAttentionWork, Float32UsesTensorCoresUnlessToldOtherwise) {
  const auto run = [](int64_t q_len, int64_t d, const char* variant, Broadcast bias = Broadcast::kNone) {
    const ScopedEnv env("ORTFLASH_CUDA_FLOAT32_TENSOR_CORES", variant);
    Case c;
    c.dtype = DType::kFloat32, c.q_len = q_len, c.kv_len = 128, c.head_dim = c.v_head_dim = d, c.lend_scratch = false;
    c.bias = bias;
    simt::take_stats();
    expect_matches_reference(c, 95);
    return simt::take_stats();
  };
  const auto mma = [&](int64_t q_len, int64_t d, const char* variant) { return run(q_len, d, variant).mma; };
  EXPECT_EQ(mma(128, 64, "0"), 0u);
  // Three m16n8k8 per 16x8x8 block of each product, whatever the tiles: Q·Kᵀ has (128 / 16 row tiles) x (128 / 8
  // key tiles) x (64 / 8 k-steps) of them, P·V (128 / 16) x (64 / 8 output tiles) x (128 / 8 k-steps).
  EXPECT_EQ(mma(128, 64, "1"), 3u * (8 * 16 * 8 + 8 * 8 * 16));
  EXPECT_EQ(mma(1, 64, "1"), 0u);
  EXPECT_EQ(mma(128, 136, "1"), 0u);  // past capacity 128: the generic kernel
  // A session's choice (CudaOptions, from its config entry) overrides the environment, either way.
  const auto chosen = [](int option, const char* environment) {
    const ScopedEnv env("ORTFLASH_CUDA_FLOAT32_TENSOR_CORES", environment);
    Case c;
    c.dtype = DType::kFloat32, c.q_len = 128, c.kv_len = 128, c.lend_scratch = false, c.float32_tensor_cores = option;
    simt::take_stats();
    expect_matches_reference(c, 94);
    return simt::take_stats().mma;
  };
  EXPECT_EQ(chosen(2, "0"), mma(128, 64, "1"));
  EXPECT_EQ(chosen(0, "1"), 0u);
  EXPECT_EQ(3 * chosen(kFloat32OneTf32Pass, "1"), mma(128, 64, "1"));  // one TF32 product: a third of the mma
  EXPECT_EQ(3 * mma(128, 64, "3"), mma(128, 64, "1"));                // the environment's 3 too
  EXPECT_EQ(chosen(-1, "1"), mma(128, 64, "1"));
  // Neither a session's choice nor a valid value: the default, K and V split once per block.
  EXPECT_EQ(chosen(-1, "default"), mma(128, 64, "2"));
  EXPECT_GT(chosen(-1, "default"), 0u);
  // Splitting K and V once per block: the same mma, two more barriers per key tile (2 blocks x 2 tiles of 64 keys).
  // Where the device does not let a block have its tiles, as 1: at head dim 128 with a bias (2 x 4 tiles of 32
  // keys) they take 108 KiB, more than an sm_86 GPU's 99 (the CTest entry ...float32_split_tiles_99_kib).
  int opt_in = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&opt_in, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0), cudaSuccess);
  const simt::LaunchStats per_warp = run(128, 64, "1"), per_block = run(128, 64, "2");
  EXPECT_EQ(per_block.mma, per_warp.mma);
  EXPECT_EQ(per_block.barriers, per_warp.barriers + 2u * 2 * 2);
  const uint64_t extra_at_128 = opt_in >= 108 * 1024 ? 2u * 2 * 4 : 0;
  EXPECT_EQ(run(128, 128, "2", Broadcast::kPerKey).barriers, run(128, 128, "1", Broadcast::kPerKey).barriers + extra_at_128)
      << opt_in << " bytes";
}

TEST(CudaAttentionWork, GroupedDecodingReadsEachKeyValueTileOncePerGroup) {
  const auto copies = [](int64_t kv_heads) {
    Case c;
    c.dtype = DType::kBFloat16, c.q_len = 1, c.kv_len = 1024, c.q_heads = 8, c.kv_heads = kv_heads;
    c.head_dim = c.v_head_dim = 128, c.lend_scratch = false;
    simt::take_stats();
    expect_matches_reference(c, 90);
    return simt::take_stats().cp_async;
  };
  const uint64_t per_query_head = copies(8);  // 8 key/value heads: one per query head
  const uint64_t per_group = copies(2);       // 2 key/value heads of 4 query heads each
  // K and V tiles dominate the copies (the query tile is one row); folding makes them 4x fewer.
  EXPECT_LT(per_group * 3, per_query_head) << per_group << " vs " << per_query_head;
}

// The Hopper (wgmma) kernels run the plain variant's prefill calls when ORTFLASH_CUDA_HOPPER asks for one (1:
// cp.async loads, 2: TMA loads by a producer warpgroup; their own CTest entries); masks, softcap and decoding stay on
// the mma.sync kernels.
TEST(CudaHopperWork, PlainPrefillRunsOnWgmmaWhenRequested) {
  const char* requested = std::getenv("ORTFLASH_CUDA_HOPPER");
  const std::string variant = requested != nullptr ? requested : "";
  if (variant != "1" && variant != "2") GTEST_SKIP() << "ORTFLASH_CUDA_HOPPER=1 or 2 selects a Hopper kernel";
  const bool tma = variant == "2";
  const auto run = [](DType dtype, int64_t d, bool causal, Broadcast bias = Broadcast::kNone, int64_t q_len = 128,
                      int64_t kv_len = 256, Broadcast keep = Broadcast::kNone) {
    Case c;
    c.dtype = dtype, c.q_len = q_len, c.kv_len = kv_len, c.head_dim = c.v_head_dim = d, c.bias = bias, c.keep = keep;
    c.causal = causal ? CausalAlignment::kUpperLeft : CausalAlignment::kNone;
    c.lend_scratch = false;  // no split-KV: one block per 128 query rows
    simt::take_stats();
    expect_matches_reference(c, 99);
    return simt::take_stats();
  };
  for (DType t : {DType::kFloat16, DType::kBFloat16}) {
    for (int64_t d : {64, 128}) {
      // One block of two warpgroups over two 128-key tiles: per warpgroup and tile, d/16 wgmma for Q·Kᵀ and
      // 8 for P·V. TMA: per 64 head-dim columns one box of Q and one of K and of V per tile; no cp.async, and
      // no block-wide barrier in the key loop (one after the mbarrier setup).
      const simt::LaunchStats plain = run(t, d, false);
      EXPECT_EQ(plain.wgmma, 2u * 2u * uint64_t(d / 16 + 8)) << dtype_name(t) << " D=" << d;
      EXPECT_EQ(plain.mma, 0u);
      if (tma) {
        EXPECT_EQ(plain.tma, uint64_t(d / 64) * (1u + 2u * 2u)) << dtype_name(t) << " D=" << d;
        EXPECT_EQ(plain.cp_async, 0u);
        EXPECT_EQ(plain.barriers, 1u);
      } else {
        EXPECT_EQ(plain.tma, 0u);
        EXPECT_EQ(plain.barriers, 2u);
      }
      // Causal, 256 x 256: the first 128 rows see one key tile, the last 128 both.
      EXPECT_EQ(run(t, d, true, Broadcast::kNone, 256, 256).wgmma, 3u * 2u * uint64_t(d / 16 + 8)) << dtype_name(t);
      // A per-key bias (the encoder's padding mask): the TMA kernel stages one bias row per key tile (two boxes of
      // 64 keys) with K; the cp.async kernel leaves masks to the mma.sync kernel.
      const simt::LaunchStats masked = run(t, d, false, Broadcast::kPerKey);
      if (tma) {
        EXPECT_EQ(masked.wgmma, plain.wgmma) << dtype_name(t) << " D=" << d;
        EXPECT_EQ(masked.tma, plain.tma + 2u * 2u) << dtype_name(t) << " D=" << d;
        EXPECT_EQ(masked.mma, 0u);
        // A full keep mask: one box of 128 keys x 128 rows per tile. Bias and keep together: their tiles fit beside
        // K and V at head dim 64 only; at 128 such calls stay on the mma.sync kernel.
        const simt::LaunchStats keep = run(t, d, false, Broadcast::kNone, 128, 256, Broadcast::kFull);
        EXPECT_EQ(keep.tma, plain.tma + 2u) << dtype_name(t) << " D=" << d;
        const simt::LaunchStats both = run(t, d, false, Broadcast::kFull, 128, 256, Broadcast::kPerKey);
        EXPECT_EQ(both.wgmma, d == 64 ? plain.wgmma : 0u) << dtype_name(t) << " D=" << d;
      } else {
        EXPECT_EQ(masked.wgmma, 0u);
        EXPECT_GT(masked.mma, 0u);
      }
    }
  }
  // Head dim 256: 64-key tiles (O takes 128 accumulators per thread): per warpgroup and tile 16 wgmma for Q·Kᵀ, 4 for P·V.
  const simt::LaunchStats d256 = run(DType::kBFloat16, 256, false);
  EXPECT_EQ(d256.wgmma, 2u * 4u * (16u + 4u));
  if (tma) {
    EXPECT_EQ(d256.tma, 4u + 4u * (4u + 4u));
  }
  EXPECT_EQ(run(DType::kFloat16, 256, false, Broadcast::kPerKey).wgmma, 0u);  // masks at 256: the mma.sync kernel
  // Head dim 96 (Phi-3): tiles of 128 columns (the last 32 zeros), 6 k-steps of Q·Kᵀ, P·V at n = 96.
  const simt::LaunchStats d96 = run(DType::kFloat16, 96, false);
  EXPECT_EQ(d96.wgmma, 2u * 2u * (6u + 8u));
  if (tma) {
    EXPECT_EQ(d96.tma, 2u + 2u * (2u + 2u));
  }
  EXPECT_EQ(run(DType::kFloat16, 32, false).wgmma, 0u);  // head dim 32: the mma.sync kernel
  EXPECT_EQ(run(DType::kFloat16, 128, false, Broadcast::kNone, 1, 512).wgmma, 0u);  // decoding
}

// Without ORTFLASH_CUDA_HOPPER naming a kernel, an H100/H200 runs the TMA kernel from 256 keys (one 128-key tile
// leaves it nothing to pipeline: the mma.sync kernel was faster there), masks in the accumulators included; at head
// dim 256 the cp.async wgmma kernel.
TEST(CudaHopperWork, TmaKernelIsTheDefaultFrom256Keys) {
  const auto run = [](const char* setting, int64_t kv_len, Broadcast bias = Broadcast::kNone) {
    const ScopedEnv env("ORTFLASH_CUDA_HOPPER", setting);
    Case c;
    c.dtype = DType::kFloat16, c.q_len = 128, c.kv_len = kv_len, c.head_dim = c.v_head_dim = 128, c.bias = bias;
    c.lend_scratch = false;
    simt::take_stats();
    expect_matches_reference(c, 98);
    return simt::take_stats();
  };
  const simt::LaunchStats by_default = run("default", 256);
  EXPECT_GT(by_default.wgmma, 0u);
  EXPECT_GT(by_default.tma, 0u);
  EXPECT_EQ(by_default.mma, 0u);
  EXPECT_EQ(run("2", 256).wgmma, by_default.wgmma);
  EXPECT_GT(run("default", 1000, Broadcast::kPerKey).tma, 0u);
  const simt::LaunchStats short_keys = run("default", 128);
  EXPECT_EQ(short_keys.wgmma, 0u);
  EXPECT_GT(short_keys.mma, 0u);
  EXPECT_GT(run("2", 128).wgmma, 0u);  // a named kernel runs at every length
  EXPECT_EQ(run("0", 256).wgmma, 0u);
  // Head dim 256: the cp.async kernel (the TMA one spills there).
  const ScopedEnv env("ORTFLASH_CUDA_HOPPER", "default");
  Case d256;
  d256.dtype = DType::kBFloat16, d256.q_len = 128, d256.kv_len = 256, d256.head_dim = d256.v_head_dim = 256;
  d256.lend_scratch = false;
  simt::take_stats();
  expect_matches_reference(d256, 97);
  const simt::LaunchStats stats = simt::take_stats();
  EXPECT_GT(stats.wgmma, 0u);
  EXPECT_EQ(stats.tma, 0u);
}
#endif

TEST(CudaAttention, SingleKeyGivesThatKeysValue) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    Case c;
    c.dtype = t, c.q_len = 77, c.kv_len = 1, c.q_heads = 4, c.kv_heads = 1;
    expect_matches_reference(c, 51);
  }
}

TEST(CudaAttention, PrimeLengthsAndRandomShapes) {
  SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(7);
  const int64_t primes[] = {2, 3, 13, 31, 61, 127, 251, 509, 1021};
  const int64_t head_dims[] = {32, 40, 64, 80, 96, 128, 256, 17};
  for (int trial = 0; trial < 24; ++trial) {
    Case c;
    c.dtype = kAllTypes[trial % 3];
    c.q_len = primes[pick(rng, 0, 8)], c.kv_len = primes[pick(rng, 0, 8)];
    c.head_dim = c.v_head_dim = head_dims[pick(rng, 0, 7)];
    c.kv_heads = pick(rng, 1, 2), c.q_heads = c.kv_heads * pick(rng, 1, 3), c.batch = pick(rng, 1, 2);
    c.causal = static_cast<CausalAlignment>(pick(rng, 0, 2));
    c.bias = static_cast<Broadcast>(pick(rng, 0, 5));
    c.keep = static_cast<Broadcast>(pick(rng, 0, 5));
    c.softcap = pick(rng, 0, 1) ? 20.0f : 0.0f;
    c.masked_rows = static_cast<MaskedRows>(pick(rng, 0, 1));
    // Keeps the double-precision reference to about 1e8 multiply-adds.
    if (c.batch * c.q_heads * c.q_len * c.kv_len * (c.head_dim + c.v_head_dim) > 100000000) {
      c.batch = 1, c.q_heads = c.kv_heads, c.q_len = std::min<int64_t>(c.q_len, 127);
    }
    expect_matches_reference(c, static_cast<uint32_t>(1000 + trial));
  }
}

TEST(CudaAttention, LargeMagnitudeInputsStayFinite) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType t : kAllTypes) {
    Case c;  // |q|, |k|, |v| up to 1e3 with a scale keeping scores O(10)
    c.dtype = t, c.magnitude = 1000.0f, c.scale_default = false, c.q_len = 100, c.kv_len = 300;
    c.head_dim = c.v_head_dim = 64, c.bias = Broadcast::kPerKey;
    expect_matches_reference(c, 61);

    Case peaked;  // default scale: scores in the hundreds, softmax nearly one-hot, no overflow
    peaked.dtype = t, peaked.magnitude = 8.0f, peaked.q_len = 64, peaked.kv_len = 200;
    peaked.head_dim = peaked.v_head_dim = 128;
    expect_matches_reference(peaked, 62);
  }
}

// The plain tensor-core variant folds a positive scale into its exponentials (max over raw scores);
// a zero or negative scale must take the general variant, or a hidden key would weigh exp2(-inf * 0)
// = NaN (zero) or the row max would be the smallest score (negative).
TEST(CudaAttention, ZeroAndNegativeScalesKeepTheSoftmaxExact) {
  SKIP_WITHOUT_CUDA_DEVICE();
  uint32_t seed = 90;
  for (DType t : kAllTypes) {
    for (float scale : {0.0f, -0.125f, 0.125f}) {
      for (CausalAlignment causal : {CausalAlignment::kNone, CausalAlignment::kLowerRight}) {
        Case c;
        c.dtype = t, c.scale_override = scale, c.causal = causal, c.q_len = 70, c.kv_len = 150;
        c.head_dim = c.v_head_dim = 128;
        expect_matches_reference(c, seed++);
        Case decode = c;  // the one-warp decoding tiles and split-KV
        decode.q_len = 1, decode.kv_len = 3000;
        expect_matches_reference(decode, seed++);
      }
    }
  }
}

// variant: the session's choice (CudaOptions::float32_tensor_cores), which the environment cannot override.
void expect_float32_tensor_cores_match_the_reference(int variant) {
  uint32_t seed = 300;
  const auto base = [variant](int64_t d, int64_t dv, int64_t q_len, int64_t kv_len) {
    Case c;
    c.dtype = DType::kFloat32, c.head_dim = d, c.v_head_dim = dv, c.q_len = q_len, c.kv_len = kv_len;
    c.float32_tensor_cores = variant;
    return c;
  };
  for (int64_t d : {64, 128, 40, 96}) {  // capacities 64 and 128, and head dims padded up to them
    Case c = base(d, d, 130, 257);
    c.batch = 2, c.q_heads = 4, c.kv_heads = 2;
    expect_matches_reference(c, seed++);
    c.causal = CausalAlignment::kLowerRight, c.kv_len = 300;
    expect_matches_reference(c, seed++);
  }
  Case value_dim = base(128, 64, 100, 77);  // Dv != D, causal upper-left with fewer keys than queries
  value_dim.causal = CausalAlignment::kUpperLeft, value_dim.masked_rows = MaskedRows::kNaN;
  expect_matches_reference(value_dim, seed++);
  for (Broadcast bias : {Broadcast::kPerKey, Broadcast::kFull, Broadcast::kPerHead, Broadcast::kPerBatchRows}) {
    Case c = base(64, 64, 96, 200);
    c.batch = 2, c.q_heads = 2, c.kv_heads = 2, c.bias = bias, c.keep = Broadcast::kPerQuery;
    expect_matches_reference(c, seed++);
  }
  Case softcap = base(128, 128, 80, 150);
  softcap.softcap = 30.0f, softcap.bias = Broadcast::kFull, softcap.scale_default = false;
  expect_matches_reference(softcap, seed++);
  Case lowest = base(64, 64, 70, 129);  // float32's finfo.min in the bias is an ordinary number
  lowest.bias = Broadcast::kFull, lowest.lowest_bias = true, lowest.keep = Broadcast::kFull;
  expect_matches_reference(lowest, seed++);
  Case masked = base(64, 64, 90, 64);
  masked.keep = Broadcast::kFull, masked.masked_row_every = 7, masked.infinite_bias_row = true;
  masked.bias = Broadcast::kFull, masked.masked_rows = MaskedRows::kNaN;
  expect_matches_reference(masked, seed++);
  for (float scale : {0.0f, -0.3f}) {
    Case c = base(64, 64, 72, 90);
    c.scale_override = scale;
    expect_matches_reference(c, seed++);
  }
  if (variant != kFloat32OneTf32Pass) {  // one TF32 pass errs in proportion to the scores: not at float16's bound here
    Case large = base(128, 128, 65, 300);
    large.magnitude = 100.0f, large.scale_default = false;
    expect_matches_reference(large, seed++);
  }
  for (Layout layout : {Layout::kSeqMajor, Layout::kPaddedRows, Layout::kOddStrides}) {
    Case c = base(64, 64, 100, 120);
    c.layout = layout, c.q_heads = 2, c.kv_heads = 2;
    expect_matches_reference(c, seed++);
  }
  Case splits = base(64, 64, 65, 4000);  // one query block: the keys are split across blocks
  expect_matches_reference(splits, seed++);
  Case padded = base(64, 64, 128, 512);  // padding whose key tiles the live-key pass leaves out
  padded.batch = 2, padded.bias = Broadcast::kPerKey, padded.padded_keys = 200, padded.left_padding = true;
  expect_matches_reference(padded, seed++);
  padded.padding_bias = -10000.0f, padded.infinite_padding_value = true;
  expect_matches_reference(padded, seed++);
}

// float32 on the tensor cores (3xTF32, ORTFLASH_CUDA_FLOAT32_TENSOR_CORES=1: every warp splits its K and V fragments
// into tf32 parts; =2: each K and V tile is split once per block): prefill calls at head dims up to 128, the whole
// contract, within float32's tolerance (the split products keep about 21 bits).
TEST(CudaAttention, Float32OnTensorCoresMatchesTheReference) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (int variant : {1, 2}) {
    SCOPED_TRACE("float32_tensor_cores " + std::to_string(variant));
    expect_float32_tensor_cores_match_the_reference(variant);
  }
}

// float32 in one TF32 pass (float32_tensor_cores 3, a session that allows TF32): the whole contract at float16's bound
// (TF32 keeps float16's 10 mantissa bits), scores of ordinary size.
TEST(CudaAttention, Float32InOneTf32PassMatchesTheReferenceAtTf32Precision) {
  SKIP_WITHOUT_CUDA_DEVICE();
  expect_float32_tensor_cores_match_the_reference(kFloat32OneTf32Pass);
}

TEST(CudaAttention, EmptyOutputsLaunchNothing) {
  SKIP_WITHOUT_CUDA_DEVICE();
  AttentionParams p;
  p.dtype = DType::kFloat16;
  p.batch = 0, p.q_heads = 4, p.kv_heads = 2, p.q_len = 16, p.kv_len = 16, p.head_dim = 64, p.v_head_dim = 64;
  const ortflash::CudaScratch no_scratch;
  EXPECT_EQ(ortflash::flash_attention_cuda(p, nullptr, no_scratch), "");  // null pointers are never touched
  p.batch = 1, p.q_len = 0;
  EXPECT_EQ(ortflash::flash_attention_cuda(p, nullptr, no_scratch), "");
  p.q_len = 16, p.v_head_dim = 0;
  EXPECT_EQ(ortflash::flash_attention_cuda(p, nullptr, no_scratch), "");
}

TEST(CudaAttention, InconsistentParamsAreRejectedWithAMessage) {
  SKIP_WITHOUT_CUDA_DEVICE();
  DeviceBuffer buffer(4096);
  AttentionParams p;
  p.dtype = DType::kFloat16;
  p.q = p.k = p.v = buffer.get();
  p.out = buffer.get();
  p.batch = 1, p.q_heads = 3, p.kv_heads = 2, p.q_len = 4, p.kv_len = 4, p.head_dim = 8, p.v_head_dim = 8;
  ortflash::SetDenseStrides(p);
  const std::string error = ortflash::flash_attention_cuda(p, nullptr, ortflash::CudaScratch{});
  EXPECT_NE(error.find("kv_heads"), std::string::npos) << error;
}

// A small subset for compute-sanitizer (memcheck, racecheck): every kernel once, with ragged edges.
TEST(CudaSanitizerSubset, SmallShapesOnEveryKernel) {
  SKIP_WITHOUT_CUDA_DEVICE();
  Case tensor_core;
  tensor_core.dtype = DType::kFloat16, tensor_core.q_len = 133, tensor_core.kv_len = 71, tensor_core.head_dim = 80;
  tensor_core.v_head_dim = 80, tensor_core.causal = CausalAlignment::kLowerRight, tensor_core.bias = Broadcast::kPerKey;
  tensor_core.keep = Broadcast::kFull;
  expect_matches_reference(tensor_core, 71);
  Case mask_tiles;  // bias and keep staged in shared memory (the last chunk of each row ragged), in the accumulators
  mask_tiles.dtype = DType::kBFloat16, mask_tiles.q_len = 133, mask_tiles.kv_len = 71, mask_tiles.mask_pitch = 80;
  mask_tiles.head_dim = mask_tiles.v_head_dim = 128, mask_tiles.bias = Broadcast::kFull, mask_tiles.keep = Broadcast::kPerKey;
  mask_tiles.causal = CausalAlignment::kUpperLeft;
  expect_matches_reference(mask_tiles, 77);
  Case general = mask_tiles;  // softcap: the general variant, its bias and keep tiles
  general.softcap = 30.0f, general.head_dim = general.v_head_dim = 64, general.causal = CausalAlignment::kLowerRight;
  expect_matches_reference(general, 78);
  for (int64_t d : {32, 128, 256}) {
    Case c;
    c.dtype = DType::kBFloat16, c.q_len = 70, c.kv_len = 100, c.head_dim = c.v_head_dim = d;
    expect_matches_reference(c, 72);
  }
  Case tiled;
  tiled.dtype = DType::kFloat32, tiled.q_len = 19, tiled.kv_len = 45, tiled.head_dim = 33, tiled.v_head_dim = 17;
  tiled.causal = CausalAlignment::kUpperLeft;
  expect_matches_reference(tiled, 73);
  Case generic;  // head dims above the tiled kernel's 128
  generic.dtype = DType::kFloat32, generic.q_len = 9, generic.kv_len = 40, generic.head_dim = 136, generic.v_head_dim = 200;
  generic.causal = CausalAlignment::kLowerRight, generic.keep = Broadcast::kPerKey;
  expect_matches_reference(generic, 76);
  Case padded;  // the live-key pass over a padding bias (its norms: queries, keys and values of the padding)
  padded.dtype = DType::kBFloat16, padded.batch = 2, padded.q_heads = 2, padded.q_len = 70, padded.kv_len = 520;
  padded.head_dim = padded.v_head_dim = 64, padded.bias = Broadcast::kPerKey, padded.padded_keys = 200;
  {
    const ScopedEnv live_keys("ORTFLASH_CUDA_LIVE_KEYS", "1");  // by default a bias's pass runs from 2048 keys
    expect_matches_reference(padded, 79);
  }
  Case rows = padded;  // the per-slice passes over a (B,1,S,S) bias (asked for): a causal mask in it, and the padding
  rows.bias = Broadcast::kPerBatchRows, rows.causal_bias = true, rows.q_len = 70, rows.kv_len = 520, rows.padded_keys = 100;
  {
    const ScopedEnv live_rows("ORTFLASH_CUDA_LIVE_ROWS", "1");
    expect_matches_reference(rows, 80);
  }
  Case split;
  split.dtype = DType::kFloat16, split.q_len = 1, split.kv_len = 3001, split.head_dim = split.v_head_dim = 64;
  expect_matches_reference(split, 74);
  Case split_tiled = split;  // float32: the tiled SIMT kernel with splits
  split_tiled.dtype = DType::kFloat32;
  expect_matches_reference(split_tiled, 75);
  // float32 on the tensor cores (3xTF32): the plain variant, and the general one with its bias and keep tiles, with
  // the fragments split by every warp (1) and the K and V tiles split once per block (2).
  for (const char* variant : {"1", "2"}) {
    const ScopedEnv tensor_cores("ORTFLASH_CUDA_FLOAT32_TENSOR_CORES", variant);
    Case tf32 = tensor_core;
    tf32.dtype = DType::kFloat32, tf32.bias = Broadcast::kNone, tf32.keep = Broadcast::kNone;
    expect_matches_reference(tf32, 81);
    Case tf32_masks = mask_tiles;
    tf32_masks.dtype = DType::kFloat32, tf32_masks.head_dim = 64, tf32_masks.v_head_dim = 128;
    expect_matches_reference(tf32_masks, 82);
  }
}

}  // namespace

// Runs libortflash.so in every ONNX Runtime the build was given: the release it is built against and older ones
// (tests/compat/OrtCompat.proj restores them). Each runtime is dlopen'ed on its own and driven through its own C API,
// at the highest version it offers, as an application built against that release would drive it: it registers the
// op library (RegisterCustomOpsLibrary_V2), loads a model with one com.ortflash::FlashAttention node (written here in
// protobuf wire format) and runs it; the output must match a double-precision reference, and inconsistent shapes
// must fail the Run with a message naming them. One case also hands the library a copy of the runtime's API cut down
// to C API version 17, the version it asks for: a call to any newer function fails the test, naming its slot.
//
// One runtime per process: the op library keeps one ONNX Runtime API and one op domain for the whole process.
// CTest runs every case of every runtime in a process of its own.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "dynamic_library.h"
#include "onnxruntime_c_api.h"

namespace {

// ortflash::kMinOrtApiVersion: the C API version libortflash.so asks for (customop/src/ort/flash_attention_op.h).
constexpr uint32_t kLibraryApiVersion = 17;

// ---- The runtimes under test ----------------------------------------------------------------------------------------

std::vector<std::string> RuntimePaths() {
  std::vector<std::string> paths;
  std::stringstream list(ORTFLASH_TEST_RUNTIMES);
  for (std::string path; std::getline(list, path, '|');)
    if (!path.empty()) paths.push_back(path);
  return paths;
}

// The release a package folder holds: ".../microsoft.ml.onnxruntime/1.30.0/runtimes/..." gives "1.30.0".
std::string ReleaseOf(const std::string& path) {
  std::stringstream components(path);
  std::string release;
  for (std::string part; std::getline(components, part, '/');) {
    const bool is_release = !part.empty() && std::isdigit(static_cast<unsigned char>(part[0])) &&
                            part.find('.') != std::string::npos &&
                            part.find_first_not_of("0123456789.") == std::string::npos;
    if (is_release) release = part;
  }
  return release;
}

std::string RuntimeTestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string release = ReleaseOf(info.param);
  if (release.empty()) return "runtime_" + std::to_string(info.index);
  for (char& c : release)
    if (c == '.') c = '_';
  const std::vector<std::string> paths = RuntimePaths();
  for (size_t other = 0; other < info.index; ++other)
    if (ReleaseOf(paths[other]) == ReleaseOf(info.param)) return "ort_" + release + "_" + std::to_string(info.index);
  return "ort_" + release;
}

// ONNX Runtime as loaded from one libonnxruntime.so. Never unloaded: the env lives as long as the process.
struct Runtime {
  std::string path;
  const OrtApiBase* base = nullptr;
  const OrtApi* api = nullptr;
  uint32_t api_version = 0;
  OrtEnv* env = nullptr;
  std::string error;  // why it could not be loaded
};

std::string TakeMessage(const OrtApi* api, OrtStatus* status) {
  std::string message = api->GetErrorMessage(status);
  api->ReleaseStatus(status);
  return message;
}

Runtime LoadRuntime(const std::string& path) {
  Runtime runtime;
  runtime.path = path;
  void* handle = ortflash_test::OpenLibrary(path);
  if (handle == nullptr) {
    runtime.error = "loading it failed: " + ortflash_test::LibraryError();
    return runtime;
  }
  using GetApiBaseFn = const OrtApiBase* (*)();
  const auto get_api_base = reinterpret_cast<GetApiBaseFn>(ortflash_test::LibrarySymbol(handle, "OrtGetApiBase"));
  if (get_api_base == nullptr) {
    runtime.error = "no OrtGetApiBase in " + path;
    return runtime;
  }
  runtime.base = get_api_base();
  // The newest API this runtime offers, up to the one of the headers this test is compiled with (the OrtApi struct
  // only grows, so an older runtime's table is a prefix of the headers' one). A runtime that is asked for a version
  // it does not have answers nullptr (and prints a line saying which versions it has).
  for (uint32_t version = ORT_API_VERSION; version >= 1 && runtime.api == nullptr; --version) {
    runtime.api = runtime.base->GetApi(version);
    if (runtime.api != nullptr) runtime.api_version = version;
  }
  if (runtime.api == nullptr) {
    runtime.error = std::string("no C API version offered by ONNX Runtime ") + runtime.base->GetVersionString();
    return runtime;
  }
  if (OrtStatus* status = runtime.api->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "ortflash_compat", &runtime.env))
    runtime.error = "CreateEnv: " + TakeMessage(runtime.api, status);
  return runtime;
}

// ---- A model with one FlashAttention node, in protobuf wire format --------------------------------------------------

// A protobuf message being written: each field as its tag followed by its payload.
class Message {
 public:
  Message& Int(uint32_t field, int64_t value) {
    Tag(field, 0);
    Varint(static_cast<uint64_t>(value));  // negative int64: ten bytes of two's complement, as protobuf has it
    return *this;
  }
  Message& Float(uint32_t field, float value) {
    Tag(field, 5);
    uint32_t bits = 0;
    std::memcpy(&bits, &value, sizeof bits);
    for (int byte = 0; byte < 4; ++byte) bytes_.push_back(static_cast<char>((bits >> (8 * byte)) & 0xffu));
    return *this;
  }
  Message& Bytes(uint32_t field, const std::string& value) {
    Tag(field, 2);
    Varint(value.size());
    bytes_ += value;
    return *this;
  }
  Message& Sub(uint32_t field, const Message& message) { return Bytes(field, message.bytes_); }
  const std::string& bytes() const { return bytes_; }

 private:
  void Tag(uint32_t field, uint32_t wire_type) { Varint((uint64_t{field} << 3) | wire_type); }
  void Varint(uint64_t value) {
    for (; value >= 0x80; value >>= 7) bytes_.push_back(static_cast<char>((value & 0x7f) | 0x80));
    bytes_.push_back(static_cast<char>(value));
  }
  std::string bytes_;
};

// onnx.proto's TensorProto.DataType.
constexpr int64_t kOnnxFloat = 1;
constexpr int64_t kOnnxBool = 9;
constexpr int64_t kOnnxFloat16 = 10;

// ValueInfoProto of a tensor; rank > 0 gives every dimension a name of its own (any size is accepted), rank 0 no shape.
Message TensorValue(const std::string& name, int64_t elem_type, int rank) {
  Message tensor;
  tensor.Int(1, elem_type);
  if (rank > 0) {
    Message shape;
    for (int axis = 0; axis < rank; ++axis) shape.Sub(1, Message().Bytes(2, name + "_" + std::to_string(axis)));
    tensor.Sub(2, shape);
  }
  Message type;
  type.Sub(1, tensor);
  Message value;
  value.Bytes(1, name).Sub(2, type);
  return value;
}

// node_inputs: Q, K, V, then optionally bias and keep ("" for an absent bias). Rank-4 graph inputs.
std::string FlashAttentionModel(int64_t elem_type, const std::vector<std::string>& node_inputs, int64_t causal,
                                std::optional<float> scale) {
  Message node;
  for (const std::string& input : node_inputs) node.Bytes(1, input);
  node.Bytes(2, "Y").Bytes(3, "attention").Bytes(4, "FlashAttention").Bytes(7, "com.ortflash");
  node.Sub(5, Message().Bytes(1, "causal").Int(20, 2 /* INT */).Int(3, causal));
  if (scale) node.Sub(5, Message().Bytes(1, "scale").Int(20, 1 /* FLOAT */).Float(2, *scale));

  Message graph;
  graph.Sub(1, node).Bytes(2, "flash_attention");
  for (const std::string& input : node_inputs)
    if (!input.empty()) graph.Sub(11, TensorValue(input, input == "keep" ? kOnnxBool : elem_type, 4));
  graph.Sub(12, TensorValue("Y", elem_type, 0));

  Message model;
  model.Int(1, 8 /* IR version 8: every runtime since 1.14 reads it */).Bytes(2, "ortflash_compat_test");
  model.Sub(7, graph);
  model.Sub(8, Message().Bytes(1, "").Int(2, 17));
  model.Sub(8, Message().Bytes(1, "com.ortflash").Int(2, 1));
  return model.bytes();
}

// ---- Inputs, the run and the reference ------------------------------------------------------------------------------

// Exactly representable values in [-1, 1] (multiples of 1/64), so float16 holds them without rounding.
std::vector<double> Values(size_t count, uint32_t seed) {
  std::vector<double> values(count);
  uint32_t state = seed;
  for (double& value : values) {
    state = state * 1664525u + 1013904223u;
    value = static_cast<double>(static_cast<int>((state >> 16) % 129) - 64) / 64.0;
  }
  return values;
}

uint16_t ExactHalf(double value) {
  const float f = static_cast<float>(value);
  uint32_t bits = 0;
  std::memcpy(&bits, &f, sizeof bits);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  if ((bits & 0x7fffffffu) == 0) return sign;
  const int exponent = static_cast<int>((bits >> 23) & 0xffu) - 127 + 15;
  EXPECT_TRUE(exponent >= 1 && exponent <= 30 && (bits & 0x1fffu) == 0) << value << " is not a normal float16";
  return static_cast<uint16_t>(sign | (exponent << 10) | ((bits >> 13) & 0x3ffu));
}

double HalfValue(uint16_t half) {
  const int exponent = (half >> 10) & 0x1f;
  const int mantissa = half & 0x3ff;
  double magnitude = 0.0;
  if (exponent == 0) {
    magnitude = std::ldexp(mantissa, -24);
  } else if (exponent == 31) {
    magnitude = mantissa != 0 ? std::nan("") : HUGE_VAL;
  } else {
    magnitude = std::ldexp(mantissa + 1024, exponent - 25);
  }
  return (half & 0x8000) != 0 ? -magnitude : magnitude;
}

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<double> values;  // keep: 0 or 1
};

size_t ElementCount(const std::vector<int64_t>& shape) {
  size_t count = 1;
  for (int64_t dim : shape) count *= static_cast<size_t>(dim);
  return count;
}

// Y = FlashAttention(Q, K, V, bias?, keep?) exactly as DESIGN.md states it, in double precision; rank-4 tensors,
// bias and keep of rank 4 with dimensions either full or 1.
std::vector<double> Reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* bias, const Tensor* keep,
                              int64_t causal, std::optional<double> scale_attribute) {
  const int64_t batch = q.shape[0], q_heads = q.shape[1], q_len = q.shape[2], dim = q.shape[3];
  const int64_t kv_heads = k.shape[1], kv_len = k.shape[2], v_dim = v.shape[3];
  const double scale = scale_attribute.value_or(1.0 / std::sqrt(static_cast<double>(dim)));
  auto mask_at = [&](const Tensor& mask, int64_t b, int64_t h, int64_t i, int64_t j) {
    const int64_t index[4] = {b, h, i, j};
    size_t offset = 0;
    for (size_t axis = 0; axis < 4; ++axis)
      offset = offset * static_cast<size_t>(mask.shape[axis]) + static_cast<size_t>(mask.shape[axis] == 1 ? 0 : index[axis]);
    return mask.values[offset];
  };
  std::vector<double> y(static_cast<size_t>(batch * q_heads * q_len * v_dim), 0.0);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < q_heads; ++h) {
      const int64_t kv_h = h / (q_heads / kv_heads);
      for (int64_t i = 0; i < q_len; ++i) {
        std::vector<double> scores(static_cast<size_t>(kv_len));
        std::vector<bool> visible(static_cast<size_t>(kv_len));
        double max_score = -HUGE_VAL;
        for (int64_t j = 0; j < kv_len; ++j) {
          double dot = 0.0;
          for (int64_t d = 0; d < dim; ++d)
            dot += q.values[static_cast<size_t>(((b * q_heads + h) * q_len + i) * dim + d)] *
                   k.values[static_cast<size_t>(((b * kv_heads + kv_h) * kv_len + j) * dim + d)];
          double score = scale * dot;
          if (bias) score += mask_at(*bias, b, h, i, j);
          bool seen = keep == nullptr || mask_at(*keep, b, h, i, j) != 0.0;
          if (causal == 1) seen = seen && j <= i;
          if (causal == 2) seen = seen && j <= i + kv_len - q_len;
          scores[static_cast<size_t>(j)] = score;
          visible[static_cast<size_t>(j)] = seen;
          if (seen) max_score = std::max(max_score, score);
        }
        if (max_score == -HUGE_VAL) continue;  // masked_rows "zero"
        double total = 0.0;
        for (int64_t j = 0; j < kv_len; ++j)
          if (visible[static_cast<size_t>(j)]) total += std::exp(scores[static_cast<size_t>(j)] - max_score);
        for (int64_t j = 0; j < kv_len; ++j) {
          if (!visible[static_cast<size_t>(j)]) continue;
          const double p = std::exp(scores[static_cast<size_t>(j)] - max_score) / total;
          for (int64_t e = 0; e < v_dim; ++e)
            y[static_cast<size_t>(((b * q_heads + h) * q_len + i) * v_dim + e)] +=
                p * v.values[static_cast<size_t>(((b * kv_heads + kv_h) * kv_len + j) * v_dim + e)];
        }
      }
    }
  return y;
}

// ---- ONNX Runtime's C API as version 17 has it ---------------------------------------------------------------------

// The OrtApi table only grows: version 17 is its first slots, up to SessionOptionsAppendExecutionProvider_OpenVINO_V2
// (ONNX Runtime's onnxruntime_c_api.cc asserts that slot as the end of version 17).
using ApiSlot = OrtStatus*(ORT_API_CALL*)();
constexpr size_t kApiSlots = sizeof(OrtApi) / sizeof(ApiSlot);
constexpr size_t kVersion17Slots = offsetof(OrtApi, SessionOptionsAppendExecutionProvider_OpenVINO_V2) / sizeof(ApiSlot) + 1;
static_assert(kVersion17Slots == 276, "C API version 17 has 276 functions");

const OrtApi* version17_forward = nullptr;  // the runtime's own table
std::mutex newer_slots_mutex;
std::vector<size_t> newer_slots_called;     // slot numbers: offsetof(OrtApi, Function) / sizeof(void*)

// What a slot newer than version 17 holds. In ONNX Runtime 1.17 the call would read past the end of the table; here it
// is recorded and fails (nearly every OrtApi function returns an OrtStatus*, and the others ignore or misread it).
template <size_t kSlot>
OrtStatus* ORT_API_CALL NewerThanVersion17() {
  {
    const std::lock_guard<std::mutex> lock(newer_slots_mutex);
    newer_slots_called.push_back(kSlot);
  }
  const std::string message = "OrtApi function #" + std::to_string(kSlot) + " is newer than C API version 17";
  return version17_forward->CreateStatus(ORT_NOT_IMPLEMENTED, message.c_str());
}

template <size_t... kSlots>
std::array<ApiSlot, sizeof...(kSlots)> TrapSlots(std::index_sequence<kSlots...>) {
  return {&NewerThanVersion17<kSlots>...};
}

OrtApi version17_api;  // the runtime's first 276 functions, traps after them
std::vector<uint32_t> registered_op_versions;

OrtStatus* ORT_API_CALL RecordingCustomOpDomainAdd(OrtCustomOpDomain* domain, const OrtCustomOp* op) noexcept {
  registered_op_versions.push_back(op->version);
  return version17_forward->CustomOpDomain_Add(domain, op);
}

const OrtApi* ORT_API_CALL Version17GetApi(uint32_t version) noexcept {
  return version >= 1 && version <= 17 ? &version17_api : nullptr;
}
const char* ORT_API_CALL Version17String() noexcept { return "1.17.0"; }
const OrtApiBase version17_base{&Version17GetApi, &Version17String};

// Makes version17_base hand out `api` (a runtime's table of version 17 or newer) cut down to version 17.
void CutDownToVersion17(const OrtApi* api) {
  std::array<ApiSlot, kApiSlots> slots = TrapSlots(std::make_index_sequence<kApiSlots>{});
  std::memcpy(slots.data(), api, kVersion17Slots * sizeof(ApiSlot));
  std::memcpy(&version17_api, slots.data(), sizeof version17_api);
  version17_forward = api;
  version17_api.CustomOpDomain_Add = &RecordingCustomOpDomainAdd;
  const std::lock_guard<std::mutex> lock(newer_slots_mutex);
  newer_slots_called.clear();
}

std::string NewerSlotsCalled() {
  const std::lock_guard<std::mutex> lock(newer_slots_mutex);
  std::string list;
  for (size_t slot : newer_slots_called) list += (list.empty() ? "#" : ", #") + std::to_string(slot);
  return list;
}

// ---- The fixture ----------------------------------------------------------------------------------------------------

// The result of one Run: the error message, or Y.
struct RunResult {
  std::optional<std::string> error;
  std::vector<int64_t> shape;
  std::vector<double> values;
};

class CompatTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    static std::optional<Runtime> loaded;
    if (loaded && loaded->path != GetParam())
      GTEST_SKIP() << "another ONNX Runtime (" << loaded->path << ") is loaded in this process; the op library serves one "
                   << "runtime per process: run each runtime's tests in a process of their own (CTest does)";
    if (!loaded) loaded = LoadRuntime(GetParam());
    runtime_ = &*loaded;
    ASSERT_TRUE(runtime_->error.empty()) << GetParam() << ": " << runtime_->error;
    api_ = runtime_->api;
  }

  void TearDown() override {
    if (session_ != nullptr) api_->ReleaseSession(session_);
    if (options_ != nullptr) api_->ReleaseSessionOptions(options_);
  }

  // A session of `model` with libortflash.so registered the way applications do it: the runtime loads the library
  // and calls its RegisterCustomOps with the runtime's own OrtApiBase.
  void CreateSession(const std::string& model) {
    ASSERT_NO_FATAL_FAILURE(CreateOptions());
    ASSERT_NO_FATAL_FAILURE(
        Check(api_->RegisterCustomOpsLibrary_V2(options_, ortflash_test::WidePath(ORTFLASH_TEST_OP_LIBRARY).c_str()),
              "RegisterCustomOpsLibrary_V2"));
    ASSERT_NO_FATAL_FAILURE(CreateSessionFromOptions(model));
  }

  void CreateOptions() {
    ASSERT_EQ(options_, nullptr);
    ASSERT_NO_FATAL_FAILURE(Check(api_->CreateSessionOptions(&options_), "CreateSessionOptions"));
    ASSERT_NO_FATAL_FAILURE(Check(api_->SetIntraOpNumThreads(options_, 2), "SetIntraOpNumThreads"));
  }

  void CreateSessionFromOptions(const std::string& model) {
    ASSERT_NO_FATAL_FAILURE(
        Check(api_->CreateSessionFromArray(runtime_->env, model.data(), model.size(), options_, &session_),
              "CreateSessionFromArray"));
  }

  // Runs the session on `inputs` (float or float16 as `element_type` says; "keep" is bool).
  RunResult Run(const std::vector<Tensor>& inputs, ONNXTensorElementDataType element_type) {
    RunResult result;
    OrtMemoryInfo* memory = nullptr;
    if (OrtStatus* status = api_->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &memory)) {
      result.error = "CreateCpuMemoryInfo: " + TakeMessage(api_, status);
      return result;
    }
    std::vector<std::vector<char>> buffers;
    std::vector<OrtValue*> values;
    std::vector<const char*> names;
    for (const Tensor& tensor : inputs) {
      const bool is_keep = tensor.name == "keep";
      const ONNXTensorElementDataType type = is_keep ? ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL : element_type;
      std::vector<char> bytes;
      for (double value : tensor.values) {
        if (is_keep) {
          bytes.push_back(static_cast<char>(value != 0.0));
        } else if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
          const uint16_t half = ExactHalf(value);
          const char* raw = reinterpret_cast<const char*>(&half);
          bytes.insert(bytes.end(), raw, raw + sizeof half);
        } else {
          const float f = static_cast<float>(value);
          const char* raw = reinterpret_cast<const char*>(&f);
          bytes.insert(bytes.end(), raw, raw + sizeof f);
        }
      }
      buffers.push_back(std::move(bytes));
      OrtValue* value = nullptr;
      if (OrtStatus* status = api_->CreateTensorWithDataAsOrtValue(memory, buffers.back().data(), buffers.back().size(),
                                                                   tensor.shape.data(), tensor.shape.size(), type, &value)) {
        result.error = "CreateTensorWithDataAsOrtValue: " + TakeMessage(api_, status);
        break;
      }
      values.push_back(value);
      names.push_back(tensor.name.c_str());
    }
    api_->ReleaseMemoryInfo(memory);

    const char* output_name = "Y";
    OrtValue* output = nullptr;
    if (!result.error) {
      if (OrtStatus* status = api_->Run(session_, nullptr, names.data(), values.data(), values.size(), &output_name, 1, &output))
        result.error = TakeMessage(api_, status);
    }
    for (OrtValue* value : values) api_->ReleaseValue(value);
    if (result.error) return result;

    OrtTensorTypeAndShapeInfo* info = nullptr;
    ONNXTensorElementDataType output_type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    size_t rank = 0;
    void* data = nullptr;
    OrtStatus* status = api_->GetTensorTypeAndShape(output, &info);
    if (status == nullptr) status = api_->GetTensorElementType(info, &output_type);
    if (status == nullptr) status = api_->GetDimensionsCount(info, &rank);
    if (status == nullptr) {
      result.shape.resize(rank);
      status = api_->GetDimensions(info, result.shape.data(), rank);
    }
    if (status == nullptr) status = api_->GetTensorMutableData(output, &data);
    if (info != nullptr) api_->ReleaseTensorTypeAndShapeInfo(info);
    if (status != nullptr) {
      result.error = "reading Y: " + TakeMessage(api_, status);
    } else if (output_type != element_type) {
      result.error = "Y has element type " + std::to_string(output_type) + ", not " + std::to_string(element_type);
    } else {
      const size_t count = ElementCount(result.shape);
      for (size_t index = 0; index < count; ++index) {
        if (element_type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
          uint16_t half = 0;
          std::memcpy(&half, static_cast<const char*>(data) + index * sizeof half, sizeof half);
          result.values.push_back(HalfValue(half));
        } else {
          float f = 0.0f;
          std::memcpy(&f, static_cast<const char*>(data) + index * sizeof f, sizeof f);
          result.values.push_back(f);
        }
      }
    }
    api_->ReleaseValue(output);
    return result;
  }

  void Check(OrtStatus* status, const char* what) {
    if (status != nullptr) FAIL() << what << " failed in ONNX Runtime " << Release() << ": " << TakeMessage(api_, status);
  }

  std::string Release() const { return runtime_->base->GetVersionString(); }

  Runtime* runtime_ = nullptr;
  const OrtApi* api_ = nullptr;
  OrtSessionOptions* options_ = nullptr;
  OrtSession* session_ = nullptr;
};

void ExpectClose(const std::vector<double>& actual, const std::vector<double>& expected, double tolerance) {
  ASSERT_EQ(actual.size(), expected.size());
  size_t mismatches = 0;
  for (size_t index = 0; index < actual.size(); ++index) {
    const double error = std::fabs(actual[index] - expected[index]);
    if (!(error <= tolerance * (1.0 + std::fabs(expected[index]))) && ++mismatches <= 5)
      ADD_FAILURE() << "Y[" << index << "] = " << actual[index] << ", reference " << expected[index];
  }
  EXPECT_EQ(mismatches, 0u) << "of " << actual.size() << " outputs";
}

// Q, K, V (1, 2, 5, 8) and keep (1, 1, 5, 5), upper-left causal: query 0 sees only key 0, which keep hides.
struct CausalKeepCase {
  Tensor q{"Q", {1, 2, 5, 8}, Values(80, 1)};
  Tensor k{"K", {1, 2, 5, 8}, Values(80, 2)};
  Tensor v{"V", {1, 2, 5, 8}, Values(80, 3)};
  Tensor keep{"keep", {1, 1, 5, 5}, std::vector<double>(25, 1.0)};
  CausalKeepCase() {
    keep.values[0 * 5 + 0] = 0.0;  // query 0: no visible key at all, a zero row
    keep.values[3 * 5 + 1] = 0.0;
    keep.values[4 * 5 + 4] = 0.0;
  }
  static std::string Model() { return FlashAttentionModel(kOnnxFloat, {"Q", "K", "V", "", "keep"}, 1, std::nullopt); }
  std::vector<double> Expected() const { return Reference(q, k, v, nullptr, &keep, 1, std::nullopt); }
};

// ONNX Runtime 1.17 up to at least 1.25 reject an op whose OrtCustomOp::version exceeds their own C API version
// ("Unsupported version 'N' in custom op"); 1.30 and 1.31 cap the version instead, so a run in them cannot tell. And
// the library must call no C API function newer than version 17: here it registers through an OrtApiBase whose table
// stops there, and runs.
// Declared first: the library adds its ops to its (process-wide) domain on its first registration only.
TEST_P(CompatTest, RunsOnTheCApiOfVersion17Alone) {
  void* op_library = ortflash_test::OpenLibrary(ORTFLASH_TEST_OP_LIBRARY);
  ASSERT_NE(op_library, nullptr) << ortflash_test::LibraryError();
  using RegisterFn = OrtStatus* (*)(OrtSessionOptions*, const OrtApiBase*);
  const auto register_ops = reinterpret_cast<RegisterFn>(ortflash_test::LibrarySymbol(op_library, "RegisterCustomOps"));
  ASSERT_NE(register_ops, nullptr);

  CutDownToVersion17(api_);
  registered_op_versions.clear();
  ASSERT_NO_FATAL_FAILURE(CreateOptions());
  ASSERT_NO_FATAL_FAILURE(Check(register_ops(options_, &version17_base), "RegisterCustomOps"));
  ASSERT_NO_FATAL_FAILURE(CreateSessionFromOptions(CausalKeepCase::Model()));
  if (registered_op_versions.empty()) {
    std::cout << "the op library had registered its ops earlier in this process: their versions were not seen"
              << std::endl;
  }
  for (uint32_t version : registered_op_versions)
    EXPECT_EQ(version, kLibraryApiVersion) << "ONNX Runtime 1.17 to 1.25 reject this OrtCustomOp::version";

  const CausalKeepCase c;
  RunResult result = Run({c.q, c.k, c.v, c.keep}, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  Tensor narrow_k = c.k;
  narrow_k.shape = {1, 2, 5, 6};
  narrow_k.values.resize(60);
  const RunResult failed = Run({c.q, narrow_k, c.v, c.keep}, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);

  EXPECT_EQ(NewerSlotsCalled(), "") << "OrtApi functions newer than C API version 17 that libortflash.so called "
                                    << "(slot = offsetof(OrtApi, Function) / sizeof(void*); 275 is the last of version 17)";
  ASSERT_FALSE(result.error) << *result.error;
  ExpectClose(result.values, c.Expected(), 1e-5);
  ASSERT_TRUE(failed.error);
  EXPECT_NE(failed.error->find("K (1, 2, 5, 6)"), std::string::npos) << *failed.error;
}

TEST_P(CompatTest, OffersTheCApiVersionTheLibraryAsksFor) {
  const std::string release = ReleaseOf(GetParam());
  if (!release.empty()) {
    EXPECT_EQ(Release(), release) << "the folder's release is not the runtime that was loaded";
  }
  EXPECT_GE(runtime_->api_version, kLibraryApiVersion) << "ONNX Runtime " << Release();
  std::cout << "ONNX Runtime " << Release() << " from " << GetParam() << ", C API version " << runtime_->api_version
            << std::endl;
}

TEST_P(CompatTest, RunsFloatCausalWithKeepAsTheReference) {
  const CausalKeepCase c;
  ASSERT_NO_FATAL_FAILURE(CreateSession(CausalKeepCase::Model()));
  const RunResult result = Run({c.q, c.k, c.v, c.keep}, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  ASSERT_FALSE(result.error) << "ONNX Runtime " << Release() << ": " << *result.error;
  ASSERT_EQ(result.shape, (std::vector<int64_t>{1, 2, 5, 8}));
  ExpectClose(result.values, c.Expected(), 1e-5);
  for (size_t e = 0; e < 8; ++e) EXPECT_EQ(result.values[e], 0.0) << "the fully masked row 0 of head 0";
}

// float16, grouped-query (4 query heads on 2 kv heads), Dv != D, a bias, lower-right causal (Sq < Skv) and a scale.
TEST_P(CompatTest, RunsFloat16GroupedQueryWithBiasAsTheReference) {
  const Tensor q{"Q", {1, 4, 3, 8}, Values(96, 4)};
  const Tensor k{"K", {1, 2, 5, 8}, Values(80, 5)};
  const Tensor v{"V", {1, 2, 5, 4}, Values(40, 6)};
  const Tensor bias{"bias", {1, 4, 3, 5}, Values(60, 7)};
  ASSERT_NO_FATAL_FAILURE(CreateSession(FlashAttentionModel(kOnnxFloat16, {"Q", "K", "V", "bias"}, 2, 0.5f)));
  const RunResult result = Run({q, k, v, bias}, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16);
  ASSERT_FALSE(result.error) << "ONNX Runtime " << Release() << ": " << *result.error;
  ASSERT_EQ(result.shape, (std::vector<int64_t>{1, 4, 3, 4}));
  ExpectClose(result.values, Reference(q, k, v, &bias, nullptr, 2, 0.5), 2e-3);
}

TEST_P(CompatTest, InconsistentShapesFailTheRunWithAMessageNamingThem) {
  const CausalKeepCase c;
  ASSERT_NO_FATAL_FAILURE(CreateSession(CausalKeepCase::Model()));

  Tensor narrow_k = c.k;
  narrow_k.shape = {1, 2, 5, 6};
  narrow_k.values.resize(60);
  RunResult result = Run({c.q, narrow_k, c.v, c.keep}, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  ASSERT_TRUE(result.error) << "a K with another head dimension ran in ONNX Runtime " << Release();
  EXPECT_NE(result.error->find("Q (1, 2, 5, 8)"), std::string::npos) << *result.error;
  EXPECT_NE(result.error->find("K (1, 2, 5, 6)"), std::string::npos) << *result.error;

  Tensor short_keep = c.keep;
  short_keep.shape = {1, 1, 5, 4};
  short_keep.values.resize(20);
  result = Run({c.q, c.k, c.v, short_keep}, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  ASSERT_TRUE(result.error) << "a keep that does not broadcast ran in ONNX Runtime " << Release();
  EXPECT_NE(result.error->find("keep (1, 1, 5, 4)"), std::string::npos) << *result.error;
  EXPECT_NE(result.error->find("(1, 2, 5, 5)"), std::string::npos) << *result.error;

  // The failed runs left the session usable.
  result = Run({c.q, c.k, c.v, c.keep}, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  ASSERT_FALSE(result.error) << *result.error;
  ExpectClose(result.values, c.Expected(), 1e-5);
}

// A value head dim whose CPU scratch would pass the per-thread limit (kMaxCpuScratchBytesPerThread, 1 GiB) fails the
// Run with a message naming the node and the size, however many threads run the items; the session stays usable.
TEST_P(CompatTest, ScratchBeyondThePerThreadLimitFailsTheRunAndTheSessionStaysUsable) {
  ASSERT_NO_FATAL_FAILURE(CreateSession(FlashAttentionModel(kOnnxFloat, {"Q", "K", "V"}, 0, std::nullopt)));
  constexpr int64_t kValueDim = (int64_t(1) << 21) + 1024;  // >= 64 rows x Dv x 4 bytes of accumulators, twice
  const Tensor q{"Q", {1, 1, 2, 8}, Values(16, 1)};
  const Tensor k{"K", {1, 1, 3, 8}, Values(24, 2)};
  RunResult result = Run({q, k, Tensor{"V", {1, 1, 3, kValueDim}, Values(3 * kValueDim, 3)}}, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  ASSERT_TRUE(result.error) << "a head dim needing more than 1 GiB of scratch per thread ran in ONNX Runtime " << Release();
  EXPECT_NE(result.error->find("node 'attention': FlashAttention CPU kernel: a work item needs "), std::string::npos)
      << *result.error;
  EXPECT_NE(result.error->find("bytes of scratch memory (head_dim 8, v_head_dim 2098176), more than the limit of "
                               "1073741824 bytes per thread"),
            std::string::npos)
      << *result.error;

  const Tensor v{"V", {1, 1, 3, 4}, Values(12, 3)};
  result = Run({q, k, v}, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  ASSERT_FALSE(result.error) << *result.error;
  ExpectClose(result.values, Reference(q, k, v, nullptr, nullptr, 0, std::nullopt), 1e-5);
}

// Zero-size dimensions are valid shapes: no batch or no value dims give an empty Y, no keys give zero rows ("zero"
// policy), no head dims give scores of 0 (a uniform average of V, with scale 1).
TEST_P(CompatTest, ZeroSizeDimensionsRunToAnEmptyOrAsReferenceOutput) {
  ASSERT_NO_FATAL_FAILURE(CreateSession(FlashAttentionModel(kOnnxFloat, {"Q", "K", "V"}, 0, 1.0f)));
  const auto tensor = [](const char* name, std::vector<int64_t> shape, uint32_t seed) {
    const size_t count = ElementCount(shape);
    return Tensor{name, std::move(shape), Values(count, seed)};
  };
  struct Case {
    const char* what;
    Tensor q, k, v;
    std::vector<int64_t> output;
  };
  const Case cases[] = {
      {"no batch", tensor("Q", {0, 2, 5, 8}, 1), tensor("K", {0, 2, 5, 8}, 2), tensor("V", {0, 2, 5, 4}, 3), {0, 2, 5, 4}},
      {"no keys", tensor("Q", {1, 2, 3, 8}, 1), tensor("K", {1, 2, 0, 8}, 2), tensor("V", {1, 2, 0, 4}, 3), {1, 2, 3, 4}},
      {"no head dims", tensor("Q", {1, 1, 3, 0}, 1), tensor("K", {1, 1, 4, 0}, 2), tensor("V", {1, 1, 4, 2}, 3), {1, 1, 3, 2}},
      {"no value dims", tensor("Q", {1, 1, 3, 8}, 1), tensor("K", {1, 1, 4, 8}, 2), tensor("V", {1, 1, 4, 0}, 3), {1, 1, 3, 0}},
      {"no queries", tensor("Q", {2, 1, 0, 8}, 1), tensor("K", {2, 1, 4, 8}, 2), tensor("V", {2, 1, 4, 2}, 3), {2, 1, 0, 2}},
  };
  for (const Case& c : cases) {
    const RunResult result = Run({c.q, c.k, c.v}, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    ASSERT_FALSE(result.error) << c.what << ", ONNX Runtime " << Release() << ": " << *result.error;
    EXPECT_EQ(result.shape, c.output) << c.what;
    ExpectClose(result.values, Reference(c.q, c.k, c.v, nullptr, nullptr, 0, 1.0), 1e-5);
  }
}

// ONNX Runtime accepts an empty tensor whose other dimensions multiply past int64 (its size is 0); the op refuses it,
// naming the input, instead of computing strides that overflow. Y's shape, from Q and V, is checked on its own.
TEST_P(CompatTest, ShapesWhoseDimensionsMultiplyPastInt64FailTheRun) {
  constexpr int64_t kHuge = int64_t(1) << 40;
  const std::string huge = std::to_string(kHuge);
  struct Case {
    std::vector<Tensor> inputs;
    std::string named;
  };
  const Case cases[] = {
      {{{"Q", {0, kHuge, kHuge, 1}, {}}, {"K", {0, kHuge, kHuge, 1}, {}}, {"V", {0, kHuge, kHuge, 1}, {}}},
       "input Q (0, " + huge + ", " + huge + ", 1) is too large"},
      {{{"Q", {0, 1, 4, 8}, {}}, {"K", {0, 1, kHuge, kHuge}, {}}, {"V", {0, 1, kHuge, 1}, {}}},
       "input K (0, 1, " + huge + ", " + huge + ") is too large"},
      {{{"Q", {0, 1, kHuge, 1}, {}}, {"K", {0, 1, 0, 1}, {}}, {"V", {0, 1, 0, kHuge}, {}}},
       "the output (0, 1, " + huge + ", " + huge + ") of Q (0, 1, " + huge + ", 1) and V (0, 1, 0, " + huge + ") is too large"},
      {{{"Q", {0, 1, kHuge, 1}, {}}, {"K", {0, 1, kHuge, 1}, {}}, {"V", {0, 1, kHuge, 1}, {}}, {"bias", {0, 1, kHuge, kHuge}, {}}},
       "input bias (0, 1, " + huge + ", " + huge + ") is too large"},
  };
  ASSERT_NO_FATAL_FAILURE(CreateSession(FlashAttentionModel(kOnnxFloat, {"Q", "K", "V", "bias"}, 0, std::nullopt)));
  for (const Case& c : cases) {
    std::vector<Tensor> inputs = c.inputs;
    if (inputs.size() == 3) inputs.push_back(Tensor{"bias", {1, 1, 1, 1}, {0.0}});
    const RunResult result = Run(inputs, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    ASSERT_TRUE(result.error) << c.named << " ran in ONNX Runtime " << Release();
    EXPECT_NE(result.error->find(c.named + ": the product of its dimensions overflows int64"), std::string::npos)
        << *result.error;
  }
}

INSTANTIATE_TEST_SUITE_P(Runtimes, CompatTest, ::testing::ValuesIn(RuntimePaths()), RuntimeTestName);

}  // namespace

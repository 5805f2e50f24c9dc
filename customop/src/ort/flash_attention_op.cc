#include "flash_attention_op.h"

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "attention_shapes.h"
#include "onnxruntime_lite_custom_op.h"
#include "ortflash/flash_attention_cpu.h"
#if ORTFLASH_WITH_CUDA
#include "ortflash/flash_attention_cuda.h"
#endif

namespace ortflash {
namespace {

using Ort::Custom::Tensor;

enum class Provider { kCpu, kCuda };

template <typename T>
constexpr DType DTypeOf();
template <>
constexpr DType DTypeOf<float>() { return DType::kFloat32; }
template <>
constexpr DType DTypeOf<Ort::Float16_t>() { return DType::kFloat16; }
template <>
constexpr DType DTypeOf<Ort::BFloat16_t>() { return DType::kBFloat16; }

OrtStatus* MakeStatus(OrtErrorCode code, const std::string& message) {
  return Ort::GetApi().CreateStatus(code, message.c_str());
}

// Turns whatever escaped into a status: nothing may cross the C boundary into ONNX Runtime. Call
// only from a catch block. Never throws: when even the message cannot be built (out of memory), a
// fixed one is returned.
OrtStatus* StatusFromCurrentException() noexcept {
  try {
    try {
      throw;
    } catch (const Ort::Exception& e) {
      return MakeStatus(e.GetOrtErrorCode(), std::string("FlashAttention: ") + e.what());
    } catch (const std::bad_alloc&) {
      return Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION, "FlashAttention: out of memory");
    } catch (const std::exception& e) {
      return MakeStatus(ORT_RUNTIME_EXCEPTION, std::string("FlashAttention: ") + e.what());
    }
  } catch (...) {
    return Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION,
                                      "FlashAttention: unknown error (or out of memory while reporting one)");
  }
}

struct OpAttributes {
  std::optional<float> scale;  // absent: 1/sqrt(D)
  float softcap = 0.0f;
  CausalAlignment causal = CausalAlignment::kNone;
  MaskedRows masked_rows = MaskedRows::kZero;
};

// Reads an optional attribute: nullopt when the node does not carry it.
std::optional<float> OptionalFloat(const OrtKernelInfo* info, const char* name) {
  float value = 0.0f;
  if (OrtStatus* status = Ort::GetApi().KernelInfoGetAttribute_float(info, name, &value)) {
    Ort::GetApi().ReleaseStatus(status);
    return std::nullopt;
  }
  return value;
}

std::optional<int64_t> OptionalInt(const OrtKernelInfo* info, const char* name) {
  int64_t value = 0;
  if (OrtStatus* status = Ort::GetApi().KernelInfoGetAttribute_int64(info, name, &value)) {
    Ort::GetApi().ReleaseStatus(status);
    return std::nullopt;
  }
  return value;
}

std::optional<std::string> OptionalString(const OrtKernelInfo* info, const char* name) {
  size_t size = 0;
  if (OrtStatus* status = Ort::GetApi().KernelInfoGetAttribute_string(info, name, nullptr, &size)) {
    Ort::GetApi().ReleaseStatus(status);
    return std::nullopt;
  }
  std::string value(size, '\0');
  Ort::ThrowOnError(Ort::GetApi().KernelInfoGetAttribute_string(info, name, value.data(), &size));
  value.resize(size > 0 ? size - 1 : 0);  // size counts the terminating NUL
  return value;
}

std::string NodeName(const OrtKernelInfo* info) {
  try {
    return Ort::ConstKernelInfo(info).GetNodeName();
  } catch (const Ort::Exception&) {
    return "?";
  }
}

// Returns an error message for attribute values outside the contract.
std::string ReadAttributes(const OrtKernelInfo* info, OpAttributes& attributes) {
  attributes.scale = OptionalFloat(info, "scale");
  if (attributes.scale && !std::isfinite(*attributes.scale))
    return "attribute scale must be finite, got " + std::to_string(*attributes.scale);
  attributes.softcap = OptionalFloat(info, "softcap").value_or(0.0f);
  if (!(attributes.softcap >= 0.0f) || !std::isfinite(attributes.softcap))
    return "attribute softcap must be a finite value >= 0, got " + std::to_string(attributes.softcap);
  const int64_t causal = OptionalInt(info, "causal").value_or(0);
  if (causal < 0 || causal > 2)
    return "attribute causal must be 0 (none), 1 (upper-left) or 2 (lower-right), got " + std::to_string(causal);
  attributes.causal = static_cast<CausalAlignment>(causal);
  const std::string masked_rows = OptionalString(info, "masked_rows").value_or("zero");
  if (masked_rows == "zero") {
    attributes.masked_rows = MaskedRows::kZero;
  } else if (masked_rows == "nan") {
    attributes.masked_rows = MaskedRows::kNaN;
  } else {
    return "attribute masked_rows must be \"zero\" or \"nan\", got \"" + masked_rows + "\"";
  }
  return {};
}

// The runtime that registered the library (SetOrtApiBase), for the calls of API versions past kMinOrtApiVersion.
std::atomic<const OrtApiBase*> registering_runtime{nullptr};

// What a session's config entries under "ortflash." choose (OrtFlashSessionOptions.ConfigureSession, or
// SessionOptions.AddSessionConfigEntry).
struct SessionSettings {
  int float32_tensor_cores = -1;  // CudaOptions::float32_tensor_cores; -1: the environment decides
};

// Reads the session's "ortflash." config entries (KernelInfo_GetConfigEntries, C API 24: ONNX Runtime 1.24; older
// runtimes have none to read). Every kernel reads them, so that a misspelt key or value fails the session on any
// provider. Returns an error message, or "".
std::string ReadSessionSettings(const OrtKernelInfo* info, SessionSettings& settings) {
  const OrtApiBase* base = registering_runtime.load(std::memory_order_acquire);
  // Asked for an API version it lacks, ONNX Runtime prints a complaint: the version string is checked first (API
  // version N ships with ONNX Runtime 1.N).
  int major = 0, minor = 0;
  if (base == nullptr || std::sscanf(base->GetVersionString(), "%d.%d", &major, &minor) != 2 ||
      (major == 1 && minor < 24)) {
    return {};
  }
  const OrtApi* api = base->GetApi(24);
  if (api == nullptr) return {};
  OrtKeyValuePairs* entries = nullptr;
  if (OrtStatus* status = api->KernelInfo_GetConfigEntries(info, &entries)) {
    const std::string message = api->GetErrorMessage(status);
    api->ReleaseStatus(status);
    return "reading the session's config entries failed: " + message;
  }
  const char* const* keys = nullptr;
  const char* const* values = nullptr;
  size_t count = 0;
  api->GetKeyValuePairs(entries, &keys, &values, &count);
  std::string error;
  for (size_t i = 0; i < count && error.empty(); ++i) {
    const std::string key = keys[i] != nullptr ? keys[i] : "";
    if (key.rfind("ortflash.", 0) != 0) continue;
    const std::string value = values[i] != nullptr ? values[i] : "";
    if (key == kFloat32TensorCoresKey) {
      if (value == "0" || value == "1" || value == "2" || value == "3") {
        settings.float32_tensor_cores = value[0] - '0';
      } else {
        error = "session config entry '" + key + "' is '" + value +
                "': expected 0 (float32 on the SIMT kernel), 1 or 2 (on the tensor cores in 3xTF32, the fragments split "
                "by every warp or K and V split once per block) or 3 (on the tensor cores in one TF32 pass: about 1e-3 "
                "relative, as TF32 MatMuls)";
      }
    } else {
      error = "unknown session config entry '" + key + "': OrtFlash reads '" + kFloat32TensorCoresKey + "'";
    }
  }
  api->ReleaseKeyValuePairs(entries);
  return error;
}

// An input's data through GetTensorMutableData (C API version 1). The C++ wrapper's GetTensorData/GetTensorRawData,
// which the lite Tensor's Data()/DataRaw() use, call OrtApi::GetTensorData: version 23, past the end of the API table
// of ONNX Runtime 1.17 to 1.22.
const void* InputData(OrtKernelContext* context, size_t index) {
  const OrtApi& api = Ort::GetApi();
  const OrtValue* value = nullptr;
  Ort::ThrowOnError(api.KernelContext_GetInput(context, index, &value));
  void* data = nullptr;
  Ort::ThrowOnError(api.GetTensorMutableData(const_cast<OrtValue*>(value), &data));
  return data;
}

// Runs the kernel's work items on ONNX Runtime's intra-op thread pool of this Run.
void OrtParallelFor(void* self, void (*fn)(void*, size_t), size_t total, void* data) {
  static_cast<const Ort::KernelContext*>(self)->ParallelFor(fn, total, 0, data);
}

#if ORTFLASH_WITH_CUDA
// Device scratch from ONNX Runtime's allocator for the memory the output lives in. The kernel expects
// nullptr, not an exception, from a failed allocation: it then reports the size it asked for.
struct OrtScratch {
  Ort::Allocator allocator;
  static void* Allocate(void* self, size_t bytes) noexcept {
    try {
      return static_cast<OrtScratch*>(self)->allocator.Alloc(bytes);
    } catch (...) {
      return nullptr;
    }
  }
  static void Release(void* self, void* ptr) noexcept {
    // Free fails only for a pointer the allocator did not hand out; there is nothing to do about it here.
    if (OrtStatus* status = Ort::GetApi().AllocatorFree(static_cast<OrtScratch*>(self)->allocator, ptr))
      Ort::GetApi().ReleaseStatus(status);
  }
};
#endif

template <typename T, Provider P>
struct FlashAttentionKernel {
  FlashAttentionKernel(const OrtApi*, const OrtKernelInfo* info) : node_name_(NodeName(info)) {
    if (std::string error = ReadAttributes(info, attributes_); !error.empty())
      throw Ort::Exception("node '" + node_name_ + "': " + error, ORT_INVALID_ARGUMENT);
    if (std::string error = ReadSessionSettings(info, settings_); !error.empty())
      throw Ort::Exception("node '" + node_name_ + "': " + error, ORT_INVALID_ARGUMENT);
  }

  // The lite API derives the op schema (input/output types) from this signature.
  Ort::Status Compute(OrtKernelContext* context, const Tensor<T>& query, const Tensor<T>& key, const Tensor<T>& value,
                      std::optional<const Tensor<T>*> bias, std::optional<const Tensor<bool>*> keep, Tensor<T>& output) {
    AttentionShapes shapes{query.Shape(), key.Shape(), value.Shape(), std::nullopt, std::nullopt};
    if (bias) shapes.bias = (*bias)->Shape();
    if (keep) shapes.keep = (*keep)->Shape();

    AttentionParams params;
    Shape output_shape;
    if (std::string error = ResolveAttentionShapes(shapes, params, output_shape); !error.empty())
      return Ort::Status(("node '" + node_name_ + "': " + error).c_str(), ORT_INVALID_ARGUMENT);

    params.dtype = DTypeOf<T>();
    params.scale = attributes_.scale.value_or(params.head_dim > 0 ? 1.0f / std::sqrt(static_cast<float>(params.head_dim)) : 1.0f);
    params.softcap = attributes_.softcap;
    params.causal = attributes_.causal;
    params.masked_rows = attributes_.masked_rows;
    params.q = InputData(context, 0);
    params.k = InputData(context, 1);
    params.v = InputData(context, 2);
    params.bias = bias ? InputData(context, 3) : nullptr;
    params.keep = keep ? static_cast<const bool*>(InputData(context, 4)) : nullptr;
    params.out = output.Allocate(output_shape);
    if (params.batch == 0 || params.q_heads == 0 || params.q_len == 0 || params.v_head_dim == 0)
      return Ort::Status{nullptr};  // empty output: nothing to compute

    Ort::KernelContext kernel_context(context);
    if constexpr (P == Provider::kCpu) {
      ParallelRunner runner;
      runner.parallel_for = &OrtParallelFor;
      runner.self = &kernel_context;
      if (std::string error = flash_attention_cpu(params, runner); !error.empty())
        return Ort::Status(("node '" + node_name_ + "': " + error).c_str(), ORT_FAIL);
      return Ort::Status{nullptr};
    } else {
#if ORTFLASH_WITH_CUDA
      void* stream = kernel_context.GetGPUComputeStream();
      if (stream == nullptr)
        return Ort::Status(("node '" + node_name_ + "': ONNX Runtime gave no CUDA stream to the CUDA kernel").c_str(), ORT_FAIL);
      const Ort::ConstMemoryInfo device_memory = kernel_context.GetOutput(0, output_shape).GetTensorMemoryInfo();
      OrtScratch scratch{kernel_context.GetAllocator(*static_cast<const OrtMemoryInfo*>(device_memory))};
      CudaScratch lender;
      lender.allocate = &OrtScratch::Allocate;
      lender.release = &OrtScratch::Release;
      lender.self = &scratch;
      CudaOptions options;
      options.float32_tensor_cores = settings_.float32_tensor_cores;
      if (std::string error = flash_attention_cuda(params, stream, lender, options); !error.empty())
        return Ort::Status(("node '" + node_name_ + "': " + error).c_str(), ORT_FAIL);
      return Ort::Status{nullptr};
#else
      return Ort::Status("FlashAttention: built without CUDA", ORT_FAIL);
#endif
    }
  }

 private:
  OpAttributes attributes_;
  SessionSettings settings_;
  std::string node_name_;
};

// The lite op, with three entry points replaced so that nothing can crash ONNX Runtime:
// - KernelComputeV2: the lite API takes an optional input as present whenever its index is below
//   the node's input count and then dereferences it, so a node that gives `keep` but leaves `bias`
//   empty would crash. Here every input is looked up by itself and a missing one is an empty optional.
// - CreateKernelV2 / InferOutputShapeFn: errors become statuses instead of exceptions crossing
//   the C boundary; shape inference takes the output element type from Q (the lite helper assumes float).
template <typename T, Provider P>
struct FlashAttentionOp : Ort::Custom::OrtLiteCustomStruct<FlashAttentionKernel<T, P>> {
  using Kernel = FlashAttentionKernel<T, P>;
  using Base = Ort::Custom::OrtLiteCustomStruct<Kernel>;
  using LiteKernel = typename Base::Kernel;

  static constexpr size_t kInputCount = 5;

  explicit FlashAttentionOp(const char* provider) : Base(kOpName, provider) {
    OrtCustomOp::version = kMinOrtApiVersion;
    OrtCustomOp::CreateKernel = {};
    OrtCustomOp::CreateKernelV2 = &CreateKernelChecked;
    OrtCustomOp::KernelComputeV2 = &ComputeChecked;
    OrtCustomOp::InferOutputShapeFn = &InferOutputShape;
    OrtCustomOp::GetInputCharacteristic = [](const OrtCustomOp*, size_t index) {
      return index < 3 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
    };
    OrtCustomOp::GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
  }

  static OrtStatus* CreateKernelChecked(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** out) {
    try {
      auto kernel = std::make_unique<LiteKernel>();
      Ort::ThrowOnError(api->KernelInfo_GetInputCount(info, &kernel->num_input_));
      Ort::ThrowOnError(api->KernelInfo_GetOutputCount(info, &kernel->num_output_));
      kernel->custom_op_ = std::make_unique<Kernel>(api, info);
      kernel->ep_ = static_cast<const FlashAttentionOp*>(op)->execution_provider_;
      *out = kernel.release();
      return nullptr;
    } catch (...) {
      return StatusFromCurrentException();
    }
  }

  static OrtStatus* ComputeChecked(void* op_kernel, OrtKernelContext* context) {
    try {
      auto* kernel = static_cast<LiteKernel*>(op_kernel);
      Ort::KernelContext kc(context);
      const size_t inputs = kc.GetInputCount();
      auto present = [&](size_t index) { return index < inputs && kc.GetInput(index) != nullptr; };
      static constexpr const char* kRequired[] = {"Q", "K", "V"};
      for (size_t index = 0; index < 3; ++index)
        if (!present(index)) return MakeStatus(ORT_INVALID_ARGUMENT, std::string("FlashAttention: required input ") + kRequired[index] + " is missing");
      Tensor<T> query(context, 0, true), key(context, 1, true), value(context, 2, true);
      std::optional<Tensor<T>> bias;
      std::optional<Tensor<bool>> keep;
      if (present(3)) bias.emplace(context, 3, true);
      if (present(4)) keep.emplace(context, 4, true);
      Tensor<T> output(context, 0, false);
      std::optional<const Tensor<T>*> bias_arg;
      std::optional<const Tensor<bool>*> keep_arg;
      if (bias) bias_arg = &*bias;
      if (keep) keep_arg = &*keep;
      return kernel->custom_op_->Compute(context, query, key, value, bias_arg, keep_arg, output).release();
    } catch (...) {
      return StatusFromCurrentException();
    }
  }

  // Y has Q's shape with the last dimension taken from V, and Q's element type.
  static OrtStatus* InferOutputShape(const OrtCustomOp*, OrtShapeInferContext* context) {
    try {
      const OrtApi& api = Ort::GetApi();
      size_t inputs = 0;
      Ort::ThrowOnError(api.ShapeInferContext_GetInputCount(context, &inputs));
      if (inputs < 3) return MakeStatus(ORT_INVALID_ARGUMENT, "FlashAttention: needs inputs Q, K and V");
      // The infos belong to the context: read them through unowned views.
      auto read = [&](size_t index) {
        OrtTensorTypeAndShapeInfo* info = nullptr;
        Ort::ThrowOnError(api.ShapeInferContext_GetInputTypeShape(context, index, &info));
        if (info == nullptr)
          throw Ort::Exception("input " + std::to_string(index) + " has no tensor type", ORT_INVALID_ARGUMENT);
        return Ort::ConstTensorTypeAndShapeInfo(info);
      };
      Ort::ConstTensorTypeAndShapeInfo query = read(0);
      Ort::ConstTensorTypeAndShapeInfo value = read(2);
      std::vector<int64_t> dims = query.GetShape();
      std::vector<const char*> symbols(dims.size(), nullptr);
      if (!dims.empty()) query.GetSymbolicDimensions(symbols.data(), symbols.size());
      const std::vector<int64_t> value_dims = value.GetShape();
      if (dims.empty() || value_dims.empty()) return nullptr;  // rank unknown: nothing to infer
      std::vector<const char*> value_symbols(value_dims.size(), nullptr);
      value.GetSymbolicDimensions(value_symbols.data(), value_symbols.size());
      dims.back() = value_dims.back();
      symbols.back() = value_symbols.back();

      OrtTensorTypeAndShapeInfo* raw = nullptr;
      Ort::ThrowOnError(api.CreateTensorTypeAndShapeInfo(&raw));
      const Ort::TensorTypeAndShapeInfo result(raw);  // ours: the context copies it
      Ort::ThrowOnError(api.SetTensorElementType(raw, query.GetElementType()));
      Ort::ThrowOnError(api.SetDimensions(raw, dims.data(), dims.size()));
      // ONNX Runtime writes a dimension without a symbol as a value, so an unknown dimension (-1) needs a
      // name of its own: a fresh one, since nothing says it equals any other dimension.
      std::vector<std::string> fresh_names;
      fresh_names.reserve(dims.size());
      for (size_t axis = 0; axis < dims.size(); ++axis) {
        if (symbols[axis] != nullptr && symbols[axis][0] != '\0') continue;
        if (dims[axis] >= 0) {
          symbols[axis] = "";
        } else {
          static std::atomic<uint64_t> counter{0};
          fresh_names.push_back("ortflash_unk_" + std::to_string(counter++));
          symbols[axis] = fresh_names.back().c_str();
        }
      }
      Ort::ThrowOnError(api.SetSymbolicDimensions(raw, symbols.data(), symbols.size()));
      Ort::ThrowOnError(api.ShapeInferContext_SetOutputTypeShape(context, 0, raw));
      return nullptr;
    } catch (...) {
      return StatusFromCurrentException();
    }
  }
};

template <typename T, Provider P>
void AddOp(Ort::CustomOpDomain& domain, const char* provider) {
  // Operators must outlive every session that uses them: they live as long as the library.
  static FlashAttentionOp<T, P> op(provider);
  domain.Add(&op);
}

}  // namespace

void SetOrtApiBase(const OrtApiBase* base) { registering_runtime.store(base, std::memory_order_release); }

void AddFlashAttentionOps(Ort::CustomOpDomain& domain) {
  AddOp<float, Provider::kCpu>(domain, "CPUExecutionProvider");
  AddOp<Ort::Float16_t, Provider::kCpu>(domain, "CPUExecutionProvider");
  AddOp<Ort::BFloat16_t, Provider::kCpu>(domain, "CPUExecutionProvider");
#if ORTFLASH_WITH_CUDA
  AddOp<float, Provider::kCuda>(domain, "CUDAExecutionProvider");
  AddOp<Ort::Float16_t, Provider::kCuda>(domain, "CUDAExecutionProvider");
  AddOp<Ort::BFloat16_t, Provider::kCuda>(domain, "CUDAExecutionProvider");
#endif
}

}  // namespace ortflash

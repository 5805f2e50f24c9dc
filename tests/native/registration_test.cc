// Loads libortflash.so (ortflash.dll) the way ONNX Runtime does (dlopen or LoadLibrary + RegisterCustomOps) with the real runtime, and with
// a runtime that pretends to be too old: registration must return an error status, never crash.
#include <gtest/gtest.h>

#include <string>

#include "dynamic_library.h"
#include "onnxruntime_c_api.h"

namespace {

using RegisterFn = OrtStatus* (*)(OrtSessionOptions*, const OrtApiBase*);
using GetApiBaseFn = const OrtApiBase* (*)();

struct Libraries {
  void* runtime = nullptr;
  void* op = nullptr;
  const OrtApiBase* base = nullptr;
  RegisterFn register_ops = nullptr;
  std::string runtime_error, op_error;  // why a library did not load

  Libraries() {
    runtime = ortflash_test::OpenLibrary(ORTFLASH_TEST_ORT_LIBRARY);
    if (runtime == nullptr) runtime_error = ortflash_test::LibraryError();
    op = ortflash_test::OpenLibrary(ORTFLASH_TEST_OP_LIBRARY);
    if (op == nullptr) op_error = ortflash_test::LibraryError();
    if (runtime) base = reinterpret_cast<GetApiBaseFn>(ortflash_test::LibrarySymbol(runtime, "OrtGetApiBase"))();
    if (op) register_ops = reinterpret_cast<RegisterFn>(ortflash_test::LibrarySymbol(op, "RegisterCustomOps"));
  }
};

Libraries& Libs() {
  static Libraries libraries;
  return libraries;
}

// An OrtApiBase of a runtime that only offers API versions below 17 and says it is 1.16.
const OrtApiBase* real_base = nullptr;
const OrtApi* ORT_API_CALL OldGetApi(uint32_t version) noexcept {
  return version < 17 ? real_base->GetApi(version) : nullptr;
}
const char* ORT_API_CALL OldVersion() noexcept { return "1.16.3"; }

TEST(Registration, LibraryExportsRegisterCustomOps) {
  ASSERT_NE(Libs().runtime, nullptr) << Libs().runtime_error;
  ASSERT_NE(Libs().op, nullptr) << Libs().op_error;
  EXPECT_NE(Libs().register_ops, nullptr);
  // Kernel entry points stay internal.
  EXPECT_EQ(ortflash_test::LibrarySymbol(Libs().op, "_ZN8ortflash19flash_attention_cpuERKNS_16AttentionParamsERKNS_14ParallelRunnerE"), nullptr);
}

TEST(Registration, RegistersIntoTheRealRuntime) {
  ASSERT_NE(Libs().register_ops, nullptr);
  const OrtApi* api = Libs().base->GetApi(ORT_API_VERSION);
  OrtSessionOptions* options = nullptr;
  ASSERT_EQ(api->CreateSessionOptions(&options), nullptr);
  OrtStatus* status = Libs().register_ops(options, Libs().base);
  EXPECT_EQ(status, nullptr) << (status ? api->GetErrorMessage(status) : "");
  if (status) api->ReleaseStatus(status);
  api->ReleaseSessionOptions(options);
}

TEST(Registration, MissingSessionOptionsGetAnErrorStatus) {
  ASSERT_NE(Libs().register_ops, nullptr);
  const OrtApi* api = Libs().base->GetApi(ORT_API_VERSION);
  OrtStatus* status = Libs().register_ops(nullptr, Libs().base);
  ASSERT_NE(status, nullptr);
  EXPECT_EQ(api->GetErrorCode(status), ORT_INVALID_ARGUMENT);
  EXPECT_NE(std::string(api->GetErrorMessage(status)).find("no session options"), std::string::npos);
  api->ReleaseStatus(status);
}

TEST(Registration, TooOldRuntimeGetsAnErrorStatus) {
  ASSERT_NE(Libs().register_ops, nullptr);
  real_base = Libs().base;
  const OrtApiBase old_base{&OldGetApi, &OldVersion};
  const OrtApi* api = Libs().base->GetApi(ORT_API_VERSION);
  OrtSessionOptions* options = nullptr;
  ASSERT_EQ(api->CreateSessionOptions(&options), nullptr);
  OrtStatus* status = Libs().register_ops(options, &old_base);
  ASSERT_NE(status, nullptr);
  const std::string message = api->GetErrorMessage(status);
  EXPECT_NE(message.find("needs ONNX Runtime 1.17 or newer"), std::string::npos) << message;
  EXPECT_NE(message.find("1.16.3"), std::string::npos) << message;
  api->ReleaseStatus(status);
  api->ReleaseSessionOptions(options);
}

}  // namespace

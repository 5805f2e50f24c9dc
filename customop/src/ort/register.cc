// The library's only exported symbol: ONNX Runtime calls it from RegisterCustomOpLibrary.
#include <mutex>
#include <string>

#include "flash_attention_op.h"

#if defined(_WIN32)
#define ORTFLASH_EXPORT __declspec(dllexport)  // with one dllexport, the DLL exports nothing else
#else
#define ORTFLASH_EXPORT __attribute__((visibility("default")))
#endif

extern "C" ORTFLASH_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                   const OrtApiBase* api_base) {
  if (api_base == nullptr) return nullptr;  // nothing to report an error through
  const OrtApi* api = api_base->GetApi(ortflash::kMinOrtApiVersion);
  // Version 1 always exists and is enough to report why we cannot register.
  const OrtApi* reporter = api != nullptr ? api : api_base->GetApi(1);
  try {
    if (options == nullptr) {
      return reporter != nullptr ? reporter->CreateStatus(ORT_INVALID_ARGUMENT, "OrtFlash: RegisterCustomOps got no session options")
                                 : nullptr;
    }
    if (api == nullptr) {
      const std::string message = std::string("OrtFlash needs ONNX Runtime 1.17 or newer (C API version ") +
                                  std::to_string(ortflash::kMinOrtApiVersion) + "); this runtime is " +
                                  api_base->GetVersionString();
      return reporter != nullptr ? reporter->CreateStatus(ORT_FAIL, message.c_str()) : nullptr;
    }
    Ort::InitApi(api);
    ortflash::SetOrtApiBase(api_base);
    // One domain object for the whole process: ONNX Runtime keeps a pointer to it in every
    // session options it was added to.
    static Ort::CustomOpDomain domain{nullptr};
    static std::once_flag once;
    std::call_once(once, [] {
      domain = Ort::CustomOpDomain(ortflash::kDomain);
      ortflash::AddFlashAttentionOps(domain);
    });
    Ort::UnownedSessionOptions(options).Add(domain);
    return nullptr;
  } catch (const Ort::Exception& e) {
    return reporter != nullptr ? reporter->CreateStatus(e.GetOrtErrorCode(), e.what()) : nullptr;
  } catch (const std::exception& e) {
    return reporter != nullptr ? reporter->CreateStatus(ORT_FAIL, e.what()) : nullptr;
  } catch (...) {
    return reporter != nullptr ? reporter->CreateStatus(ORT_FAIL, "OrtFlash: unknown error while registering") : nullptr;
  }
}

// Loading a shared library and finding a symbol in it, as applications load ONNX Runtime and as ONNX Runtime loads
// the op library: dlopen/dlsym, or LoadLibraryEx/GetProcAddress on Windows (the win-x64 cross build's tests, run
// under Wine). Paths come from the build as narrow strings; ONNX Runtime's own path arguments are ORTCHAR_T, wide
// on Windows (WidePath).
#pragma once

#include <string>

#if defined(_WIN32)
#include <windows.h>  // the build defines NOMINMAX and WIN32_LEAN_AND_MEAN
#else
#include <dlfcn.h>
#endif

namespace ortflash_test {

// The library's handle, or nullptr (LibraryError says why). Never unloaded by these tests.
inline void* OpenLibrary(const std::string& path) {
#if defined(_WIN32)
  // Its own folder first for the DLLs it depends on (ONNX Runtime's providers_shared), as for a program's DLLs.
  return reinterpret_cast<void*>(LoadLibraryExA(path.c_str(), nullptr, LOAD_WITH_ALTERED_SEARCH_PATH));
#else
  return dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
#endif
}

inline void* LibrarySymbol(void* library, const char* name) {
#if defined(_WIN32)
  return reinterpret_cast<void*>(GetProcAddress(static_cast<HMODULE>(library), name));
#else
  return dlsym(library, name);
#endif
}

// Why the last OpenLibrary failed.
inline std::string LibraryError() {
#if defined(_WIN32)
  return "Windows error " + std::to_string(GetLastError());
#else
  const char* error = dlerror();
  return error != nullptr ? error : "";
#endif
}

// A path as ONNX Runtime's ORTCHAR_T strings take it: wide on Windows (the build's paths are ASCII), else as is.
#if defined(_WIN32)
inline std::wstring WidePath(const std::string& path) { return std::wstring(path.begin(), path.end()); }
#else
inline std::string WidePath(const std::string& path) { return path; }
#endif

}  // namespace ortflash_test

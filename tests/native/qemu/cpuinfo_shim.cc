// Preloaded into the programs a cross build's tests run under qemu-user (tests/native/CMakeLists.txt): hands them
// a 64-bit ARM /proc/cpuinfo (ORTFLASH_FAKE_CPUINFO names it) in place of the host's.
//
// qemu-user 7.2 passes the host's /proc/cpuinfo through unchanged for an aarch64 guest. ONNX Runtime reads it at
// load time (its CPU detection parses the ARM fields) and dereferences a null pointer when it finds an x86 CPU
// there, so without this libonnxruntime.so for linux-arm64 cannot even be loaded under the emulator. Every other
// path, and every program outside these tests, is untouched.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/types.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

const char* Redirected(const char* path) {
  if (path == nullptr || std::strcmp(path, "/proc/cpuinfo") != 0) return path;
  const char* fake = std::getenv("ORTFLASH_FAKE_CPUINFO");
  return fake != nullptr && fake[0] != '\0' ? fake : path;
}

template <class Fn>
Fn Next(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

// The mode argument exists only where the flags create a file.
mode_t ModeOf(int flags, va_list args) {
  return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE ? static_cast<mode_t>(va_arg(args, int)) : 0;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int open(const char* path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  const mode_t mode = ModeOf(flags, args);
  va_end(args);
  static const auto next = Next<int (*)(const char*, int, ...)>("open");
  return next(Redirected(path), flags, mode);
}

__attribute__((visibility("default"))) int open64(const char* path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  const mode_t mode = ModeOf(flags, args);
  va_end(args);
  static const auto next = Next<int (*)(const char*, int, ...)>("open64");
  return next(Redirected(path), flags, mode);
}

__attribute__((visibility("default"))) int openat(int dir, const char* path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  const mode_t mode = ModeOf(flags, args);
  va_end(args);
  static const auto next = Next<int (*)(int, const char*, int, ...)>("openat");
  return next(dir, Redirected(path), flags, mode);
}

__attribute__((visibility("default"))) FILE* fopen(const char* path, const char* mode) {
  static const auto next = Next<FILE* (*)(const char*, const char*)>("fopen");
  return next(Redirected(path), mode);
}

__attribute__((visibility("default"))) FILE* fopen64(const char* path, const char* mode) {
  static const auto next = Next<FILE* (*)(const char*, const char*)>("fopen64");
  return next(Redirected(path), mode);
}

}  // extern "C"

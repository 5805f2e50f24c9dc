#!/usr/bin/env bash
# The op for 64-bit ARM Linux (linux-arm64): cross-builds libortflash.so and the native tests with Debian's
# aarch64 toolchain (cmake/aarch64-linux-gnu.cmake) and runs them under qemu-user: the kernel against the
# double-precision reference on every path an ARM CPU can take, and the library inside ONNX Runtime's own
# linux-arm64 build. Writes CTest's JUnit file to RESULTS_DIR/ctest-arm64.xml; where the cross compiler or qemu is
# missing it writes one skipped case saying so (tests/run.sh counts it), so the ARM build is never silently absent.
#   bash tests/arm64.sh RESULTS_DIR NATIVE_BUILD_DIR [ARM64_BUILD_DIR]
# NATIVE_BUILD_DIR: the host build, whose CMake cache names ONNX Runtime's headers and linux-x64 library folder.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
results=${1:?results folder}
native_dir=${2:?native build folder}
arm_dir=${3:-$root/build/arm64}
jobs="${JOBS:-$(nproc)}"
junit="$results/ctest-arm64.xml"
mkdir -p "$results"

skipped() {
  echo "arm64: $1; the linux-arm64 tests are skipped"
  printf '<testsuite name="arm64" tests="1"><testcase classname="arm64" name="CrossBuiltTestsUnderQemu"><skipped message="%s"/></testcase></testsuite>\n' \
    "$1" >"$junit"
}
failed() {
  echo "arm64: $1"
  printf '<testsuite name="arm64" tests="1"><testcase classname="arm64" name="CrossBuild"><failure message="%s"/></testcase></testsuite>\n' \
    "$1" >"$junit"
  exit 1
}

for tool in aarch64-linux-gnu-g++ qemu-aarch64; do
  command -v "$tool" >/dev/null || { skipped "no $tool (Debian: g++-aarch64-linux-gnu, qemu-user)"; exit 0; }
done

cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$native_dir/CMakeCache.txt" 2>/dev/null; }
ort_include=$(cache_value ORT_INCLUDE_DIR)
ort_x64=$(cache_value ORT_LIBRARY_DIR)
[ -f "$ort_include/onnxruntime_c_api.h" ] || failed "no ONNX Runtime headers named in $native_dir/CMakeCache.txt"
# The NuGet package holds every platform's runtime side by side.
ort_arm64=${ort_x64%/linux-x64/native}/linux-arm64/native
[ -f "$ort_arm64/libonnxruntime.so" ] || ort_arm64=""

cmake -S "$root" -B "$arm_dir" --toolchain "$root/cmake/aarch64-linux-gnu.cmake" -DCMAKE_BUILD_TYPE=Release \
    -DORT_INCLUDE_DIR="$ort_include" -DORT_LIBRARY_DIR="$ort_arm64" -DORTFLASH_CUDA=OFF \
    -DORTFLASH_SANITIZER_TESTS=OFF >"$arm_dir.configure.log" 2>&1 ||
  { cat "$arm_dir.configure.log"; failed "configuring the cross build failed"; }
cmake --build "$arm_dir" -j "$jobs" || failed "the cross build failed"
[ -n "$ort_arm64" ] || echo "arm64: no linux-arm64 libonnxruntime.so beside $ort_x64; the runtime tests are left out"
(cd "$arm_dir" && ctest --output-on-failure --output-junit "$junit" -j "$jobs")

#!/usr/bin/env bash
# The op for another platform, cross-built here and tested under an emulator: linux-arm64 (Debian's aarch64
# toolchain, cmake/aarch64-linux-gnu.cmake, run under qemu-user) or win-x64 (MinGW-w64, cmake/x86_64-w64-mingw32.cmake,
# run under Wine). Its native tests: the kernel against the double-precision reference on every path the platform's
# CPUs can take, and the op library inside ONNX Runtime's own build for that platform. Writes CTest's JUnit file to
# RESULTS_DIR/ctest-PLATFORM.xml; where the cross compiler or the emulator is missing it writes one skipped case
# saying so (tests/run.sh counts it), so a platform is never silently left out.
#   bash tests/cross.sh linux-arm64|win-x64 RESULTS_DIR NATIVE_BUILD_DIR [BUILD_DIR]
# NATIVE_BUILD_DIR: the host build, whose CMake cache names ONNX Runtime's headers and linux-x64 library folder.
set -uo pipefail
source "$(dirname "$0")/cross_args.sh"
jobs="${JOBS:-$(nproc)}"
junit="$results/ctest-$platform.xml"

case "$platform" in
  linux-arm64)
    toolchain=aarch64-linux-gnu.cmake ort_library=libonnxruntime.so
    tools=(aarch64-linux-gnu-g++ qemu-aarch64) packages="g++-aarch64-linux-gnu, qemu-user" ;;
  win-x64)
    toolchain=x86_64-w64-mingw32.cmake ort_library=onnxruntime.dll
    tools=(x86_64-w64-mingw32-g++-posix wine64) packages="g++-mingw-w64-x86-64-posix, wine64"
    # The tests are native programs: no Mono prompt while the prefix is set up (tests/cross_cli.sh runs .NET
    # there, which needs mscoree).
    export WINEDLLOVERRIDES="mscoree,mshtml=" ;;
esac

skipped() {
  echo "$platform: $1; its tests are skipped"
  printf '<testsuite name="%s" tests="1"><testcase classname="%s" name="CrossBuiltTests"><skipped message="%s"/></testcase></testsuite>\n' \
    "$platform" "$platform" "$1" >"$junit"
}
failed() {
  echo "$platform: $1"
  printf '<testsuite name="%s" tests="1"><testcase classname="%s" name="CrossBuild"><failure message="%s"/></testcase></testsuite>\n' \
    "$platform" "$platform" "$1" >"$junit"
  exit 1
}

for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { skipped "no $tool (Debian: $packages)"; exit 0; }
done

cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$native_dir/CMakeCache.txt" 2>/dev/null; }
ort_include=$(cache_value ORT_INCLUDE_DIR)
ort_x64=$(cache_value ORT_LIBRARY_DIR)
[ -f "$ort_include/onnxruntime_c_api.h" ] || failed "no ONNX Runtime headers named in $native_dir/CMakeCache.txt"
# The NuGet package holds every platform's runtime side by side.
ort_dir=${ort_x64%/linux-x64/native}/$platform/native
[ -f "$ort_dir/$ort_library" ] || ort_dir=""

mkdir -p "$build_dir"
# Wine sets a new prefix up on its first run (16 s here): done before the build, so that the test discovery run
# after each test program's link stays well inside its time limit.
if [ "$platform" = win-x64 ] && [ ! -d "$WINEPREFIX" ]; then
  timeout 300 wine64 wineboot --init >"$build_dir/wineboot.log" 2>&1 || echo "$platform: wineboot --init failed (see $build_dir/wineboot.log)"
fi
cmake -S "$root" -B "$build_dir" --toolchain "$root/cmake/$toolchain" -DCMAKE_BUILD_TYPE=Release \
    -DORT_INCLUDE_DIR="$ort_include" -DORT_LIBRARY_DIR="$ort_dir" -DORTFLASH_CUDA=OFF \
    -DORTFLASH_SANITIZER_TESTS=OFF >"$build_dir/configure.log" 2>&1 ||
  { cat "$build_dir/configure.log"; failed "configuring the cross build failed"; }
cmake --build "$build_dir" -j "$jobs" || failed "the cross build failed"
[ -n "$ort_dir" ] || echo "$platform: no $platform ONNX Runtime beside $ort_x64; the runtime tests are left out"
(cd "$build_dir" && ctest --output-on-failure --output-junit "$junit" -j "$jobs")

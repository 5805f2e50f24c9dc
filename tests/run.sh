#!/usr/bin/env bash
# Builds everything and runs every test: the native kernel tests (CTest, also under ASan/UBSan, and the CUDA tests
# where a GPU is present), the linux-arm64 and win-x64 builds' native tests and the CLI on each of them under
# qemu-user and Wine, the .NET tests (NUnit) and the packaging check (an app with one package reference, OrtFlash and
# OrtFlash.Gpu). Ends with one line "N passed, N failed, N skipped" over all of them.
# Exit status 0 only when nothing failed.
#   bash tests/run.sh
#   NATIVE_BUILD_DIR=build/other JOBS=2 bash tests/run.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
results="$root/build/test-results"
native_dir="${NATIVE_BUILD_DIR:-$root/build/native}"
jobs="${JOBS:-$(nproc)}"
rm -rf "$results" && mkdir -p "$results"

status=0
# Older ONNX Runtime releases for the native compatibility test (tests/compat/OrtCompat.proj), restored into the
# NuGet cache; their folders go to CMake below.
compat_dirs=""
if dotnet restore tests/compat/OrtCompat.proj; then
  compat_dirs=$(dotnet msbuild tests/compat/OrtCompat.proj -nologo -getProperty:CompatLibraryDirs)
else
  echo "restoring the older ONNX Runtime releases failed (tests/compat/OrtCompat.proj)"
  status=1
fi

# The .NET build restores ONNX Runtime, configures CMake with its headers and builds libortflash.so.
# NATIVE_CMAKE_EXTRA: more CMake options (e.g. -DORTFLASH_CUDA=ON -DCMAKE_CUDA_HOST_COMPILER=clang++-14).
if ! dotnet build OrtFlash.sln -c Release -p:NativeBuildDir="$native_dir" -p:NativeBuildJobs="$jobs" \
    "-p:NativeCMakeExtraArgs=${NATIVE_CMAKE_EXTRA:-}"; then
  echo "dotnet build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

# A Python 3 with numpy for the CUDA kernel model test (benchmarks/cuda/kernel_model.py, no GPU needed): the first
# python3 on PATH, or the system's default one.
model_python=""
for python in "$(command -v python3)" "$(command -p -v python3)"; do
  if [ -n "$python" ] && "$python" -c "import numpy" 2>/dev/null; then model_python=$python; break; fi
done
[ -n "$model_python" ] || echo "no Python 3 with numpy: the CUDA kernel model test is left out"

if cmake -S "$root" -B "$native_dir" "-DORT_COMPAT_LIBRARY_DIRS=$compat_dirs" "-DORTFLASH_MODEL_PYTHON=$model_python" >/dev/null &&
    cmake --build "$native_dir" -j "$jobs"; then
  (cd "$native_dir" && ctest --output-on-failure --output-junit "$results/ctest.xml" -j "$jobs") || status=1
else
  echo "native test build failed"
  status=1
fi

# linux-arm64 and win-x64: the op cross-built and its native tests run under qemu-user and Wine (each skipped,
# visibly, without its tools).
arm_dir="${ARM64_BUILD_DIR:-$root/build/linux-arm64}"
win_dir="${WIN_X64_BUILD_DIR:-$root/build/win-x64}"
bash "$root/tests/cross.sh" linux-arm64 "$results" "$native_dir" "$arm_dir" || status=1
bash "$root/tests/cross.sh" win-x64 "$results" "$native_dir" "$win_dir" || status=1
# The .NET side there: the CLI published self-contained for each platform, run under the same emulators.
bash "$root/tests/cross_cli.sh" linux-arm64 "$results" "$native_dir" "$arm_dir" || status=1
bash "$root/tests/cross_cli.sh" win-x64 "$results" "$native_dir" "$win_dir" || status=1

dotnet test OrtFlash.sln -c Release --no-build -p:NativeBuildDir="$native_dir" \
  --logger "trx;LogFileName=dotnet.trx" --results-directory "$results" || status=1

bash "$root/tests/packaging/check.sh" "$results" "$native_dir" "$arm_dir" "$win_dir" || status=1

python3 "$root/tests/summarize_results.py" "$results" || status=1
exit $status

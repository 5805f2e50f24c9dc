#!/usr/bin/env bash
# Builds everything and runs every test: the native kernel tests (CTest, also under ASan/UBSan, and the
# CUDA tests where a GPU is present) and the .NET tests (NUnit). Ends with one line
# "N passed, N failed, N skipped" over both. Exit status 0 only when nothing failed.
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
# The .NET build restores ONNX Runtime, configures CMake with its headers and builds libortflash.so.
# NATIVE_CMAKE_EXTRA: more CMake options (e.g. -DORTFLASH_CUDA=ON -DCMAKE_CUDA_HOST_COMPILER=clang++-14).
if ! dotnet build OrtFlash.sln -c Release -p:NativeBuildDir="$native_dir" -p:NativeBuildJobs="$jobs" \
    "-p:NativeCMakeExtraArgs=${NATIVE_CMAKE_EXTRA:-}"; then
  echo "dotnet build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

if cmake --build "$native_dir" -j "$jobs"; then
  (cd "$native_dir" && ctest --output-on-failure --output-junit "$results/ctest.xml" -j "$jobs") || status=1
else
  echo "native test build failed"
  status=1
fi

dotnet test OrtFlash.sln -c Release --no-build -p:NativeBuildDir="$native_dir" \
  --logger "trx;LogFileName=dotnet.trx" --results-directory "$results" || status=1

python3 "$root/tests/summarize_results.py" "$results" || status=1
exit $status

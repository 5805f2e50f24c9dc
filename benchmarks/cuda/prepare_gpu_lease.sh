#!/usr/bin/env bash
# Everything a GPU lease carries, made here in one command (run in the repository root; about 6 minutes on two
# cores): .gtest (GoogleTest's sources: the GPU image has none, and the CUDA tests build there), the op library built
# for the GPU alone (build/ort-lib: one architecture, no tests, so that the chunks stay few), .ort-gpu
# (prepare_ort_models.sh: the rewritten models and their inputs for ort_cuda_check.py), and ONNX Runtime's GPU
# libraries with the NUnit tests published self-contained, cut into chunks (ort_gpu_chunks.sh stage-tests, pack).
# Then it prints the device calls to make, in order: the chunk calls back to back (a warm machine keeps what
# earlier calls left; it is given back after 30 s idle), then gpu_lease.sh with the last chunk.
#
#   bash benchmarks/cuda/prepare_gpu_lease.sh [--arch CMAKE_CUDA_ARCH] [--chunk-mib N] [--seconds S] [--dry-run]
#
# --arch: the GPU's architecture (default 90-real: H100/H200). --chunk-mib: chunk size (default 28: each call also
# carries the tracked tree, about 32 MiB, under 64). --seconds: the budget printed for gpu_lease.sh (default 500).
# --dry-run: print the steps only.
set -euo pipefail

die() { echo "prepare_gpu_lease.sh: $*" >&2; exit 2; }
arch=90-real chunk_mib=28 seconds=500 dry_run=0
while [ $# -gt 0 ]; do
  case $1 in
    --arch) [ $# -ge 2 ] || die "--arch needs a value"; arch=$2; shift ;;
    --chunk-mib) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--chunk-mib needs a positive whole number"; chunk_mib=$2; shift ;;
    --seconds) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--seconds needs a positive whole number"; seconds=$2; shift ;;
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,14s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument '$1'" ;;
  esac
  shift
done
[ -f CMakeLists.txt ] && [ -d benchmarks/cuda ] || die "run it in the repository root"

packages=${NUGET_PACKAGES:-$HOME/.nuget/packages}
headers=$packages/microsoft.ml.onnxruntime/1.31.0/build/native/include
exclude=$(git rev-parse --git-path info/exclude)
steps=(
  "grep -qx '/.gtest/' '$exclude' || echo /.gtest/ >> '$exclude'"
  "[ -d .gtest ] || cp -r /usr/src/googletest .gtest"
  "dotnet restore managed/OrtFlash.Cli > /dev/null"
  "cmake -S . -B build/ort-lib -DCMAKE_BUILD_TYPE=Release -DORT_INCLUDE_DIR='$headers' -DORTFLASH_CUDA=ON -DCMAKE_CUDA_HOST_COMPILER=clang++-14 -DORTFLASH_CUDA_ARCHITECTURES=$arch -DORTFLASH_TESTS=OFF -DORTFLASH_SANITIZER_TESTS=OFF > /dev/null"
  "cmake --build build/ort-lib -j \$(nproc) --target ortflash > /dev/null"
  "bash benchmarks/cuda/prepare_ort_models.sh --lib build/ort-lib/libortflash.so"
  "NATIVE_BUILD_DIR=build/ort-lib bash benchmarks/cuda/ort_gpu_chunks.sh stage-tests"
  "rm -rf .ort-gpu-chunks && bash benchmarks/cuda/ort_gpu_chunks.sh pack --from .ort-gpu-stage --chunk-mib $chunk_mib > /dev/null"
)
for step in "${steps[@]}"; do
  echo "\$ $step"
  [ $dry_run = 1 ] || bash -c "$step" || die "this step failed: $step"
done
[ $dry_run = 0 ] || exit 0

chunks=()
for dir in .ort-gpu-chunks/c*; do chunks+=("$dir"); done
[ ${#chunks[@]} -gt 0 ] || die "no chunks were made"
echo
echo "Device calls, in order, with no pause between them:"
for ((i = 0; i + 1 < ${#chunks[@]}; ++i)); do
  echo "  $((i + 1)). command \`true\`, carry [\"${chunks[i]}\"]"
done
echo "  ${#chunks[@]}. command \`bash benchmarks/cuda/gpu_lease.sh $seconds\`, carry [\".gtest\", \".ort-gpu\", \"${chunks[-1]}\"], timeout_s $((seconds + 40))"
last=$(du -sb "${chunks[-1]}" | cut -f1)
[ "$last" -lt $((12 << 20)) ] ||
  echo "note: the last chunk is $((last >> 20)) MiB: with .gtest and .ort-gpu the last call may pass 64 MiB; carry it alone first"

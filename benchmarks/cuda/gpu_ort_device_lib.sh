#!/usr/bin/env bash
# The op library as a Hopper user would build it, inside ONNX Runtime's CUDA provider, in one device call.
#
# The library that prepare_gpu_lease.sh carries (and the package CI builds) comes from nvcc 11.8, which cannot
# build the sm_90a kernels (wgmma, TMA): on an H100/H200 it runs the mma.sync kernel. The GPU machine has a newer
# nvcc, so this builds libortflash.so there (the whole library: CPU kernel, CUDA kernels, sm_90a included, against
# the ONNX Runtime headers the chunks carry), then, each under what is left of SECONDS:
#   nunit-device   the NUnit GPU tests with that library (ORTFLASH_LIBRARY)
#   nunit-shipped  the NUnit GPU tests with the carried library (the nvcc 11.8 build)
#   ort-device     ort_cuda_check.py: the op cases and the rewritten models on the CUDA provider with that library
#   bench-device   ort_attention_bench.py with that library against ONNX Runtime's own attention
#   live-bias      bench_attention.py: a padding bias's live-key pass, on and off, at 2048-8192 keys (float16)
# Needs the chunks (ort_gpu_chunks.sh, carried by earlier calls) and .ort-gpu. Logs and summary.txt go to $OUT.
#
#   bash benchmarks/cuda/gpu_ort_device_lib.sh [SECONDS] [--dry-run] [--build-only]   # SECONDS: default 300
#
# --build-only: unpack and build, nothing else (gpu_lease.sh does that while its tests run, then uses the library);
# exit 0 only when the library was built with the sm_90a kernels. BUILD_JOBS: parallel compile jobs (default: every
# core).
set -uo pipefail
budget=300 dry_run=0 build_only=0
for arg in "$@"; do
  case $arg in
    --dry-run) dry_run=1 ;;
    --build-only) build_only=1 ;;
    -h|--help) sed -n '2,19s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) [[ $arg =~ ^[1-9][0-9]*$ ]] || { echo "gpu_ort_device_lib.sh: unknown argument '$arg'" >&2; exit 2; }
       budget=$arg ;;
  esac
done
[ -f CMakeLists.txt ] && [ -d benchmarks/cuda ] || { echo "gpu_ort_device_lib.sh: run it in the repository root" >&2; exit 2; }

out=${OUT:-build/gpu-ort-device}
libs=.ort-gpu-libs
build_dir=build/ort-lib-device
device_lib=$PWD/$build_dir/libortflash.so
deadline=$((SECONDS + budget))
mkdir -p "$out"
summary=$out/summary.txt
: > "$summary"

arch=""
if command -v nvidia-smi > /dev/null 2>&1; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
  [[ $cap =~ ^[0-9]+$ ]] && arch=${cap}-real
  nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader | head -n 1 | sed 's/^/GPU: /' >> "$summary"
fi
command -v nvcc > /dev/null 2>&1 && nvcc --version | tail -n 2 | head -n 1 | sed 's/^/nvcc: /' >> "$summary"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" >> "$summary"

generator=""
if command -v ninja > /dev/null 2>&1; then generator="-G Ninja"; fi
configure="cmake -S . -B $build_dir $generator -DCMAKE_BUILD_TYPE=Release -DORT_INCLUDE_DIR=$PWD/$libs/include \
-DORTFLASH_CUDA=ON ${arch:+-DORTFLASH_CUDA_ARCHITECTURES=$arch} -DORTFLASH_TESTS=OFF -DORTFLASH_SANITIZER_TESTS=OFF"
build="cmake --build $build_dir -j ${BUILD_JOBS:-$(nproc)} --target ortflash ortflash_kernels"
env_prefix="LD_LIBRARY_PATH=$PWD/$libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nunit="$libs/OrtFlash.Tests --filter TestCategory=Gpu"
bench="python3 benchmarks/cuda/ort_attention_bench.py --ort-capi $libs/libonnxruntime.so --lib $device_lib \
--seqlens 1024 4096 --decode-seqlens 16384 --min-seconds 0.15 --max-runs 50 \
--scenarios encoder causal decode decoder decoder-left plain"
live_bias="python3 benchmarks/cuda/bench_attention.py --lib $PWD/$build_dir/libortflash_kernels.so --mode encoder \
--encoder-masks padding-bias --encoder-seqlens 2048 4096 8192 --encoder-dtypes float16 --live-keys both"

if [ $dry_run = 1 ]; then
  echo "arch ${arch:-not detected}; budget ${budget}s"
  echo "unpack: bash benchmarks/cuda/ort_gpu_chunks.sh unpack --to $libs"
  echo "build: $configure && $build"
  echo "nunit-device: env $env_prefix ORTFLASH_LIBRARY=$device_lib $nunit"
  echo "nunit-shipped: env $env_prefix $nunit"
  echo "ort-device: env $env_prefix python3 benchmarks/cuda/ort_cuda_check.py --dir .ort-gpu --lib $device_lib --ort-capi $libs/libonnxruntime.so"
  echo "bench-device: env $env_prefix $bench"
  echo "live-bias: $live_bias"
  exit 0
fi

step() {  # NAME CAP COMMAND: run COMMAND (bash) for at most CAP seconds of what is left, log to $out/NAME.log
  local name=$1 cap=$2 command=$3
  local left=$((deadline - SECONDS - 5)) start=$SECONDS rc
  [ "$left" -gt "$cap" ] && left=$cap
  if [ "$left" -lt 15 ]; then echo "$name: not run (${left}s left)" >> "$summary"; return 1; fi
  timeout --kill-after=5 "$left" bash -c "$command" > "$out/$name.log" 2>&1
  rc=$?
  echo "$name: exit $rc, $((SECONDS - start))s" >> "$summary"
  return $rc
}

if [ ! -f "$libs/libonnxruntime.so" ]; then
  step unpack 60 "bash benchmarks/cuda/ort_gpu_chunks.sh unpack --to $libs" || { cat "$summary"; exit 1; }
fi
# The build may take the whole budget: beside gpu_lease.sh's tests it has half the cores (BUILD_JOBS).
if step build "$budget" "$configure && $build"; then
  hopper=0
  grep -q '^ORTFLASH_CUDA_HOPPER:BOOL=ON' "$build_dir/CMakeCache.txt" && hopper=1
  [ $hopper = 1 ] && echo "build: the sm_90a kernels are in" >> "$summary" || echo "build: WITHOUT the sm_90a kernels" >> "$summary"
  if [ $build_only = 1 ]; then cat "$summary"; [ $hopper = 1 ]; exit $?; fi
  step nunit-device 60 "export $env_prefix ORTFLASH_LIBRARY=$device_lib; $nunit --results-directory $out/nunit-device"
  grep -E '^(failed|  (total|failed|succeeded|skipped):)' "$out/nunit-device.log" >> "$summary"
elif [ $build_only = 1 ]; then
  cat "$summary"; exit 1
fi
step nunit-shipped 45 "export $env_prefix; $nunit --results-directory $out/nunit-shipped"
grep -E '^(failed|  (total|failed|succeeded|skipped):)' "$out/nunit-shipped.log" >> "$summary"
if [ -f "$device_lib" ]; then
  step ort-device 50 "export $env_prefix PYTHONUNBUFFERED=1; python3 benchmarks/cuda/ort_cuda_check.py --dir .ort-gpu --lib $device_lib --ort-capi $libs/libonnxruntime.so"
  grep -E '^(ort_cuda_check:|FAIL)' "$out/ort-device.log" >> "$summary"
  step bench-device 110 "export $env_prefix PYTHONUNBUFFERED=1; $bench"
  { echo; cat "$out/bench-device.log"; } >> "$summary"
  step live-bias 40 "PYTHONUNBUFFERED=1 $live_bias"
  { echo; cat "$out/live-bias.log"; } >> "$summary"
fi
cat "$summary"

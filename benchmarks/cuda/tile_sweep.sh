#!/usr/bin/env bash
# Times candidate tile shapes of the tensor-core kernel side by side on one GPU: one build per
# candidate (CMake ORTFLASH_CUDA_TILES; builds run in parallel), then the same prefill rows of
# bench_attention.py for each build, one after another, so every ratio to SDPA comes from one machine.
#
#   bash benchmarks/cuda/tile_sweep.sh [--phase build|bench|all] [--bench-args "ARGS"] NAME=SHAPES[+MACRO=VALUE]...
#   e.g. bash benchmarks/cuda/tile_sweep.sh default= fa2=128=128,64,4 square=128=64,64,4;64=64,64,4
#        bash benchmarks/cuda/tile_sweep.sh --bench-args "--mode decode --batches 1" m3= m1=+ORTFLASH_DECODE_MIN_TILES=1
#        bash benchmarks/cuda/tile_sweep.sh --bench-args "--hopper 2" ov=+ORTFLASH_HOPPER_OVERLAP=1
#
# NAME= (empty SHAPES) is the default build; +MACRO=VALUE entries become nvcc -D options (the tuning
# macros of fwd_launch.h). --bench-args replace the default rows (a --mode there overrides prefill).
# --phase build only builds (e.g. in the background while other work runs), --phase bench only times what an
# earlier build left. Logs go to ${OUT:-build/tile-sweep}/NAME.{build,bench}.log.
set -uo pipefail
bench_args="--dtypes float16 --head-dims 64 128 --seqlens 2048 8192"
phase=all
while [ $# -gt 0 ]; do
  case $1 in
    --bench-args) bench_args=$2; shift 2 ;;
    --phase)
      [[ ${2:-} =~ ^(build|bench|all)$ ]] || { echo "--phase takes build, bench or all" >&2; exit 2; }
      phase=$2; shift 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--phase build|bench|all] [--bench-args ARGS] NAME=SHAPES..." >&2; exit 2; }
out=${OUT:-build/tile-sweep}
mkdir -p "$out" || exit 2
arch=""
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
[[ $cc =~ ^[0-9]+$ ]] && arch="-DORTFLASH_CUDA_ARCHITECTURES=$cc-real"
jobs=$(( $(nproc) / $# )); [ "$jobs" -ge 1 ] || jobs=1
if [ "$phase" != bench ]; then
  for spec in "$@"; do
    name=${spec%%=*} rest=${spec#*=}
    tiles=${rest%%+*} defines=""
    [[ $rest == *+* ]] && defines=$(tr '+' '\n' <<< "${rest#*+}" | sed 's/^/-D/' | tr '\n' ' ')
    ( cmake -S benchmarks/cuda -B "build/sweep-$name" -DORTFLASH_TESTS=OFF -DORTFLASH_CUDA_PTXAS_VERBOSE=ON \
          $arch "-DORTFLASH_CUDA_TILES=$tiles" "-DCMAKE_CUDA_FLAGS=$defines" $(command -v ninja >/dev/null && echo -G Ninja) &&
        cmake --build "build/sweep-$name" -j "$jobs" --target ortflash_kernels ) > "$out/$name.build.log" 2>&1 &
  done
  wait
fi
[ "$phase" != build ] || exit 0
for spec in "$@"; do
  name=${spec%%=*} tiles=${spec#*=}
  lib=build/sweep-$name/libortflash_kernels.so
  echo "== $name (${tiles:-default shapes})"
  grep -E "spill stores" "$out/$name.build.log" | grep -v " 0 bytes spill stores" | sort | uniq -c | head -n 5
  if [ -e "$lib" ]; then
    PYTHONUNBUFFERED=1 python3 benchmarks/cuda/bench_attention.py --lib "$lib" --mode prefill $bench_args \
      2>&1 | tee "$out/$name.bench.log" | grep -E "^(float16|bfloat16) "
  else
    echo "build failed:"; tail -n 20 "$out/$name.build.log"
  fi
done

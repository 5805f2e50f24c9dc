#!/usr/bin/env bash
# A whole short GPU lease in one device call: the default build, then the tests, the prefill and encoder
# benchmarks and compute-sanitizer of gpu_session.sh (both tables also time the sm_90a kernels, --hopper both; the
# encoder table's float32 rows also the 3xTF32 tensor-core kernel), then, if time is left, float32 without a mask
# on both kernels, and, given TILES, meanwhile a second build with those candidate tile
# shapes in the background, whose fp16 prefill table is timed at the end if time is left. Everything it wrote is
# packed into $OUT/gpu-lease.tgz (a device call returns at most 8 files); summary.txt, build.txt, float32.txt and
# tuned.txt are also copied there to read at once.
#
#   bash benchmarks/cuda/gpu_lease.sh [SECONDS [TILES]]   # SECONDS: the whole call's budget, default 540
#   TILES: e.g. "128=64,128,4;64=64,128,4" (see ORTFLASH_CUDA_TILES); none: no second build
#
# Run with `carry: [".gtest"]` (see README.md here).
set -uo pipefail
budget=${1:-540}
out=${OUT:-build/gpu-lease}
work=/tmp/ortflash-gpu
tiles=${2:-}
mkdir -p "$out" "$work" || exit 2
session=benchmarks/cuda/gpu_session.sh
deadline=$((SECONDS + budget))

pack() {
  cp -f "$work/summary.txt" "$out/summary.txt" 2>/dev/null
  cp -f "$work/build.txt" "$out/build.txt" 2>/dev/null
  cp -f "$work/tuned-bench.log" "$out/tuned.txt" 2>/dev/null
  cp -f "$work/float32-bench.log" "$out/float32.txt" 2>/dev/null
  tar czf "$out/gpu-lease.tgz" -C "$work" . 2>/dev/null
}
trap pack EXIT

bash "$session" --stages build --out "$work/main-build" --budget 300 --stage-timeout build=285 \
  > "$work/build.txt" 2>&1
cat "$work/build.txt"

# The second build competes only for the CPU: the stages below are GPU-bound or single-threaded.
tuned_pid=""
if [ -n "$tiles" ]; then
  nice -n 10 bash "$session" --stages build --tiles "$tiles" --out "$work/tuned-build" --budget 300 \
    > "$work/tuned-build.txt" 2>&1 &
  tuned_pid=$!
fi

reserve=10
[ -n "$tuned_pid" ] && reserve=75  # kept for the tuned table
# Most wanted first: the tests and the prefill table (the Hopper kernels' first GPU runs), then the encoder table
# (masks, live key ranges, float32 on both kernels), then compute-sanitizer. No decode stage: the decoding kernels
# have not changed since they were timed (results/h200-2026-11-session5.md).
run_stages() {  # STAGES OUT-SUBDIR ARGS...
  local stages=$1 sub=$2; shift 2
  local left=$((deadline - SECONDS - reserve))
  [ "$left" -gt 30 ] || { echo "== $stages: not run (${left}s left)"; return; }
  bash "$session" --stages "$stages" --out "$work/$sub" --budget "$left" "$@"
  cat "$work/$sub/summary.txt" >> "$work/summary.txt" 2>/dev/null
}
run_stages test,bench main --bench-args "--hopper both" --stage-timeout test=100 --stage-timeout bench=170
run_stages encoder encoder \
  --encoder-args "--encoder-masks padding-bias full-bias padding-keep --hopper both --live-keys both --float32-tensor-cores both" \
  --stage-timeout encoder=110
run_stages sanitize sanitize --stage-timeout sanitize=130

# float32: the tiled SIMT kernel against the tensor-core kernel in 3xTF32 (opt-in until timed), no mask and a
# padding bias, when time is left (the tuned table keeps its reserve).
left=$((deadline - SECONDS - reserve))
if [ "$left" -gt 30 ] && [ -e build/gpu-kernels/libortflash_kernels.so ]; then
  echo "== float32: tiled SIMT vs tensor cores (3xTF32), at most ${left}s"
  timeout --kill-after=5 "$left" env PYTHONUNBUFFERED=1 python3 benchmarks/cuda/bench_attention.py \
    --lib build/gpu-kernels/libortflash_kernels.so --mode encoder --encoder-dtypes float32 \
    --encoder-masks none padding-bias --encoder-seqlens 512 2048 --float32-tensor-cores both \
    > "$work/float32-bench.log" 2>&1
  echo "float32 bench exit $?"
  cat "$work/float32-bench.log"
fi

[ -n "$tuned_pid" ] || exit 0
left=$((deadline - SECONDS - 10))
if wait "$tuned_pid" && [ -e build/gpu-kernels-tuned/libortflash_kernels.so ] && [ "$left" -gt 30 ]; then
  echo "== tuned ($tiles), fp16 prefill, at most ${left}s"
  timeout --kill-after=5 "$left" env PYTHONUNBUFFERED=1 python3 benchmarks/cuda/bench_attention.py \
    --lib build/gpu-kernels-tuned/libortflash_kernels.so --mode prefill --dtypes float16 \
    --seqlens 2048 8192 16384 > "$work/tuned-bench.log" 2>&1
  echo "tuned bench exit $?"
  cat "$work/tuned-bench.log"
else
  echo "tuned: not timed (${left}s left); its build: $(tail -n 3 "$work/tuned-build.txt" 2>/dev/null | tr '\n' ' ')"
fi

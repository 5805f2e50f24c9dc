#!/usr/bin/env bash
# A whole short GPU lease in one device call, most wanted first: the default build; then the tests; where earlier
# calls carried ONNX Runtime's GPU libraries (.ort-gpu-chunks, ort_gpu_chunks.sh) and this one carries .ort-gpu,
# the op and the rewritten models on ONNX Runtime's CUDA provider, the NUnit GPU tests and the op against ONNX
# Runtime's own attention there (ort_attention_bench.py), with the op library built here while the tests run
# (gpu_ort_device_lib.sh --build-only: nvcc >= 12.3 builds the sm_90a kernels; else the carried one); the prefill table (every
# row also on the mma.sync and both sm_90a kernels, --hopper both) and a short one at head dims 96 and 256; the
# encoder table (masks, live key ranges, float32 on the SIMT and both 3xTF32 forms); given SWEEP candidates
# (tile_sweep.sh specs, built in the background meanwhile), their fp16 prefill rows on the TMA kernel.
# compute-sanitizer runs right after the tests. Each part gets what is left of SECONDS. Everything it wrote is packed into
# $OUT/gpu-lease.tgz (a device call returns at most 8 files); summary.txt, build.txt and sweep.txt are also copied
# there to read at once.
#
#   bash benchmarks/cuda/gpu_lease.sh [SECONDS [SWEEP...]]   # SECONDS: the whole call's budget, default 540
#   e.g. bash benchmarks/cuda/gpu_lease.sh 540 base= ov=+ORTFLASH_HOPPER_OVERLAP=1
#
# Run with `carry: [".gtest"]` (and ".ort-gpu" for the ONNX Runtime stages; see README.md here).
set -uo pipefail
budget=${1:-540}
shift || true
sweep=("$@")
out=${OUT:-build/gpu-lease}
work=/tmp/ortflash-gpu
mkdir -p "$out" "$work" || exit 2
session=benchmarks/cuda/gpu_session.sh
deadline=$((SECONDS + budget))
lib=build/gpu-kernels/libortflash_kernels.so

pack() {
  cp -f "$work/summary.txt" "$out/summary.txt" 2>/dev/null
  cp -f "$work/build.txt" "$out/build.txt" 2>/dev/null
  cp -f "$work/sweep.log" "$out/sweep.txt" 2>/dev/null
  tar czf "$out/gpu-lease.tgz" -C "$work" . 2>/dev/null
}
trap pack EXIT

bash "$session" --stages build --out "$work/main-build" --budget 300 --stage-timeout build=285 \
  > "$work/build.txt" 2>&1
cat "$work/build.txt"

# The sweep's builds compete only for the CPU: the stages below are mostly GPU-bound.
sweep_pid=""
if [ ${#sweep[@]} -gt 0 ]; then
  OUT=$work/sweep nice -n 10 bash benchmarks/cuda/tile_sweep.sh --phase build "${sweep[@]}" > "$work/sweep-build.txt" 2>&1 &
  sweep_pid=$!
fi

run_stages() {  # STAGES OUT-SUBDIR CAP ARGS...: gpu_session.sh for at most CAP seconds of what is left
  local stages=$1 sub=$2 cap=$3; shift 3
  local left=$((deadline - SECONDS - 10))
  [ "$left" -gt "$cap" ] && left=$cap
  [ "$left" -gt 30 ] || { echo "== $stages: not run (${left}s left)"; return; }
  bash "$session" --stages "$stages" --out "$work/$sub" --budget "$left" "$@"
  cat "$work/$sub/summary.txt" >> "$work/summary.txt" 2>/dev/null
}
timed() {  # NAME CAP COMMAND...: a table for at most CAP seconds of what is left, into $work/NAME.log
  local name=$1 cap=$2; shift 2
  local left=$((deadline - SECONDS - 10))
  [ "$left" -gt "$cap" ] && left=$cap
  [ "$left" -gt 20 ] || { echo "== $name: not run (${left}s left)"; return; }
  echo "== $name (at most ${left}s)"
  timeout --kill-after=5 "$left" env PYTHONUNBUFFERED=1 "$@" > "$work/$name.log" 2>&1
  echo "$name exit $?" >> "$work/$name.log"
  { echo; echo "== $name"; cat "$work/$name.log"; } >> "$work/summary.txt"
}

# The op library for the ONNX Runtime stages, built here as a Hopper user builds it (nvcc >= 12.3: the sm_90a kernels
# in; the carried one comes from nvcc 11.8 without them), in the background while the tests run.
device_lib_pid=""
if [ -d .ort-gpu ] && [ -d .ort-gpu-chunks ]; then
  # Half the cores: the tests' float64 references run on the CPU too (alone: build 115 s, tests 115 s on an H200 host).
  OUT=$work/device-lib BUILD_JOBS=$(( ($(nproc) + 1) / 2 )) nice -n 5 bash benchmarks/cuda/gpu_ort_device_lib.sh 280 \
    --build-only > "$work/device-lib.txt" 2>&1 &
  device_lib_pid=$!
fi
run_stages test main 180 --stage-timeout test=175  # about 150 s: the suite once per kernel and float32 form
# compute-sanitizer right after the tests (a few seconds): a short lease must not lose it to the tables.
run_stages sanitize sanitize 60 --stage-timeout sanitize=55
op_lib=.ort-gpu/libortflash.so.xz
if [ -n "$device_lib_pid" ]; then
  if wait "$device_lib_pid"; then
    op_lib=$PWD/build/ort-lib-device/libortflash.so
    echo "ONNX Runtime stages: the op library built here, sm_90a kernels in ($op_lib)"
  else
    echo "ONNX Runtime stages: the carried op library (the build here failed or lacks sm_90a: $work/device-lib.txt)"
  fi
  { echo; echo "== op library for the ONNX Runtime stages: $op_lib"; cat "$work/device-lib.txt"; } >> "$work/summary.txt"
fi
if [ -d .ort-gpu ] && [ -d .ort-gpu-chunks ]; then
  if [ "$op_lib" = .ort-gpu/libortflash.so.xz ]; then
    run_stages ort,nunit ort 170 --stage-timeout ort=80 --stage-timeout nunit=85
  else  # NUnit resolves the library through ORTFLASH_LIBRARY
    ORTFLASH_LIBRARY=$op_lib run_stages ort,nunit ort 170 --stage-timeout ort=80 --stage-timeout nunit=85 \
      --ort-args "--lib $op_lib"
  fi
fi
if [ -f .ort-gpu-libs/libonnxruntime.so ] && [ -f .ort-gpu/libortflash.so.xz ]; then
  # The op against ONNX Runtime's own attention (MultiHeadAttention, ONNX Attention) and the unfused graph, inside
  # ONNX Runtime's CUDA provider: what an ONNX Runtime user would otherwise run.
  timed ort-bench 110 env LD_LIBRARY_PATH=".ort-gpu-libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" \
    python3 benchmarks/cuda/ort_attention_bench.py --ort-capi .ort-gpu-libs/libonnxruntime.so \
    --lib "$op_lib" --seqlens 1024 4096 --decode-seqlens 16384 --min-seconds 0.15 --max-runs 50 \
    --scenarios encoder causal decode decoder decoder-left plain
  # float32 as ONNX Runtime runs it by default (its MatMuls in TF32): the op in 3xTF32 and in one TF32 pass.
  timed ort-bench-float32 40 env LD_LIBRARY_PATH=".ort-gpu-libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" \
    python3 benchmarks/cuda/ort_attention_bench.py --ort-capi .ort-gpu-libs/libonnxruntime.so \
    --lib "$op_lib" --dtypes float32 --tf32 --scenarios encoder causal --seqlens 128 512 2048 \
    --contenders ortflash ortflash-tf32 unfused mha --min-seconds 0.15 --max-runs 50
  # Decoding under the provider's CUDA graphs (enable_cuda_graph): captured once, replayed; the op's output checked.
  timed ort-bench-graph 40 env LD_LIBRARY_PATH=".ort-gpu-libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" \
    python3 benchmarks/cuda/ort_attention_bench.py --ort-capi .ort-gpu-libs/libonnxruntime.so \
    --lib "$op_lib" --cuda-graph --scenarios decode causal --seqlens 2048 --decode-seqlens 4096 16384 \
    --min-seconds 0.15 --max-runs 50
fi
run_stages bench bench 60 --bench-args "--hopper both"
timed prefill-96-256 30 python3 benchmarks/cuda/bench_attention.py --lib "$lib" --mode prefill --hopper both \
  --dtypes float16 --head-dims 96 256 --seqlens 512 2048 8192
run_stages encoder encoder 70 --encoder-args "--encoder-masks padding-bias full-bias padding-keep none \
--encoder-seqlens 128 256 512 2048 --hopper both --live-keys both --float32-tensor-cores both"
if [ -n "$sweep_pid" ]; then
  left=$((deadline - SECONDS - 40))
  if [ "$left" -gt 30 ] && timeout "$left" tail --pid="$sweep_pid" -f /dev/null; then
    timed sweep 70 env OUT="$work/sweep" bash benchmarks/cuda/tile_sweep.sh --phase bench \
      --bench-args "--hopper 2 --dtypes float16 --head-dims 64 128 --seqlens 2048 8192" "${sweep[@]}"
  else
    echo "sweep: not timed (builds unfinished)"; tail -n 3 "$work/sweep-build.txt" 2>/dev/null
  fi
fi

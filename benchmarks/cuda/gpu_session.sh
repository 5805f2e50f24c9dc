#!/usr/bin/env bash
# One device call's worth of GPU work on the CUDA kernels: build, tests, compute-sanitizer, benchmarks, and
# the op and rewritten models through ONNX Runtime's CUDA provider. Run in the repository root; every stage's
# log, ptxas.txt and summary.txt go to $OUT.
#
#   bash benchmarks/cuda/gpu_session.sh [--stages build,test,sanitize,bench,decode,encoder,ort,nunit] [--quick] [--dry-run]
#        [--budget SECONDS] [--stage-timeout STAGE=SECONDS]... [--arch CMAKE_CUDA_ARCH] [--out DIR]
#        [--build-dir DIR] [--python PYTHON] [--bench-args "ARGS"] [--decode-args "ARGS"] [--encoder-args "ARGS"]
#        [--tiles "SHAPES"]
#        [--ort-dir DIR] [--ort-args "ARGS"]
#
# Stages run in the order above under `timeout`, each capped by its own limit and by what is left of
# --budget (default 570 s, a 600 s device call less the time to write the summary). A failed stage does
# not stop the next ones; the stages that need the build are skipped when it failed. --quick runs a
# subset (tests: CudaSanitizerSubset + MatchesReference; bench: fp16 D128 S 2048/8192; decode: 2 shapes;
# encoder: fp16 and fp32, 12x64, S 512).
# --dry-run prints what would run, with the limits, and needs no GPU. Exit 0 when every stage passed.
# --tiles "128=128,64,8;64=128,128,8" builds candidate tile shapes (CMake ORTFLASH_CUDA_TILES) into
# build/gpu-kernels-tuned (unless --build-dir) for timing against the default build's numbers.
# ort: ort_cuda_check.py on what prepare_ort_models.sh left in --ort-dir (default .ort-gpu, carried); it needs
# no build and no .NET. It is skipped, without failing the run, when that folder is missing or when there is no
# onnxruntime module with a usable CUDAExecutionProvider (exit 3; the reason is in the summary).
set -uo pipefail

readonly ALL_STAGES=(build test sanitize bench decode encoder ort nunit)
# Seconds per stage, full and --quick: caps, not estimates (racecheck dominates sanitize). The quick
# ones fit the default budget together.
declare -A FULL_LIMIT=([build]=300 [test]=180 [sanitize]=240 [bench]=300 [decode]=180 [encoder]=180 [ort]=240 [nunit]=240)
declare -A QUICK_LIMIT=([build]=240 [test]=60 [sanitize]=120 [bench]=60 [decode]=60 [encoder]=60 [ort]=90 [nunit]=120)
readonly SUMMARY_RESERVE=15  # seconds kept for the summary after the last stage
readonly MIN_STAGE=20        # a stage with less time than this left is not started

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit "${1:-0}"; }
die() { echo "gpu_session.sh: $*" >&2; echo "run with --help for the options" >&2; exit 2; }

stages_arg=$(IFS=,; echo "${ALL_STAGES[*]}")
quick=0 dry_run=0 budget=570 arch="" python=python3 bench_args="" decode_args="" encoder_args="" tiles="" ort_dir=.ort-gpu
ort_args=""
out_dir=${OUT:-build/gpu-session}
build_dir=""
declare -A limit_override=()
while [ $# -gt 0 ]; do
  case $1 in
    --stages) [ $# -ge 2 ] || die "--stages needs a value"; stages_arg=$2; shift ;;
    --quick) quick=1 ;;
    --dry-run) dry_run=1 ;;
    --budget) [ $# -ge 2 ] || die "--budget needs a value"; budget=$2; shift ;;
    --stage-timeout)
      [ $# -ge 2 ] || die "--stage-timeout needs STAGE=SECONDS"
      [[ $2 =~ ^([a-z]+)=([0-9]+)$ ]] && [ -n "${FULL_LIMIT[${BASH_REMATCH[1]}]+x}" ] ||
        die "--stage-timeout '$2' is not STAGE=SECONDS with STAGE one of ${ALL_STAGES[*]}"
      limit_override[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}; shift ;;
    --arch) [ $# -ge 2 ] || die "--arch needs a value"; arch=$2; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a value"; out_dir=$2; shift ;;
    --build-dir) [ $# -ge 2 ] || die "--build-dir needs a value"; build_dir=$2; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs a value"; python=$2; shift ;;
    --bench-args) [ $# -ge 2 ] || die "--bench-args needs a value"; bench_args=$2; shift ;;
    --decode-args) [ $# -ge 2 ] || die "--decode-args needs a value"; decode_args=$2; shift ;;
    --encoder-args) [ $# -ge 2 ] || die "--encoder-args needs a value"; encoder_args=$2; shift ;;
    --ort-dir) [ $# -ge 2 ] || die "--ort-dir needs a value"; ort_dir=$2; shift ;;
    --ort-args) [ $# -ge 2 ] || die "--ort-args needs a value"; ort_args=$2; shift ;;
    --tiles)
      [ $# -ge 2 ] || die "--tiles needs a value"
      [[ $2 =~ ^((32|64|96|128|256)=[0-9]+,[0-9]+,[0-9]+;?)+$ ]] ||
        die "--tiles '$2' is not 'capacity=block_m,block_n,warps;...' (capacities 32 64 96 128 256)"
      tiles=$2; shift ;;
    -h|--help) usage 0 ;;
    *) die "unknown argument '$1'" ;;
  esac
  shift
done
[[ $budget =~ ^[0-9]+$ ]] || die "--budget '$budget' is not a number of seconds"
[ -n "$build_dir" ] || { [ -n "$tiles" ] && build_dir=build/gpu-kernels-tuned || build_dir=build/gpu-kernels; }

declare -A selected=()
IFS=, read -r -a requested <<< "$stages_arg"
[ ${#requested[@]} -gt 0 ] || die "--stages is empty"
for stage in "${requested[@]}"; do
  [ -n "${FULL_LIMIT[$stage]+x}" ] || die "unknown stage '$stage' (stages: ${ALL_STAGES[*]})"
  selected[$stage]=1
done
stages=()
for stage in "${ALL_STAGES[@]}"; do [ -n "${selected[$stage]+x}" ] && stages+=("$stage"); done

# CMake architecture of the first GPU (compute capability 9.0 -> 90-real); empty: the project's default list.
if [ -z "$arch" ] && command -v nvidia-smi >/dev/null 2>&1; then
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
  [[ $cc =~ ^[0-9]+$ ]] && arch=$cc-real
fi

q() { printf '%q' "$1"; }
lib=$build_dir/libortflash_kernels.so
tests=$build_dir/ortflash_cuda_tests

stage_command() {
  case $1 in
    build)
      local configure="cmake -S benchmarks/cuda -B $(q "$build_dir") -DORTFLASH_GTEST_SOURCE_DIR=$(q "$PWD/.gtest")"
      configure+=" -DORTFLASH_CUDA_TESTS_WERROR=OFF -DORTFLASH_CUDA_PTXAS_VERBOSE=ON"
      [ -n "$arch" ] && configure+=" -DORTFLASH_CUDA_ARCHITECTURES=$(q "$arch")"
      configure+=" -DORTFLASH_CUDA_TILES=$(q "$tiles")"  # empty: the default shapes (also resets a reused cache)
      local keep_going=" -- -k"  # make: every target that can be built is (a failed sm_90a file stops nothing else)
      if command -v ninja >/dev/null 2>&1; then configure+=" -G Ninja"; keep_going=" -- -k 0"; fi
      # The sm_90a (Hopper) kernels are built where nvcc >= 12.3 and have not run on a GPU yet: should they not
      # compile, the build goes on without them (the log says so), so that every other stage still runs.
      local build="cmake --build $(q "$build_dir") -j $(nproc)"
      echo "{ $configure -DORTFLASH_CUDA_HOPPER=ON && $build$keep_going; } || { echo 'ORTFLASH: the sm_90a (Hopper) build failed; building without it'; $configure -DORTFLASH_CUDA_HOPPER=OFF && $build; }" ;;
    test)
      if [ $quick = 1 ]; then
        echo "$(q "$tests") --gtest_filter='CudaSanitizerSubset.*:CudaAttention.MatchesReference*'"
      else  # --timeout: a hung kernel fails its test instead of the stage
        echo "ctest --test-dir $(q "$build_dir") --output-on-failure --no-tests=error --timeout 120 -E compute_sanitizer"
      fi ;;
    sanitize)
      echo "ctest --test-dir $(q "$build_dir") --output-on-failure --no-tests=error -R compute_sanitizer" ;;
    bench)
      local subset=""
      [ $quick = 1 ] && subset=" --dtypes float16 --head-dims 128 --seqlens 2048 8192"
      echo "PYTHONUNBUFFERED=1 $(q "$python") benchmarks/cuda/bench_attention.py --lib $(q "$lib") --mode prefill$subset $bench_args" ;;
    decode)
      local subset=""
      [ $quick = 1 ] && subset=" --dtypes float16 --decode-heads 32:8 --batches 1 --kv-lens 4096 65536"
      echo "PYTHONUNBUFFERED=1 $(q "$python") benchmarks/cuda/bench_attention.py --lib $(q "$lib") --mode decode$subset $decode_args" ;;
    encoder)
      local subset=""
      [ $quick = 1 ] && subset=" --encoder-dtypes float16 float32 --encoder-heads 12:64 --encoder-seqlens 512"
      echo "PYTHONUNBUFFERED=1 $(q "$python") benchmarks/cuda/bench_attention.py --lib $(q "$lib") --mode encoder$subset $encoder_args" ;;
    ort|nunit)
      local subset="" prefix="" libs=.ort-gpu-libs
      [ $quick = 1 ] && [ "$1" = ort ] && subset=" --quick"
      # ONNX Runtime's GPU libraries (and, staged with them, the NUnit tests) carried in chunks by earlier calls
      # (ort_gpu_chunks.sh): restored once (exit 3, a skip, while chunks are missing) and used from there.
      if [ -d .ort-gpu-chunks ]; then
        prefix="set -o pipefail; { [ -f $(q "$libs/libonnxruntime.so") ] || bash benchmarks/cuda/ort_gpu_chunks.sh unpack --to $(q "$libs") | sed 's/^ort_gpu_chunks.sh: /SKIP: /'; } || exit \$?; "
        prefix+="export LD_LIBRARY_PATH=$(q "$libs"):/usr/local/cuda/lib64:\${LD_LIBRARY_PATH:-}; "
      fi
      if [ "$1" = ort ]; then
        local capi=""
        [ -d .ort-gpu-chunks ] && capi=" --ort-capi $(q "$libs/libonnxruntime.so")"
        echo "${prefix}PYTHONUNBUFFERED=1 $(q "$python") benchmarks/cuda/ort_cuda_check.py --dir $(q "$ort_dir")$subset$capi $ort_args"
      else  # FlashAttentionCudaTests; the runner's exit 8 (no test ran: every one ignored) is a skip
        echo "${prefix}$(q "$libs/OrtFlash.Tests") --filter TestCategory=Gpu --results-directory $(q "$out_dir/nunit"); rc=\$?; [ \$rc = 8 ] && { echo 'SKIP: every Gpu test was ignored (no usable CUDA provider)'; exit 3; }; exit \$rc"
      fi ;;
  esac
}

stage_limit() {
  if [ -n "${limit_override[$1]+x}" ]; then echo "${limit_override[$1]}"
  elif [ $quick = 1 ]; then echo "${QUICK_LIMIT[$1]}"
  else echo "${FULL_LIMIT[$1]}"; fi
}

# What a stage needs from the build: nothing (build), the test binary, or the kernels library.
stage_needs() {
  case $1 in
    test|sanitize) echo "$tests" ;;
    bench|decode|encoder) echo "$lib" ;;
    ort) echo "$ort_dir" ;;
    nunit) [ -d .ort-gpu-chunks ] && echo .ort-gpu-chunks || echo .ort-gpu-libs/OrtFlash.Tests ;;
  esac
}

# The reason an ort stage that exited 3 gives (the first "SKIP: " line of ort_cuda_check.py).
ort_skip_reason() {
  local reason
  reason=$(grep -m 1 '^SKIP: ' "$1")
  reason=${reason#SKIP: }
  grep -q '^SKIP: .*(the CPU half passed)' "$1" && reason+="; CPU half passed"
  echo "${reason:-no reason given}"
}

if [ $dry_run = 1 ]; then
  echo "dry run: stages ${stages[*]}; quick $quick; budget ${budget}s; arch ${arch:-not detected, the default list of cuda.cmake}"
  echo "out $out_dir; build $build_dir"
  echo "gpu: nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader"
  for stage in "${stages[@]}"; do
    echo "$stage (at most $(stage_limit "$stage")s): $(stage_command "$stage") > $out_dir/$stage.log 2>&1"
    total=$((${total:-0} + $(stage_limit "$stage")))
    [ "$stage" = ort ] && [ ! -d "$ort_dir" ] &&
      echo "note: no $ort_dir here: the ort stage would be skipped (bash benchmarks/cuda/prepare_ort_models.sh, then carry it)"
  done
  [ "$total" -le $((budget - SUMMARY_RESERVE)) ] ||
    echo "note: the limits add up to ${total}s, more than the budget less ${SUMMARY_RESERVE}s: the last stages get what is left"
  exit 0
fi

mkdir -p "$out_dir" || exit 2
deadline=$((SECONDS + budget))
: > "$out_dir/stages.txt"
gpu="no nvidia-smi"
command -v nvidia-smi >/dev/null 2>&1 &&
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | head -n 1)
echo "GPU: $gpu"
[ -d .gtest ] || echo "note: no .gtest here (carry it): the CUDA tests are not built"

# One row per kernel from ptxas -v: arch, registers, stack, spill stores, spill loads, demangled name.
ptxas_table() {
  awk '
    /Compiling entry function/ { split($0, part, "'\''"); fn = part[2]; sm = part[4]; next }
    /bytes stack frame/ && fn != "" { stack = $1; stores = $5; loads = $9; next }
    /Used [0-9]+ registers/ && fn != "" {
      match($0, /Used [0-9]+ registers/); regs = substr($0, RSTART + 5, RLENGTH - 15)
      printf "%-6s %4s regs %5s stack %5s spill-st %5s spill-ld  %s\n", sm, regs, stack, stores, loads, fn
      fn = ""
    }' "$1" | { command -v c++filt >/dev/null 2>&1 && c++filt || cat; } | sort -u
}

declare -A result=() elapsed=()
build_failed=0
for stage in "${stages[@]}"; do rm -f "$out_dir/$stage.log"; done  # a skipped stage shows no older log
for stage in "${stages[@]}"; do
  left=$((deadline - SECONDS - SUMMARY_RESERVE))
  limit=$(stage_limit "$stage")
  [ "$limit" -gt "$left" ] && limit=$left
  need=$(stage_needs "$stage")
  if [ "$stage" != build ] && [ "$stage" != ort ] && [ "$stage" != nunit ] && [ $build_failed = 1 ]; then
    result[$stage]="SKIP (no build)"
  elif [ -n "$need" ] && [ ! -e "$need" ]; then
    result[$stage]="SKIP (no $need)"
  elif [ "$left" -lt $MIN_STAGE ]; then
    result[$stage]="SKIP (${left}s of the budget left)"
  else
    command=$(stage_command "$stage")
    echo "== $stage (at most ${limit}s): $command"
    start=$SECONDS
    { echo "\$ $command"; timeout --kill-after=10 "$limit" bash -c "$command"; } > "$out_dir/$stage.log" 2>&1
    rc=$?
    elapsed[$stage]=$((SECONDS - start))
    case $rc in
      0) result[$stage]=PASS
         # A test that saw no device skips itself: on a GPU machine that is worth a look.
         grep -qE '^\[  SKIPPED \]|\*\*\*Skipped' "$out_dir/$stage.log" && result[$stage]="PASS (with skips)" ;;
      124|137) result[$stage]="TIMEOUT (${limit}s)" ;;
      3) if [ "$stage" = ort ] || [ "$stage" = nunit ]; then result[$stage]="SKIP ($(ort_skip_reason "$out_dir/$stage.log"))"
         else result[$stage]="FAIL (exit $rc)"; fi ;;
      *) result[$stage]="FAIL (exit $rc)" ;;
    esac
    [ "$stage" = build ] && ptxas_table "$out_dir/build.log" > "$out_dir/ptxas.txt"
  fi
  # Binaries left from an earlier build on a warm machine are not what this tree builds.
  [ "$stage" = build ] && [ "${result[build]}" != PASS ] && build_failed=1
  echo "$stage: ${result[$stage]} ${elapsed[$stage]:-0}s" | tee -a "$out_dir/stages.txt"
done

# What each stage's log says in a few lines (the tables whole).
stage_digest() {
  local log=$out_dir/$1.log
  [ -f "$log" ] || return
  case $1 in
    build)
      local kernels spills
      kernels=$(wc -l < "$out_dir/ptxas.txt")
      spills=$(awk '$6 != 0 || $8 != 0' "$out_dir/ptxas.txt")
      if [ "$kernels" = 0 ]; then
        echo "ptxas: no kernel compiled$([ "${result[build]}" = PASS ] && echo " (the build was up to date)")"
      else
        echo "ptxas: $kernels kernels, $(printf '%s' "$spills" | grep -c .) with spills (all in ptxas.txt)"
      fi
      [ -n "$spills" ] && echo "$spills"
      grep -E "FAILED:|(^|[^W-])error[: ]|fatal|CMake Error|not built|^ORTFLASH: " "$log" | head -n 20 ;;
    test|sanitize)  # ctest's and GoogleTest's totals, the tests that did not pass, how many skipped
      {
        grep -E "tests passed|^\[  PASSED  \]|^\[  SKIPPED \] [0-9]+ test|^\[  FAILED  \]|ERROR SUMMARY|No tests" "$log"
        grep -E "^[[:space:]]+[0-9]+ - .*\((Failed|Timeout|Not Run|SEGFAULT|Subprocess aborted|Exception)\)" "$log"
        local skipped
        skipped=$(grep -cE "^[[:space:]]+[0-9]+ - .*\(Skipped\)" "$log")
        [ "$skipped" = 0 ] || echo "$skipped ctest entries skipped"
      } | head -n 40 ;;
    bench|decode|encoder)
      cat "$log" ;;
    ort)  # the runtime, skips, failures and the totals; every check's line is in ort.log
      {
        grep -E -A1 "^SKIP: " "$log" | head -n 2
        grep -E "^onnxruntime |^FAIL |^ort_cuda_check: |^error: |Traceback|Error" "$log" | head -n 40
        echo "$(grep -c '^PASS ' "$log") PASS lines in ort.log"
      } ;;
    nunit)  # the failures and the runner's summary
      grep -E "^SKIP: |^failed |Test run summary|^  (total|failed|succeeded|skipped):" "$log" | head -n 40 ;;
  esac
}

summary=$out_dir/summary.txt
{
  echo "OrtFlash GPU session, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "GPU: $gpu"
  echo "arch: ${arch:-the default list of cuda.cmake}; quick: $quick; budget: ${budget}s; used: ${SECONDS}s"
  echo
  printf '%-9s %-34s %s\n' stage result seconds
  for stage in "${stages[@]}"; do printf '%-9s %-34s %s\n' "$stage" "${result[$stage]}" "${elapsed[$stage]:--}"; done
  for stage in "${stages[@]}"; do
    [ -f "$out_dir/$stage.log" ] || continue
    echo
    echo "== $stage ($stage.log)"
    stage_digest "$stage"
  done
} > "$summary"
echo
cat "$summary"

# A skipped ort stage (no .ort-gpu, no onnxruntime with CUDA) is no failure: it depends on what the machine has.
for stage in "${stages[@]}"; do
  [[ ${result[$stage]} == PASS* ]] || { [ "$stage" = ort ] && [[ ${result[$stage]} == SKIP* ]]; } || exit 1
done
exit 0

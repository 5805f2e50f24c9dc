#!/usr/bin/env bash
# Fills .ort-gpu/ (ignored; carried to the GPU machine) with what ort_cuda_check.py needs there, where there is
# no .NET: the bundled models rewritten by the CLI, their generated inputs (.npz), the op library built with CUDA
# (stripped, xz-compressed) and ONNX Runtime's C headers (to build the library there instead). Run in the
# repository root on the development machine:
#
#   bash benchmarks/cuda/prepare_ort_models.sh [--lib PATH] [--out DIR] [--models "FILE[:FLAG,...] ..."]
#        [--no-build] [--python PYTHON]
#
# --lib: the op library to carry (default $NATIVE_BUILD_DIR/libortflash.so, NATIVE_BUILD_DIR defaulting to
# build/native); it must hold CUDA kernels (an .nv_fatbin section). --models: files under models/, each with
# rewrite flags after a colon (default: the list below). --no-build: the CLI is already built (Release).
# --python: a python3 with numpy and onnx (default: Debian's, `command -p python3`).
# Exit 0 when DIR is complete; the last lines give its size, which must stay well under the 64 MiB a device
# call carries together with the tracked tree (about 20 MiB) and .gtest (about 4 MiB).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

# FlashAttentionCudaTests.RewrittenModelOnCudaMatchesOriginalOnCpu's models first, then one file per family and
# the float16 exports.
DEFAULT_MODELS=(
  bert-opset17.onnx gpt2_past-opset17.onnx llama-opset17-fp16.onnx t5-opset17.onnx
  llama-opset17-fp16.onnx:--causal-padded-rows
  bert-opset17-fp16.onnx bert_legacy-opset17.onnx distilbert-opset17.onnx gpt2-opset17.onnx
  gpt2-opset17.onnx:--causal-padded-rows llama-opset17.onnx bart-opset17.onnx bloom-opset17.onnx
  whisper_openai-opset17.onnx vit-opset17.onnx sdpa-opset17.onnx sdpa_bool-opset17.onnx sdpa_causal-opset17.onnx
  mha-opset17.onnx transformer_encoder-opset17.onnx
)

usage() { sed -n '2,16s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }
die() { echo "prepare_ort_models.sh: $*" >&2; exit 2; }

lib=${NATIVE_BUILD_DIR:-build/native}/libortflash.so
out=.ort-gpu
models=("${DEFAULT_MODELS[@]}")
build=1
python=$(command -p -v python3 || true)
while [ $# -gt 0 ]; do
  case $1 in
    --lib) [ $# -ge 2 ] || die "--lib needs a path"; lib=$2; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder"; out=$2; shift ;;
    --models) [ $# -ge 2 ] || die "--models needs a list"; read -r -a models <<< "$2"; shift ;;
    --no-build) build=0 ;;
    --python) [ $# -ge 2 ] || die "--python needs a value"; python=$2; shift ;;
    -h|--help) usage 0 ;;
    *) die "unknown argument '$1' (--help lists the options)" ;;
  esac
  shift
done
[ ${#models[@]} -gt 0 ] || die "--models is empty"
[ -n "$python" ] && "$python" -c "import numpy, onnx" 2>/dev/null ||
  die "no python3 with numpy and onnx (Debian: apt-get install python3-numpy python3-onnx; or --python)"
[ -f "$lib" ] || die "no op library at $lib (build it with CUDA: see README.md, Build switches; or --lib)"
if command -v readelf >/dev/null 2>&1; then
  readelf -S -W "$lib" | grep -q '\.nv_fatbin' ||
    die "$lib has no CUDA kernels (no .nv_fatbin section): build with -DORTFLASH_CUDA=ON"
fi
for spec in "${models[@]}"; do
  [ -f "models/${spec%%:*}" ] || die "no models/${spec%%:*}"
done

# Ignored, so that it travels only when a device call names it in carry (and is never committed).
if ! git check-ignore -q "$out/x" 2>/dev/null; then
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  echo "/${out#./}/" >> "$exclude"
  echo "added /${out#./}/ to $exclude"
fi

rm -rf "$out"
mkdir -p "$out/models" "$out/reports"

if [ $build = 1 ]; then
  echo "== building the CLI (Release, native build skipped)"
  dotnet build managed/OrtFlash.Cli -c Release -p:SkipNativeBuild=true "-p:NativeBuildDir=$(cd "$(dirname "$lib")" && pwd)" \
    -nologo -v quiet
fi

echo "== rewriting ${#models[@]} models"
entries=()
for spec in "${models[@]}"; do
  file=${spec%%:*}
  flags=""
  [ "$spec" != "$file" ] && flags=${spec#*:}
  name=${file%.onnx}
  for flag in ${flags//,/ }; do name+="+${flag#--}"; done
  IFS=, read -r -a flag_list <<< "$flags"
  dotnet run --no-build --project managed/OrtFlash.Cli -c Release -- \
    rewrite "models/$file" "$out/models/$name.onnx" --report "$out/reports/$name.json" ${flag_list[@]+"${flag_list[@]}"} \
    > "$out/reports/$name.txt" 2>&1 || { cat "$out/reports/$name.txt"; die "rewriting models/$file failed"; }
  entries+=("$name|models/$file|models/$name.onnx|$flags")
done

# ONNX Runtime's CPU library from the NuGet package (the one the native build used), through ort_capi.py: every
# input set is tried on the original first, and at the end the whole folder is checked on the CPU.
cache=$(dirname "$lib")/CMakeCache.txt
ort_dir=""
[ -f "$cache" ] && ort_dir=$(sed -n 's/^ORT_LIBRARY_DIR:PATH=//p' "$cache")
[ -f "$ort_dir/libonnxruntime.so" ] ||
  ort_dir=${NUGET_PACKAGES:-$HOME/.nuget/packages}/microsoft.ml.onnxruntime/1.31.0/runtimes/linux-x64/native
capi=()
if [ -f "$ort_dir/libonnxruntime.so" ]; then
  capi=(--ort-capi "$ort_dir/libonnxruntime.so")
else
  echo "note: no libonnxruntime.so found: the input sets are not tried here, and the folder is not checked on the CPU"
fi

echo "== inputs and manifest"
"$python" benchmarks/cuda/ort_cuda_check.py --write-manifest "$out" ${capi[@]+"${capi[@]}"} "${entries[@]}"

echo "== op library"
"$python" - "$lib" "$out" <<'EOF'
import hashlib, lzma, os, shutil, subprocess, sys, tempfile
lib, out = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    stripped = os.path.join(tmp, "libortflash.so")
    if shutil.which("strip") and subprocess.run(["strip", "--strip-unneeded", "-o", stripped, lib]).returncode == 0:
        source = stripped
    else:
        source = lib
    with open(source, "rb") as f:
        data = f.read()
    with lzma.open(os.path.join(out, "libortflash.so.xz"), "wb", preset=9) as f:
        f.write(data)
print(f"{lib}: {os.path.getsize(lib)} bytes, {len(data)} stripped, "
      f"{os.path.getsize(os.path.join(out, 'libortflash.so.xz'))} packed; sha256 {hashlib.sha256(data).hexdigest()}")
EOF

# ONNX Runtime's C headers, for building the op library on the GPU machine instead (README.md there).
include=""
[ -f "$cache" ] && include=$(sed -n 's/^ORT_INCLUDE_DIR:PATH=//p' "$cache")
[ -f "$include/onnxruntime_c_api.h" ] ||
  include=${NUGET_PACKAGES:-$HOME/.nuget/packages}/microsoft.ml.onnxruntime/1.31.0/build/native/include
if [ -f "$include/onnxruntime_c_api.h" ]; then
  cp -r "$include" "$out/include"
else
  echo "note: ONNX Runtime's headers not found: $out/include is left out (only the prebuilt library travels)"
fi

{
  echo "made by benchmarks/cuda/prepare_ort_models.sh at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(
    git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)'), $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "models: ${models[*]}"
} > "$out/origin.txt"

if [ ${#capi[@]} -gt 0 ]; then
  echo "== the CPU half, here: ort_cuda_check.py --providers cpu on what $out holds"
  "$python" benchmarks/cuda/ort_cuda_check.py --providers cpu --dir "$out" "${capi[@]}" > "$out/reports/cpu-check.txt" 2>&1 ||
    { cat "$out/reports/cpu-check.txt"; die "the CPU check of $out failed (log: $out/reports/cpu-check.txt)"; }
  tail -n 1 "$out/reports/cpu-check.txt"
fi

size=$(du -sb "$out" | cut -f1)
echo "== $out: $(find "$out" -type f | wc -l) files, $((size / 1024)) KiB"
[ "$size" -lt $((40 * 1024 * 1024)) ] ||
  echo "warning: $out is over 40 MiB: with the tracked tree it may not fit a device call's 64 MiB"
echo "device call: carry [\"${out#./}\"], command: bash benchmarks/cuda/gpu_session.sh --stages ort"

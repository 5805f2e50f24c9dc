#!/usr/bin/env bash
# Carries ONNX Runtime's GPU libraries to the GPU machine, which has CUDA 13 and cuDNN 9 but only a CPU-only
# onnxruntime module, and a device call carries at most 64 MiB together with the tracked tree (about 31 MiB):
# libonnxruntime_providers_cuda.so alone is 284 MB (186 MB as xz). `pack` cuts an xz tar of the NuGet package's
# native libraries into numbered chunks, each in its own ignored folder, so that consecutive device calls can
# carry one each (a warm machine keeps what earlier calls left); `unpack`, there, checks that every chunk
# arrived and restores the libraries. ort_cuda_check.py then runs the op and the rewritten models on the CUDA
# provider through ort_capi.py, without .NET:
#
#   bash benchmarks/cuda/ort_gpu_chunks.sh stage-tests [--out DIR]                          # here, optional
#   bash benchmarks/cuda/ort_gpu_chunks.sh pack [--from DIR] [--out DIR] [--chunk-mib N]     # here
#   bash benchmarks/cuda/ort_gpu_chunks.sh unpack [--in DIR] [--to DIR]                      # on the GPU machine
#   bash benchmarks/cuda/ort_gpu_chunks.sh self-test     # pack, unpack, a missing and a corrupt chunk, on fake files
#
# stage-tests publishes the NUnit tests as a self-contained executable (-p:GpuRunner=true, against the GPU
# package: -p:OrtGpu=true) into DIR (default .ort-gpu-stage): the .NET runtime, ONNX Runtime's GPU libraries and
# the op library (stripped; NATIVE_BUILD_DIR, default build/native, built with CUDA). Packing that folder
# (--from .ort-gpu-stage) carries the tests as well: unpacked there, `.ort-gpu-libs/OrtFlash.Tests
# --filter TestCategory=Gpu` runs FlashAttentionCudaTests (stage nunit of gpu_session.sh).
# --from: the folder to carry, every file in it (default: the restored Microsoft.ML.OnnxRuntime.Gpu.Linux 1.31.0
# package's runtimes/linux-x64/native). --out/--in: the chunk folders' parent (default .ort-gpu-chunks; chunk K is
# DIR/cK/part-K, every folder also holds the manifest). --chunk-mib: chunk size (default 24). --to: where the
# libraries go (default .ort-gpu-libs: ignored, and apart from .ort-gpu, which later calls carry whole). pack
# adds ONNX Runtime's C headers (include/, for ort_capi.py) when the folder has none. pack prints the device calls' carry lists; unpack exits 3 when
# chunks are missing (naming them), 1 when the checksum disagrees, 0 when the libraries are in place.
set -euo pipefail

die() { echo "ort_gpu_chunks.sh: $*" >&2; exit 2; }
[ $# -ge 1 ] || die "usage: pack|unpack [options] (see the comment at the top)"
command=$1
shift
from=${NUGET_PACKAGES:-$HOME/.nuget/packages}/microsoft.ml.onnxruntime.gpu.linux/1.31.0/runtimes/linux-x64/native
dir=.ort-gpu-chunks
to=.ort-gpu-libs
chunk_mib=24
while [ $# -gt 0 ]; do
  case $1 in
    --from) [ $# -ge 2 ] || die "--from needs a value"; from=$2; shift ;;
    --out | --in) [ $# -ge 2 ] || die "$1 needs a value"; dir=$2; shift ;;
    --to) [ $# -ge 2 ] || die "--to needs a value"; to=$2; shift ;;
    --chunk-mib)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--chunk-mib needs a positive whole number"
      chunk_mib=$2; shift ;;
    *) die "unknown option '$1'" ;;
  esac
  shift
done

case $command in
  stage-tests)
    [ "$dir" != .ort-gpu-chunks ] || dir=.ort-gpu-stage
    native=${NATIVE_BUILD_DIR:-build/native}
    [ -f "$native/libortflash.so" ] || die "no $native/libortflash.so (build the native library with CUDA first)"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/ort-gpu-stage.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    # Its own artifacts folder: the repository's bin/ and obj/ keep the CPU package's build.
    dotnet publish tests/OrtFlash.Tests/OrtFlash.Tests.csproj -c Release -p:GpuRunner=true -p:OrtGpu=true \
      -p:SkipNativeBuild=true "-p:NativeBuildDir=$(cd "$native" && pwd)" --artifacts-path "$tmp/artifacts" \
      -o "$tmp/runner" > "$tmp/publish.log" 2>&1 || { tail -n 20 "$tmp/publish.log"; die "dotnet publish failed"; }
    strip --strip-unneeded "$tmp/runner/runtimes/linux-x64/native/libortflash.so"
    rm -f "$tmp"/runner/*.pdb "$tmp"/runner/*.xml "$tmp"/runner/libonnxruntime_providers_tensorrt.so
    rm -rf "$dir"
    mv "$tmp/runner" "$dir"
    echo "staged the GPU tests in $dir ($(du -sh "$dir" | cut -f1)); next: bash $0 pack --from $dir"
    ;;
  pack)
    [ -d "$from" ] || die "no folder '$from' (restore the GPU package: dotnet build -p:OrtGpu=true, or give --from)"
    [ -f "$from/libonnxruntime.so" ] || die "'$from' holds no libonnxruntime.so"
    libs=$(cd "$from" && find . -type f | sed 's|^\./||' | sort)
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/ort-gpu-chunks.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    headers=${NUGET_PACKAGES:-$HOME/.nuget/packages}/microsoft.ml.onnxruntime/1.31.0/build/native
    if [ ! -f "$from/include/onnxruntime_c_api.h" ] && [ -f "$headers/include/onnxruntime_c_api.h" ]; then
      tar -cf - -C "$from" . -C "$headers" include | xz -T0 -6 > "$tmp/ort.tar.xz"
      libs=$(printf '%s\n%s' "$libs" "$(cd "$headers" && find include -type f | sort)")
    else
      tar -C "$from" -cf - . | xz -T0 -6 > "$tmp/ort.tar.xz"
    fi
    (cd "$tmp" && split -b "${chunk_mib}M" -d -a 2 ort.tar.xz part-)
    count=$(ls "$tmp"/part-* | wc -l)
    sum=$(sha256sum "$tmp/ort.tar.xz" | cut -d' ' -f1)
    # Replaced whole, through a temporary folder and a rename: an interrupted pack leaves the old chunks.
    staged="$dir.new"
    rm -rf "$staged"
    mkdir -p "$staged"
    for part in "$tmp"/part-*; do
      k=${part##*/part-}
      mkdir -p "$staged/c$k"
      mv "$part" "$staged/c$k/"
      printf 'chunks %s\nsha256 %s\nfiles %s\n' "$count" "$sum" "$(echo "$libs" | wc -l)" > "$staged/c$k/manifest"
    done
    rm -rf "$dir"
    mv "$staged" "$dir"
    echo "packed $(echo "$libs" | wc -l) files ($(du -sh "$from" | cut -f1)) into $count chunks of at most $chunk_mib MiB under $dir (sha256 $sum)"
    for ((k = 0; k < count; k++)); do
      printf 'device call %d: carry ["%s/c%02d"]\n' $((k + 1)) "$dir" "$k"
    done
    ;;
  unpack)
    manifest=$(ls "$dir"/c*/manifest 2>/dev/null | head -n 1 || true)
    [ -n "$manifest" ] || { echo "ort_gpu_chunks.sh: no chunk under '$dir' yet"; exit 3; }
    count=$(awk '$1 == "chunks" { print $2 }' "$manifest")
    sum=$(awk '$1 == "sha256" { print $2 }' "$manifest")
    [[ $count =~ ^[0-9]+$ && ${#sum} -eq 64 ]] || die "'$manifest' is not a manifest"
    missing=""
    for ((k = 0; k < count; k++)); do
      printf -v part '%s/c%02d/part-%02d' "$dir" "$k" "$k"
      [ -f "$part" ] || missing="$missing c$(printf '%02d' "$k")"
    done
    if [ -n "$missing" ]; then
      echo "ort_gpu_chunks.sh: chunks missing:$missing (of $count)"
      exit 3
    fi
    got=$(for ((k = 0; k < count; k++)); do printf '%s/c%02d/part-%02d\n' "$dir" "$k" "$k"; done | xargs cat | sha256sum | cut -d' ' -f1)
    if [ "$got" != "$sum" ]; then
      echo "ort_gpu_chunks.sh: the chunks' sha256 $got is not the manifest's $sum"
      exit 1
    fi
    rm -rf "$to.new"
    mkdir -p "$to.new"
    for ((k = 0; k < count; k++)); do printf '%s/c%02d/part-%02d\n' "$dir" "$k" "$k"; done | xargs cat | xz -d |
      tar -C "$to.new" -xf -
    rm -rf "$to"
    mv "$to.new" "$to"
    echo "unpacked $(awk '$1 == "files" { print $2 }' "$manifest") files into $to"
    ;;
  self-test)
    self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
    work=$(mktemp -d "${TMPDIR:-/tmp}/ort-gpu-chunks-test.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/from" "$work/run"
    head -c 3000000 /dev/urandom > "$work/from/libonnxruntime_providers_cuda.so"
    echo core > "$work/from/libonnxruntime.so"
    echo shared > "$work/from/libonnxruntime_providers_shared.so"
    export NUGET_PACKAGES=$work/nuget  # a stand-in CPU package, for the headers pack adds
    mkdir -p "$NUGET_PACKAGES/microsoft.ml.onnxruntime/1.31.0/build/native/include"
    echo "#define ORT_API_VERSION 0" > "$NUGET_PACKAGES/microsoft.ml.onnxruntime/1.31.0/build/native/include/onnxruntime_c_api.h"
    failures=0
    expect() {  # expect WHAT WANTED_EXIT COMMAND...
      local what=$1 want=$2 got=0
      shift 2
      (cd "$work/run" && "$@") > "$work/out" 2>&1 || got=$?
      if [ "$got" != "$want" ]; then
        echo "FAIL: $what: exit $got, wanted $want"; sed 's/^/  /' "$work/out"; failures=$((failures + 1))
      else
        echo "ok: $what"
      fi
    }
    expect "unpack before any chunk: exit 3" 3 bash "$self" unpack
    expect "pack 3 MB in 1 MiB chunks" 0 bash "$self" pack --from "$work/from" --chunk-mib 1
    [ "$(ls "$work/run/.ort-gpu-chunks")" = "$(printf 'c00\nc01\nc02')" ] || { echo "FAIL: chunk folders"; failures=$((failures + 1)); }
    mv "$work/run/.ort-gpu-chunks/c01" "$work/c01"
    expect "a chunk missing: exit 3" 3 bash "$self" unpack
    grep -q "missing: c01 (of 3)" "$work/out" || { echo "FAIL: the missing chunk is not named"; failures=$((failures + 1)); }
    mv "$work/c01" "$work/run/.ort-gpu-chunks/c01"
    expect "every chunk: unpacked" 0 bash "$self" unpack
    for f in libonnxruntime.so libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so; do
      cmp -s "$work/from/$f" "$work/run/.ort-gpu-libs/$f" || { echo "FAIL: $f differs"; failures=$((failures + 1)); }
    done
    [ -f "$work/run/.ort-gpu-libs/include/onnxruntime_c_api.h" ] || { echo "FAIL: no headers unpacked"; failures=$((failures + 1)); }
    echo x >> "$work/run/.ort-gpu-chunks/c02/part-02"
    expect "a corrupt chunk: exit 1" 1 bash "$self" unpack
    cmp -s "$work/from/libonnxruntime.so" "$work/run/.ort-gpu-libs/libonnxruntime.so" ||
      { echo "FAIL: a failed unpack touched the libraries already there"; failures=$((failures + 1)); }
    expect "an unknown option: exit 2" 2 bash "$self" pack --frm x
    echo "self-test: $failures failed"
    [ "$failures" -eq 0 ]
    ;;
  *) die "unknown command '$command' (pack, unpack or self-test)" ;;
esac

#!/usr/bin/env bash
# Packs OrtFlash, builds an application that references only that package, runs it on a bundled model, and
# writes the outcome as a JUnit file for the results summary. Then the same for OrtFlash.Gpu (packed with
# -p:OrtGpu=true: ONNX Runtime's CUDA package in place of the CPU one), whose application must get the CUDA package's
# libraries and not the CPU package; it runs on the CPU provider, which that package serves too.
# With ARM64_BUILD_DIR and WIN_X64_BUILD_DIR (cross builds holding libortflash.so for 64-bit ARM and ortflash.dll for
# 64-bit Windows: tests/cross.sh) the package must also carry them as runtimes/linux-arm64/native/ and
# runtimes/win-x64/native/, and the app's output must hold every platform's library, each built for its CPU.
#   bash tests/packaging/check.sh RESULTS_DIR [NATIVE_BUILD_DIR [ARM64_BUILD_DIR [WIN_X64_BUILD_DIR]]]
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
results=${1:?results folder}
native_dir=${2:-$root/build/native}
arm_dir=${3:-}
win_dir=${4:-}
[ -n "$arm_dir" ] && [ ! -f "$arm_dir/libortflash.so" ] && arm_dir=""  # no cross build here: left out
[ -n "$win_dir" ] && [ ! -f "$win_dir/ortflash.dll" ] && win_dir=""
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version="0.0.0-check.$(date +%s)"
log="$work/log.txt"

# The ELF machine of a library: 62 x86-64, 183 64-bit ARM.
elf_machine() { od -An -t u2 -j 18 -N 2 "$1" | tr -d ' '; }
# The PE machine of a DLL (34404 = 0x8664, x86-64): a 16-bit field after "PE\0\0", whose offset is at 0x3C.
pe_machine() {
  local at
  at=$(od -An -t u4 -j 60 -N 4 "$1" | tr -d ' ') || return 1
  [ "$(od -An -c -j "$at" -N 2 "$1" | tr -d ' ')" = PE ] || return 1
  od -An -t u2 -j $((at + 4)) -N 2 "$1" | tr -d ' '
}

run() {
  local cross_args=() expected=("runtimes/linux-x64/native/libortflash.so")
  if [ -n "$arm_dir" ]; then
    cross_args+=("-p:NativeArm64BuildDir=$arm_dir") expected+=("runtimes/linux-arm64/native/libortflash.so")
  fi
  if [ -n "$win_dir" ]; then
    cross_args+=("-p:NativeWinX64BuildDir=$win_dir") expected+=("runtimes/win-x64/native/ortflash.dll")
  fi
  dotnet pack "$root/managed/OrtFlash" -c Release -o "$work/feed" -p:Version="$version" \
      -p:NativeBuildDir="$native_dir" -p:SkipNativeBuild=true "${cross_args[@]}" >>"$log" 2>&1 || return 1
  local listing
  listing=$(python3 -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' \
      "$work/feed/OrtFlash.$version.nupkg") || return 1
  for entry in "${expected[@]}"; do
    grep -qx "$entry" <<<"$listing" || { echo "the package has no $entry" >>"$log"; return 1; }
  done
  # The CLI as a .NET tool carries its output folder: the same libraries, under tools/net10.0/any/.
  if [ ${#cross_args[@]} -gt 0 ]; then
    dotnet pack "$root/managed/OrtFlash.Cli" -c Release -o "$work/tool-feed" -p:Version="$version" \
        -p:NativeBuildDir="$native_dir" -p:SkipNativeBuild=true "${cross_args[@]}" >>"$log" 2>&1 || return 1
    listing=$(python3 -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' \
        "$work/tool-feed/OrtFlash.Cli.$version.nupkg") || return 1
    for entry in "${expected[@]}"; do
      grep -qx "tools/net10.0/any/$entry" <<<"$listing" || { echo "the CLI tool package has no $entry" >>"$log"; return 1; }
    done
  fi
  consumer app OrtFlash || return 1
  local out="$work/app/bin/Release/net10.0/runtimes"
  [ "$(elf_machine "$out/linux-x64/native/libortflash.so")" = 62 ] || { echo "no x86-64 library in $out/linux-x64" >>"$log"; return 1; }
  if [ -n "$arm_dir" ]; then  # the app carries the other platforms' libraries too, each built for its CPU
    [ "$(elf_machine "$out/linux-arm64/native/libortflash.so" 2>/dev/null)" = 183 ] ||
      { echo "no 64-bit ARM library in $out/linux-arm64" >>"$log"; return 1; }
  fi
  if [ -n "$win_dir" ]; then
    [ "$(pe_machine "$out/win-x64/native/ortflash.dll" 2>/dev/null)" = 34404 ] ||
      { echo "no x86-64 Windows DLL in $out/win-x64" >>"$log"; return 1; }
  fi
}

# Builds tests/packaging/Consumer in $work/APP_DIR against PACKAGE_ID from $work/feed and runs it on BERT: two
# attention subgraphs fused, the op library taken from the app's own runtimes folder.
consumer() {
  local app="$work/$1" id=$2
  cp -r "$root/tests/packaging/Consumer" "$app"
  cat >"$app/nuget.config" <<CONFIG
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="ortflash-check" value="$work/feed" />
  </packageSources>
</configuration>
CONFIG
  # A private package cache: the check must use the package just built, not an older one of the same version.
  dotnet build "$app" -c Release -p:OrtFlashPackageId="$id" -p:OrtFlashPackageVersion="$version" \
      -p:RestorePackagesPath="$work/packages" >>"$log" 2>&1 || return 1
  dotnet "$app/bin/Release/net10.0/Consumer.dll" "$root/models/bert-opset17.onnx" >"$work/$1.txt" 2>&1
  local rc=$?
  cat "$work/$1.txt" >>"$log"
  [ $rc = 0 ] && grep -q "fused=2 " "$work/$1.txt" &&
    grep -q "library=$app/bin/Release/net10.0/runtimes/linux-x64/native/libortflash.so" "$work/$1.txt"
}

run_gpu() {
  # Its own artifacts folder: the repository's bin/ and obj/ keep the CPU package's build.
  dotnet pack "$root/managed/OrtFlash" -c Release -o "$work/feed" -p:Version="$version" -p:OrtGpu=true \
      -p:NativeBuildDir="$native_dir" -p:SkipNativeBuild=true --artifacts-path "$work/gpu-artifacts" >>"$log" 2>&1 || return 1
  local nuspec
  nuspec=$(python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); print(z.read("OrtFlash.Gpu.nuspec").decode())' \
      "$work/feed/OrtFlash.Gpu.$version.nupkg") || return 1
  grep -q 'id="Microsoft.ML.OnnxRuntime.Gpu.Linux"' <<<"$nuspec" || { echo "OrtFlash.Gpu does not depend on the CUDA package" >>"$log"; return 1; }
  ! grep -q 'id="Microsoft.ML.OnnxRuntime"' <<<"$nuspec" || { echo "OrtFlash.Gpu depends on the CPU package" >>"$log"; return 1; }
  consumer gpu-app OrtFlash.Gpu || return 1
  local out="$work/gpu-app/bin/Release/net10.0"
  [ -f "$out/runtimes/linux-x64/native/libonnxruntime_providers_cuda.so" ] ||
    { echo "the OrtFlash.Gpu app has no CUDA provider library" >>"$log"; return 1; }
  ! grep -q '"Microsoft.ML.OnnxRuntime/' "$work/gpu-app/obj/project.assets.json" ||
    { echo "the OrtFlash.Gpu app restored the CPU package too" >>"$log"; return 1; }
}

mkdir -p "$results"
cases=""
if run_gpu; then
  echo "packaging: an app with one OrtFlash.Gpu package reference gets ONNX Runtime's CUDA package (not the CPU one) and runs a model"
  cases+='<testcase classname="packaging" name="OneGpuPackageReferenceRunsAModel"/>'
  gpu_failed=0
else
  echo "packaging check of OrtFlash.Gpu failed:"; tail -30 "$log"
  cases+='<testcase classname="packaging" name="OneGpuPackageReferenceRunsAModel"><failure message="see log"/></testcase>'
  gpu_failed=1
fi
: >"$log"
if run; then
  echo "packaging: an app with one OrtFlash package reference loads, rewrites and runs a model (the package holds linux-x64${arm_dir:+, linux-arm64}${win_dir:+, win-x64})"
  cases+='<testcase classname="packaging" name="OnePackageReferenceRunsAModel"/>'
  printf '<testsuite name="packaging" tests="2">%s</testsuite>\n' "$cases" >"$results/packaging.xml"
  exit $gpu_failed
else
  echo "packaging check failed:"; tail -30 "$log"
  cases+='<testcase classname="packaging" name="OnePackageReferenceRunsAModel"><failure message="see log"/></testcase>'
  printf '<testsuite name="packaging" tests="2">%s</testsuite>\n' "$cases" >"$results/packaging.xml"
  exit 1
fi

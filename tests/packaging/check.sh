#!/usr/bin/env bash
# Packs OrtFlash, builds an application that references only that package, runs it on a bundled model, and
# writes the outcome as a JUnit file (one test case) for the results summary.
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
  cp -r "$root/tests/packaging/Consumer" "$work/app"
  cat >"$work/app/nuget.config" <<CONFIG
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="ortflash-check" value="$work/feed" />
  </packageSources>
</configuration>
CONFIG
  # A private package cache: the check must use the package just built, not an older one of the same version.
  dotnet build "$work/app" -c Release -p:OrtFlashPackageVersion="$version" \
      -p:RestorePackagesPath="$work/packages" >>"$log" 2>&1 || return 1
  dotnet "$work/app/bin/Release/net10.0/Consumer.dll" "$root/models/bert-opset17.onnx" >>"$log" 2>&1 || return 1
  grep -q "fused=2 " "$log" && grep -q "library=$work/app/bin/Release/net10.0/runtimes/linux-x64/native/libortflash.so" "$log" ||
    return 1
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

mkdir -p "$results"
if run; then
  echo "packaging: an app with one OrtFlash package reference loads, rewrites and runs a model (the package holds linux-x64${arm_dir:+, linux-arm64}${win_dir:+, win-x64})"
  printf '<testsuite name="packaging" tests="1"><testcase classname="packaging" name="OnePackageReferenceRunsAModel"/></testsuite>\n' >"$results/packaging.xml"
else
  echo "packaging check failed:"; tail -30 "$log"
  printf '<testsuite name="packaging" tests="1"><testcase classname="packaging" name="OnePackageReferenceRunsAModel"><failure message="see log"/></testcase></testsuite>\n' >"$results/packaging.xml"
  exit 1
fi

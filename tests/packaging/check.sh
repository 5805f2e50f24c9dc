#!/usr/bin/env bash
# Packs OrtFlash, builds an application that references only that package, runs it on a bundled model, and
# writes the outcome as a JUnit file (one test case) for the results summary.
# With ARM64_BUILD_DIR (a cross build holding libortflash.so for 64-bit ARM: tests/arm64.sh) the package must also
# carry it as runtimes/linux-arm64/native/, and the app's output must hold both platforms' libraries.
#   bash tests/packaging/check.sh RESULTS_DIR [NATIVE_BUILD_DIR [ARM64_BUILD_DIR]]
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
results=${1:?results folder}
native_dir=${2:-$root/build/native}
arm_dir=${3:-}
[ -n "$arm_dir" ] && [ ! -f "$arm_dir/libortflash.so" ] && arm_dir=""  # no cross build here: x64 alone
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version="0.0.0-check.$(date +%s)"
log="$work/log.txt"

# The ELF machine of a library: 62 x86-64, 183 64-bit ARM.
elf_machine() { od -An -t u2 -j 18 -N 2 "$1" | tr -d ' '; }

run() {
  local arm_args=()
  [ -n "$arm_dir" ] && arm_args=("-p:NativeArm64BuildDir=$arm_dir")
  dotnet pack "$root/managed/OrtFlash" -c Release -o "$work/feed" -p:Version="$version" \
      -p:NativeBuildDir="$native_dir" -p:SkipNativeBuild=true "${arm_args[@]}" >>"$log" 2>&1 || return 1
  if [ -n "$arm_dir" ]; then
    local listing
    listing=$(python3 -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' \
        "$work/feed/OrtFlash.$version.nupkg") || return 1
    for rid in linux-x64 linux-arm64; do
      grep -qx "runtimes/$rid/native/libortflash.so" <<<"$listing" || { echo "the package has no $rid library" >>"$log"; return 1; }
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
  if [ -n "$arm_dir" ]; then  # the app carries the ARM library too, built for ARM
    local arm_copy="$work/app/bin/Release/net10.0/runtimes/linux-arm64/native/libortflash.so"
    [ "$(elf_machine "$arm_copy" 2>/dev/null)" = 183 ] || { echo "no 64-bit ARM library at $arm_copy" >>"$log"; return 1; }
    [ "$(elf_machine "$work/app/bin/Release/net10.0/runtimes/linux-x64/native/libortflash.so")" = 62 ] || return 1
  fi
}

mkdir -p "$results"
if run; then
  echo "packaging: an app with one OrtFlash package reference loads, rewrites and runs a model${arm_dir:+ (the package holds linux-x64 and linux-arm64)}"
  printf '<testsuite name="packaging" tests="1"><testcase classname="packaging" name="OnePackageReferenceRunsAModel"/></testsuite>\n' >"$results/packaging.xml"
else
  echo "packaging check failed:"; tail -30 "$log"
  printf '<testsuite name="packaging" tests="1"><testcase classname="packaging" name="OnePackageReferenceRunsAModel"><failure message="see log"/></testcase></testsuite>\n' >"$results/packaging.xml"
  exit 1
fi

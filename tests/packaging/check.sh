#!/usr/bin/env bash
# Packs OrtFlash, builds an application that references only that package, runs it on a bundled model, and
# writes the outcome as a JUnit file (one test case) for the results summary.
#   bash tests/packaging/check.sh RESULTS_DIR [NATIVE_BUILD_DIR]
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
results=${1:?results folder}
native_dir=${2:-$root/build/native}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version="0.0.0-check.$(date +%s)"
log="$work/log.txt"

run() {
  dotnet pack "$root/managed/OrtFlash" -c Release -o "$work/feed" -p:Version="$version" \
      -p:NativeBuildDir="$native_dir" -p:SkipNativeBuild=true >>"$log" 2>&1 || return 1
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
  grep -q "fused=2 " "$log" && grep -q "library=$work/app/bin/Release/net10.0/runtimes/linux-x64/native/libortflash.so" "$log"
}

mkdir -p "$results"
if run; then
  echo "packaging: an app with one OrtFlash package reference loads, rewrites and runs a model"
  printf '<testsuite name="packaging" tests="1"><testcase classname="packaging" name="OnePackageReferenceRunsAModel"/></testsuite>\n' >"$results/packaging.xml"
else
  echo "packaging check failed:"; tail -30 "$log"
  printf '<testsuite name="packaging" tests="1"><testcase classname="packaging" name="OnePackageReferenceRunsAModel"><failure message="see log"/></testcase></testsuite>\n' >"$results/packaging.xml"
  exit 1
fi

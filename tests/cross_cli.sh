#!/usr/bin/env bash
# The .NET side on another platform: the `ortflash` CLI published self-contained for linux-arm64 or win-x64, with the
# op library of that platform's cross build (tests/cross.sh) and ONNX Runtime's own build for it, run under qemu-user
# or Wine on the bundled models. What a user there runs: `info` (the library the wrapper resolves, the op registered),
# `verify` on an encoder, decoders (float16; float32 left-padded), `rewrite` onto an existing file and the result verified, and a
# missing model refused with exit 2. Writes RESULTS_DIR/cli-PLATFORM.xml (JUnit, a case each); where the emulator or
# the platform's build is missing it writes one skipped case saying so.
#   bash tests/cross_cli.sh linux-arm64|win-x64 RESULTS_DIR NATIVE_BUILD_DIR [BUILD_DIR]
# NATIVE_BUILD_DIR: the host build (the package's linux-x64 library); BUILD_DIR: the platform's build (default
# build/PLATFORM), where the published CLI and its scratch files go too.
set -uo pipefail
source "$(dirname "$0")/cross_args.sh"
junit="$results/cli-$platform.xml"

case "$platform" in
  linux-arm64)
    library=libortflash.so pack_property=NativeArm64BuildDir exe=OrtFlash.Cli emulator=qemu-aarch64
    shim="$build_dir/tests/native/qemu/libortflash_qemu_cpuinfo.so" ;;
  win-x64)
    # mscoree stays on (cross_args.sh): Wine loads the IL-only framework assemblies CoreCLR asks for through it.
    library=ortflash.dll pack_property=NativeWinX64BuildDir exe=OrtFlash.Cli.exe emulator=wine64 ;;
esac

xml_escape() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g' | tr -d '\000-\010\013\014\016-\037'; }
only_case() {  # KIND MESSAGE: the whole platform as one skipped or failed case
  echo "$platform CLI: $2"
  printf '<testsuite name="cli-%s" tests="1"><testcase classname="cli-%s" name="Cli"><%s message="%s"/></testcase></testsuite>\n' \
    "$platform" "$platform" "$1" "$(printf '%s' "$2" | xml_escape)" >"$junit"
}

command -v "$emulator" >/dev/null || { only_case skipped "no $emulator"; exit 0; }
command -v dotnet >/dev/null || { only_case skipped "no dotnet"; exit 0; }
[ -f "$build_dir/$library" ] || { only_case skipped "no $build_dir/$library (tests/cross.sh $platform builds it)"; exit 0; }
[ "$platform" != linux-arm64 ] || [ -f "$shim" ] || { only_case skipped "no $shim (tests/cross.sh linux-arm64 builds it)"; exit 0; }

cli_dir="$build_dir/cli"
work="$build_dir/cli-work"
rm -rf "$cli_dir" "$work"
mkdir -p "$work"
if ! dotnet publish "$root/managed/OrtFlash.Cli" -c Release -r "$platform" --self-contained -p:SkipNativeBuild=true \
    "-p:NativeBuildDir=$native_dir" "-p:$pack_property=$build_dir" --artifacts-path "$build_dir/cli-artifacts" \
    -o "$cli_dir" >"$work/publish.log" 2>&1; then
  tail -n 20 "$work/publish.log"
  only_case failure "dotnet publish -r $platform failed (see $work/publish.log)"
  exit 1
fi

# A path as the CLI there sees it: Wine maps the Linux root to drive Z:.
there() { if [ "$platform" = win-x64 ]; then printf 'Z:%s' "$1" | tr / '\\'; else printf '%s' "$1"; fi; }
run_cli() {  # ARGS...: the CLI under the emulator; output in $work/out.txt, exit status returned
  if [ "$platform" = linux-arm64 ]; then
    # No arm64 ICU here, which the CLI does not need (InvariantGlobalization). ONNX Runtime reads /proc/cpuinfo at
    # load time, so it gets an ARM one (tests/native/qemu/cpuinfo_shim.cc).
    timeout 600 qemu-aarch64 -L /usr/aarch64-linux-gnu -E "LD_PRELOAD=$shim" \
      -E "ORTFLASH_FAKE_CPUINFO=$root/tests/native/qemu/cpuinfo" "$cli_dir/$exe" "$@" >"$work/out.txt" 2>&1
  else
    timeout 600 wine64 "$cli_dir/$exe" "$@" >"$work/out.txt" 2>&1
  fi
}

cases="" passed=0 failed=0
record() {  # NAME SECONDS FAILURE-MESSAGE-OR-EMPTY
  local body=""
  if [ -n "$3" ]; then
    failed=$((failed + 1))
    body="<failure message=\"$(printf '%s' "$3" | xml_escape)\">$(tail -n 30 "$work/out.txt" | xml_escape)</failure>"
    echo "$platform CLI: $1 FAILED: $3"; tail -n 30 "$work/out.txt"
  else
    passed=$((passed + 1))
    echo "$platform CLI: $1 passed (${2}s)"
  fi
  cases+="<testcase classname=\"cli-$platform\" name=\"$1\" time=\"$2\">$body</testcase>"
}
check() {  # NAME EXPECTED-EXIT REGEX... -- ARGS...: run; the exit status must match, and each REGEX some output line
  local name=$1 expected=$2 start=$SECONDS rc pattern patterns=()
  shift 2
  while [ "$1" != -- ]; do patterns+=("$1"); shift; done
  shift
  run_cli "$@"
  rc=$?
  if [ "$rc" != "$expected" ]; then record "$name" $((SECONDS - start)) "exit $rc, expected $expected"; return; fi
  for pattern in "${patterns[@]}"; do
    grep -Eq "$pattern" "$work/out.txt" || { record "$name" $((SECONDS - start)) "no line matches /$pattern/"; return; }
  done
  record "$name" $((SECONDS - start)) ""
}

models="$root/models"
# info: this platform, its own library from the package's runtimes folder, the op registered in ONNX Runtime.
check Info 0 "^platform +$platform " "^native library +.*runtimes.$platform.native.$library\s*$" "^op registration +ok" -- info
check VerifyGpt2 0 "^PASS: every output matches" -- verify "$(there "$models/gpt2-opset17.onnx")"
check VerifyBertPadded 0 "^PASS: every output matches" -- verify "$(there "$models/bert-opset17.onnx")" --seq 7,33
check VerifyLlamaFloat16 0 "^PASS: every output matches" -- verify "$(there "$models/llama-opset17-fp16.onnx")"
# Left padding in float32 (in float16 the rows that see only padding round otherwise on CPUs with float16
# arithmetic, as verify --help says: ONNX Runtime for ARM runs the original graph's Add and Softmax in float16).
check VerifyLlamaLeftPadded 0 "^PASS: every output matches" -- verify "$(there "$models/llama-opset17.onnx")" --padding start
# rewrite writes through a temporary file and a rename: onto an existing file too (Windows renames differ).
echo "not a model" >"$work/bert-flash.onnx"
check RewriteOverAnExistingFile 0 "^Fused 2 attention subgraph" "^wrote " -- rewrite "$(there "$models/bert-opset17.onnx")" \
  "$(there "$work/bert-flash.onnx")" --report "$(there "$work/report.json")"
check VerifyTheRewrittenFile 0 "^PASS: every output matches" -- verify "$(there "$models/bert-opset17.onnx")" \
  "$(there "$work/bert-flash.onnx")"
check MissingModelIsRefused 2 "no-such-model\.onnx" -- verify "$(there "$work/no-such-model.onnx")"

printf '<testsuite name="cli-%s" tests="%d" failures="%d">%s</testsuite>\n' "$platform" $((passed + failed)) "$failed" \
  "$cases" >"$junit"
echo "$platform CLI: $passed passed, $failed failed"
[ "$failed" = 0 ]

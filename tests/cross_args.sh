# Sourced by tests/cross.sh and tests/cross_cli.sh: their common arguments (PLATFORM RESULTS_DIR NATIVE_BUILD_DIR
# [BUILD_DIR]) and each platform's emulator setup. Sets root, platform, results (absolute), native_dir, build_dir.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
platform=${1:?linux-arm64 or win-x64}
results=${2:?results folder}
native_dir=${3:?native build folder}
build_dir=${4:-$root/build/$platform}
mkdir -p "$results"
results=$(cd "$results" && pwd)
case "$platform" in
  linux-arm64) ;;
  win-x64)
    # Debian puts wine64 outside PATH. A prefix of the build's own, no debug chatter, no Gecko prompt.
    PATH="$PATH:/usr/lib/wine"
    export WINEPREFIX="$build_dir/wine-prefix" WINEDEBUG=-all WINEDLLOVERRIDES="mshtml=" ;;
  *) echo "unknown platform '$platform' (linux-arm64 or win-x64)"; exit 2 ;;
esac

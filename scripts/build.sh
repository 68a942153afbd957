#!/usr/bin/env bash
# build.sh: configures and builds kosmos in $KOSMOS_BUILD_DIR (default: build/), Release, with ccache when
# installed. Extra arguments go to cmake's configure step, e.g. scripts/build.sh -DKOSMOS_CUDA=OFF.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="${KOSMOS_BUILD_DIR:-$root/build}"
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" "$@"
cmake --build "$build_dir" -j "$(nproc)"

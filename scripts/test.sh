#!/usr/bin/env bash
# test.sh: installs what is missing, builds, and runs the whole test suite (ctest). Extra arguments go to ctest,
# e.g. scripts/test.sh -L ops, or -R attention.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install_deps.sh"
"$root/scripts/build.sh"
ctest --test-dir "${KOSMOS_BUILD_DIR:-$root/build}" --output-on-failure -j "$(nproc)" "$@"

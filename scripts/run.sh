#!/usr/bin/env bash
# run.sh: the main job. Installs what is missing, builds, then runs `kosmos info` and the op demo (a small MLP
# trained with the op set, and an attention timing). Later issues make this a KOSMOS-1 training run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install_deps.sh"
"$root/scripts/build.sh"
kosmos="${KOSMOS_BUILD_DIR:-$root/build}/launch/kosmos"
"$kosmos" info
"$kosmos" demo

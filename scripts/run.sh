#!/usr/bin/env bash
# run.sh: the main job on a fresh Debian 12 machine: installs what is missing, builds, prints `kosmos info`, then
# runs scripts/main_job.sh: the synthetic corpus, a tiny KOSMOS trained on 4 ranks (pp 2 x tp 2) on the CPU,
# checkpoints, and captions of held-out pictures with their accuracy (at least 90% on colour and shape, or it
# fails). About 8 minutes on 2 cores, the build included.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install_deps.sh"
"$root/scripts/build.sh"
build="${KOSMOS_BUILD_DIR:-$root/build}"
"$build/launch/kosmos" info
KOSMOS="$build/launch/kosmos" KOSMOS_WORK="${KOSMOS_WORK:-$build/main-job}" "$root/scripts/main_job.sh"

#!/usr/bin/env bash
# run.sh: the main job. Installs what is missing, builds, prints `kosmos info`, runs the op demo, then trains the
# tiny KOSMOS preset on the built-in synthetic image-caption set and shows its loss falling (metrics in
# build/train_tiny.jsonl). Extra arguments go to `kosmos train`, e.g. scripts/run.sh --preset small --steps 20.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install_deps.sh"
"$root/scripts/build.sh"
build="${KOSMOS_BUILD_DIR:-$root/build}"
"$build/launch/kosmos" info
"$build/launch/kosmos" demo
"$build/launch/kosmos" train --preset tiny --steps 200 --log-every 25 --metrics "$build/train_tiny.jsonl" "$@"

#!/usr/bin/env bash
# compare_train_small.sh: `kosmos train --preset small` against the PyTorch CPU peer (shared/bench/torch_kosmos.py
# cpu-small: the same model config, 4 x 256 tokens per step, fp32, AdamW, dropout 0.1, clipping), alternating
# three rounds in one run on this machine. Prints each round's median tokens/s and the ratio of the medians.
# Usage: bench/compare_train_small.sh [path/to/torch_kosmos.py]   (needs apt-get install python3-torch
# libopenblas0-openmp; the peer script is copied into the git-ignored .peer/ by default)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kosmos="${KOSMOS_BUILD_DIR:-$root/build}/launch/kosmos"
peer="${1:-$root/.peer/torch_kosmos.py}"
python="${PYTHON:-/usr/bin/python3}"
threads="${OMP_NUM_THREADS:-$(nproc)}"
metrics="$(mktemp)"
ours=() theirs=()
for round in 1 2 3; do
  OMP_NUM_THREADS=$threads "$kosmos" train --preset small --batch 4 --length 256 --steps 7 --log-every 100 \
    --metrics "$metrics" > /dev/null
  # median tokens/s over steps 3..7 (the first steps create oneDNN primitives)
  ours+=("$(tail -n 5 "$metrics" | sed 's/.*"tokens_per_s":\([0-9.e+]*\).*/\1/' | sort -g | sed -n 3p)")
  theirs+=("$(cd "$(dirname "$peer")" && OUT=/tmp OMP_NUM_THREADS=$threads env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
    "$python" "$peer" cpu-small | sed 's/.*"tokens_per_s": \([0-9.e+]*\).*/\1/')")
  echo "round $round: kosmos ${ours[-1]} tokens/s, pytorch ${theirs[-1]} tokens/s"
done
rm -f "$metrics"
o=$(printf '%s\n' "${ours[@]}" | sort -g | sed -n 2p)
t=$(printf '%s\n' "${theirs[@]}" | sort -g | sed -n 2p)
echo "median of rounds: kosmos $o tokens/s, pytorch $t tokens/s, kosmos/pytorch = $(awk -v a="$o" -v b="$t" 'BEGIN {printf "%.2f", a / b}')"

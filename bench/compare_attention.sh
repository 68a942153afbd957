#!/usr/bin/env bash
# compare_attention.sh: attention forward+backward at [B=4, H=4, T=256, dh=64], ours (kosmos_bench_ops) and
# PyTorch's (bench/attention_torch.py, Debian's python3-torch), interleaved in one run on the same machine, three
# rounds each; prints every median and the ratio of the medians. Needs: apt-get install python3-torch
# libopenblas0-openmp (without an optimised BLAS Debian's PyTorch falls back to the reference BLAS, 15x slower).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bench="${KOSMOS_BUILD_DIR:-$root/build}/bench/kosmos_bench_ops"
python="${PYTHON:-/usr/bin/python3}"  # Debian's python3, where python3-torch lives
threads="${OMP_NUM_THREADS:-$(nproc)}"
ours=() theirs=()
for round in 1 2 3; do
  for causal in 1 0; do
    ms=$(OMP_NUM_THREADS=$threads "$bench" --benchmark_filter="BM_Attention/forward_backward/B:4/H:4/T:256/dh:64/causal:$causal/" \
           --benchmark_repetitions=21 --benchmark_report_aggregates_only=true 2>/dev/null |
         awk '/_median/ {print $2}')
    ours+=("$causal $ms")
  done
  while read -r line; do theirs+=("$line"); done < <(OMP_NUM_THREADS=$threads env -u OPENBLAS_CORETYPE \
      -u OPENBLAS_L2_SIZE "$python" "$root/bench/attention_torch.py" | "$python" -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(1 if r["causal"] else 0, r["median_ms"])')
done
for causal in 1 0; do
  o=$(printf '%s\n' "${ours[@]}" | awk -v c=$causal '$1 == c {print $2}' | sort -g | sed -n 2p)
  t=$(printf '%s\n' "${theirs[@]}" | awk -v c=$causal '$1 == c {print $2}' | sort -g | sed -n 2p)
  echo "causal=$causal  kosmos ${o} ms  pytorch ${t} ms  (medians of 3 rounds)  pytorch/kosmos = $(awk -v a="$t" -v b="$o" 'BEGIN {printf "%.2f", a / b}')"
  echo "  all rounds: kosmos $(printf '%s\n' "${ours[@]}" | awk -v c=$causal '$1 == c {printf "%s ", $2}')ms; pytorch $(printf '%s\n' "${theirs[@]}" | awk -v c=$causal '$1 == c {printf "%s ", $2}')ms"
done

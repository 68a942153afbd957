#!/usr/bin/env bash
# pipeline_bubble.sh: the measured idle fraction of a STAGES-stage pipeline (default 4; kosmos train --pp STAGES
# on the tiny preset with 8 decoder layers, one rank per stage) for each schedule and 4, 8, 16 micro-batches: the
# median over steps 4..20 of the metrics' `bubble` (stage 0's time waiting for other stages over its step). Compare with
# build/bench/kosmos_bench_pipeline (the simulator). Four ranks on a 2-core machine share cores, which inflates
# waiting; read the numbers on a machine with a core per rank (or run STAGES=2 bench/pipeline_bubble.sh there).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kosmos="${KOSMOS_BUILD_DIR:-$root/build}/launch/kosmos"
stages="${STAGES:-4}"
metrics="$(mktemp)"
printf '%4s %10s %10s %10s %10s %14s\n' m theory gpipe 1f1b zb-h1 "interleaved"
for m in 4 8 16; do
  row="$(awk -v m=$m -v p=$stages 'BEGIN {printf "%4d %10.4f", m, (p - 1) / (m + p - 1)}')"
  for schedule in gpipe 1f1b zb-h1 interleaved; do
    mpirun --allow-run-as-root --oversubscribe --mca mpi_yield_when_idle 1 -np $stages env OMP_NUM_THREADS=1 \
      "$kosmos" train --preset tiny --model-config "$root/tests/data/tiny_8_layers.json" --pp $stages --schedule $schedule \
      --chunks 2 --global-batch $((2 * m)) --micro-batches $m --length 40 --steps 20 --log-every 100 \
      --metrics "$metrics" > /dev/null
    row="$row $(tail -n 17 "$metrics" | sed 's/.*"bubble":\([0-9.e+-]*\).*/\1/' | sort -g | sed -n 9p | awk '{printf "%10.4f", $1}')"
  done
  echo "$row"
done
rm -f "$metrics"

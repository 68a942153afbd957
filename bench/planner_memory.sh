#!/usr/bin/env bash
# planner_memory.sh: the planner's memory against measurement, written to OUT_DIR/planner_memory.csv: eleven
# layouts of the small preset (8 sequences of 256 per step, fp32, 1 or 2 CPU ranks of one core each), each trained
# for 8 steps; measured is the largest of the ranks' device peaks over steps 5 to 8 (the arenas settled), first_step
# that of step 1; predicted is `kosmos plan --layout` for the same layout, with the images per sequence of the step
# that peaked.
# Usage: bench/planner_memory.sh OUT_DIR   (KOSMOS_BUILD_DIR picks the build; about 4 minutes here)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kosmos="${KOSMOS_BUILD_DIR:-$root/build}/launch/kosmos"
out="${1:?usage: planner_memory.sh OUT_DIR}"
mkdir -p "$out"
length="${KOSMOS_LENGTH:-128}"
launch() { local ranks=$1; shift; mpirun --allow-run-as-root --oversubscribe -np "$ranks" env OMP_NUM_THREADS=1 "$@"; }
# name|ranks|train flags|planner layout
layouts=(
  "one|1|--batch 8|dp=1,m=1"
  "recompute|1|--batch 8 --recompute layer|dp=1,m=1,recompute"
  "dp2|2|--dp 2 --batch 4|dp=2,m=1"
  "dp2-zero1|2|--dp 2 --batch 4 --zero1|dp=2,m=1,zero1"
  "tp2|2|--tp 2 --batch 8|tp=2,m=1"
  "pp2-1f1b-m4|2|--pp 2 --batch 2 --micro-batches 4 --schedule 1f1b|pp=2,m=4,schedule=1f1b"
  "pp2-1f1b-m8|2|--pp 2 --batch 1 --micro-batches 8 --schedule 1f1b|pp=2,m=8,schedule=1f1b"
  "pp2-gpipe-m4|2|--pp 2 --batch 2 --micro-batches 4 --schedule gpipe|pp=2,m=4,schedule=gpipe"
  "pp2-zb-h1-m4|2|--pp 2 --batch 2 --micro-batches 4 --schedule zb-h1|pp=2,m=4,schedule=zb-h1"
  "pp2-zb-h1-m8|2|--pp 2 --batch 1 --micro-batches 8 --schedule zb-h1|pp=2,m=8,schedule=zb-h1"
  "pp2-interleaved-m4|2|--pp 2 --batch 2 --micro-batches 4 --schedule interleaved --chunks 2|pp=2,m=4,schedule=interleaved,chunks=2"
)
echo "layout,measured_gib,predicted_gib,ratio,first_step_gib" > "$out/planner_memory.csv"
for entry in "${layouts[@]}"; do
  IFS='|' read -r name ranks args layout <<< "$entry"
  # shellcheck disable=SC2086
  launch "$ranks" "$kosmos" train --preset small --length "$length" --steps 8 --log-every 8 $args \
    --metrics "$out/memory_$name.jsonl" > "$out/memory_$name.log"
  images="$(python3 - "$out/memory_$name.jsonl" << 'PY'
import json, sys
steps = [json.loads(line) for line in open(sys.argv[1])][4:8]
peak = max(steps, key=lambda step: step["device_peak_gib"])
print(peak["images"] / peak["sequences"])
PY
)"
  "$kosmos" plan --gpus "$ranks" --gpu cpu --preset small --global-batch 8 --length "$length" --images-per-sequence "$images" \
    --layout "$layout" --out "$out/plan_memory_$name.json" > /dev/null
  python3 - "$name" "$out/memory_$name.jsonl" "$out/plan_memory_$name.json" >> "$out/planner_memory.csv" << 'PY'
import json, sys
steps = [json.loads(line) for line in open(sys.argv[2])]
measured = max(step["device_peak_gib"] for step in steps[4:8])
predicted = json.load(open(sys.argv[3]))["predictions"][0]["memory_gib"]
print("%s,%.4f,%.4f,%.2f,%.3f" % (sys.argv[1], measured, predicted, predicted / measured, steps[0]["device_peak_gib"]))
PY
done
column -s, -t < "$out/planner_memory.csv"

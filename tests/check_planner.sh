#!/usr/bin/env bash
# check_planner.sh: `kosmos plan` against measured steps, with a generous bound (predicted / measured within
# [0.6, 1.67]; bench/scaling.sh makes the full table, where the bound it meets is 25%). Calibrated by a measured
# dp 2 step and a measured link (`kosmos bench comm`), it predicts tp 2 and pp 2 (1F1B) of the small preset.
# Usage: check_planner.sh KOSMOS MPIEXEC OUT_PREFIX
set -euo pipefail
kosmos=$1 mpiexec=$2 out=$3
launch=("$mpiexec" --allow-run-as-root -np 2 env OMP_NUM_THREADS=1)
small=(bench --preset small --length 128 --steps 6 --warmup 2)
"${launch[@]}" "$kosmos" bench comm --max-bytes $((4 << 20)) --seconds-per-size 0.01 --calibration-out "$out"_link.json \
  > "$out"_comm.log
"${launch[@]}" "$kosmos" "${small[@]}" --dp 2 --batch 4 --out "$out"_calibration.json > /dev/null
status=0
for entry in "tp2|--tp 2 --batch 4 --micro-batches 2|tp=2,m=2" "pp2|--pp 2 --batch 2 --micro-batches 4|pp=2,m=4"; do
  IFS='|' read -r name args layout <<< "$entry"
  # shellcheck disable=SC2086
  "${launch[@]}" "$kosmos" "${small[@]}" $args --out "$out"_$name.json > /dev/null
  images="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["images_per_sequence"])' "$out"_$name.json)"
  "$kosmos" plan --gpus 2 --gpu cpu --preset small --global-batch 8 --length 128 --images-per-sequence "$images" \
    --calibration "$out"_link.json --measured "$out"_calibration.json --layout "$layout" --out "$out"_plan_$name.json \
    > /dev/null
  python3 - "$name" "$out"_$name.json "$out"_plan_$name.json << 'PY' || status=1
import json, sys
measured = json.load(open(sys.argv[2]))["step_seconds_median"]
predicted = json.load(open(sys.argv[3]))["predictions"][0]["step_seconds"]
ratio = predicted / measured
print("%s: measured %.3f s, predicted %.3f s, ratio %.2f" % (sys.argv[1], measured, predicted, ratio))
sys.exit(0 if 0.6 <= ratio <= 1.67 else 1)
PY
done
exit $status

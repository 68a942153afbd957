#!/usr/bin/env bash
# scaling.sh: the scaling study of this machine with CPU ranks, written as CSV/JSON and drawn as PNG charts
# (gnuplot) into OUT_DIR:
#   comm_{2,4}.csv       `kosmos bench comm` on 2 and 4 ranks (bus bandwidth against plain MPI)
#   planner.csv          7 two-rank layouts of the small preset: measured step (`kosmos bench`) against
#                        `kosmos plan --layout`, calibrated by the measured dp 2 step and the measured link
#   strong.csv weak.csv  data parallelism over 1, 2 and 4 ranks: a fixed global batch, and a fixed batch per rank
#   bubble.csv           the measured pipeline bubble of 2 stages (1F1B, zero-bubble) against (p-1)/(m+p-1)
#   *.png                the charts of each
# One rank per core (OMP_NUM_THREADS=1); beyond 2 ranks this 2-core machine oversubscribes, which the 4-rank
# points show. Usage: bench/scaling.sh OUT_DIR   (KOSMOS_BUILD_DIR picks the build; about 5 minutes here)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kosmos="${KOSMOS_BUILD_DIR:-$root/build}/launch/kosmos"
out="${1:?usage: scaling.sh OUT_DIR}"
mkdir -p "$out"
launch() { local ranks=$1; shift; mpirun --allow-run-as-root --oversubscribe -np "$ranks" env OMP_NUM_THREADS=1 "$@"; }
field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
small=(bench --preset small --length 256 --steps 8 --warmup 3)

echo "== collectives"
for ranks in 2 4; do
  launch "$ranks" "$kosmos" bench comm --max-bytes $((64 << 20)) --seconds-per-size 0.25 --csv "$out/comm_$ranks.csv" --out "$out/comm_$ranks.json" \
    --calibration-out "$out/link_$ranks.json" | tee "$out/comm_$ranks.log" | grep -E "^(all_reduce|exchange) +(8|4096|1048576|67108864) "
done

echo "== planner against measured steps (small preset, 8 sequences of 256 per step, 2 ranks)"
# The calibration: the measured dp 2 step sets the planner's matmul rate (its row is 1.00 by construction); the
# other layouts are predictions from it and the measured link.
launch 2 "$kosmos" "${small[@]}" --dp 2 --batch 4 --out "$out/calibration_step.json" > /dev/null
echo "layout,measured_s,predicted_s,ratio" > "$out/planner.csv"
layouts=(
  "dp2-zero1|--dp 2 --batch 4 --zero1|dp=2,m=1,zero1"
  "dp2-m2|--dp 2 --batch 2 --micro-batches 2|dp=2,m=2"
  "tp2|--tp 2 --batch 4 --micro-batches 2|tp=2,m=2"
  "pp2-1f1b|--pp 2 --batch 2 --micro-batches 4 --schedule 1f1b|pp=2,m=4,schedule=1f1b"
  "pp2-gpipe|--pp 2 --batch 2 --micro-batches 4 --schedule gpipe|pp=2,m=4,schedule=gpipe"
  "pp2-zb|--pp 2 --batch 2 --micro-batches 4 --schedule zb-h1|pp=2,m=4,schedule=zb-h1"
  "pp2-interleaved|--pp 2 --batch 2 --micro-batches 4 --schedule interleaved --chunks 2|pp=2,m=4,schedule=interleaved,chunks=2"
)
for entry in "${layouts[@]}"; do
  IFS='|' read -r name args layout <<< "$entry"
  # shellcheck disable=SC2086
  launch 2 "$kosmos" "${small[@]}" $args --out "$out/step_$name.json" > /dev/null
  images="$(field "$out/step_$name.json" images_per_sequence)"
  "$kosmos" plan --gpus 2 --gpu cpu --preset small --global-batch 8 --length 256 --images-per-sequence "$images" \
    --calibration "$out/link_2.json" --measured "$out/calibration_step.json" --layout "$layout" \
    --out "$out/plan_$name.json" > /dev/null
  python3 - "$name" "$out/step_$name.json" "$out/plan_$name.json" >> "$out/planner.csv" << 'PY'
import json, sys
measured = json.load(open(sys.argv[2]))["step_seconds_median"]
predicted = json.load(open(sys.argv[3]))["predictions"][0]["step_seconds"]
print("%s,%.4f,%.4f,%.3f" % (sys.argv[1], measured, predicted, predicted / measured))
PY
done
column -s, -t < "$out/planner.csv"

echo "== data-parallel scaling (strong: 8 sequences per step in all; weak: 4 per rank)"
echo "ranks,strong_step_s,strong_tokens_per_s,weak_step_s,weak_tokens_per_s" > "$out/scaling.csv"
for ranks in 1 2 4; do
  launch "$ranks" "$kosmos" "${small[@]}" --dp "$ranks" --batch $((8 / ranks)) --out "$out/strong_$ranks.json" > /dev/null
  launch "$ranks" "$kosmos" "${small[@]}" --dp "$ranks" --batch 4 --out "$out/weak_$ranks.json" > /dev/null
  echo "$ranks,$(field "$out/strong_$ranks.json" step_seconds_median),$(field "$out/strong_$ranks.json" tokens_per_s_median),$(field "$out/weak_$ranks.json" step_seconds_median),$(field "$out/weak_$ranks.json" tokens_per_s_median)" >> "$out/scaling.csv"
done
column -s, -t < "$out/scaling.csv"

echo "== pipeline bubble, 2 stages (tiny preset, 8 layers)"
echo "m,theory,1f1b,zb-h1" > "$out/bubble.csv"
for m in 2 4 8 16; do
  row="$m,$(python3 -c "print('%.4f' % (1 / ($m + 1)))")"
  for schedule in 1f1b zb-h1; do
    launch 2 "$kosmos" bench --preset tiny --model-config "$root/tests/data/tiny_8_layers.json" --pp 2 --schedule "$schedule" \
      --batch 2 --micro-batches "$m" --length 40 --steps 12 --warmup 4 --out "$out/bubble_${schedule}_$m.json" > /dev/null
    row="$row,$(python3 -c "import json; print('%.4f' % json.load(open('$out/bubble_${schedule}_$m.json'))['bubble_median'])")"
  done
  echo "$row" >> "$out/bubble.csv"
done
column -s, -t < "$out/bubble.csv"

echo "== charts"
"$root/bench/scaling_charts.sh" "$out"

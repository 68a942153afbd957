#!/usr/bin/env bash
# check_non_finite.sh: a NaN in one rank's gradients (the --debug-poison-step hook, on world rank 0 of 2) is seen
# by both ranks at the same step. With --non-finite skip (the default) the run goes on, the step is marked skipped
# and counted in the metrics, and its update is not applied: the parameters after the poisoned step 4 equal those
# after step 3 bit for bit. With --non-finite stop every rank prints the error naming the step, and the job exits
# non-zero. Usage: check_non_finite.sh KOSMOS COMPARE MPIEXEC OUT_PREFIX
set -euo pipefail
kosmos=$1 compare=$2 mpiexec=$3 out=$4
launch=("$mpiexec" --allow-run-as-root -np 2 env OMP_NUM_THREADS=1)
common=(train --preset tiny --steps 8 --seed 6 --dp 2 --global-batch 8 --length 40 --log-every 100)
rm -rf "$out"_*
"${launch[@]}" "$kosmos" "${common[@]}" --debug-poison-step 4 --metrics "$out"_skip.jsonl > "$out"_skip.log 2>&1
grep -q "step 4: .* not finite: the update was skipped (1 so far" "$out"_skip.log ||
  { cat "$out"_skip.log; echo "no skip line for step 4"; exit 1; }
python3 - "$out"_skip.jsonl << 'PY'
import json, math, sys
steps = [json.loads(line) for line in open(sys.argv[1])]
assert [s["step"] for s in steps] == list(range(1, 9)), "every step has a metrics line"
for s in steps:
    assert s["skipped"] == (s["step"] == 4), "step %d skipped: %s" % (s["step"], s["skipped"])
    assert s["skipped_steps"] == (1 if s["step"] >= 4 else 0)
    if s["step"] != 4:
        assert math.isfinite(s["loss"]) and math.isfinite(s["grad_norm"]), "step %d is not finite" % s["step"]
print("metrics: step 4 skipped and counted, the other 7 finite")
PY
# The skipped update: the parameters after step 4 (poisoned) are those after step 3.
"${launch[@]}" "$kosmos" "${common[@]}" --debug-poison-step 4 --stop-at 4 --save-dir "$out"_four \
  --metrics "$out"_four.jsonl --save-weights "$out"_four.safetensors > /dev/null 2>&1
"${launch[@]}" "$kosmos" "${common[@]}" --stop-at 3 --save-dir "$out"_three --metrics "$out"_three.jsonl \
  --save-weights "$out"_three.safetensors > /dev/null 2>&1
"$compare" "$out"_three.jsonl "$out"_three.jsonl "$out"_three.safetensors "$out"_four.safetensors 0 ||
  { echo "the parameters after the skipped step 4 differ from those after step 3"; exit 1; }
status=0
"${launch[@]}" "$kosmos" "${common[@]}" --debug-poison-step 4 --non-finite stop > "$out"_stop.log 2>&1 || status=$?
[ "$status" != 0 ] || { echo "--non-finite stop exited 0"; exit 1; }
for rank in 0 1; do
  grep -q "\[rank $rank .*error: step 4: the loss .* is not finite (--non-finite stop)" "$out"_stop.log ||
    { cat "$out"_stop.log; echo "rank $rank did not report step 4"; exit 1; }
done
echo "non-finite: skipped and counted on both ranks, the update not applied; --non-finite stop stops every rank"

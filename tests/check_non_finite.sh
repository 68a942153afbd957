#!/usr/bin/env bash
# check_non_finite.sh: a NaN in one rank's gradients (the --debug-poison-step hook, on world rank 0 of 2) is seen
# by both ranks at the same step. With --non-finite skip (what auto, the default, means in fp32) the run goes on, the
# step is marked skipped and counted in the metrics, and its update is not applied: the parameters after the
# poisoned step 4 equal those after step 3 bit for bit. With --non-finite stop every rank prints the error naming the step, and the job exits
# non-zero. With --non-finite reduce-scale (dynamic loss scaling) the step is skipped and the loss scale halves, and
# it doubles after --loss-scale-window finite steps: the metrics' scales follow that rule step by step; the final
# parameters equal bit for bit those of the plain skip run at scale 1 (scaling by a power of two is exact); a run
# stopped and resumed continues with the checkpoint's scale and ends with the same parameters; a scale that is not
# a power of two is refused. Usage: check_non_finite.sh KOSMOS COMPARE MPIEXEC OUT_PREFIX
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

# Dynamic loss scaling: window 2, starting at 1024, a NaN at step 3.
dynamic=(--non-finite reduce-scale --loss-scale 1024 --loss-scale-window 2 --debug-poison-step 3)
"${launch[@]}" "$kosmos" "${common[@]}" "${dynamic[@]}" --metrics "$out"_dynamic.jsonl \
  --save-weights "$out"_dynamic.safetensors > "$out"_dynamic.log 2>&1 || { cat "$out"_dynamic.log; exit 1; }
grep -q "step 3: .* not finite: the update was skipped (1 so far; the loss scale is now 1024" "$out"_dynamic.log ||
  { cat "$out"_dynamic.log; echo "no reduce-scale line for step 3"; exit 1; }
python3 - "$out"_dynamic.jsonl << 'PY'
import json, sys
steps = [json.loads(line) for line in open(sys.argv[1])]
# The rule, step by step: the scale a step uses; after 2 finite steps in a row it doubles, after a NaN it halves.
scale, run, expected = 1024, 0, []
for step in range(1, 9):
    expected.append(scale)
    if step == 3:
        scale, run = scale // 2, 0
    else:
        run += 1
        if run == 2:
            scale, run = scale * 2, 0
assert expected == [1024, 1024, 2048, 1024, 1024, 2048, 2048, 4096], expected  # the rule written out by hand
got = [s["loss_scale"] for s in steps]
assert got == expected, "loss scales %s, expected %s" % (got, expected)
assert [s["skipped"] for s in steps] == [s["step"] == 3 for s in steps]
print("dynamic loss scale per step:", got)
PY
"${launch[@]}" "$kosmos" "${common[@]}" --debug-poison-step 3 --metrics "$out"_plain.jsonl \
  --save-weights "$out"_plain.safetensors > /dev/null 2>&1
"$compare" "$out"_plain.jsonl "$out"_dynamic.jsonl "$out"_plain.safetensors "$out"_dynamic.safetensors 0 ||
  { echo "scaled gradients (1024..4096) changed the run: scaling by a power of two must be exact"; exit 1; }
# Stopped after step 5 (the scale just doubled to 2048) and resumed: the scale goes on from the checkpoint.
"${launch[@]}" "$kosmos" "${common[@]}" "${dynamic[@]}" --stop-at 5 --save-dir "$out"_resumed \
  --metrics "$out"_first.jsonl > /dev/null 2>&1
"${launch[@]}" "$kosmos" "${common[@]}" --non-finite reduce-scale --loss-scale-window 2 --resume auto \
  --save-dir "$out"_resumed --metrics "$out"_second.jsonl --save-weights "$out"_resumed.safetensors > /dev/null 2>&1
python3 -c "
import json, sys
scales = [json.loads(l)['loss_scale'] for l in open(sys.argv[1])]
assert scales == [2048, 2048, 4096], 'resumed steps 6-8 used loss scales %s, not 2048, 2048, 4096' % scales
" "$out"_second.jsonl
cat "$out"_first.jsonl "$out"_second.jsonl > "$out"_joined.jsonl
"$compare" "$out"_dynamic.jsonl "$out"_joined.jsonl "$out"_dynamic.safetensors "$out"_resumed.safetensors 0 ||
  { echo "the resumed dynamic-scale run differs from the uninterrupted one"; exit 1; }
status=0
"$kosmos" train --preset tiny --steps 1 --loss-scale 3 > "$out"_three_scale.log 2>&1 || status=$?
[ "$status" != 0 ] && grep -q "\-\-loss-scale 3 is not a power of two" "$out"_three_scale.log ||
  { cat "$out"_three_scale.log; echo "--loss-scale 3 was not refused"; exit 1; }
echo "non-finite: skipped and counted on both ranks, the update not applied; --non-finite stop stops every rank;"
echo "reduce-scale halves and regrows the scale by the rule, exactly, and resumes with the checkpoint's scale"

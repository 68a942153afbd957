#!/usr/bin/env bash
# check_damaged_resume.sh: a run checkpoints steps 3 and 6 and stops; one bit inside a parameter's stored data of the
# newest checkpoint (step 6) is flipped. `--resume auto` must warn, naming that file and the dataset whose Fletcher32
# checksum failed, resume from step 3, and end bit-identical to an uninterrupted run.
# With MPIEXEC the runs are 2 ranks of --dp 2 --zero1 and the flipped byte lies in a moment of rank 1's ZeRO-1 slice,
# which rank 1 alone reads: both ranks must still fall back to step 3 together (no hang, the same state).
# `generate --checkpoint` on the run folder falls back the same way where the flipped byte lies in a parameter (it
# reads no moments: on 2 ranks the newest checkpoint is whole for it).
# Usage: check_damaged_resume.sh KOSMOS FLIP_CHUNK_BYTE COMPARE OUT_PREFIX [MPIEXEC]
set -euo pipefail
kosmos=$1 flip=$2 compare=$3 out=$4
launch=() layout=()
dataset=/params/decoder.layers.1.ffn.fc1.weight
if [ $# -ge 5 ]; then
  launch=("$5" --allow-run-as-root -np 2 env OMP_NUM_THREADS=1)
  layout=(--dp 2 --zero1)
  dataset=/optim/m/decoder.layers.1.ffn.fc2.weight  # near the end of the trainable part: rank 1's slice
fi
common=(train --preset tiny --steps 9 --seed 4 --log-every 100 "${layout[@]}")
rm -rf "$out"_*
"${launch[@]}" "$kosmos" "${common[@]}" --save-dir "$out"_run --save-every 3 --keep 0 --stop-at 6 \
  > "$out"_first.log 2>&1 || { cat "$out"_first.log; exit 1; }
"$flip" "$out"_run/step_00000006.h5 "$dataset"
"${launch[@]}" "$kosmos" generate --checkpoint "$out"_run --tokens 0,5,6 --max-new-tokens 2 --print-ids \
  > "$out"_generate.log 2>&1 || { cat "$out"_generate.log; echo "generate failed on ${out}_run"; exit 1; }
if [ ${#launch[@]} -eq 0 ]; then
  grep -q "warning: checkpoint .*step_00000006.h5 is damaged, trying the one before it: .*$dataset" \
    "$out"_generate.log || { cat "$out"_generate.log; echo "generate did not fall back past step_00000006.h5"; exit 1; }
fi
"${launch[@]}" "$kosmos" "${common[@]}" --save-dir "$out"_run --resume auto --metrics "$out"_resumed.jsonl \
  --save-weights "$out"_resumed.safetensors > "$out"_resumed.log 2>&1 || { cat "$out"_resumed.log; exit 1; }
grep -q "warning: checkpoint .*step_00000006.h5 is damaged, trying the one before it: .*$dataset" "$out"_resumed.log ||
  { cat "$out"_resumed.log; echo "no warning naming step_00000006.h5 and $dataset"; exit 1; }
grep -q "resumed from .*step_00000003.h5: step 3" "$out"_resumed.log ||
  { cat "$out"_resumed.log; echo "did not resume from step 3"; exit 1; }
"${launch[@]}" "$kosmos" "${common[@]}" --metrics "$out"_whole.jsonl --save-weights "$out"_whole.safetensors \
  > /dev/null 2>&1
"$compare" "$out"_whole.jsonl "$out"_resumed.jsonl "$out"_whole.safetensors "$out"_resumed.safetensors 0 ||
  { echo "the run resumed past the damaged checkpoint differs from the uninterrupted one"; exit 1; }
echo "damaged newest checkpoint: warned (file and dataset named), resumed from step 3, bit-identical"

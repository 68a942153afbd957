#!/usr/bin/env bash
# check_fault_injection.sh: RUNS times, a 4-rank training (pp 2 x dp 2, checkpoints every 3 steps) has one random
# rank killed with SIGKILL at a random step; every rank must be gone within 60 s (the time is reported), with the
# launcher naming the lost rank, and the run resumed with --resume auto must end with final parameters bit-identical
# to an uninterrupted run (and the same losses for the steps it ran). A kill that lands during a checkpoint write
# leaves only a partial file, which resume ignores; one before the first checkpoint makes resume start afresh.
# Usage: check_fault_injection.sh KOSMOS COMPARE MPIEXEC OUT_PREFIX [RUNS] [SEED]
set -euo pipefail
kosmos=$1 compare=$2 mpiexec=$3 out=$4 runs=${5:-20} seed=${6:-$RANDOM}
steps=18
launch=("$mpiexec" --allow-run-as-root --oversubscribe -np 4 env OMP_NUM_THREADS=1)
common=(train --preset tiny --steps $steps --seed 3 --global-batch 8 --micro-batches 2 --length 40 --pp 2 --dp 2
        --log-every 1000 --save-every 3 --keep 2)
rm -rf "$out"_*
"${launch[@]}" "$kosmos" "${common[@]}" --metrics "$out"_whole.jsonl --save-weights "$out"_whole.safetensors \
  > "$out"_whole.log 2>&1
RANDOM=$seed
echo "fault injection: $runs runs, seed $seed"
worst=0
for run in $(seq 1 "$runs"); do
  victim=$((RANDOM % 4)) at_step=$((2 + RANDOM % (steps - 4)))
  dir="$out"_run$run
  "${launch[@]}" "$kosmos" "${common[@]}" --save-dir "$dir" --metrics "$dir".jsonl > "$dir"_killed.log 2>&1 &
  launcher=$!
  for _ in $(seq 1 1200); do  # until rank 0 has logged at_step steps (at most 120 s)
    [ -f "$dir".jsonl ] && [ "$(wc -l < "$dir".jsonl)" -ge "$at_step" ] && break
    kill -0 "$launcher" 2> /dev/null || break
    sleep 0.1
  done
  # The victim: the kosmos process of this run whose MPI rank is `victim`.
  pid=""
  for candidate in $(pgrep -f -- "^$kosmos train .*--save-dir $dir( |$)"); do
    if tr '\0' '\n' < /proc/"$candidate"/environ 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$victim"; then
      pid=$candidate
    fi
  done
  [ -n "$pid" ] || { echo "run $run: rank $victim was not found running (step $at_step)"; cat "$dir"_killed.log; exit 1; }
  start=$(date +%s.%N)
  kill -KILL "$pid"
  status=0
  wait "$launcher" || status=$?
  seconds=$(python3 -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$start" "$(date +%s.%N)")
  if pgrep -f -- "^$kosmos train .*--save-dir $dir( |$)" > /dev/null; then
    echo "run $run: ranks still running $seconds s after rank $victim was killed"; exit 1
  fi
  [ "$status" != 0 ] || { echo "run $run: the job exited 0 although rank $victim was killed"; exit 1; }
  grep -q "rank $victim" "$dir"_killed.log || { echo "run $run: the launcher did not name rank $victim"; cat "$dir"_killed.log; exit 1; }
  python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 60 else 1)" "$seconds" ||
    { echo "run $run: the ranks took $seconds s to exit (limit 60 s)"; exit 1; }
  python3 -c "import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))" "$worst" "$seconds" > "$out"_worst
  worst=$(cat "$out"_worst)
  "${launch[@]}" "$kosmos" "${common[@]}" --save-dir "$dir" --resume auto --metrics "$dir"_resumed.jsonl \
    --save-weights "$dir"_resumed.safetensors > "$dir"_resumed.log 2>&1 ||
    { echo "run $run: the resumed run failed"; cat "$dir"_resumed.log; exit 1; }
  resumed_from=$(grep -o "resumed from [^ ]*: step [0-9]*" "$dir"_resumed.log | sed 's/.*: //' | head -n 1 || true)
  "$compare" "$out"_whole.jsonl "$dir"_resumed.jsonl "$out"_whole.safetensors "$dir"_resumed.safetensors 0 \
    > "$dir"_compare.log 2>&1 || { echo "run $run: resumed run differs from the uninterrupted one"; cat "$dir"_compare.log; exit 1; }
  echo "run $run: rank $victim killed at step $at_step, all ranks gone in $seconds s, resumed from ${resumed_from:-the start (no checkpoint yet)}, bit-identical"
done
echo "fault injection: $runs of $runs runs bit-identical after resume; slowest exit after a kill: $worst s"

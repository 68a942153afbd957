#!/usr/bin/env bash
# check_signal.sh: SIGTERM (what Slurm sends before preemption or the time limit) in the middle of a 2-rank run makes
# every rank finish its step, write a complete checkpoint and exit 0; the run resumed from it gives the losses of
# the uninterrupted run bit for bit. The same for SIGUSR1 sent to mpirun, which forwards it to the ranks, and for
# SIGINT (Ctrl-C) to a run of one process without mpirun.
# Usage: check_signal.sh KOSMOS COMPARE MPIEXEC OUT_PREFIX TERM|USR1|INT
set -euo pipefail
kosmos=$1 compare=$2 mpiexec=$3 out=$4 signal=$5
rm -rf "$out"_*
common=(train --preset tiny --steps 3000 --stop-at 80 --seed 4 --global-batch 8 --length 40 --log-every 1000)
if [ "$signal" = INT ]; then
  launch=(env OMP_NUM_THREADS=1)
  set -m  # job control: a background job of a script would otherwise ignore SIGINT
else
  launch=("$mpiexec" --allow-run-as-root --oversubscribe -np 2 env OMP_NUM_THREADS=1)
  common+=(--dp 2)
fi

"${launch[@]}" "$kosmos" "${common[@]}" --save-dir "$out"_whole --metrics "$out"_whole.jsonl \
  --save-weights "$out"_whole.safetensors > "$out"_whole.log 2>&1

"${launch[@]}" "$kosmos" "${common[@]}" --save-dir "$out"_stopped --metrics "$out"_stopped.jsonl \
  > "$out"_stopped.log 2>&1 &
launcher=$!
for _ in $(seq 1 600); do  # until 10 steps are done (at most 60 s)
  [ -f "$out"_stopped.jsonl ] && [ "$(wc -l < "$out"_stopped.jsonl)" -ge 10 ] && break
  sleep 0.1
done
if [ "$signal" = TERM ]; then  # to every rank, as Slurm does
  pkill -TERM -f -- "^$kosmos train .*--save-dir ${out}_stopped" || true  # the ranks, not mpirun
elif [ "$signal" = INT ]; then  # Ctrl-C: env has become kosmos itself
  kill -INT "$launcher"
else  # to mpirun, which forwards it
  kill -USR1 "$launcher"
fi
status=0
wait "$launcher" || status=$?
cat "$out"_stopped.log
[ "$status" = 0 ] || { echo "the signalled run exited with $status, not 0"; exit 1; }
grep -q "stopped by signal" "$out"_stopped.log || { echo "the run ended without seeing the signal"; exit 1; }
ls "$out"_stopped/step_*.h5 > /dev/null || { echo "no complete checkpoint in ${out}_stopped"; exit 1; }
if ls "$out"_stopped/*.partial > /dev/null 2>&1; then echo "a partial checkpoint was left"; exit 1; fi

"${launch[@]}" "$kosmos" "${common[@]}" --save-dir "$out"_stopped --resume auto --metrics "$out"_resumed.jsonl \
  --save-weights "$out"_resumed.safetensors > "$out"_resumed.log 2>&1
"$compare" "$out"_whole.jsonl "$out"_resumed.jsonl "$out"_whole.safetensors "$out"_resumed.safetensors 0

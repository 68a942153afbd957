#!/usr/bin/env bash
# check_signal_storm.sh: SIGUSR1 sent to a one-rank training as fast as the shell can, from its second step until it
# exits, in several runs: each must stop cleanly ("stopped by signal", exit 0). Before the watcher thread
# (launch/stop_signals.h) such runs crashed inside oneDNN's matmul (three of three test runs failed).
# Usage: check_signal_storm.sh KOSMOS OUT_PREFIX [RUNS]
set -euo pipefail
kosmos=$1 out=$2 runs=${3:-8}
for run in $(seq 1 "$runs"); do
  log="$out"_$run.log metrics="$out"_$run.jsonl
  rm -f "$metrics"
  OMP_NUM_THREADS=1 "$kosmos" train --preset tiny --steps 3000 --seed 4 --batch 48 --length 40 --log-every 1000 \
    --metrics "$metrics" > "$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do  # until the first step is done (at most 30 s)
    [ -s "$metrics" ] && break
    sleep 0.1
  done
  while kill -USR1 "$pid" 2> /dev/null; do :; done
  status=0
  wait "$pid" || status=$?
  if [ "$status" != 0 ] || ! grep -q "stopped by signal" "$log"; then
    cat "$log"
    echo "run $run of $runs: exit $status under a storm of SIGUSR1, not a clean stop"
    exit 1
  fi
done
echo "$runs runs stopped cleanly under a storm of SIGUSR1"

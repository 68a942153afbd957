#!/usr/bin/env bash
# check_watchdog.sh: a stalled rank (the --debug-stall-* hook sleeps inside rank 1's first collective of step 5 for
# 120 s) is caught by the watchdog (--watchdog-timeout 4): rank 0 reports the call it waits in and names rank 1,
# rank 1 reports that it is stalled, and the job exits non-zero well before the stall would have ended.
# Usage: check_watchdog.sh KOSMOS MPIEXEC OUT_PREFIX
set -euo pipefail
kosmos=$1 mpiexec=$2 out=$3
rm -rf "$out"_*
start=$SECONDS
status=0
"$mpiexec" --allow-run-as-root -np 2 env OMP_NUM_THREADS=1 "$kosmos" train --preset tiny --steps 30 --dp 2 \
  --global-batch 8 --length 40 --log-every 100 --watchdog-timeout 4 --watchdog-dir "$out"_status \
  --debug-stall-rank 1 --debug-stall-step 5 --debug-stall-seconds 120 > "$out".log 2>&1 || status=$?
elapsed=$((SECONDS - start))
grep -v "^\[vm" "$out".log | grep "watchdog" || true
[ "$status" != 0 ] || { echo "the stalled job exited 0"; exit 1; }
[ "$elapsed" -lt 60 ] || { echo "the job took $elapsed s to end (the watchdog limit was 4 s)"; exit 1; }
grep -q "^\[rank 0\] watchdog: all_reduce #[0-9]* on .* over the limit of 4 s" "$out".log ||
  { echo "rank 0 did not report the call it waited in"; exit 1; }
grep -q "^\[rank 0\] watchdog: rank 0 waits for rank 1 " "$out".log || { echo "rank 0 did not name rank 1"; exit 1; }
grep -q "^\[rank 1\] watchdog: this rank is stalled inside the call" "$out".log ||
  { echo "rank 1 did not report its stall"; exit 1; }
echo "watchdog: the stall was reported by both ranks, rank 1 named, and the job ended in $elapsed s"

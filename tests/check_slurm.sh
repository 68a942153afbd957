#!/usr/bin/env bash
# check_slurm.sh: kosmos under a real single-node Slurm: slurmctld, slurmd and munge from Debian's packages,
# configured in a temporary folder, started here and stopped by PID at the end. A 2-rank training runs through
# `srun --mpi=pmix` and through `sbatch`; each must write all its steps to its metrics file.
# Needs root (slurmd) and the packages (scripts/install_deps.sh installs them); without them it exits 77, which
# ctest reports as skipped, with the reason.
# Usage: check_slurm.sh KOSMOS WORK_FOLDER
set -euo pipefail
kosmos=$1 work=$2
for tool in slurmctld slurmd munged srun sbatch sinfo; do
  command -v "$tool" > /dev/null || { echo "skipped: $tool is missing (apt-get install slurmctld slurmd munge)"; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "skipped: starting slurmd needs root"; exit 77; }
[ -r /etc/munge/munge.key ] || { echo "skipped: no /etc/munge/munge.key (reinstall munge)"; exit 77; }

rm -rf "$work"
mkdir -p "$work/state" "$work/spool" "$work/log"
node=$(hostname -s)
cat > "$work/slurm.conf" <<CONF
ClusterName=kosmostest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=pmix
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=1000 State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF=$work/slurm.conf

started_munge=""
stop_daemons() {
  for pid_file in "$work/slurmd.pid" "$work/slurmctld.pid"; do
    [ -f "$pid_file" ] && kill "$(cat "$pid_file")" 2> /dev/null || true
  done
  [ -n "$started_munge" ] && kill "$started_munge" 2> /dev/null || true
}
trap stop_daemons EXIT
if ! munge -n 2> /dev/null | unmunge > /dev/null 2>&1; then  # no munged running: start one for this test
  mkdir -p /run/munge && chown munge:munge /run/munge
  su -s /bin/sh munge -c /usr/sbin/munged  # it writes /run/munge/munged.pid
  started_munge=$(cat /run/munge/munged.pid)
fi
slurmctld -c
slurmd
for _ in $(seq 1 100); do  # until the node is idle (at most 20 s)
  sinfo -h -o %t 2> /dev/null | grep -q idle && break
  sleep 0.2
done
sinfo

train=(train --preset tiny --steps 12 --seed 3 --global-batch 8 --length 40 --dp 2 --log-every 4)
export OMP_NUM_THREADS=1
srun --mpi=pmix -n 2 -O "$kosmos" "${train[@]}" --metrics "$work/srun.jsonl"
[ "$(wc -l < "$work/srun.jsonl")" = 12 ] || { echo "srun: expected 12 steps in srun.jsonl"; exit 1; }

cat > "$work/job.sh" <<JOB
#!/bin/bash
#SBATCH --ntasks=2
#SBATCH --oversubscribe
#SBATCH --output=$work/job.out
srun --mpi=pmix "$kosmos" ${train[*]} --metrics "$work/sbatch.jsonl"
JOB
sbatch --wait "$work/job.sh"
cat "$work/job.out"
[ "$(wc -l < "$work/sbatch.jsonl")" = 12 ] || { echo "sbatch: expected 12 steps in sbatch.jsonl"; exit 1; }
echo "srun and sbatch: 2-rank training through Slurm, 12 steps each"

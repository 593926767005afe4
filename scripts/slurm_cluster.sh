#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for testing `retbench
# slurm` (CI) and for trying it out: Debian's slurm-wlm and munge, one node
# (localhost, its cores and memory as `slurmd -C` reports them), one
# partition. Needs root (or sudo) for apt and the daemons.
#   scripts/slurm_cluster.sh install   apt-get install slurm-wlm munge (once)
#   scripts/slurm_cluster.sh start     write the configuration, start munged,
#                                      slurmctld and slurmd; wait for the node
#   scripts/slurm_cluster.sh stop      stop the daemons, remove the state
#   scripts/slurm_cluster.sh env       print the export line for SLURM_CONF
# The configuration lives in $RETBENCH_SLURM_DIR (default /tmp/retbench-slurm),
# not /etc/slurm, so a machine's own Slurm setup is never touched: every Slurm
# command must see SLURM_CONF=$RETBENCH_SLURM_DIR/slurm.conf (`eval "$(... env)"`).
# Choices that make Slurm 22.05 run in a container without systemd or cgroup
# v1: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none, no accounting.
set -euo pipefail
dir="${RETBENCH_SLURM_DIR:-/tmp/retbench-slurm}"
conf="$dir/slurm.conf"
sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install() {
  if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v munged >/dev/null; then
    echo "slurm-wlm and munge are installed ($(dpkg-query -W -f '${Version}' slurm-wlm 2>/dev/null))"
    return
  fi
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -q
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge
  dpkg-query -W -f 'slurm-wlm ${Version}\n' slurm-wlm
}

write_conf() {
  local node host
  host="$(hostname -s)"
  # The node as slurmd sees it (CPUs, sockets, cores, threads, memory), so
  # that slurmd does not drain it for a mismatch.
  node="$(slurmd -C | head -n1)"
  sudo_ mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  sudo_ tee "$conf" >/dev/null <<EOF
# Written by retbench scripts/slurm_cluster.sh: a single-node test cluster.
ClusterName=retbench
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
MaxArraySize=1001
DefMemPerCPU=512
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  write_conf
  sudo_ mkdir -p /run/munge
  sudo_ chown munge:munge /run/munge 2>/dev/null || true
  if ! munge -n >/dev/null 2>&1; then
    # A munged without its socket (its /run was cleared) serves no one.
    [ -S /run/munge/munge.socket.2 ] || sudo_ pkill -x munged 2>/dev/null || true
    sudo_ runuser -u munge -- munged 2>/dev/null || sudo_ munged --force
    sudo_ touch "$dir/started-munged"   # ours to stop
  fi
  munge -n | unmunge >/dev/null
  sudo_ env SLURM_CONF="$conf" slurmctld
  sudo_ env SLURM_CONF="$conf" slurmd
  export SLURM_CONF="$conf"
  for _ in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
      sinfo
      echo "cluster up: export SLURM_CONF=$conf"
      return
    fi
    sleep 1
  done
  echo "the node did not come up within 60 s; logs in $dir/log:" >&2
  tail -n 20 "$dir"/log/*.log >&2 || true
  sinfo >&2 || true
  exit 1
}

stop() {
  for daemon in slurmd slurmctld; do
    local pidfile="$dir/$daemon.pid"
    if [ -f "$pidfile" ]; then sudo_ kill "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
  for _ in $(seq 20); do
    pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break
    sleep 0.5
  done
  if [ -f "$dir/started-munged" ] && [ -f /run/munge/munged.pid ]; then
    sudo_ kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    sudo_ rm -f "$dir/started-munged"
  fi
  sudo_ rm -rf "$dir/state" "$dir/spool"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Start a real two-node Slurm cluster on this machine for the `slurm`-marked tests:
# munged, slurmctld and two slurmd (`-N node1`, `-N node2`) that share 127.0.0.1 on distinct ports.
#
# Debian's slurm-wlm 22.05 runs this way as root with linuxproc process tracking and no task
# plugin (no cgroups in CI sandboxes). Idempotent: when both nodes already answer, it does nothing.
# Exits non-zero when the daemons do not come up, so CI fails instead of skipping the tests.
#
#   tools/ci/slurm-up.sh            install (apt) if needed, write the config, start, wait
#   NEOX_CI_SLURM_CPUS=2            CPUs each fake node advertises (default: this machine's count)
set -euo pipefail

conf_dir=/etc/slurm
log_dir=/var/log/slurm
host=$(hostname)
cpus=${NEOX_CI_SLURM_CPUS:-$(nproc)}

say() { echo "slurm-up: $*"; }

cluster_ready() {
    # Both nodes known and idle/mixed/allocated (i.e. slurmd registered), controller answering.
    local states
    states=$(timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null) || return 1
    for n in node1 node2; do
        grep -Eq "^$n (idle|mix|alloc|comp)" <<<"$states" || return 1
    done
}

if command -v sinfo >/dev/null && cluster_ready; then
    say "cluster already up"; sinfo -N; exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# Node names resolve to this machine: ranks use the first node of the nodelist as master address.
grep -Eq '^127\.0\.0\.1[[:space:]].*\bnode1\b' /etc/hosts || echo "127.0.0.1 node1 node2" >>/etc/hosts

# Stop daemons left by an earlier run of this script: by their pid files, and only if that pid
# still is the daemon (a stale file from a finished session may name a reused pid).
for pidfile in /run/slurmd-node1.pid /run/slurmd-node2.pid /run/slurmctld.pid; do
    if [ -s "$pidfile" ]; then
        pid=$(cat "$pidfile")
        case $(cat "/proc/$pid/comm" 2>/dev/null) in slurmd|slurmctld) kill "$pid" 2>/dev/null || true ;; esac
        rm -f "$pidfile"
    fi
done
sleep 1

mkdir -p "$conf_dir" "$log_dir" /var/spool/slurmctld /var/spool/slurmd/node1 /var/spool/slurmd/node2 /run/munge /var/log/munge /var/lib/munge
cat >"$conf_dir/slurm.conf" <<EOF
# Written by tools/ci/slurm-up.sh: two slurmd on one host for CI.
ClusterName=neoxci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd-%n.log
SlurmctldPort=6817
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=15
MinJobAge=600
SlurmdTimeout=120
InactiveLimit=0
NodeName=node1 NodeHostname=$host NodeAddr=127.0.0.1 Port=17001 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=2000 State=UNKNOWN
NodeName=node2 NodeHostname=$host NodeAddr=127.0.0.1 Port=17002 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP
EOF
rm -f "$conf_dir/cgroup.conf"

if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 0700 /etc/munge /var/lib/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
fi

say "starting slurmctld and two slurmd"
slurmctld -c
for n in node1 node2; do slurmd -N "$n"; done

for _ in $(seq 60); do
    if cluster_ready; then say "cluster up"; sinfo -N; exit 0; fi
    sleep 1
done
say "the Slurm daemons did not come up; logs follow" >&2
tail -n 30 "$log_dir"/*.log >&2 || true
exit 1

#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for kpbench's sweep tests (tests/test_sweep_slurm.py).
#
#   .ci/slurm.sh start    install slurm-wlm and munge when missing (Debian, as root), write the config, start
#                         munged, slurmctld and slurmd, and wait until the node takes jobs
#   .ci/slurm.sh stop     stop the daemons this script started (by the pids it recorded), and nothing else
#   .ci/slurm.sh status   say whether a cluster answers
#
# The cluster: one node, `localhost`, with this machine's CPUs and memory (`slurmd -C`), one partition `debug`
# (the default), no cgroups (proctrack/linuxproc, task/none) and no accounting (accounting_storage/none,
# jobacct_gather/none): `sacct` reports nothing, which is what the sweep's state reading must cope with.
# A slurm.conf that this script did not write (a real cluster's) is never touched: `start` then only checks that
# the cluster answers. Everything the script makes lives under $KPBENCH_SLURM_STATE (default /var/tmp/kpbench-slurm).
set -euo pipefail

STATE="${KPBENCH_SLURM_STATE:-/var/tmp/kpbench-slurm}"
CONF=/etc/slurm/slurm.conf
MARK="# written by kpbench .ci/slurm.sh"

say() { echo "slurm.sh: $*" >&2; }

answers() { timeout 10 sinfo -h -o %a >/dev/null 2>&1; }

node_idle() {  # the node takes jobs: idle, mixed or allocated, not down or drained
    local state
    state="$(timeout 10 sinfo -h -N -o %T 2>/dev/null | head -n1)"
    case "$state" in idle*|mixed*|allocated*|completing*) return 0 ;; *) return 1 ;; esac
}

install_packages() {
    if command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 && command -v sinfo >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        say "slurm-wlm and munge are not installed, and this is not root on Debian: cannot install them"
        return 1
    fi
    say "installing slurm-wlm and munge (apt-get)"
    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge) >"$STATE/apt.log" 2>&1 || {
        say "apt-get failed; see $STATE/apt.log"
        return 1
    }
}

write_config() {
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        say "$CONF exists and was not written by this script: using it as it is"
        return 0
    fi
    local node
    # `slurmd -C` prints this machine's NodeName=<host> CPUs=... RealMemory=...; the node is called localhost.
    node="$(slurmd -C | head -n1 | sed -E 's/^NodeName=[^ ]+ //')"
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$STATE/log"
    cat >"$CONF" <<EOF
$MARK: a single-node cluster for tests (see .ci/slurm.sh)
ClusterName=kpbench
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue/scontrol this long (the default); after that only the run directories tell.
MinJobAge=300
KillWait=10
NodeName=localhost $node State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if timeout 5 munge -n </dev/null 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; then
        return 0  # a munged already answers
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    else
        munged --force --pid-file=/run/munge/munged.pid
    fi
    cp /run/munge/munged.pid "$STATE/munged.pid"
}

start() {
    mkdir -p "$STATE"
    if command -v sinfo >/dev/null 2>&1 && answers; then
        say "a cluster already answers: using it"
        return 0
    fi
    install_packages
    write_config
    start_munge
    slurmctld -f "$CONF"
    slurmd -f "$CONF" -N localhost
    for _ in $(seq 1 60); do
        if answers && node_idle; then
            # a node left "down" by an earlier unclean stop comes back (ReturnToService=2 does it on registration)
            say "cluster up: $(sinfo -h -o '%P %D %T %c CPUs')"
            return 0
        fi
        sleep 0.5
    done
    timeout 10 scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
    if answers && node_idle; then
        say "cluster up (node resumed)"
        return 0
    fi
    say "the cluster did not come up; logs in $STATE/log"
    return 1
}

stop_pid_file() {
    local file="$1" pid
    [ -f "$file" ] || return 0
    pid="$(cat "$file" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    fi
    rm -f "$file"
}

stop() {
    # Only daemons this script started: their pid files live under $STATE.
    stop_pid_file "$STATE/slurmd.pid"
    stop_pid_file "$STATE/slurmctld.pid"
    stop_pid_file "$STATE/munged.pid"
    say "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) if command -v sinfo >/dev/null 2>&1 && answers; then sinfo; else say "no cluster answers"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

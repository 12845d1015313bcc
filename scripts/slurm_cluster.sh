#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the end-to-end test of the slurm profile and
# for trying the README's cluster section without a cluster: Debian's slurm-wlm and munge, the
# daemons started as plain processes (no systemd, no cgroups, no accounting database).
#
#   bash scripts/slurm_cluster.sh start    # installs slurm-wlm/munge if missing (as root), starts
#                                          # munged, slurmctld, slurmd; waits until the node is idle
#   (SLURM's commands find the cluster through /etc/slurm/slurm.conf, a link to the state folder's
#   conf made by start and removed by stop; `bash scripts/slurm_cluster.sh env` prints SLURM_CONF)
#   bash scripts/slurm_cluster.sh status
#   bash scripts/slurm_cluster.sh stop     # stops the three daemons by their recorded pids
#
# Settings (environment): APBENCH_SLURM_DIR, the state folder (default apbench-slurm-<uid> in the temporary folder, $TMPDIR or the system one;
# never the repository); APBENCH_SLURM_PORT, slurmctld's port (slurmd takes the next one; default
# 6817), so two clusters on one machine do not collide.
#
# slurm.conf: one node with this machine's CPUs and memory (`slurmd -C`), one partition "debug",
# select/cons_tres over cores and memory (a job asking more than the node has is refused at
# submission), proctrack/linuxproc and task/none (nothing needs cgroups), no accounting
# (accounting_storage/none: sacct cannot report jobs, so job status comes from squeue) and
# MinJobAge=300: squeue keeps showing a finished job (COMPLETED / FAILED / CANCELLED) for 300 s,
# long enough for the executor's status checks to see how it ended.
set -euo pipefail

STATE=${APBENCH_SLURM_DIR:-$(dirname "$(mktemp -u)")/apbench-slurm-$(id -u)}
PORT=${APBENCH_SLURM_PORT:-6817}
CONF=$STATE/etc/slurm.conf
# where every SLURM command looks without SLURM_CONF: the executor's job step drops SLURM_* from
# the environment of the srun it starts inside each job, so the conf must be found there
SYSTEM_CONF=/etc/slurm/slurm.conf
NODE=$(hostname -s)
WAIT_S=${APBENCH_SLURM_WAIT_S:-60}

die() { echo "slurm_cluster: error: $*" >&2; exit 1; }
say() { echo "slurm_cluster: $*" >&2; }

install_missing() {
    local missing=()
    for bin in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
        command -v "${bin%%:*}" >/dev/null || missing+=("${bin##*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        die "missing ${missing[*]}; install them: sudo apt-get install -y slurm-wlm munge"
    fi
    say "installing slurm-wlm and munge (apt-get)"
    apt-get update -qq
    # no daemons started by the packages' scripts: this script starts its own
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq slurm-wlm munge >/dev/null
}

pid_of() { [ -f "$STATE/run/$1.pid" ] && cat "$STATE/run/$1.pid" || true; }

alive() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

write_conf() {
    local user hw cpus mem
    user=$(id -un)
    hw=$(slurmd -C | head -1)
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    [ -n "$cpus" ] && [ -n "$mem" ] || die "could not read this node's CPUs and memory from 'slurmd -C': $hw"
    # slurmd refuses to register a node with less memory than configured: leave a little slack
    mem=$((mem * 95 / 100))
    mkdir -p "$STATE/etc" "$STATE/run" "$STATE/log" "$STATE/ctld" "$STATE/spool"
    cat >"$CONF.tmp" <<EOF
# written by scripts/slurm_cluster.sh: a one-node test cluster, daemons as plain processes
ClusterName=apbench
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/run/munge.socket
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

start_munge() {
    alive munged && return 0
    if [ ! -f "$STATE/etc/munge.key" ]; then
        # a key of this cluster's own (munge checks it is private to its owner)
        (umask 077; dd if=/dev/urandom of="$STATE/etc/munge.key" bs=1 count=1024 status=none)
    fi
    munged --key-file="$STATE/etc/munge.key" --socket="$STATE/run/munge.socket" \
        --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
        --seed-file="$STATE/run/munged.seed" --force
}

wait_idle() {
    local deadline=$((SECONDS + WAIT_S)) state=""
    while [ $SECONDS -lt $deadline ]; do
        state=$(SLURM_CONF=$CONF sinfo -h -N -n "$NODE" -o %T 2>/dev/null || true)
        if [ "$state" = idle ]; then
            say "node $NODE idle (SLURM_CONF=$CONF)"
            return 0
        fi
        sleep 0.5
    done
    say "node $NODE not idle after ${WAIT_S} s (state: '${state:-no answer}'); the daemons' logs:"
    tail -n 20 "$STATE"/log/*.log >&2 || true
    return 1
}

start() {
    install_missing
    mkdir -p "$STATE"
    chmod 700 "$STATE"
    if alive slurmctld && alive slurmd && alive munged; then
        say "already running (SLURM_CONF=$CONF)"
        wait_idle
        return
    fi
    write_conf
    start_munge
    link_conf
    export SLURM_CONF=$CONF
    # -c: a clean start, no jobs kept from an earlier cluster in this folder
    alive slurmctld || slurmctld -c -f "$CONF"
    alive slurmd || slurmd -f "$CONF" -N "$NODE"
    wait_idle || { stop; die "the cluster did not come up"; }
}

link_conf() {
    if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then
        return 0
    fi
    if [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
        die "$SYSTEM_CONF exists and is not this test cluster's; this script does not replace a real cluster's configuration"
    fi
    mkdir -p "$(dirname "$SYSTEM_CONF")" 2>/dev/null || true
    ln -s "$CONF" "$SYSTEM_CONF" 2>/dev/null ||
        die "cannot link $SYSTEM_CONF to $CONF (run as root): jobs' srun would find no configuration"
}

stop() {
    local name pid
    for name in slurmd slurmctld munged; do
        pid=$(pid_of "$name")
        [ -n "$pid" ] || continue
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$STATE/run/$name.pid"
    done
    if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then
        rm -f "$SYSTEM_CONF"
    fi
    say "stopped ($STATE)"
}

status() {
    local name ok=0
    for name in munged slurmctld slurmd; do
        if alive "$name"; then echo "$name: running (pid $(pid_of "$name"))"; else echo "$name: stopped"; ok=1; fi
    done
    [ $ok = 0 ] && SLURM_CONF=$CONF sinfo -N -o "%N %T %c %m %P"
    return $ok
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac

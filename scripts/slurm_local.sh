#!/usr/bin/env bash
# A real one-node SLURM cluster with accounting on this machine, from Debian's packages, to try
# and test cluster sweeps (hydra/launcher=submitit_slurm) against the real scheduler.
#
#   scripts/slurm_local.sh start    install the packages if missing, start munged, mariadbd,
#                                   slurmdbd, slurmctld and slurmd; prints "ready" once the node
#                                   is idle (does nothing to daemons already running)
#   scripts/slurm_local.sh stop     end each daemon by its PID file
#   scripts/slurm_local.sh status   one line per daemon and the node state; exit 0 when ready
#
# Needs root (the daemons run as root, and the configs go to /etc/slurm, where sbatch, srun and
# sinfo look for them). State, spool, logs and PID files live in $SLURM_LOCAL_DIR
# (default /var/lib/noisybench-slurm). The node advertises $SLURM_LOCAL_CPUS CPUs (default 8,
# whatever the machine has) so that several cells of a sweep can be scheduled at once.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/var/lib/noisybench-slurm}
CPUS=${SLURM_LOCAL_CPUS:-8}
CLUSTER=noisybench
PARTITION=debug
ETC=/etc/slurm
MARK="# written by noisybench scripts/slurm_local.sh"
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)
NODE=$(hostname -s)
# Seconds a daemon gets to come up (or to go away on stop) before we give up.
WAIT_S=${SLURM_LOCAL_WAIT_S:-60}

MUNGE_PID=/run/munge/munged.pid
# mariadbd runs as the mysql user: its PID file and log live in a folder that user owns.
MARIADB_DIR=$DIR/mariadb
MARIADB_PID=$MARIADB_DIR/mariadbd.pid
MARIADB_SOCK=/run/mysqld/mysqld.sock
SLURMDBD_PID=$DIR/run/slurmdbd.pid
SLURMCTLD_PID=$DIR/run/slurmctld.pid
SLURMD_PID=$DIR/run/slurmd.pid

say() { echo "slurm_local: $*" >&2; }
die() { say "error: $*"; exit 1; }

# A daemon is alive when its PID file names a live process with the expected command name.
alive() {  # pidfile name
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}

wait_for() {  # description command...
    local what=$1; shift
    local deadline=$((SECONDS + WAIT_S))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            die "$what did not happen within ${WAIT_S} s; logs: $DIR/log/"
        fi
        sleep 0.5
    done
}

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (the daemons run as root and write /etc/slurm)"
}

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]}"
    # Without an init system the packages' postinst would try to start their own services; the
    # daemons here are started by this script with its own configs, so service starts are denied.
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e $policy ]; then
        printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy && created=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
    [ $created = 1 ] && rm -f $policy
    [ $rc = 0 ] || die "apt-get install ${missing[*]} failed (exit $rc)"
}

# Writes $1 from stdin when its content differs; returns 0 when it changed.
write_if_changed() {
    local path=$1 new
    new=$(cat)
    if [ -e "$path" ] && ! grep -qF "$MARK" "$path"; then
        die "$path exists and was not written by this script; refusing to replace it"
    fi
    if [ -e "$path" ] && [ "$(cat "$path")" = "$new" ]; then
        return 1
    fi
    printf '%s\n' "$new" > "$path"
    return 0
}

write_configs() {
    mkdir -p "$ETC" "$DIR"/{ctld,spool,log,run}
    # The node line comes from slurmd -C (this machine's sockets, cores, memory); the CPU count is
    # overridden (SlurmdParameters=config_overrides) so that a 2-core machine runs several cells.
    local hw mem
    hw=$(slurmd -C | head -1)
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<< "$hw")
    [ -n "$mem" ] || die "could not read RealMemory from 'slurmd -C': $hw"
    changed=0
    write_if_changed "$ETC/slurm.conf" <<EOF && changed=1 || true
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start again cred_expire seconds after the requeue (SLURM's default: 120).
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$SLURMCTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Pending jobs are looked at every few seconds (SLURM's defaults: 60 s, backfill 30 s), so that a
# requeued job starts soon after it becomes eligible again.
SchedulerParameters=sched_interval=2,bf_interval=5
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
# A cancelled job gets SIGKILL this many seconds after SIGTERM (submitit ignores SIGTERM).
KillWait=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    # slurmdbd talks to MariaDB as root over its socket (unix_socket authentication): no password
    # to keep anywhere.
    dbd_changed=0
    write_if_changed "$ETC/slurmdbd.conf" <<EOF && dbd_changed=1 || true
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$SLURMDBD_PID
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$ETC/slurmdbd.conf"
}

start_munge() {
    if alive $MUNGE_PID munged && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    [ -s /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (reinstall the munge package)"
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
    wait_for "munged answering" sh -c 'munge -n | unmunge'
}

mariadb_up() { mariadb-admin --socket=$MARIADB_SOCK ping; }

start_mariadb() {
    if alive $MARIADB_PID mariadbd && mariadb_up >/dev/null 2>&1; then return; fi
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >"$DIR/log/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed; see $DIR/log/mariadb-install.log"
    mkdir -p /run/mysqld "$MARIADB_DIR" && chown mysql:mysql /run/mysqld "$MARIADB_DIR"
    # mariadbd stays in the foreground: detach it into its own session.
    setsid mariadbd --user=mysql --skip-networking --socket=$MARIADB_SOCK --pid-file=$MARIADB_PID \
        --log-error="$MARIADB_DIR/mariadb.log" </dev/null >/dev/null 2>&1 &
    wait_for "mariadbd answering" mariadb_up
    mariadb --socket=$MARIADB_SOCK -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db"
}

start_slurmdbd() {
    if [ "$dbd_changed" = 1 ] && alive $SLURMDBD_PID slurmdbd; then
        say "slurmdbd.conf changed: restarting slurmdbd"
        stop_daemon slurmdbd $SLURMDBD_PID
    fi
    alive $SLURMDBD_PID slurmdbd || slurmdbd
    wait_for "slurmdbd answering" sacctmgr -n list cluster
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx $CLUSTER; then
        sacctmgr -i add cluster $CLUSTER >/dev/null
    fi
}

ctld_up() { scontrol ping | grep -q "is UP"; }
node_ready() { sinfo -h -n "$NODE" -o %T | grep -Eq '^(idle|mixed|allocated)'; }

start_slurm() {
    local restart=$1
    if [ "$restart" = 1 ] && { alive $SLURMCTLD_PID slurmctld || alive $SLURMD_PID slurmd; }; then
        # A daemon running with an older slurm.conf puts the node in an unknown state.
        say "slurm.conf changed: restarting slurmctld and slurmd"
        stop_daemon slurmd $SLURMD_PID
        stop_daemon slurmctld $SLURMCTLD_PID
    fi
    alive $SLURMCTLD_PID slurmctld || slurmctld
    wait_for "slurmctld answering (scontrol ping)" ctld_up
    alive $SLURMD_PID slurmd || slurmd
    local deadline=$((SECONDS + WAIT_S)) state
    until node_ready 2>/dev/null; do
        state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
        # A node left down or drained by an earlier unclean stop is put back into service.
        case "$state" in
            down*|drain*|fail*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
        esac
        [ $SECONDS -lt $deadline ] || die "node $NODE is '$state', not idle, after ${WAIT_S} s; logs: $DIR/log/"
        sleep 0.5
    done
}

stop_daemon() {  # name pidfile
    local pid
    if ! alive "$2" "$1"; then
        return
    fi
    pid=$(cat "$2")
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + WAIT_S))
    while [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]; do
        if [ $SECONDS -ge $deadline ]; then
            say "$1 (pid $pid) ignored SIGTERM for ${WAIT_S} s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    say "stopped $1 (pid $pid)"
}

cmd_start() {
    need_root
    install_packages
    write_configs
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurm "$changed"
    echo ready
}

cmd_stop() {
    need_root
    stop_daemon slurmd $SLURMD_PID
    stop_daemon slurmctld $SLURMCTLD_PID
    stop_daemon slurmdbd $SLURMDBD_PID
    stop_daemon mariadbd $MARIADB_PID
    stop_daemon munged $MUNGE_PID
}

cmd_status() {
    local ok=0
    for d in "munged $MUNGE_PID" "mariadbd $MARIADB_PID" "slurmdbd $SLURMDBD_PID" \
             "slurmctld $SLURMCTLD_PID" "slurmd $SLURMD_PID"; do
        set -- $d
        if alive "$2" "$1"; then echo "$1: running (pid $(cat "$2"))"; else echo "$1: stopped"; ok=1; fi
    done
    local state
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    echo "node $NODE: ${state:-unknown}"
    [ $ok = 0 ] && node_ready 2>/dev/null && echo ready
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

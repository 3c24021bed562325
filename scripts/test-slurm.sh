#!/usr/bin/env bash
# A private one-host SLURM cluster for ds01's tests (issue 19). Installs nothing: .ci/setup-system.sh
# does (slurmctld slurmd slurmdbd slurm-client munge mariadb-server).
#
#   scripts/test-slurm.sh start DIR   start munged, a private mariadbd, slurmdbd, slurmctld and one
#                                     slurmd per NodeName, all configured under DIR/etc; print
#                                     `export SLURM_CONF=DIR/etc/slurm.conf`
#   scripts/test-slurm.sh stop DIR    cancel the cluster's jobs, stop every daemon that DIR's pid
#                                     files name, and remove the cgroups its jobs left
#   scripts/test-slurm.sh restart-slurmd DIR   stop and start every slurmd (after gres.conf changed)
#
# Before `start`, DIR/etc must hold what `ds01 slurm export --out DIR/etc` renders: slurm-ds01.conf
# (cluster name, GRES, nodes, partition, priority), gres.conf and cgroup.conf. This script writes
# only the site's part of slurm.conf — ports, paths, auth, accounting storage — and Includes
# ds01's snippet, exactly as an admin would. One slurmd runs for each NodeName of the snippet
# (`slurmd -N NODE`), so a snippet with two nodes is a two-node cluster on one host: Debian's
# SLURM is built with --enable-multiple-slurmd (`scontrol show config`: MULTIPLE_SLURMD = Yes),
# each node's spool, pid and log files are per node (%n), and its jobs' cgroups are under
# /sys/fs/cgroup/<controller>/slurm_<node>. Each node then needs a port of its own
# (cluster.nodes.<n>.port: the NodeName's Port=); a second slurmd on SlurmdPort fails with
# "Unable to bind listen port (N): Address already in use" in its log.
#
# Everything lives in DIR: a munge key of its own (so it never talks to the host's munged), its
# own TCP ports (free ones chosen at start), pid files, logs, state and a MariaDB data directory
# with its own socket and port, so nothing of the host's SLURM or MariaDB (if any) is touched.
# slurmstepd leaves a job's cgroup directories behind when the job made cgroups of its own
# (rootless podman's container under task_0), so `stop` removes the directories of the jobs
# this cluster ran (sacct names them) once they are empty.
set -euo pipefail

START_TIMEOUT_S="${DS01_TEST_SLURM_START_TIMEOUT:-60}"

die() { echo "test-slurm: $*" >&2; exit 1; }
log() { echo "test-slurm: $*" >&2; }

[ $# -eq 2 ] || { echo "usage: $0 start DIR | stop DIR | restart-slurmd DIR" >&2; exit 2; }
cmd="$1"
dir="$2"
case "$dir" in /*) ;; *) dir="$(pwd)/$dir" ;; esac
etc="$dir/etc"
run="$dir/run"
export SLURM_CONF="$etc/slurm.conf"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

alive() {  # alive PIDFILE NAME: the pid file names a live process called NAME
    local pid
    pid="$(cat "$1" 2>/dev/null || true)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

stop_one() {  # stop_one PIDFILE NAME
    local pid
    alive "$1" "$2" || { rm -f "$1"; return 0; }
    pid="$(cat "$1")"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$2 (pid $pid) ignored TERM; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

wait_for() {  # wait_for WHAT LOG COMMAND...: until COMMAND succeeds
    local what="$1" logf="$2"
    shift 2
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 30 "$logf" >&2 2>/dev/null || true
            die "$what did not come up within ${START_TIMEOUT_S}s (log: $logf)"
        fi
        sleep 0.2
    done
}

node_names() {
    sed -n 's/^NodeName=\([^ ]*\).*/\1/p' "$etc/slurm-ds01.conf"
}

start_munge() {
    mkdir -p "$dir/munge"
    chmod 0700 "$dir/munge"
    if [ ! -f "$dir/munge/munge.key" ]; then
        head -c 1024 /dev/urandom >"$dir/munge/munge.key"
        chmod 0400 "$dir/munge/munge.key"
    fi
    alive "$run/munged.pid" munged && return 0
    munged --key-file="$dir/munge/munge.key" --socket="$run/munge.socket" \
        --pid-file="$run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed"
    wait_for munged "$dir/log/munged.log" munge -S "$run/munge.socket" -n
}

start_db() {
    local data="$dir/db/data"
    if [ ! -d "$data/mysql" ]; then
        mkdir -p "$dir/db"
        mariadb-install-db --no-defaults --datadir="$data" --user=root \
            --auth-root-authentication-method=normal --skip-test-db \
            --innodb-log-file-size=8M >"$dir/log/mariadb-install.log" 2>&1 ||
            { tail -n 20 "$dir/log/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
    fi
    alive "$run/mariadbd.pid" mariadbd && return 0
    setsid mariadbd --no-defaults --datadir="$data" --user=root --socket="$run/mysqld.sock" \
        --port="$db_port" --bind-address=127.0.0.1 --skip-name-resolve \
        --pid-file="$run/mariadbd.pid" --log-error="$dir/log/mariadbd.log" \
        --innodb-buffer-pool-size=16M --innodb-log-file-size=8M </dev/null >/dev/null 2>&1 &
    wait_for mariadbd "$dir/log/mariadbd.log" \
        mariadb --no-defaults -S "$run/mysqld.sock" -uroot -e 'select 1'
    mariadb --no-defaults -S "$run/mysqld.sock" -uroot -e \
        "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'ds01test';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

write_confs() {
    cat >"$etc/slurmdbd.conf" <<EOF
# Written by scripts/test-slurm.sh: ds01's private test cluster.
AuthType=auth/munge
AuthInfo=socket=$run/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
PidFile=$run/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=ds01test
StorageLoc=slurm_acct_db
EOF
    chmod 0600 "$etc/slurmdbd.conf"
    cat >"$etc/slurm.conf" <<EOF
# Written by scripts/test-slurm.sh: the site's part of slurm.conf (ports, paths, auth); ds01's
# policy comes from the Include at the end (ds01 slurm export).
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$run/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$run/slurmctld.pid
SlurmdPidFile=$run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
# The munge socket for slurmdbd connections (AuthInfo covers only slurmctld and slurmd).
AccountingStoragePass=$run/munge.socket
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
MinJobAge=300
Include $etc/slurm-ds01.conf
EOF
}

start() {
    [ -f "$etc/slurm-ds01.conf" ] ||
        die "$etc/slurm-ds01.conf is missing: run 'ds01 slurm export --out $etc' first"
    for exe in munged mariadbd slurmdbd slurmctld slurmd sacctmgr; do
        command -v "$exe" >/dev/null ||
            die "$exe not found (run .ci/setup-system.sh: slurmctld slurmd slurmdbd munge mariadb-server)"
    done
    mkdir -p "$run" "$dir/log" "$dir/state" "$dir/spool"
    # munged requires every directory above its socket to be searchable by all (jobs run as
    # users); mktemp makes 0700 directories.
    chmod 0755 "$dir" "$run" "$etc"
    if [ -f "$dir/ports" ]; then
        # shellcheck disable=SC1091
        . "$dir/ports"
    else
        db_port=$(free_port) dbd_port=$(free_port) ctld_port=$(free_port) slurmd_port=$(free_port)
        printf 'db_port=%s\ndbd_port=%s\nctld_port=%s\nslurmd_port=%s\n' \
            "$db_port" "$dbd_port" "$ctld_port" "$slurmd_port" >"$dir/ports"
    fi
    start_munge
    start_db
    write_confs
    if ! alive "$run/slurmdbd.pid" slurmdbd; then
        slurmdbd
        wait_for slurmdbd "$dir/log/slurmdbd.log" sacctmgr -n show cluster
    fi
    local cluster
    cluster="$(sed -n 's/^ClusterName=//p' "$etc/slurm-ds01.conf")"
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$cluster"; then
        sacctmgr -i add cluster "$cluster" >/dev/null
    fi
    if ! alive "$run/slurmctld.pid" slurmctld; then
        slurmctld
        wait_for slurmctld "$dir/log/slurmctld.log" scontrol ping
    fi
    start_slurmds
    echo "export SLURM_CONF=$SLURM_CONF"
}

start_slurmds() {
    local node nodes
    nodes="$(node_names)"
    [ -n "$nodes" ] || die "no NodeName line in $etc/slurm-ds01.conf"
    for node in $nodes; do
        if ! alive "$run/slurmd-$node.pid" slurmd; then
            mkdir -p "$dir/spool/$node"
            slurmd -N "$node"
        fi
    done
    for node in $nodes; do
        wait_for "slurmd $node" "$dir/log/slurmd-$node.log" node_up "$node"
    done
}

stop_slurmds() {  # all at once: each takes a second or two to exit
    local f pids=()
    for f in "$run"/slurmd-*.pid; do
        if [ -e "$f" ]; then stop_one "$f" slurmd & pids+=($!); fi
    done
    [ "${#pids[@]}" -eq 0 ] || wait "${pids[@]}"
}

node_up() {  # the node answers and is not down or drained
    local state
    state="$(sinfo -h -n "$1" -o '%T' 2>/dev/null)"
    case "$state" in idle* | mixed* | allocated*) return 0 ;; *) return 1 ;; esac
}

cancel_jobs() {  # cancel every job of this cluster; wait until slurmctld has none left
    alive "$run/slurmctld.pid" slurmctld || return 0
    local ids
    ids="$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')"
    [ -n "${ids// /}" ] || return 0
    # shellcheck disable=SC2086
    scancel $ids 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while [ -n "$(squeue -h -o %i 2>/dev/null)" ] && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.2
    done
}

# The cgroup directories of this cluster's jobs: /sys/fs/cgroup/<ctrl>/slurm_<node>/uid_U/job_J
# for every job sacct knows (the jobs ids restart at 1 in every test cluster, so only these).
job_cgroups() {
    alive "$run/slurmdbd.pid" slurmdbd || return 0
    local node job uid
    sacct -a -X -n -P -o jobid,uid -S 2000-01-01 2>/dev/null | while IFS='|' read -r job uid; do
        [ -n "$uid" ] || continue
        for node in $(node_names); do
            for d in /sys/fs/cgroup/*/"slurm_$node/uid_$uid/job_$job"; do
                if [ -d "$d" ]; then echo "$d"; fi
            done
        done
    done
}

remove_cgroups() {  # remove_cgroups DIR...: depth first, each within 10 s
    local d p left deadline
    for d in "$@"; do
        deadline=$((SECONDS + 10))
        while [ -d "$d" ] && [ "$SECONDS" -lt "$deadline" ]; do
            # A process still in a stopped cluster's job (a container's, exiting) keeps its
            # directory busy until it is gone.
            for p in $(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null); do
                kill -KILL "$p" 2>/dev/null || true
            done
            find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || sleep 0.2
        done
        [ ! -d "$d" ] || log "could not remove $d (still in use)"
        # The user's and the node's directory go with their last job (another cluster's keep them).
        left="$(dirname "$d")"
        rmdir "$left" "$(dirname "$left")" 2>/dev/null || true
    done
}

stop() {
    [ -d "$dir" ] || { log "nothing to stop: $dir does not exist"; return 0; }
    cancel_jobs
    local cgroups
    cgroups="$(job_cgroups)"
    stop_slurmds
    # All at once: each takes a second or two to exit, and none needs another to stop.
    local pids=()
    stop_one "$run/slurmctld.pid" slurmctld & pids+=($!)
    stop_one "$run/slurmdbd.pid" slurmdbd & pids+=($!)
    stop_one "$run/mariadbd.pid" mariadbd & pids+=($!)
    stop_one "$run/munged.pid" munged & pids+=($!)
    wait "${pids[@]}"
    # shellcheck disable=SC2086
    [ -z "$cgroups" ] || remove_cgroups $cgroups
    log "stopped (state kept in $dir)"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    restart-slurmd)
        stop_slurmds
        start_slurmds
        ;;
    *) echo "usage: $0 start DIR | stop DIR | restart-slurmd DIR" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A private Docker engine for ds01's tests (BRIEF §5). Installs nothing: .ci/setup-system.sh does.
#
#   scripts/test-docker.sh start DIR   start dockerd on unix://DIR/docker.sock, build the test image,
#                                      print `export DS01_TEST_DOCKER_HOST=unix://DIR/docker.sock`
#   scripts/test-docker.sh stop DIR    stop that dockerd by its pid file and clean up DIR's mounts
#
# Everything the engine owns lives in DIR (data-root, exec-root, socket, pid file, log), so it
# never touches the host's own Docker (if any) and several can run side by side.
#
# Why these dockerd flags:
#   --bridge=none --iptables=false --ip-forward=false --ip-masq=false
#       The default bridge would create a host-wide `docker0` link, add iptables chains and turn on
#       ip_forward (setting the FORWARD policy to DROP) — changes to the shared host that outlive
#       the test engine and collide with a second private engine. With --bridge=none a plain
#       `docker run` (network mode "default") still works: the container gets its own network
#       namespace with only loopback. Tests need no network; dockerd prints "IPv4 forwarding is
#       disabled" warnings, which are expected.
#   --storage-driver overlay2, else vfs
#       overlay2 is what production uses and works on this sandbox's ext4; where the kernel or the
#       backing filesystem refuses it (nested overlay, some containers) we fall back to vfs, which
#       always works but copies every layer. DS01_TEST_STORAGE_DRIVER forces one.
#   PATH starts with DIR/bin holding a no-op `nvidia-container-runtime-hook`
#       dockerd registers its "nvidia" DeviceRequest driver only if that hook is on its PATH; with
#       it, --gpus / DeviceRequests are accepted and the container receives the requested IDs as
#       NVIDIA_VISIBLE_DEVICES, which is how tests prove GPU pinning without GPUs.
set -euo pipefail

IMAGE="ds01-test/busybox:latest"
START_TIMEOUT_S="${DS01_TEST_DOCKER_START_TIMEOUT:-60}"
STOP_TIMEOUT_S=20

die() { echo "test-docker: $*" >&2; exit 1; }
log() { echo "test-docker: $*" >&2; }

usage() {
    echo "usage: $0 start DIR | stop DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
cmd="$1"
dir="$2"
case "$dir" in /*) ;; *) dir="$(pwd)/$dir" ;; esac

sock="$dir/docker.sock"
pidfile="$dir/docker.pid"
data_root="$dir/data"
exec_root="$dir/exec"
logfile="$dir/dockerd.log"
export DOCKER_HOST="unix://$sock"

# The dockerd this script launched ($! — setsid execs dockerd in place), else the one the pid
# file names. dockerd writes its pid file only after it has started, so the pid file alone cannot
# tell "still starting" from "died".
launched_pid=""
dockerd_pid() {
    if [ -n "$launched_pid" ]; then
        echo "$launched_pid"
    elif [ -f "$pidfile" ]; then
        cat "$pidfile" 2>/dev/null || true
    fi
}

is_running() {  # a pid is alive *and* is a dockerd (a stale pid file may name a reused pid)
    local pid
    pid="$(dockerd_pid)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]
}

# `docker version` talks to the engine; the client (/usr/local/bin or Debian's) must exist.
answers() { timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

wait_until_answers() {
    local deadline=$((SECONDS + START_TIMEOUT_S))
    while ! answers; do
        if ! is_running; then
            tail -n 20 "$logfile" >&2 || true
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$logfile" >&2 || true
            die "dockerd did not answer on $sock within ${START_TIMEOUT_S}s (log: $logfile)"
        fi
        sleep 0.2
    done
}

launch() {  # launch STORAGE_DRIVER: start dockerd in the background, detached from our session
    local driver="$1"
    : >"$logfile"
    # setsid: dockerd must not die with the shell that started it (CI steps, `make`), and it
    # must not receive that shell's Ctrl-C.
    PATH="$dir/bin:$PATH" setsid dockerd \
        --data-root "$data_root" \
        --exec-root "$exec_root" \
        -H "unix://$sock" \
        --pidfile "$pidfile" \
        --storage-driver "$driver" \
        --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
        --log-level warn \
        </dev/null >>"$logfile" 2>&1 &
    launched_pid=$!
}

build_image() {
    if docker image inspect "$IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    local busybox=/bin/busybox
    [ -x "$busybox" ] || die "$busybox not found (run .ci/setup-system.sh: busybox-static)"
    # A dynamically linked busybox (Debian's `busybox` package) would need the host's libc in
    # the image; ldd fails on a static executable.
    if ldd "$busybox" >/dev/null 2>&1; then
        die "$busybox is dynamically linked; install busybox-static instead of busybox"
    fi
    local rootfs="$dir/rootfs"
    rm -rf "$rootfs"
    mkdir -p "$rootfs"/{bin,etc,home,root,tmp,proc,sys,dev}
    cp "$busybox" "$rootfs/bin/busybox"
    local applet
    for applet in $("$rootfs/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
    done
    chmod 1777 "$rootfs/tmp"
    chmod 0755 "$rootfs/home"
    cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/sh
EOF
    cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
    tar -C "$rootfs" --numeric-owner -c . |
        docker import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' - "$IMAGE" >/dev/null
    rm -rf "$rootfs"
    log "built $IMAGE"
}

start() {
    mkdir -p "$dir/bin"
    cat >"$dir/bin/nvidia-container-runtime-hook" <<'EOF'
#!/bin/sh
# Stand-in for NVIDIA's OCI hook (see scripts/test-docker.sh): dockerd only checks it exists.
exit 0
EOF
    chmod 0755 "$dir/bin/nvidia-container-runtime-hook"

    if is_running; then
        log "dockerd already running (pid $(dockerd_pid))"
        wait_until_answers || die "dockerd (pid $(dockerd_pid)) does not answer; run: $0 stop $dir"
    else
        command -v dockerd >/dev/null || die "dockerd not found (run .ci/setup-system.sh: docker.io)"
        command -v docker >/dev/null || die "docker client not found (run .ci/setup-system.sh)"
        rm -f "$sock" "$pidfile"
        local drivers=(overlay2 vfs) driver started=""
        [ -n "${DS01_TEST_STORAGE_DRIVER:-}" ] && drivers=("$DS01_TEST_STORAGE_DRIVER")
        # A data-root remembers its driver; reuse it rather than failing over on every start.
        [ -z "${DS01_TEST_STORAGE_DRIVER:-}" ] && [ -d "$data_root/vfs" ] && ! [ -d "$data_root/overlay2" ] &&
            drivers=(vfs)
        for driver in "${drivers[@]}"; do
            launch "$driver"
            if wait_until_answers; then
                started="$driver"
                break
            fi
            log "dockerd with storage driver $driver failed; trying the next one"
            stop_quietly
        done
        [ -n "$started" ] || die "dockerd did not start with any of: ${drivers[*]} (log: $logfile)"
        log "dockerd pid $(dockerd_pid), storage driver $started, socket $sock"
    fi
    build_image
    echo "export DS01_TEST_DOCKER_HOST=unix://$sock"
}

# Remove containers' mounts left under DIR (a killed dockerd leaves overlay and shm mounts behind),
# deepest first so parents unmount cleanly. Only mounts under DIR are touched.
unmount_leftovers() {
    local mnt
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r mnt; do
            umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
        done
}

stop_quietly() {
    local pid
    if is_running; then
        pid="$(dockerd_pid)"
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + STOP_TIMEOUT_S))
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "dockerd (pid $pid) ignored TERM for ${STOP_TIMEOUT_S}s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    fi
    launched_pid=""
    rm -f "$pidfile"
    # dockerd starts its own containerd (pid file under exec-root); it exits with dockerd after a
    # TERM, but not after a KILL. Check the name too: the pid may have been reused.
    local cpid
    cpid="$(cat "$exec_root/containerd/containerd.pid" 2>/dev/null || true)"
    if [ -n "$cpid" ] && [ "$(cat "/proc/$cpid/comm" 2>/dev/null)" = containerd ]; then
        kill -TERM "$cpid" 2>/dev/null || true
        sleep 1
        if kill -0 "$cpid" 2>/dev/null; then kill -KILL "$cpid" 2>/dev/null || true; fi
    fi
    kill_orphan_shims
    unmount_leftovers
    rm -f "$sock"
}

# After a KILLed dockerd/containerd the per-container shims (and the containers under them) keep
# running. Find the shims that belong to *this* engine by their -address under our exec-root and
# kill each container's init (which takes its whole pid namespace with it), then the shim.
kill_orphan_shims() {
    local p cmdline shim child
    for p in /proc/[0-9]*; do
        cmdline="$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null || true)"
        case "$cmdline" in
            *containerd-shim*"-address $exec_root/"*) ;;
            *) continue ;;
        esac
        shim="${p#/proc/}"
        # shellcheck disable=SC2013  # the file is a space-separated list of pids: words are wanted
        for child in $(cat "/proc/$shim/task/"*/children 2>/dev/null); do
            kill -KILL "$child" 2>/dev/null || true
        done
        kill -KILL "$shim" 2>/dev/null || true
        log "killed orphaned containerd shim $shim"
    done
}

stop() {
    [ -d "$dir" ] || { log "nothing to stop: $dir does not exist"; return 0; }
    stop_quietly
    log "stopped (data kept in $dir; remove it to start from scratch)"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac

#!/usr/bin/env bash
# The ds01 demo, from a fresh Debian machine: installs what is needed, starts a private Docker
# engine and ds01d on a simulated 8×H100 machine (some GPUs split into MIG slices), deploys a
# container pinned to a MIG slice, and shows the status views. Everything lives in
# /tmp/ds01-demo and is stopped at the end (pass --keep to leave it running and explore).
#
#   ./scripts/demo.sh [--keep]      (as root)
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[ "${1:-}" = "--keep" ] && keep=1

if [ "$(id -u)" -ne 0 ]; then
    echo "demo: run as root (it installs Debian packages and starts dockerd): sudo $0" >&2
    exit 1
fi

echo "demo: installs the Debian packages it needs that are missing (docker.io, busybox-static,"
echo "  python3-venv, python3-pip, util-linux, libc-bin, tar, procps), puts ds01 into $(pwd)/.venv,"
echo "  and runs a private Docker engine and ds01d under /tmp/ds01-demo (never the system's Docker)."
bash .ci/setup-system.sh --demo python3-venv python3-pip
bash scripts/bootstrap.sh

demo=/tmp/ds01-demo
mkdir -p "$demo"
chmod 755 "$demo"
eval "$(bash scripts/test-docker.sh start "$demo/dockerd")"

cat > "$demo/ds01.yaml" <<YAML
# Demo config: everyone may use whole GPUs, up to 2 GPUs' worth each.
admin_group: ds01-admin
defaults:
  max_gpueq: 2
  max_units_per_container: 2
  max_containers: 4
  allow_full_gpu: true
  cpus: 2
  memory: 2g
  gpu_hold_after_stop: 10m
docker:
  host: ${DS01_TEST_DOCKER_HOST}
YAML

export DS01_CONFIG=$demo/ds01.yaml DS01_STATE_DIR=$demo/state DS01_RUN_DIR=$demo/run
export PATH="$(pwd)/.venv/bin:$PATH"

stop_all() {
    local stopped=()
    if [ -n "${daemon_pid:-}" ] && kill "$daemon_pid" 2>/dev/null; then
        wait "$daemon_pid" 2>/dev/null || true
        stopped+=("ds01d (pid $daemon_pid)")
    fi
    docker -H "$DS01_TEST_DOCKER_HOST" rm -f root.demo >/dev/null 2>&1 &&
        stopped+=("the container 'demo' (removed; its GPU went back)")
    bash scripts/test-docker.sh stop "$demo/dockerd" >/dev/null 2>&1 &&
        stopped+=("the demo Docker engine ($demo/dockerd)")
    echo
    local list="nothing was running"
    if [ "${#stopped[@]}" -gt 0 ]; then
        printf -v list '%s; ' "${stopped[@]}"
        list=${list%; }
    fi
    echo "demo: stopped: $list"
    summary_left
}
summary_left() {
    echo "demo: left: $demo (config ds01.yaml, state/ds01.db, ds01d.log, the engine's images);"
    echo "  remove it with: rm -rf $demo"
    echo "demo: left: $(pwd)/.venv (ds01 installed there) and the Debian packages it installed"
}
[ "$keep" -eq 1 ] || trap stop_all EXIT

ds01d --sim 8xH100-mig-mixed >"$demo/ds01d.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do
    ds01 quota >/dev/null 2>&1 && break
    sleep 0.1
done

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step ds01 gpu status
step ds01 container deploy demo --image ds01-test/busybox:latest --mig 3g.40gb --detach
step ds01 container list
step ds01 gpu status
step ds01 quota

if [ "$keep" -eq 1 ]; then
    cat <<TXT

ds01d (pid $daemon_pid) and the demo Docker engine keep running. To explore:
  export DS01_CONFIG=$DS01_CONFIG DS01_STATE_DIR=$DS01_STATE_DIR DS01_RUN_DIR=$DS01_RUN_DIR
  export PATH=$(pwd)/.venv/bin:\$PATH
  ds01 container shell demo
Stop everything: kill $daemon_pid; bash scripts/test-docker.sh stop $demo/dockerd
TXT
    echo "demo: left running (--keep): ds01d (pid $daemon_pid), the container 'demo', the demo Docker engine"
    summary_left
fi

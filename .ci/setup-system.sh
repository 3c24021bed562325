#!/usr/bin/env bash
# System packages ds01's tests need on a Debian/Ubuntu host (BRIEF §5). Idempotent: installs only
# what is missing and runs `apt-get update` only then. Python packages are not ours (.ci/run
# installs the project into .venv).
#
#   docker.io       dockerd + containerd + runc for the private test engine (scripts/test-docker.sh)
#   docker-compose  Compose (1.29) as users run it through the gate (tests/gate/test_gate_everyday.py)
#   busybox-static  the statically linked busybox the test image is made from (no registry here)
#   util-linux      setpriv / runuser / su, to act as the real Unix users the tests create
#   passwd          useradd / userdel / groupadd
#   libc-bin        ldd (test-docker.sh checks busybox is static), getent
#   tar, procps     the image rootfs tarball; pgrep/ps in tests
#   faketime        libfaketime: steps a real ds01d's wall clock (tests/daemon/test_clock_step.py)
#   prometheus      a real Prometheus (and its promtool) scrapes ds01d's /metrics and evaluates
#                   the shipped rules (tests/containers/test_metrics_prometheus.py, tests/metrics/)
#   gcc, libc6-dev  cc builds the stand-in libcuda.so.1 and nvidia-smi the doctor's compute and
#                   wrapper tests and `scripts/gpu-host-check.sh --self-test` use (no GPU in CI)
#   chromium        headless, driven over the DevTools protocol: the web status page's tests
#                   (tests/web/; no chromium-driver needed)
#   nodejs, npm     run and install the VS Code Dev Containers CLI (scripts/devcontainer-cli.sh)
#                   that tests/gate/test_gate_devcontainer.py drives through the gate; npm only
#                   where no npm is installed (NodeSource's nodejs bundles it and conflicts)
#   git             `ds01 project init` runs git init (tests/gate/test_images_projects_e2e.py)
#   slurmctld, slurmd, slurmdbd, slurm-client, munge, mariadb-server
#                   a real one-host SLURM cluster with accounting (scripts/test-slurm.sh) for
#                   `ds01 slurm export` and the doctor's slurm checks (tests/slurm/); ~25 s to
#                   install, the cluster with a private mariadbd starts in ~3 s
#   podman, uidmap  the SLURM backend's runtime: a rootless podman container inside the user's
#                   job (tests/slurm/test_slurm_containers.py); uidmap's newuidmap/newgidmap map
#                   the user's /etc/subuid range (useradd adds one on Debian 12). No recommends:
#                   the jobs use the node's network (no slirp4netns) and runc
#
# Extra package names given as arguments are installed the same way (e.g. prometheus, chromium).
# `--demo` first installs only what scripts/demo.sh needs (no SSH server, no compose, no sudo).
# Installing docker.io may start the system's own docker.service where systemd runs; the tests
# never use it (they talk to the private engine only).
set -euo pipefail

if [ "${1:-}" = "--demo" ]; then
    shift
    packages=(docker.io busybox-static util-linux passwd libc-bin tar procps "$@")
else
    packages=(docker.io docker-compose busybox-static util-linux passwd libc-bin tar procps openssh-server openssh-client sudo faketime gcc libc6-dev chromium nodejs prometheus slurmctld slurmd slurmdbd slurm-client munge mariadb-server git podman uidmap "$@")
    command -v npm >/dev/null || packages+=(npm)
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-system: must run as root (apt-get install)" >&2
    exit 1
fi
command -v apt-get >/dev/null || {
    echo "setup-system: needs apt-get (Debian/Ubuntu); install by hand: ${packages[*]}" >&2
    exit 1
}

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for pkg in "${packages[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "setup-system: all present: ${packages[*]}"
    exit 0
fi

echo "setup-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

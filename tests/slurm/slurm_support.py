"""What the SLURM test modules share: the tools they need, stand-in GPU device files, a private
cluster (scripts/test-slurm.sh) started from what `ds01 slurm export` renders, and a busybox
image in real users' rootless podman stores (no registry)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from support import ROOT, as_user, need

DS01 = str(Path(sys.executable).parent / "ds01")
SCRIPT = ROOT / "scripts" / "test-slurm.sh"
IMAGE = "localhost/ds01-test-busybox:1"
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
# One node's four stand-in GPUs (path, minor of the mem driver, major 1), and its machine file.
STANDINS = [(f"/dev/ds01test-nvidia{i}", minor) for i, minor in enumerate((5, 7, 8, 9))]
MACHINE = ROOT / "src" / "ds01" / "machines" / "4xA100-40GB.yaml"


def need_root_and(*tools: str) -> None:
    """Root, and SLURM's daemons plus `tools` installed (in CI: a failure, never a skip)."""
    need(os.geteuid() == 0, "the SLURM tests run as root (mknod, daemons, real users)")
    missing = [t for t in (*DAEMONS, *tools) if shutil.which(t) is None]
    need(not missing, f"not installed: {', '.join(missing)} (bash .ci/setup-system.sh)")


def cluster_env(base: Path) -> dict[str, str]:
    """This process's environment without ds01's, SLURM's or Docker's settings, pointed at the
    cluster in `base`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DS01_", "SLURM_")) and k != "DOCKER_HOST"
    }
    env["SLURM_CONF"] = str(base / "etc" / "slurm.conf")
    return env


@contextmanager
def standins(files: Sequence[tuple[str, int]]) -> Iterator[None]:
    """Stand-in GPU files made with mknod: (path, minor) of the mem driver (major 1) — zero,
    full, random, urandom: distinct char devices anyone can open, so the cgroup devices
    controller tells them apart. Removed afterwards."""
    for path, minor in files:
        if os.path.exists(path):
            os.unlink(path)
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        os.chmod(path, 0o666)
    try:
        yield
    finally:
        for path, _ in files:
            if os.path.exists(path):
                os.unlink(path)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, env=env, timeout=120, check=False
    )


def start_cluster(base: Path, config: Path, env: dict[str, str]) -> None:
    """Export `config` into base/etc, start the cluster there, apply its sacctmgr script."""
    done = run(env, DS01, "--config", str(config), "slurm", "export", "--out", str(base / "etc"))
    assert done.returncode == 0, done.stderr
    done = run(env, "bash", str(SCRIPT), "start", str(base))
    assert done.returncode == 0, done.stderr
    done = run(env, "sh", str(base / "etc" / "sacctmgr.sh"))
    assert done.returncode == 0, done.stdout + done.stderr


def stop_cluster(base: Path, env: dict[str, str]) -> None:
    run(env, "bash", str(SCRIPT), "stop", str(base))


def import_busybox(base: Path, users: Sequence[str]) -> None:
    """IMAGE in each user's own rootless store, from a busybox rootfs tar."""
    rootfs = base / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for tool in ("sh", "ls", "grep", "tr", "echo", "sleep", "cat"):
        (rootfs / "bin" / tool).symlink_to("busybox")
    (rootfs / "dev").mkdir()
    tar = base / "busybox.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    tar.chmod(0o644)
    for user in users:
        done = as_user(user, ["podman", "import", str(tar), IMAGE], cwd="/tmp")
        assert done.returncode == 0, done.stderr

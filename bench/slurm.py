"""Benchmark: `ds01 container deploy` with `cluster.backend: slurm`, deploy → container running,
against `sbatch --wrap` of the same `podman run` directly, in the same run (issue 19; aim ≤ 1.3×).

Starts a real one-host cluster (scripts/test-slurm.sh: munged, a private mariadbd, slurmdbd,
slurmctld, slurmd) from `ds01 slurm export`, with the tests' stand-in GPU files
/dev/ds01test-nvidia0..3, makes one real user with a busybox image in their rootless podman
store, and alternates, N rounds each:

  * ds01: `ds01 container deploy bN --image IMG --gpus 1 -- sh -c 'echo started; sleep 60'` as
    the user, until the job's output file holds "started"; then `ds01 container stop bN`.
  * baseline: `sbatch --gres=gpu:a100:1 --wrap "podman run --rm --network=host --device=…
    IMG sh -c '…'"` as the user (the device picked from SLURM_JOB_GPUS), until its output holds
    "started"; then scancel.

Both wait until the job is gone before the next round, so each starts on an idle cluster.
Nothing asserts; it prints p50 of each and the ratio. Root only (mknod, daemons, useradd):

    .venv/bin/python bench/slurm.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import pwd
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DS01 = str(Path(sys.executable).parent / "ds01")
SCRIPT = ROOT / "scripts" / "test-slurm.sh"
STANDINS = [(f"/dev/ds01test-nvidia{i}", minor) for i, minor in enumerate((5, 7, 8, 9))]
IMAGE = "localhost/ds01-bench-busybox:1"
USER = "ds01bslurm"
CONFIG = f"""
defaults: {{allow_full_gpu: true, max_gpueq: 4, max_units_per_container: 4, max_runtime: 4h}}
groups:
  bench: {{members: [{USER}]}}
gpu: {{backend: sim, sim_machine: {ROOT}/src/ds01/machines/4xA100-40GB.yaml}}
cluster:
  backend: slurm
  name: ds01bench
  nodes:
    ds01n1: {{machine: 4xA100-40GB, device_files: "/dev/ds01test-nvidia{{index}}",
              address: 127.0.0.1, cpus: 2}}
"""
PAYLOAD = "echo started; sleep 60"


def as_user(args: list[str], env: dict[str, str]) -> str:
    pw = pwd.getpwnam(USER)
    full = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": pw.pw_dir,
        "USER": USER,
        "LOGNAME": USER,
        "LANG": "C.UTF-8",
        "SLURM_CONF": env["SLURM_CONF"],
    }
    cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", *args]
    done = subprocess.run(cmd, env=full, capture_output=True, text=True, cwd="/tmp", check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])}: {done.stderr.strip()}")
    return done.stdout


def wait_file(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if text in path.read_text():
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"{path} never said {text!r}")


def wait_queue_empty(env: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-u", USER], env=env, capture_output=True, text=True, check=False
        ).stdout
        if not out.strip():
            return
        time.sleep(0.05)
    raise SystemExit("the queue never emptied")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    if os.geteuid() != 0:
        raise SystemExit("run as root (mknod, the cluster's daemons, a real user)")
    base = Path(tempfile.mkdtemp(prefix="ds01-bslurm-", dir="/tmp"))
    base.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DS01_", "SLURM_"))}
    env["SLURM_CONF"] = str(base / "etc" / "slurm.conf")
    for path, minor in STANDINS:
        if os.path.exists(path):
            os.unlink(path)
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        os.chmod(path, 0o666)
    subprocess.run(["useradd", "--create-home", USER], check=True, capture_output=True)
    try:
        config = base / "ds01.yaml"
        config.write_text(CONFIG)
        config.chmod(0o644)
        for setup in (
            [DS01, "--config", str(config), "slurm", "export", "--out", str(base / "etc")],
            ["bash", str(SCRIPT), "start", str(base)],
            ["sh", str(base / "etc" / "sacctmgr.sh")],
        ):
            subprocess.run(setup, env=env, check=True, capture_output=True)
        rootfs = base / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "dev").mkdir()
        shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
        for tool in ("sh", "echo", "sleep"):
            (rootfs / "bin" / tool).symlink_to("busybox")
        tar = base / "busybox.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
        tar.chmod(0o644)
        as_user(["podman", "import", str(tar), IMAGE], env)
        home = Path(pwd.getpwnam(USER).pw_dir)
        logs = home / ".ds01" / "jobs"

        def ds01_round(i: int) -> float:
            name = f"b{i}"
            t0 = time.perf_counter()
            cmd = [DS01, "--config", str(config), "container", "deploy", name, "--image", IMAGE]
            out = as_user([*cmd, "--gpus", "1", "--", "sh", "-c", PAYLOAD], env)
            job = out.split("SLURM job ", 1)[1].split(",", 1)[0]
            wait_file(logs / f"{name}-{job}.log", "started")
            took = time.perf_counter() - t0
            as_user([DS01, "--config", str(config), "container", "stop", name], env)
            wait_queue_empty(env)
            return took

        wrap = (
            "dev=/dev/ds01test-nvidia$SLURM_JOB_GPUS; exec podman run --rm --network=host"
            f' --device=$dev {IMAGE} sh -c "{PAYLOAD}"'
        )

        def sbatch_round(i: int) -> float:
            out_file = home / f"wrap-{i}.log"
            t0 = time.perf_counter()
            job = as_user(
                [
                    "sbatch",
                    "--parsable",
                    "--gres=gpu:a100:1",
                    f"--output={out_file}",
                    "--wrap",
                    wrap,
                ],
                env,
            ).strip()
            wait_file(out_file, "started")
            took = time.perf_counter() - t0
            subprocess.run(["scancel", job], env=env, check=True)
            wait_queue_empty(env)
            return took

        ds01_times: list[float] = []
        sbatch_times: list[float] = []
        ds01_round(-1)  # warm podman's store and the CLI's imports once
        for i in range(rounds):
            sbatch_times.append(sbatch_round(i))
            ds01_times.append(ds01_round(i))
        d, s = statistics.median(ds01_times), statistics.median(sbatch_times)
        print(f"machine: {platform.node()} {os.cpu_count()} CPUs, {platform.platform()}")
        print(f"## SLURM backend: deploy → running ({rounds} rounds, p50)\n")
        print("| path | p50 s | min s | max s |\n|---|---|---|---|")
        for label, times in (
            ("sbatch --wrap podman run", sbatch_times),
            ("ds01 container deploy", ds01_times),
        ):
            p50 = statistics.median(times)
            print(f"| {label} | {p50:.3f} | {min(times):.3f} | {max(times):.3f} |")
        print(f"\nratio ds01 / sbatch: {d / s:.2f}× (aim ≤ 1.3×)")
    finally:
        for cleanup in (
            ["scancel", "-u", USER],
            ["bash", str(SCRIPT), "stop", str(base)],
            ["pkill", "-KILL", "-u", USER],  # the bench user's own podman pause process
            ["userdel", "--remove", USER],
        ):
            subprocess.run(cleanup, env=env, check=False, capture_output=True)
        for path, _ in STANDINS:
            if os.path.exists(path):
                os.unlink(path)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

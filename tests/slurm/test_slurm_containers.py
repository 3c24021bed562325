"""`cluster.backend: slurm`: `ds01 container deploy/list/logs/inspect/stop` as SLURM batch jobs
running rootless podman, against a real one-host cluster (scripts/test-slurm.sh).

One cluster and one real user for the module. The user's podman store gets a busybox image
imported from a local rootfs tar (no registry). The four "GPUs" are the stand-in device files
of test_slurm_cluster.py; nothing from SLURM or podman is mocked.
"""

from __future__ import annotations

import json
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from slurm_support import (
    DS01,
    IMAGE,
    MACHINE,
    STANDINS,
    cluster_env,
    import_busybox,
    need_root_and,
    standins,
    start_cluster,
    stop_cluster,
)

from support import Users, as_user, short_tmp, wait_for

CONFIG = f"""
defaults: {{allow_full_gpu: true, max_gpueq: 1, max_units_per_container: 2, max_runtime: 4h}}
groups:
  student: {{members: [STUDENT]}}
gpu: {{backend: sim, sim_machine: {MACHINE}}}
cluster:
  backend: slurm
  name: ds01ctr
  nodes:
    ds01n1:
      machine: 4xA100-40GB
      device_files: "/dev/ds01test-nvidia{{index}}"
      address: 127.0.0.1
      cpus: 2
"""

# In the container: how many of the four stand-ins it can open, which exist, the GPUs it was
# told, its cgroups (the job's), and a file in the workspace (owned by the user outside).
PROBE = (
    "n=0; for f in /dev/ds01test-nvidia0 /dev/ds01test-nvidia1 /dev/ds01test-nvidia2 "
    '/dev/ds01test-nvidia3; do (: <"$f") 2>/dev/null && n=$((n+1)); done; echo "opened=$n"; '
    'echo "present=$(ls /dev | grep ds01test | tr "\\n" " ")"; '
    'echo "visible=$NVIDIA_VISIBLE_DEVICES"; grep devices /proc/self/cgroup; '
    "echo hello > /workspace/out.txt; echo ready; sleep 300"
)


@dataclass
class Site:
    dir: Path
    config: Path
    env: dict[str, str]
    user: str

    def ds01(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`ds01` as the user, on the cluster: their own sbatch/squeue/scancel."""
        return as_user(
            self.user,
            [DS01, "--config", str(self.config), *args],
            env={"SLURM_CONF": self.env["SLURM_CONF"]},
            cwd="/tmp",
        )

    def json(self, *args: str) -> Any:
        done = self.ds01(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def state(self, name: str) -> dict[str, str] | None:
        return next((j for j in self.json("container", "list") if j["name"] == name), None)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    need_root_and("podman", "newuidmap")
    users = Users()
    base = short_tmp("ds01-slurmc-")
    env = cluster_env(base)
    s = Site(base, base / "ds01.yaml", env, users.add())
    try:
        with standins(STANDINS):
            s.config.write_text(CONFIG.replace("STUDENT", s.user))
            s.config.chmod(0o644)
            start_cluster(base, s.config, env)
            try:
                import_busybox(base, [s.user])
                yield s
            finally:
                subprocess.run(["scancel", "-u", s.user], capture_output=True, env=env)
                stop_cluster(base, env)
    finally:
        users.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def test_deploy_runs_a_rootless_container_in_the_job_with_exactly_its_gpu(site: Site) -> None:
    home = Path(pwd.getpwnam(site.user).pw_dir)
    workspace = home / "ws"
    as_user(site.user, ["mkdir", "-p", str(workspace)], check=True)
    done = site.ds01(
        "container", "deploy", "train", "--image", IMAGE, "--gpus", "1",
        "--workspace", str(workspace), "--", "sh", "-c", PROBE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("train: SLURM job ")
    assert "GPUs gpu:a100:1" in done.stdout

    running = wait_for(
        lambda: (j := site.state("train")) and j["state"] == "RUNNING" and j, "train running"
    )
    assert running["gres"] == "gpu:a100:1"
    assert running["nodes"] == "ds01n1"

    def probed() -> str:
        out = site.ds01("container", "logs", "train").stdout
        return out if "ready" in out else ""

    log = wait_for(probed, "the container's probe in its log")
    lines = log.splitlines()
    # Exactly the job's one stand-in exists in the container and opens; the job was told which.
    assert "opened=1" in lines
    present = next(x for x in lines if x.startswith("present=")).split("=", 1)[1].split()
    assert len(present) == 1
    index = present[0].removeprefix("ds01test-nvidia")
    assert f"visible={index}" in lines
    # The container's processes are in the job's devices cgroup (SLURM's constraint applies).
    assert any(f"job_{running['id']}" in x for x in lines if "devices" in x), log
    # The workspace is mounted, and what the container writes there is the user's.
    written = workspace / "out.txt"
    assert written.read_text() == "hello\n"
    assert written.stat().st_uid == pwd.getpwnam(site.user).pw_uid

    shown = site.json("container", "inspect", "train")["job"]
    assert shown["JobName"] == "ds01:train"
    assert shown["UserId"].startswith(f"{site.user}(")
    assert shown["Account"] == "student"
    assert shown["TimeLimit"] == "04:00:00"  # the QOS's MaxWall from max_runtime

    # Over the QOS limit (max_gpueq 1): the second container waits with SLURM's reason.
    second = site.ds01(
        "container", "deploy", "second", "--image", IMAGE, "--gpus", "1", "--", "echo", "second ran"
    )
    assert second.returncode == 0, second.stderr
    pending = wait_for(
        lambda: (j := site.state("second")) and j["reason"] == "QOSMaxBillingPerUser" and j,
        "the second container pending on the QOS",
    )
    assert pending["state"] == "PENDING"
    table = site.ds01("container", "list")
    assert "QOSMaxBillingPerUser" in table.stdout and "running" in table.stdout
    # ds01 quota reads the QOS's limits and use; ds01 queue shows the wait with sprio's factors.
    quota = site.json("quota")
    assert (quota["account"], quota["qos"]) == ("student", "ds01-student")
    assert (quota["gpueq_used"], quota["gpueq_limit"]) == ("1", "1")
    assert quota["containers_running"] == 1
    assert quota["max_runtime_min"] == 240
    waiting = site.json("queue")
    assert [(w["name"], w["reason"], w["user"]) for w in waiting] == [
        ("second", "QOSMaxBillingPerUser", site.user)
    ]
    assert all(isinstance(waiting[0][k], int) for k in ("priority", "age", "fairshare", "qos"))

    # A name already in the queue is refused, and nothing is submitted.
    again = site.ds01("container", "deploy", "train", "--image", IMAGE, "--", "true")
    assert again.returncode == 1
    assert "already have a container named 'train'" in again.stderr
    assert [j["name"] for j in site.json("container", "list")].count("train") == 1

    # Stop ends the job (scancel); the waiting one then runs, ends, and keeps its output.
    stopped = site.ds01("container", "stop", "train")
    assert stopped.returncode == 0, stopped.stderr
    assert f"SLURM job {running['id']} cancelled" in stopped.stdout
    wait_for(lambda: site.state("train") is None, "train gone from the queue")
    wait_for(lambda: site.state("second") is None, "second to run and end", timeout=60)
    out = site.ds01("container", "logs", "second")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "second ran\n"
    followed = site.ds01("container", "logs", "second", "--follow")  # ends with its job
    assert followed.stdout == "second ran\n"
    # The stopped one's output ends with SLURM's own word on it.
    last = site.ds01("container", "logs", "train", "--tail", "2").stdout.splitlines()
    assert last[0] == "ready"
    assert f"JOB {running['id']} ON ds01n1 CANCELLED" in last[1]

    gone = site.ds01("container", "stop", "train")
    assert gone.returncode == 1
    assert "no container named 'train'" in gone.stderr


def test_deploy_without_a_command_or_by_gpueq_is_refused(site: Site) -> None:
    bare = site.ds01("container", "deploy", "x", "--image", IMAGE, "--gpus", "1")
    assert bare.returncode == 2
    assert "runs a command as a batch job" in bare.stderr
    by_gpueq = site.ds01("container", "deploy", "x", "--image", IMAGE, "--gpueq", "1", "--", "true")
    assert by_gpueq.returncode == 2
    assert "--gpueq" in by_gpueq.stderr
    assert site.json("container", "list") == []


def test_single_server_commands_refuse_with_what_to_type_and_the_pointer_works(site: Site) -> None:
    done = site.ds01(
        "container", "deploy", "steps", "--image", IMAGE, "--gpus", "1", "--",
        "sh", "-c", "echo up; sleep 300",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = wait_for(
        lambda: (j := site.state("steps")) and j["state"] == "RUNNING" and j, "steps running"
    )["id"]
    wait_for(lambda: "up" in site.ds01("container", "logs", "steps").stdout, "the container up")

    def refused(*args: str) -> str:
        r = site.ds01("container", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "single-server command" in r.stderr and "cluster.backend: slurm" in r.stderr
        assert r.stdout == ""
        return r.stderr

    assert "Deploy it again: ds01 container deploy steps --image IMG" in refused("start", "steps")
    assert "then deploy it again" in refused("restart", "steps")
    assert "nothing to keep alive" in refused("keep-alive", "steps", "--for", "1h")
    assert f"sstat --jobs {job}.batch" in refused("stats", "steps")
    assert f"srun --jobid {job} --overlap --pty podman exec -it " in refused("shell", "steps")
    # The pointer exec prints is a command that works: a step of the job, in its container.
    told = refused("exec", "steps", "--", "echo", "hi")
    pointer = next(x for x in told.splitlines() if "srun --jobid" in x)
    words = pointer.split(": ", 1)[1].split()
    assert words[:5] == ["srun", "--jobid", job, "--overlap", "podman"]
    assert words[-1] == "CMD"
    inside = as_user(
        site.user,
        [*words[:-1], "sh", "-c", "echo inside; ls /dev | grep -c ds01test"],
        env={"SLURM_CONF": site.env["SLURM_CONF"]},
        cwd="/tmp",
    )
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.split() == ["inside", "1"]
    # A name without a running job still gets the command, with where to find the job id.
    assert "JOBID: ds01 container list" in refused("exec", "nosuch", "--", "true")
    # Nothing was started, stopped or queued by any of them.
    assert [(j["name"], j["id"], j["state"]) for j in site.json("container", "list")] == [
        ("steps", job, "RUNNING")
    ]

    # retire is stop here: a job's container is removed when it ends.
    retired = site.ds01("container", "retire", "steps")
    assert retired.returncode == 0, retired.stderr
    assert f"SLURM job {job} cancelled" in retired.stdout
    wait_for(lambda: site.state("steps") is None, "steps gone from the queue")

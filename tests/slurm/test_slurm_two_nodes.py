"""One ds01.yaml on a real two-node SLURM cluster: SLURM places the users' `ds01 container deploy`
across both nodes (docs/slurm.md "Two nodes").

scripts/test-slurm.sh runs one slurmd per NodeName of the exported snippet, on this one host:
ds01p1 and ds01p2, each on a port of its own (cluster.nodes.<n>.port), each with two stand-in
"GPUs" of its own — /dev/ds01test2-p1-nvidia0..1 and /dev/ds01test2-p2-nvidia0..1, the mem
driver's zero, full, random and urandom as in test_slurm_cluster.py, named apart from that
module's. Two real users deploy rootless podman containers (a busybox image in their own
stores); nothing from SLURM or podman is mocked. The node names are this module's alone, so the
cgroup directories its jobs make (/sys/fs/cgroup/<ctrl>/slurm_<node>) are too.
"""

from __future__ import annotations

import json
import pwd
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from slurm_support import (
    DS01,
    IMAGE,
    SCRIPT,
    cluster_env,
    import_busybox,
    need_root_and,
    standins,
    start_cluster,
    stop_cluster,
)

from support import Users, as_user, short_tmp, wait_for

NODES = ("ds01p1", "ds01p2")
# (path, minor of the mem driver, major 1): two per node, four distinct devices.
STANDINS = [
    ("/dev/ds01test2-p1-nvidia0", 5),
    ("/dev/ds01test2-p1-nvidia1", 7),
    ("/dev/ds01test2-p2-nvidia0", 8),
    ("/dev/ds01test2-p2-nvidia1", 9),
]

# Each node: two whole A100s (docs/inventory.md).
MACHINE = """\
machine: 2xA100-40GB
description: 2x NVIDIA A100-SXM4-40GB, MIG off (ds01's two-node SLURM test)
driver_version: "550.127.08"
gpus:
  - {name: NVIDIA A100-SXM4-40GB, memory_mib: 40960, pci_bus_id: "00000000:07:00.0", numa_node: 0}
  - {name: NVIDIA A100-SXM4-40GB, memory_mib: 40960, pci_bus_id: "00000000:0F:00.0", numa_node: 0}
processes: []
"""

CONFIG = """
defaults: {allow_full_gpu: true, max_gpueq: 4, max_units_per_container: 4, max_runtime: 4h}
groups:
  lab: {members: [ALICE, BOB]}
gpu: {backend: sim, sim_machine: 2xA100.yaml}
cluster:
  backend: slurm
  name: ds01two
  nodes:
    ds01p1:
      machine: 2xA100.yaml
      device_files: "/dev/ds01test2-p1-nvidia{index}"
      address: 127.0.0.1
      port: PORT1
      cpus: 2
    ds01p2:
      machine: 2xA100.yaml
      device_files: "/dev/ds01test2-p2-nvidia{index}"
      address: 127.0.0.1
      port: PORT2
      cpus: 2
"""

# In the container: the stand-ins it has (of all four, on either node) and how many open, the
# GPUs it was told, and its devices cgroup (the job's, under its node's slurmd).
PROBE = (
    'present=""; n=0; for f in /dev/ds01test2-*; do [ -e "$f" ] || continue; '
    'present="$present ${f#/dev/}"; (: <"$f") 2>/dev/null && n=$((n+1)); done; '
    'echo "present=$present"; echo "opened=$n"; echo "visible=$NVIDIA_VISIBLE_DEVICES"; '
    "grep devices /proc/self/cgroup; echo ready; sleep 300"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Lab:
    dir: Path
    config: Path
    env: dict[str, str]
    alice: str
    bob: str
    ports: tuple[int, int]
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def etc(self) -> Path:
        return self.dir / "etc"

    def ds01(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`ds01` as a user on the cluster: their own sbatch/squeue/scancel."""
        return as_user(
            user,
            [DS01, "--config", str(self.config), *args],
            env={"SLURM_CONF": self.env["SLURM_CONF"]},
            cwd="/tmp",
        )

    def json(self, user: str, *args: str) -> Any:
        done = self.ds01(user, *args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def state(self, user: str, name: str) -> dict[str, str] | None:
        return next((j for j in self.json(user, "container", "list") if j["name"] == name), None)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, env=self.env, timeout=120, check=False
        )

    def slurmd_pid(self, node: str) -> int:
        return int((self.dir / "run" / f"slurmd-{node}.pid").read_text())

    def squeue(self) -> str:
        return self.run("squeue", "-o", "%i %u %j %T %r %N %b").stdout


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    need_root_and("podman", "unshare")
    users = Users()
    base = short_tmp("ds01-slurm2-")
    env = cluster_env(base)
    ports = (_free_port(), _free_port())
    lab = Lab(base, base / "ds01.yaml", env, users.add(), users.add(), ports)
    try:
        with standins(STANDINS):
            (base / "2xA100.yaml").write_text(MACHINE)
            text = CONFIG.replace("ALICE", lab.alice).replace("BOB", lab.bob)
            text = text.replace("PORT1", str(ports[0])).replace("PORT2", str(ports[1]))
            lab.config.write_text(text)
            for f in (lab.config, base / "2xA100.yaml"):
                f.chmod(0o644)
            start_cluster(base, lab.config, env)
            try:
                import_busybox(base, [lab.alice, lab.bob])
                yield lab
            finally:
                stop_cluster(base, env)
    finally:
        users.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def test_one_slurmd_per_node_each_with_its_own_port_and_gres(lab: Lab) -> None:
    assert (lab.etc / "gres.conf").read_text().splitlines()[2:] == [
        "NodeName=ds01p1 Name=gpu Type=a100 File=/dev/ds01test2-p1-nvidia0",
        "NodeName=ds01p1 Name=gpu Type=a100 File=/dev/ds01test2-p1-nvidia1",
        "NodeName=ds01p2 Name=gpu Type=a100 File=/dev/ds01test2-p2-nvidia0",
        "NodeName=ds01p2 Name=gpu Type=a100 File=/dev/ds01test2-p2-nvidia1",
    ]
    snippet = (lab.etc / "slurm-ds01.conf").read_text()
    p1, p2 = lab.ports
    assert f"NodeName=ds01p1 NodeAddr=127.0.0.1 Port={p1} CPUs=2 Gres=gpu:a100:2" in snippet
    assert f"NodeName=ds01p2 NodeAddr=127.0.0.1 Port={p2} CPUs=2 Gres=gpu:a100:2" in snippet
    assert "PartitionName=gpu Nodes=ds01p1,ds01p2 " in snippet
    sinfo = lab.run("sinfo", "-h", "-N", "-o", "%N %T %G").stdout.splitlines()
    assert sorted(sinfo) == ["ds01p1 idle gpu:a100:2", "ds01p2 idle gpu:a100:2"]
    # Two slurmd processes, each listening on its node's port.
    for node, port in zip(NODES, lab.ports, strict=True):
        pid = lab.slurmd_pid(node)
        assert Path(f"/proc/{pid}/comm").read_text() == "slurmd\n"
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3] == [
            b"slurmd",
            b"-N",
            node.encode(),
        ]
        shown = lab.run("scontrol", "-o", "show", "node", node).stdout
        assert f" Port={port} " in shown
        assert " State=IDLE " in shown
    assert lab.slurmd_pid("ds01p1") != lab.slurmd_pid("ds01p2")


def _probe(lab: Lab, user: str, name: str) -> list[str]:
    def probed() -> str:
        out = lab.ds01(user, "container", "logs", name).stdout
        return out if "ready" in out else ""

    return wait_for(probed, f"{name}'s probe in its log", detail=lab.squeue).splitlines()


def _running(lab: Lab, user: str, name: str) -> dict[str, str]:
    return wait_for(
        lambda: (j := lab.state(user, name)) and j["state"] == "RUNNING" and j,
        f"{name} running",
        timeout=60,
        detail=lab.squeue,
    )


def test_slurm_places_containers_across_both_nodes(lab: Lab) -> None:
    alice_uid = pwd.getpwnam(lab.alice).pw_uid
    bob_uid = pwd.getpwnam(lab.bob).pw_uid
    deploy = ("container", "deploy")
    try:
        # Alice's two-GPU container fills the first node.
        done = lab.ds01(lab.alice, *deploy, "fill", "--image", IMAGE, "--gpus", "2",
                        "--", "sh", "-c", PROBE)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "GPUs gpu:a100:2" in done.stdout
        fill = _running(lab, lab.alice, "fill")
        assert (fill["nodes"], fill["gres"]) == ("ds01p1", "gpu:a100:2")
        lines = _probe(lab, lab.alice, "fill")
        assert "present= ds01test2-p1-nvidia0 ds01test2-p1-nvidia1" in lines
        assert "opened=2" in lines
        assert "visible=0,1" in lines
        cgroup = next(x for x in lines if ":devices:" in x)
        assert f":devices:/slurm_ds01p1/uid_{alice_uid}/job_{fill['id']}/" in cgroup

        # Bob's one-GPU container can only run on the second node, and sees its GPU there.
        done = lab.ds01(lab.bob, *deploy, "next", "--image", IMAGE, "--gpus", "1",
                        "--", "sh", "-c", PROBE)  # fmt: skip
        assert done.returncode == 0, done.stderr
        nxt = _running(lab, lab.bob, "next")
        assert (nxt["nodes"], nxt["gres"]) == ("ds01p2", "gpu:a100:1")
        lines = _probe(lab, lab.bob, "next")
        assert "present= ds01test2-p2-nvidia0" in lines
        assert "opened=1" in lines
        assert "visible=0" in lines
        cgroup = next(x for x in lines if ":devices:" in x)
        assert f":devices:/slurm_ds01p2/uid_{bob_uid}/job_{nxt['id']}/" in cgroup

        # Each user's list names the node their container runs on.
        assert "ds01p1" in lab.ds01(lab.alice, "container", "list").stdout
        table = lab.ds01(lab.bob, "container", "list").stdout
        assert "ds01p2" in table and "ds01p1" not in table

        # Three GPUs: four exist, but no one node has three, and a job is never split.
        wide = lab.ds01(lab.alice, *deploy, "wide", "--image", IMAGE, "--gpus", "3", "--", "true")
        assert wide.returncode == 1
        assert wide.stderr.splitlines()[-3:] == [
            "error: SLURM refused the job: no node has gpu:a100:3",
            "  sbatch: Batch job submission failed: Requested node configuration is not available."
            " A job's GPUs are all on one node, never split across nodes; the nodes have:"
            " ds01p1 gpu:a100:2, ds01p2 gpu:a100:2.",
            "  Ask for at most what one node has, or split the work into smaller containers.",
        ]
        assert lab.state(lab.alice, "wide") is None

        # Two GPUs fit one node, but neither has two free: it waits, and runs where they free.
        done = lab.ds01(lab.alice, *deploy, "wait", "--image", IMAGE, "--gpus", "2",
                        "--", "sh", "-c", PROBE)  # fmt: skip
        assert done.returncode == 0, done.stderr
        waiting = wait_for(
            lambda: (j := lab.state(lab.alice, "wait")) and j["reason"] == "Resources" and j,
            "the 2-GPU container pending on Resources",
            detail=lab.squeue,
        )
        assert waiting["state"] == "PENDING"
        assert "Resources" in lab.ds01(lab.alice, "container", "list").stdout
        stopped = lab.ds01(lab.alice, "container", "stop", "fill")
        assert stopped.returncode == 0, stopped.stderr
        ran = _running(lab, lab.alice, "wait")
        assert ran["nodes"] == "ds01p1"
        assert "present= ds01test2-p1-nvidia0 ds01test2-p1-nvidia1" in _probe(
            lab, lab.alice, "wait"
        )
        assert lab.state(lab.bob, "next") is not None  # Bob's, on the other node, ran on
    finally:
        for user in (lab.alice, lab.bob):
            lab.run("scancel", "-u", user)
        wait_for(lambda: lab.run("squeue", "-h").stdout == "", "the queue empty")


def test_the_diff_is_empty_after_apply(lab: Lab) -> None:
    done = lab.run(DS01, "--config", str(lab.config), "slurm", "export", "--out", str(lab.etc),
                   "--diff")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("node", NODES)
def test_doctor_passes_on_each_node(lab: Lab, node: str) -> None:
    """On each node (its host name, in a UTS namespace of its own) the doctor checks that
    node's GRES files, GRES in slurmctld, and a real 1-GPU job there."""
    done = lab.run(
        "unshare", "--uts", "sh", "-c", f'hostname {node} && exec "$@"', "doctor",
        DS01, "--config", str(lab.config), "doctor", "--only", "slurm", "--json",
    )  # fmt: skip
    checks = {c["id"]: c for c in json.loads(done.stdout)["checks"]}
    assert {k: v["status"] for k, v in checks.items()} == {
        "slurm.constrain-devices": "pass",
        "slurm.gres-files": "pass",
        "slurm.munge-key": "pass",
        "slurm.node-gres": "pass",
        "slurm.job-one-gpu": "pass",
    }, checks
    files = {
        "ds01p1": ["/dev/ds01test2-p1-nvidia0", "/dev/ds01test2-p1-nvidia1"],
        "ds01p2": ["/dev/ds01test2-p2-nvidia0", "/dev/ds01test2-p2-nvidia1"],
    }[node]
    assert checks["slurm.gres-files"]["evidence"] == files
    assert checks["slurm.node-gres"]["summary"] == (
        f"node {node}: Gres=gpu:a100:2 matches this host's GPUs"
    )
    assert checks["slurm.job-one-gpu"]["summary"] == "a job given 1 GPU opened exactly 1 of 2 files"


def test_restart_and_stop_leave_nothing_behind(lab: Lab) -> None:
    """Last in the module: restart-slurmd restarts both nodes' slurmd; stop ends every daemon
    and removes the cgroup directories of the cluster's jobs (the containers' included)."""
    before = {node: lab.slurmd_pid(node) for node in NODES}
    done = lab.run("bash", str(SCRIPT), "restart-slurmd", str(lab.dir))
    assert done.returncode == 0, done.stderr
    after = {node: lab.slurmd_pid(node) for node in NODES}
    assert all(after[n] != before[n] for n in NODES)
    assert not any(Path(f"/proc/{pid}").exists() for pid in before.values())
    sinfo = lab.run("sinfo", "-h", "-N", "-o", "%N %T").stdout.splitlines()
    assert sorted(sinfo) == ["ds01p1 idle", "ds01p2 idle"]

    daemons = {
        f.name: int(f.read_text()) for f in (lab.dir / "run").glob("*.pid") if f.stat().st_size
    }
    assert sorted(daemons) == [
        "mariadbd.pid",
        "munged.pid",
        "slurmctld.pid",
        "slurmd-ds01p1.pid",
        "slurmd-ds01p2.pid",
        "slurmdbd.pid",
    ]
    # The earlier tests' jobs (containers included) left cgroup directories on both nodes.
    assert Path("/sys/fs/cgroup/devices/slurm_ds01p1").is_dir()
    assert Path("/sys/fs/cgroup/devices/slurm_ds01p2").is_dir()
    done = lab.run("bash", str(SCRIPT), "stop", str(lab.dir))
    assert done.returncode == 0, done.stderr
    assert [name for name, pid in daemons.items() if Path(f"/proc/{pid}").exists()] == []
    assert sorted(Path("/sys/fs/cgroup").glob("*/slurm_ds01p[12]")) == []

"""The gate on a node whose GPUs are SLURM's (`cluster.backend: slurm`, docs/slurm.md): a user's
`docker run --gpus` is refused with where to go instead, and nothing is created; a container
without a GPU still runs. Real ds01d, real engine, the real docker CLI as a real user."""

from __future__ import annotations

import pytest
from gate_support import MACHINES, TEST_IMAGE, gate_world

pytestmark = [pytest.mark.docker, pytest.mark.root]

SLURM = """\
cluster:
  backend: slurm
  nodes:
    n1: {machine: 4xA100-40GB}
"""


def test_no_gpu_through_the_gate_of_a_slurm_node(docker_host: str) -> None:
    machine = MACHINES / "4xA100-40GB.yaml"
    with gate_world(docker_host, machine=machine, extra_config=SLURM) as w:
        user = w.user("slurmn")
        for gpus in (["--gpus", "1"], ["--gpus", "device=0"], ["--gpus", "2"]):
            r = w.docker(user, "run", "--rm", "--name", "want-gpu", *gpus, TEST_IMAGE, "true")
            assert r.returncode != 0, gpus
            assert "this server's GPUs are SLURM's" in r.stderr, (gpus, r.stderr)
            assert "ds01 container deploy" in r.stderr, r.stderr
        # `all` is refused anywhere, before any allocation is asked for.
        r = w.docker(user, "run", "--rm", "--gpus", "all", TEST_IMAGE, "true")
        assert r.returncode != 0 and "--gpus all was refused" in r.stderr, r.stderr
        listed = w.docker(user, "ps", "-a", "--format", "{{.Names}}")
        assert listed.returncode == 0 and listed.stdout == "", listed
        cpu = w.docker(user, "run", "--rm", TEST_IMAGE, "echo", "cpu ok")
        assert (cpu.returncode, cpu.stdout) == (0, "cpu ok\n"), cpu.stderr
        with w.d.client() as c:
            refused = [e for e in c.events(kind="alloc") if e.action == "refused"]
        assert [e.reason for e in refused] == ["slurm_backend"] * 3

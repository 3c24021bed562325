"""A GPU process inside a ds01 container is mapped to its container and allocation through its
real cgroup on the private Docker engine — and is never signalled, even with
host_process_policy: terminate, while its allocation lives or after it is released."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import docker
import pytest

from ds01.api.schemas import HostProcessOut
from ds01.inventory.sim import add_process, clear_processes
from support import MACHINES, TEST_IMAGE, Daemon, Users, loop_passes, short_tmp, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.root]


CONFIG = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 2
  allow_full_gpu: true
gpu:
  sample_interval: 1s
host:
  host_process_policy: terminate
  grant_expiry: terminate
  grant_kill_grace: 1s
"""


def listed(d: Daemon, pid: int, status: str) -> HostProcessOut | None:
    with d.client() as c:
        return next((p for p in c.host_processes() if p.pid == pid and p.status == status), None)


def test_a_container_gpu_process_is_mapped_and_never_signalled(
    users: Users, daemon_factory: Any, docker_host: str, docker_client: docker.DockerClient
) -> None:
    base = short_tmp()
    machine = base / "machine.yaml"
    shutil.copy(MACHINES / "4xA100-40GB.yaml", machine)
    clear_processes(machine)
    user = users.add()
    d: Daemon = daemon_factory(CONFIG, machine=machine, docker_host=docker_host)
    cid = None
    try:
        r = d.cli(
            "container", "deploy", "job", "--image", TEST_IMAGE, "--detach", "--json",
            "--gpus", "1", "--", "sleep", "300",
            user=user,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout)
        cid = out["id"]
        alloc_id = out["allocation"]["id"]
        pid = docker_client.containers.get(cid).attrs["State"]["Pid"]
        assert pid > 0
        add_process(machine, pid, str(out["gpus"][0]["gpu_index"]), 1024, "python")

        p = wait_for(lambda: listed(d, pid, "container"), "the container process", 20)
        assert (p.container_id, p.allocation_id, p.action) == (cid, alloc_id, None)
        loop_passes(d, "host-access", 3)  # passes with terminate policy and a 1s grace
        os.kill(pid, 0)  # still there
        assert docker_client.containers.get(cid).status == "running"

        released = d.cli("admin", "alloc", "release", str(alloc_id), "--reason", "test")
        assert released.returncode == 0, released.stderr
        wait_for(lambda: listed(d, pid, "container_unallocated"), "the released allocation", 20)
        loop_passes(d, "host-access", 3)  # the watch looked again: no action on it
        os.kill(pid, 0)
        with d.client() as c:
            assert [e for e in c.events(kind="host") if e.details.get("pid") == pid] == []
    finally:
        if cid is not None:
            docker_client.containers.get(cid).remove(force=True)
        shutil.rmtree(base, ignore_errors=True)

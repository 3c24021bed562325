"""Placement passes over GPUs busy outside ds01 (issue 13, item 2), end to end: a real process
of a real user computes on GPU 1 of the simulated machine (`ds01 gpu sim set --add-process`);
ds01d's sample and host process watch see it; `ds01 container deploy --gpus 2` as another user
gets the idle GPUs, and the next one, which only GPU 1 can satisfy, gets it with a warning that
names the process's owner. The refuse policy is in tests/scheduler/test_busy.py."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from containers_support import (
    BIN,
    MACHINES,
    TEST_IMAGE,
    Users,
    add_user,
    cli_json,
    deploy,
    need,
    remove_owned,
    running_daemon,
    short_tmp,
    unique_user,
)

from support import wait_for

CONFIG = """\
defaults:
  max_gpueq: 4
  max_units_per_container: 2
  allow_full_gpu: true
gpu:
  sample_interval: 1s
"""


@pytest.fixture
def machine() -> Iterator[Path]:
    base = short_tmp()
    path = base / "4xA100.yaml"
    shutil.copy(MACHINES / "4xA100-40GB.yaml", path)
    yield path
    shutil.rmtree(base, ignore_errors=True)


def test_deploy_passes_over_a_gpu_busy_outside_ds01_and_warns_when_only_it_is_left(
    docker_host: str, docker_client: docker.DockerClient, machine: Path
) -> None:
    need(os.geteuid() == 0, "creating Unix users needs root")
    users = Users()
    alice, bob, carol = unique_user("alice"), unique_user("bob"), unique_user("carol")
    for name in (alice, bob, carol):
        add_user(users, name)
    pw = pwd.getpwnam(carol)
    # carol's own process, computing "on GPU 1" of the simulated machine.
    job = subprocess.Popen(
        ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "sleep", "300"]
    )
    try:
        with running_daemon(CONFIG, docker_host, machine) as d:
            try:
                sim_set = [str(BIN / "ds01"), "gpu", "sim", "set", str(machine), "--unit", "1"]
                r = subprocess.run(
                    [*sim_set, "--util", "94", "--clear-processes",
                     "--add-process", f"{job.pid}:1:30720:python"],
                    capture_output=True, text=True,
                )  # fmt: skip
                assert r.returncode == 0, r.stderr

                def seen() -> bool:
                    rows = cli_json(d, "admin", "host-processes")
                    return any(p["pid"] == job.pid for p in rows)

                wait_for(seen, "ds01d to see carol's GPU process", 30)

                out = deploy(d, alice, "pair", "--gpus", "2")
                assert [u["gpu_index"] for u in out["gpus"]] == [2, 3]
                assert out["warnings"] == []

                r = d.cli(
                    "container", "deploy", "second", "--image", TEST_IMAGE,
                    "--detach", "--gpus", "2", "--", "sleep", "300", user=bob,
                )  # fmt: skip
                assert r.returncode == 0, r.stdout + r.stderr
                (second,) = cli_json(d, "container", "list", user=bob)
                assert [u["gpu_index"] for u in second["gpus"]] == [0, 1]
                said = " ".join(r.stderr.split())  # the console wraps at 80 columns
                assert said.count("warning:") == 1, r.stderr
                assert "warning: only a busy unit was free: GPU 1 (GPU-" in said, said
                assert f"(python pid {job.pid} of {carol}), " in said
                assert "30 of 40 GiB memory used, 94 % busy" in said
            finally:
                remove_owned(docker_client, [alice, bob])
    finally:
        job.kill()
        job.wait()
        users.cleanup()

"""Docker down and back: ds01d keeps serving GPU status and quotas, refuses deploys with a clear
message, and catches up (reconcile) when the engine returns.

ds01d talks to the private engine through a relay socket (containers_support.SocketRelay);
stopping the relay cuts every connection, as a dockerd restart would, without disturbing the
engine the other tests share.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from containers_support import (
    TEST_IMAGE,
    SocketRelay,
    Users,
    add_user,
    db_allocation,
    db_live,
    deploy,
    need,
    remove_owned,
    unique_user,
)

from support import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.root]

CONFIG = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 2
  max_units_per_container: 2
  max_containers: 3
  allow_full_gpu: true
  gpu_hold_after_stop: 0s
docker:
  host: unix://{relay}
"""


@pytest.fixture
def user() -> Iterator[str]:
    need(os.geteuid() == 0, "creating Unix users needs root")
    users = Users()
    name = unique_user("dora")
    add_user(users, name)
    yield name
    users.cleanup()


def _docker_state(d: Any) -> str:
    with d.client() as c:
        return c.health().docker


def _refused_deploy(d: Any, user: str, name: str) -> str:
    r = d.cli(
        "container", "deploy", name, "--image", TEST_IMAGE, "--gpus", "1", "--detach", user=user
    )
    assert r.returncode == 1, r.stdout + r.stderr
    return r.stderr


def _still_serving(d: Any, user: str) -> None:
    for args in (("gpu", "status"), ("quota",)):
        r = d.cli(*args, "--json", user=user)
        assert r.returncode == 0, f"ds01 {' '.join(args)}: {r.stderr}"
        assert json.loads(r.stdout)


def test_docker_down_and_back(
    daemon_factory: Any, docker_host: str, docker_client: docker.DockerClient, user: str
) -> None:
    d = daemon_factory(start=False)
    relay = SocketRelay(d.base / "docker.sock", docker_host)
    d.write_config(CONFIG.format(relay=relay.path))
    try:
        # 1. The engine is not there when ds01d starts: it starts anyway and says so.
        d.start()
        assert _docker_state(d) == "down"
        _still_serving(d, user)
        err = _refused_deploy(d, user, "early")
        assert "error: the Docker engine is not reachable" in err
        assert "GPU status and quotas keep working" in err
        assert db_live(d) == []

        # 2. It comes up: ds01d notices by itself, and deploys work.
        relay.start()
        wait_for(lambda: _docker_state(d) == "up", "ds01d to see Docker up")
        out = deploy(d, user, "work", "--gpus", "1")
        alloc_id = out["allocation"]["id"]

        # 3. It goes away again; meanwhile the container is removed behind ds01's back.
        relay.stop()
        wait_for(lambda: _docker_state(d) == "down", "ds01d to see Docker down")
        docker_client.containers.get(out["id"]).remove(force=True)
        _still_serving(d, user)
        err = _refused_deploy(d, user, "meanwhile")
        assert "error: the Docker engine is not reachable" in err
        r = d.cli("container", "list", user=user)
        assert r.returncode == 1
        assert "the Docker engine is not reachable" in r.stderr
        # ds01 cannot know yet: the allocation is still live.
        assert db_live(d) == [(alloc_id, "active")]

        # 4. Back again: the reconcile on reconnect catches the removal it missed.
        relay.start()
        reason = wait_for(lambda: db_allocation(d, alloc_id)[1], "the missed removal")
        assert reason == "container_removed"
        wait_for(lambda: _docker_state(d) == "up", "ds01d to see Docker up again")
        deploy(d, user, "again", "--cpu-only")
    finally:
        relay.stop()
        remove_owned(docker_client, [user])


# What the Docker SDK says when the engine is gone; none of it may reach a user.
SDK_WORDS = (
    "Traceback",
    "ConnectionError",
    "Connection aborted",
    "FileNotFoundError",
    "Errno",
    "urllib3",
    "HTTPConnection",
    "DockerException",
    "incomplete chunked read",
)


@pytest.mark.parametrize(
    "command", ["stop", "start", "retire", "inspect", "logs"], ids=lambda c: f"container-{c}"
)
def test_container_commands_say_docker_is_down_in_user_words(
    daemon_factory: Any,
    docker_host: str,
    docker_client: docker.DockerClient,
    user: str,
    command: str,
) -> None:
    d = daemon_factory(start=False)
    relay = SocketRelay(d.base / "docker.sock", docker_host)
    d.write_config(CONFIG.format(relay=relay.path))
    relay.start()
    try:
        d.start()
        wait_for(lambda: _docker_state(d) == "up", "ds01d to see Docker up")
        out = deploy(d, user, "work", "--cpu-only")
        relay.stop()
        wait_for(lambda: _docker_state(d) == "down", "ds01d to see Docker down")

        r = d.cli("container", command, "work", user=user)
        assert r.returncode == 1, r.stdout + r.stderr
        lines = r.stderr.splitlines()
        if command == "stop":  # the progress line comes first: it is said before asking
            assert lines.pop(0).startswith("Stopping work (SIGTERM now; SIGKILL in 10 s")
        what, why, fix = (line.strip() for line in lines)
        assert what == (
            f"error: cannot look up container {out['docker_name']}: "
            "the Docker engine is not reachable"
        )
        assert why == f"Docker is not running: its socket {relay.path} does not exist."
        assert fix.endswith("GPU status and quotas keep working.")
        shown = r.stdout + r.stderr
        assert [w for w in SDK_WORDS if w in shown] == []
        _still_serving(d, user)
        # The daemon refused in words too: no traceback for an engine that is away.
        assert "Traceback" not in d.log()
    finally:
        relay.stop()
        remove_owned(docker_client, [user])

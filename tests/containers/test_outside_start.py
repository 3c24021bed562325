"""Invariant I2 repaired (issue 10): a ds01 container running on GPUs without a live allocation.

An admin in the docker group runs `docker start` on a ds01 container whose allocation ended.
When the hold merely ran out and the units are free, the owner gets the same units again, as
`ds01 container start` would have done; when the units were taken from it (drained, released by
an admin), the container is stopped and that is audited. A release by an admin stops the
container at once: released units are free units.

The engine is driven behind ds01's back with the Docker SDK; ds01d reconciles every 0.5 s here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from containers_support import STOPPABLE, TEST_IMAGE, db_rows, remove_owned

from ds01.api.schemas import DeployIn
from support import Daemon, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.root]

CONFIG = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 4
  max_units_per_container: 2
  max_containers: 4
  allow_full_gpu: true
  gpu_hold_after_stop: 0s
"""


@pytest.fixture
def d(
    daemon_factory: Any, docker_host: str, docker_client: docker.DockerClient
) -> Iterator[Daemon]:
    daemon: Daemon = daemon_factory(config=CONFIG, docker_host=docker_host, start=False)
    daemon.extra_env = {"DS01_RECONCILE_EVERY_S": "0.5"}
    daemon.start()
    yield daemon
    remove_owned(docker_client, ["root"])


def _deploy_and_stop(d: Daemon, docker_client: docker.DockerClient) -> tuple[str, Any, int]:
    name = f"outside{uuid.uuid4().hex[:6]}"
    with d.client() as c:
        out = c.deploy(DeployIn(name=name, image=TEST_IMAGE, gpus=1, command=list(STOPPABLE)))
        assert out.allocation is not None
        c.container_op(name, "stop")  # hold 0s: released at once ("stopped")
    container = docker_client.containers.get(out.id)
    assert db_rows(d, "SELECT state FROM allocations WHERE id = ?", out.allocation.id) == [
        ("released",)
    ]
    return name, container, out.allocation.id


def _live_for(d: Daemon, container_id: str) -> list[tuple[Any, ...]]:
    return db_rows(
        d,
        "SELECT a.state, au.unit_uuid FROM allocations a JOIN allocation_units au"
        " ON au.allocation_id = a.id WHERE a.state != 'released' AND a.container_id = ?",
        container_id,
    )


def _units(container: Any) -> list[str]:
    container.reload()
    reqs = container.attrs["HostConfig"].get("DeviceRequests") or []
    return sorted(u for r in reqs for u in (r.get("DeviceIDs") or []))


def _stopped_events(d: Daemon, container_id: str) -> list[tuple[Any, ...]]:
    return db_rows(
        d,
        "SELECT reason, message FROM events WHERE kind = 'container' AND action = 'stopped'"
        " AND json_extract(details, '$.container_id') = ?",
        container_id,
    )


def test_started_behind_ds01s_back_after_its_hold_ran_out_it_gets_its_units_again(
    d: Daemon, docker_client: docker.DockerClient
) -> None:
    _, container, _ = _deploy_and_stop(d, docker_client)
    container.start()
    live = wait_for(lambda: _live_for(d, container.id) or None, "the allocation made again")
    assert [state for state, _ in live] == ["active"]
    assert sorted(u for _, u in live) == _units(container)
    container.reload()
    assert container.status == "running"
    assert _stopped_events(d, container.id) == []


def test_started_behind_ds01s_back_on_units_it_no_longer_may_have_it_is_stopped(
    d: Daemon, docker_client: docker.DockerClient
) -> None:
    _, container, _ = _deploy_and_stop(d, docker_client)
    with d.client() as c:
        c.drain(_units(container)[0], reason="test: the unit is taken from it")
    container.start()
    stopped = wait_for(lambda: _stopped_events(d, container.id) or None, "the container stopped")
    assert stopped[0][0] == "no_allocation"
    assert "its GPUs are held by another allocation" in stopped[0][1]
    container.reload()
    assert container.status == "exited"
    assert _live_for(d, container.id) == []
    assert db_rows(d, "SELECT id FROM allocations WHERE state != 'released'") == []


def test_an_admin_release_stops_the_container_and_a_later_outside_start_is_stopped_too(
    d: Daemon, docker_client: docker.DockerClient
) -> None:
    name = f"released{uuid.uuid4().hex[:6]}"
    with d.client() as c:
        out = c.deploy(DeployIn(name=name, image=TEST_IMAGE, gpus=1, command=list(STOPPABLE)))
        assert out.allocation is not None
        c.release(out.allocation.id, reason="test: an admin needs the GPU")
    container = docker_client.containers.get(out.id)

    def exited() -> bool | None:
        container.reload()
        return container.status == "exited" or None

    wait_for(exited, "the released container to stop")
    container.start()
    stopped = wait_for(lambda: _stopped_events(d, container.id) or None, "the container stopped")
    assert stopped[0][0] == "no_allocation"
    assert "test: an admin needs the GPU" in stopped[0][1]
    assert _live_for(d, container.id) == []

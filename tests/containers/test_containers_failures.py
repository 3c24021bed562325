"""Every way a deploy can fail leaves nothing behind: no live allocation (admin alloc list and
the database) and no container (checked with the Docker SDK behind ds01's back) — including a
ds01d killed with SIGKILL in the middle of a deploy, which the next start cleans up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from containers_support import (
    STOPPABLE,
    TEST_IMAGE,
    Users,
    add_user,
    api_deploy,
    containers_of,
    db_allocation,
    db_events,
    db_live,
    db_rows,
    deploy,
    live_allocations,
    need,
    remove_owned,
    running_daemon,
    unique_user,
)

from ds01.api.schemas import DeployIn
from ds01.errors import Ds01Error

pytestmark = [pytest.mark.docker, pytest.mark.root]

CONFIG = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 2
  max_units_per_container: 2
  max_containers: 3
  allow_full_gpu: true
  gpu_hold_after_stop: 0s
  cpus: 1
  memory: 128m
users:
  {tiny}:
    cpus: 0.001   # valid for ds01's config, refused by the kernel when Docker starts it
  {solo}:
    max_containers: 1
"""


@dataclass
class Env:
    d: Any
    alice: str
    bob: str
    tiny: str
    solo: str


@pytest.fixture(scope="module")
def env(docker_host: str, docker_client: docker.DockerClient) -> Iterator[Env]:
    need(os.geteuid() == 0, "creating Unix users needs root")
    users = Users()
    names = [unique_user(prefix) for prefix in ("alice", "bob", "tiny", "solo")]
    alice, bob, tiny, solo = names
    try:
        for u in names:
            add_user(users, u)
        with running_daemon(CONFIG.format(tiny=tiny, solo=solo), docker_host) as d:
            try:
                yield Env(d, alice, bob, tiny, solo)
            finally:
                remove_owned(docker_client, names)
    finally:
        users.cleanup()


def _alloc_ids(env: Env, user: str) -> list[int]:
    return [r[0] for r in db_rows(env.d, "SELECT id FROM allocations WHERE user = ?", user)]


def _no_clash(env: Env, client: docker.DockerClient) -> Callable[[], None]:
    return lambda: None


def _own_container(env: Env, client: docker.DockerClient) -> Callable[[], None]:
    deploy(env.d, env.alice, "twin", "--cpu-only")
    return lambda: None


def _foreign_container(env: Env, client: docker.DockerClient) -> Callable[[], None]:
    # Made behind ds01's back with the engine name ds01 would use (alice's name is plain
    # [a-z0-9], so the sanitiser keeps it).
    c = client.containers.create(TEST_IMAGE, ["true"], name=f"{env.alice}.twin")
    return lambda: c.remove(force=True)


def _someone_took_the_4g(env: Env, client: docker.DockerClient) -> Callable[[], None]:
    deploy(env.d, env.bob, "big", "--mig", "4g.40gb")  # the machine's only 4g.40gb slice
    return lambda: None


def _image_with_a_device_list_volume(env: Env, client: docker.DockerClient) -> Callable[[], None]:
    """An image whose VOLUME sits where NVIDIA's hook reads device lists: on a hardened host
    it would hand the container every GPU."""
    import io

    dockerfile = b"FROM ds01-test/busybox:latest\nVOLUME /var/run/nvidia-container-devices/all\n"
    client.images.build(fileobj=io.BytesIO(dockerfile), tag="ds01-test/devvol:1", rm=True)
    return lambda: client.images.remove("ds01-test/devvol:1", force=True)


@pytest.mark.parametrize(
    ("setup", "user", "body", "kind", "reason", "in_what"),
    [
        pytest.param(
            _no_clash,
            "alice",
            {"name": "x", "image": "ds01-test/no-such-image:1"},
            "refusal",
            "image_not_found",
            "could not be pulled",
            id="an unknown image is refused before anything is allocated",
        ),
        pytest.param(
            _own_container,
            "alice",
            {"name": "twin", "cpu_only": True},
            "refusal",
            "name_in_use",
            "you already have a container named 'twin'",
            id="a second container of the same name is refused",
        ),
        pytest.param(
            _foreign_container,
            "alice",
            {"name": "twin", "gpus": 1},
            "refusal",
            "name_in_use",
            "you already have a container named 'twin'",
            id="a container of that name made behind ds01's back is refused",
        ),
        pytest.param(
            _no_clash,
            "alice",
            {"name": "greedy", "gpus": 3},
            "refusal",
            "max_units_per_container",
            "",
            id="a request over the quota is refused",
        ),
        pytest.param(
            _someone_took_the_4g,
            "alice",
            {"name": "late", "mig": ["4g.40gb"]},
            "refusal",
            "no_capacity",
            "",
            id="a request no free unit can meet is refused",
        ),
        pytest.param(
            _image_with_a_device_list_volume,
            "alice",
            {"name": "sneaky", "image": "ds01-test/devvol:1", "gpus": 1},
            "refusal",
            "policy",
            "mounts /var/run/nvidia-container-devices/all",
            id="an image that mounts onto NVIDIA's device-list path is refused and undone",
        ),
        pytest.param(
            _no_clash,
            "tiny",
            {"name": "tiny", "gpus": 1},
            "error",
            None,
            "start container",
            id="a limit the engine rejects undoes the allocation and the container",
        ),
        pytest.param(
            _no_clash,
            "alice",
            {"name": "typo", "gpus": 2, "command": ["/no/such/program"]},
            "error",
            None,
            "start container",
            id="a command the engine cannot start undoes the allocation and the container",
        ),
    ],
)
def test_a_failed_deploy_leaves_nothing_behind(
    env: Env,
    docker_client: docker.DockerClient,
    setup: Callable[[Env, docker.DockerClient], Callable[[], None]],
    user: str,
    body: dict[str, Any],
    kind: str,
    reason: str | None,
    in_what: str,
) -> None:
    who = getattr(env, user)
    undo = setup(env, docker_client)
    try:
        containers_before = sorted(c.id for c in containers_of(docker_client, who))
        live_before = db_live(env.d)
        allocs_before = _alloc_ids(env, who)

        out = api_deploy(env.d, who, **body)

        assert "error" in out, out
        err = out["error"]
        assert (err["kind"], err["reason"]) == (kind, reason), err
        assert in_what in err["what"]
        # Nothing left: the same containers and live allocations as before, and every
        # allocation the attempt made is released as a failed deploy.
        assert sorted(c.id for c in containers_of(docker_client, who)) == containers_before
        assert db_live(env.d) == live_before
        assert [a["id"] for a in live_allocations(env.d)] == [i for i, _ in live_before]
        for alloc_id in sorted(set(_alloc_ids(env, who)) - set(allocs_before)):
            assert db_allocation(env.d, alloc_id) == ("released", "deploy_failed")
            assert db_events(env.d, alloc_id)[-1] == ("released", "deploy_failed")
        if reason is None:  # an engine error (the client knows it as a plain error)
            assert _alloc_ids(env, who) != allocs_before  # it got as far as allocating
    finally:
        undo()
        for u in (env.alice, env.bob):
            for c in containers_of(docker_client, u):
                env.d.cli("container", "retire", c.labels["ds01.name"], user=u)


def test_the_cli_explains_a_refusal_in_three_lines(env: Env) -> None:
    r = env.d.cli(
        "container",
        "deploy",
        "greedy",
        "--image",
        TEST_IMAGE,
        "--gpus",
        "3",
        "--detach",
        user=env.alice,
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[0] == "… checking the Docker engine"  # progress, then the error
    (first,) = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(lines[first:]) == 3, r.stderr  # what / why / what to do
    assert "Traceback" not in r.stderr


def test_starting_a_released_container_counts_against_max_containers(
    env: Env, docker_client: docker.DockerClient
) -> None:
    # solo may run one container. Stopping "first" releases its allocation (no hold here), so
    # "second" fits; starting "first" again would make two and is refused.
    try:
        first = deploy(env.d, env.solo, "first", "--cpu-only")
        assert env.d.cli("container", "stop", "first", user=env.solo).returncode == 0
        assert db_allocation(env.d, first["allocation"]["id"])[0] == "released"
        second = deploy(env.d, env.solo, "second", "--cpu-only")

        r = env.d.cli("container", "start", "first", user=env.solo)

        assert r.returncode == 1, r.stdout + r.stderr
        assert "error: quota: you have 1 of 1 containers (second)." in r.stderr
        assert docker_client.containers.get(first["id"]).status == "exited"
        assert db_live(env.d) == [(second["allocation"]["id"], "active")]
    finally:
        for name in ("first", "second"):
            env.d.cli("container", "retire", name, user=env.solo)


# ---- a daemon killed mid-deploy ----------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param("creating the container", id="killed as it creates the container"),
        pytest.param("starting the container", id="killed as it starts the container"),
    ],
)
def test_a_daemon_killed_mid_deploy_cleans_up_when_it_starts_again(
    daemon_factory: Any, docker_host: str, docker_client: docker.DockerClient, moment: str
) -> None:
    d = daemon_factory(docker_host=docker_host)
    seen: list[str] = []

    def on_progress(line: str) -> None:
        seen.append(line)
        if line == moment:
            d.kill9()

    body = DeployIn(name="crash", image=TEST_IMAGE, gpus=1, command=list(STOPPABLE))
    try:
        with d.client() as c, pytest.raises(Ds01Error):
            c.deploy(body, on_progress=on_progress)
        assert seen[-1] == moment
        ((alloc_id, state),) = db_live(d)  # the reservation the dead daemon left behind
        assert state == "reserved"

        d.start()  # reconciles before it answers

        assert db_live(d) == []
        assert db_allocation(d, alloc_id) == ("released", "deploy_interrupted")
        assert containers_of(docker_client, "root") == []
        with d.client() as c:
            assert c.allocations(all_users=True) == []
        if moment == "starting the container":  # the container existed: it was removed
            removed = db_rows(
                d, "SELECT reason FROM events WHERE kind = 'container' AND action = 'removed'"
            )
            assert removed == [("deploy_interrupted",)]
    finally:
        remove_owned(docker_client, ["root"])

"""Everyday requests the gate used to refuse (issue 18's Dev Containers round): `docker system
df` answers the caller's own share; `--ipc host` is refused naming `--shm-size` and the user's
limit; `NVIDIA_DRIVER_CAPABILITIES` takes its documented values without widening the GPUs; an
exec may carry the container's own environment back (VS Code and the Dev Containers CLI do).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest
from gate_support import STOPPABLE, TEST_IMAGE, GateWorld, gate_world, unique

pytestmark = [pytest.mark.docker, pytest.mark.root]


@dataclass
class Day:
    w: GateWorld
    alice: str
    bob: str
    client: docker.DockerClient


@pytest.fixture(scope="module")
def day(docker_host: str, docker_client: docker.DockerClient) -> Iterator[Day]:
    with gate_world(docker_host) as w:
        yield Day(w, w.user("alice"), w.user("bob"), docker_client)


def pid1_env(day: Day, user: str, name: str) -> dict[str, str]:
    r = day.w.docker(user, "exec", name, "cat", "/proc/1/environ")
    assert r.returncode == 0, r.stderr
    return dict(e.split("=", 1) for e in r.stdout.split("\0") if "=" in e)


def test_system_df_is_the_callers_own_share(day: Day) -> None:
    w = day.w
    mine, theirs = unique("dfa"), unique("dfb")
    for user, name in ((day.alice, mine), (day.bob, theirs)):
        assert w.docker(user, "volume", "create", name).returncode == 0
        r = w.docker(user, "create", "--name", name, "-v", f"{name}:/v", TEST_IMAGE, "true")
        assert r.returncode == 0, r.stderr
        r = w.docker(
            user,
            "build",
            "-q",
            "-t",
            f"{name}:latest",
            "-",
            stdin=f"FROM {TEST_IMAGE}\nRUN echo {name} > /made\n",
            env={"DOCKER_BUILDKIT": "0"},
        )
        assert r.returncode == 0, r.stderr
    with w.agent(day.alice) as agent:
        reply = agent.request("GET", "/v1.41/system/df")
    assert reply.status == 200, reply.message
    df = reply.json()
    assert [c["Names"] for c in df["Containers"]] == [[f"/{mine}"]]
    assert [v["Name"] for v in df["Volumes"]] == [mine]
    # Her build's image (and its intermediate layer image), never bob's nor the shared one.
    tags = [t for i in df["Images"] for t in i["RepoTags"] or []]
    assert tags == [f"{mine}:latest"]
    assert df["BuildCache"] == []
    own = [i for i in df["Images"] if i["RepoTags"]]
    assert df["LayersSize"] >= own[0]["Size"] - own[0]["SharedSize"] > 0
    # And the docker CLI prints it.
    r = w.docker(day.alice, "system", "df")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split()[:2] == ["TYPE", "TOTAL"]


def test_ipc_host_is_refused_naming_shm_size_and_the_limit(day: Day) -> None:
    r = day.w.docker(day.alice, "run", "--rm", "--ipc", "host", TEST_IMAGE, "true")
    assert r.returncode != 0
    assert "ds01: --ipc host was refused" in r.stderr
    # The gate_world config gives everyone shm: 64m.
    assert "your containers get a /dev/shm of your limit, 64m, without asking" in r.stderr
    assert "--shm-size asks for less (up to 64m" in r.stderr


@pytest.mark.parametrize(
    ("caps", "gpus"),
    [
        pytest.param("all", ("--gpus", "1"), id="all with one GPU"),
        pytest.param("compute,utility,graphics,video", ("--gpus", "1"), id="a list with one GPU"),
        pytest.param("all", (), id="all without GPUs"),
    ],
)
def test_driver_capabilities_choose_libraries_never_devices(
    day: Day, caps: str, gpus: tuple[str, ...]
) -> None:
    name = unique("caps")
    r = day.w.docker(
        day.alice,
        "run",
        "-d",
        "--name",
        name,
        *gpus,
        "-e",
        f"NVIDIA_DRIVER_CAPABILITIES={caps}",
        TEST_IMAGE,
        *STOPPABLE,
    )
    assert r.returncode == 0, r.stderr
    env = pid1_env(day, day.alice, name)
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == caps
    requests = day.client.api.inspect_container(name)["HostConfig"]["DeviceRequests"] or []
    if gpus:
        # Exactly the one allocated unit, whatever the capabilities say.
        [request] = requests
        [unit] = request["DeviceIDs"]
        assert env["NVIDIA_VISIBLE_DEVICES"] == unit
    else:
        assert requests == []
        assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    day.w.docker(day.alice, "rm", "-f", name)


def test_exec_may_carry_the_containers_own_environment_but_not_other_gpus(day: Day) -> None:
    name = unique("envx")
    r = day.w.docker(day.alice, "run", "-d", "--name", name, TEST_IMAGE, *STOPPABLE)
    assert r.returncode == 0, r.stderr
    own = pid1_env(day, day.alice, name)["NVIDIA_VISIBLE_DEVICES"]
    ok = day.w.docker(
        day.alice,
        "exec",
        "-e",
        f"NVIDIA_VISIBLE_DEVICES={own}",
        name,
        "sh",
        "-c",
        "echo $NVIDIA_VISIBLE_DEVICES",
    )
    assert (ok.returncode, ok.stdout.strip()) == (0, own), ok.stderr
    bad = day.w.docker(day.alice, "exec", "-e", "NVIDIA_VISIBLE_DEVICES=all", name, "true")
    assert bad.returncode != 0
    assert (
        "ds01: docker exec -e NVIDIA_VISIBLE_DEVICES was refused: NVIDIA_VISIBLE_DEVICES is set "
        "by ds01"
    ) in bad.stderr
    day.w.docker(day.alice, "rm", "-f", name)

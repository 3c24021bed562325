"""GPU pinning through the gate, end to end on the simulated 8xH100 machine (4 whole GPUs, 4
GPUs in MIG mode): `docker run --gpus N` allocates on the caller's behalf and the container sees
exactly the allocated UUIDs (Docker's nvidia driver with the stand-in hook puts them into
NVIDIA_VISIBLE_DEVICES); two users at once get disjoint units; a quota refusal reads as it does
through `ds01 container deploy`; specific units are honoured only when free; removing a container
releases its units; a container whose units were released while stopped gets the same ones back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest
from gate_support import STOPPABLE, TEST_IMAGE, GateWorld, gate_world, unique

from support import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.root]


@dataclass
class Gpus:
    w: GateWorld
    alice: str
    bob: str


@pytest.fixture(scope="module")
def gpus(docker_host: str, docker_client: docker.DockerClient) -> Iterator[Gpus]:
    with gate_world(docker_host) as w:
        yield Gpus(w, w.user("alice"), w.user("bob"))


def visible(w: GateWorld, user: str, name: str) -> list[str]:
    """NVIDIA_VISIBLE_DEVICES of the container's PID 1, read through the gate as its owner."""
    r = w.docker(user, "exec", name, "cat", "/proc/1/environ")
    assert r.returncode == 0, r.stderr
    env = dict(e.split("=", 1) for e in r.stdout.split("\0") if "=" in e)
    value = env.get("NVIDIA_VISIBLE_DEVICES", "")
    return value.split(",") if value else []


def live_units(w: GateWorld, user: str) -> dict[str | None, list[str]]:
    """container name → unit UUIDs of the user's live allocations (`ds01 quota --json`)."""
    r = w.d.cli("quota", "--json", user=user)
    assert r.returncode == 0, r.stderr
    out: dict[str | None, list[str]] = {}
    for a in json.loads(r.stdout)["allocations"]:
        out[a["container"]] = [u["uuid"] for u in a["units"]]
    return out


def remove_all(w: GateWorld, *users: str) -> None:
    for user in users:
        names = w.docker(user, "ps", "-aq").stdout.split()
        if names:
            w.docker(user, "rm", "-f", *names)


def test_two_users_at_once_get_disjoint_gpus(gpus: Gpus) -> None:
    w = gpus.w
    results: dict[str, str] = {}

    def run(user: str) -> None:
        r = w.docker(
            user, "run", "-d", "--name", f"{user}-g2", "--gpus", "2", TEST_IMAGE, *STOPPABLE
        )
        results[user] = r.stderr if r.returncode else ""

    threads = [threading.Thread(target=run, args=(u,)) for u in (gpus.alice, gpus.bob)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {gpus.alice: "", gpus.bob: ""}
    seen = {u: visible(w, u, f"{u}-g2") for u in (gpus.alice, gpus.bob)}
    for user, ids in seen.items():
        assert len(ids) == 2 and all(i.startswith("GPU-") for i in ids), ids
        assert sorted(live_units(w, user)[f"{user}-g2"]) == sorted(ids)
    assert not set(seen[gpus.alice]) & set(seen[gpus.bob])


def test_quota_refusal_reads_as_through_deploy(gpus: Gpus) -> None:
    """alice holds 2 GPUs (max_gpueq 2): one more is refused for quota, in the same words."""
    w = gpus.w
    r = w.docker(gpus.alice, "run", "--rm", "--gpus", "1", TEST_IMAGE, "true")
    assert r.returncode != 0
    gate = r.stderr.split("Error response from daemon: ", 1)[1].split("\n\nRun 'docker", 1)[0]
    gate_lines = [line.strip() for line in gate.removeprefix("ds01: ").splitlines()]
    d = w.d.cli(
        "container",
        "deploy",
        unique("q"),
        "--image",
        TEST_IMAGE,
        "--gpus",
        "1",
        "--detach",
        user=gpus.alice,
    )
    assert d.returncode == 1
    err = d.stderr[d.stderr.index("error:") :].removeprefix("error:")
    assert gate_lines == [line.strip() for line in err.strip().splitlines()]
    assert "quota" in gate_lines[0].lower() or "gpueq" in " ".join(gate_lines).lower()
    r = w.d.cli("events", "--kind", "gate", "--json", user=gpus.alice)
    evs = json.loads(r.stdout)
    assert evs[-1]["reason"] == "gpu.quota"
    assert evs[-1]["details"]["refusal_reason"] == "max_gpueq"


def test_removing_a_container_releases_its_gpus(gpus: Gpus) -> None:
    w = gpus.w
    remove_all(w, gpus.alice, gpus.bob)
    assert live_units(w, gpus.alice) == {}
    assert live_units(w, gpus.bob) == {}


def test_specific_units_only_when_free(gpus: Gpus) -> None:
    w = gpus.w
    status = json.loads(w.d.cli("gpu", "status", "--json").stdout)
    mig = [u for u in status["units"] if u["kind"] == "mig" and u["user"] is None]
    whole = [u for u in status["units"] if u["kind"] == "gpu" and u["user"] is None]
    slice_uuid, slice_name, gpu_index = mig[0]["uuid"], mig[0]["name"], whole[0]["gpu_index"]
    r = w.docker(
        gpus.bob,
        "run",
        "-d",
        "--name",
        "bob-slice",
        "--gpus",
        f'"device={slice_uuid}"',
        TEST_IMAGE,
        *STOPPABLE,
    )
    assert r.returncode == 0, r.stderr
    assert visible(w, gpus.bob, "bob-slice") == [slice_uuid]
    r = w.docker(
        gpus.alice,
        "run",
        "-d",
        "--name",
        "alice-idx",
        "--gpus",
        f'"device={gpu_index}"',
        TEST_IMAGE,
        *STOPPABLE,
    )
    assert r.returncode == 0, r.stderr
    assert visible(w, gpus.alice, "alice-idx") == [whole[0]["uuid"]]
    # bob's slice is not free: alice cannot have it
    r = w.docker(gpus.alice, "run", "--rm", "--gpus", f'"device={slice_uuid}"', TEST_IMAGE, "true")
    assert r.returncode != 0
    assert (
        f'ds01: --gpus "device={slice_uuid}" was refused: MIG {slice_name} ({slice_uuid}) '
        "is not free" in r.stderr
    )
    assert "A specific unit is given only when it is free and within your quota." in r.stderr
    # nor by its name as 'ds01 gpu status' shows it ('7/1.0'): the same unit, the same words
    r = w.docker(gpus.alice, "run", "--rm", "--gpus", f'"device={slice_name}"', TEST_IMAGE, "true")
    assert f"MIG {slice_name} ({slice_uuid}) is not free" in r.stderr
    r = w.docker(gpus.alice, "run", "--rm", "--gpus", '"device=GPU-nope"', TEST_IMAGE, "true")
    assert "there is no GPU or MIG unit 'GPU-nope' on this machine" in r.stderr
    remove_all(w, gpus.alice, gpus.bob)


def test_restart_after_release_gets_the_same_units(gpus: Gpus) -> None:
    """Stopped with gpu_hold_after_stop 0s → released; started again → the same units."""
    w = gpus.w
    name = "alice-restart"
    r = w.docker(gpus.alice, "run", "-d", "--name", name, "--gpus", "1", TEST_IMAGE, *STOPPABLE)
    assert r.returncode == 0, r.stderr
    before = visible(w, gpus.alice, name)
    assert w.docker(gpus.alice, "stop", name).returncode == 0
    wait_for(lambda: name not in live_units(w, gpus.alice), "the allocation to be released")
    r = w.docker(gpus.alice, "start", name)
    assert r.returncode == 0, r.stderr
    assert visible(w, gpus.alice, name) == before
    assert live_units(w, gpus.alice)[name] == before
    remove_all(w, gpus.alice)
    assert live_units(w, gpus.alice) == {}

"""Ownership is what ds01 recorded at creation, never a label (issue 9 item 4, attack 5).

Real users (alice, mallory), the real gate, the real engine. Labels are forgeable: a Dockerfile
`LABEL ds01.owner=… ds01.allocation=…` built with the legacy builder makes build containers that
carry them. Here mallory uses that to try to release alice's allocation, to show up in alice's
`docker ps`, to squat the name of alice's next `ds01 container deploy`; alice's own legacy build
from an image labelled with mallory's name leaves containers that claim to be mallory's. Every
attempt must fail, and alice's container must keep running on a live allocation throughout.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from gate_support import STOPPABLE, TEST_IMAGE, Agent, GateWorld, gate_world, unique, user_dir

from ds01.gate.refusal import RULES
from ds01.identity import sanitize_username

pytestmark = [pytest.mark.docker, pytest.mark.root]

V = "/v1.41"


@dataclass
class Scene:
    w: GateWorld
    alice: str
    mallory: str
    victim: str
    victim_id: str
    alice_alloc: int
    alice_vol: str
    legacy_vol: str
    alice_net_id: str
    alice_exec: str
    alice_stopped_id: str
    # alice's legacy build from an image labelled ds01.owner=<mallory>: leftovers "of mallory"
    alice_build_leftovers: list[str]
    # mallory's legacy build labelled with alice's allocation and name
    forged: list[str]
    mallory_mine_id: str
    mallory_stopped_id: str
    mallory_vol: str
    mallory_net: str
    agent: Agent
    tags: list[str]


def _db(w: GateWorld, sql: str, *params: object) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{w.d.state_dir / 'ds01.db'}?mode=ro", uri=True, timeout=10)
    try:
        return list(con.execute(sql, params))
    finally:
        con.close()


def _ok(r: Any) -> str:
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return str(r.stdout).strip()


def _build_dir(user: str, name: str, dockerfile: str) -> str:
    path = user_dir(user, name)
    with open(os.path.join(path, "Dockerfile"), "w") as f:
        f.write(dockerfile)
    return path


def _leftovers(client: docker.DockerClient, owner_label: str, exclude: set[str]) -> list[str]:
    """IDs of containers labelled ds01.owner=<owner_label> that are not in `exclude`."""
    found = client.containers.list(all=True, filters={"label": f"ds01.owner={owner_label}"})
    return sorted(c.id for c in found if c.id not in exclude)


def _legacy_build(w: GateWorld, user: str, ctx: str, tag: str) -> None:
    """A legacy-builder build through the gate that keeps its intermediate containers."""
    _ok(w.docker(user, "build", "--rm=false", "-t", tag, ctx, env={"DOCKER_BUILDKIT": "0"}))


@pytest.fixture(scope="module")
def scene(docker_host: str, docker_client: docker.DockerClient) -> Iterator[Scene]:
    with gate_world(docker_host) as w:
        alice, mallory = w.user("alice"), w.user("mallory")
        # A volume the gate labelled before owner records existed: adopted on first use.
        legacy_vol = unique("legacyvol")
        docker_client.volumes.create(
            legacy_vol, labels={"ds01.managed": "true", "ds01.owner": alice}
        )
        victim = unique("victim")
        victim_id = _ok(w.docker(alice, "run", "-d", "--name", victim, TEST_IMAGE, *STOPPABLE))
        label = docker_client.containers.get(victim_id).labels["ds01.allocation"]
        alice_alloc = int(label)
        assert _db(w, "SELECT user, container_id, state FROM allocations WHERE id = ?", label) == [
            (alice, victim_id, "active")
        ]
        alice_vol, alice_net = unique("alicevol"), unique("alicenet")
        _ok(w.docker(alice, "volume", "create", alice_vol))
        alice_net_id = _ok(w.docker(alice, "network", "create", alice_net))
        alice_exec = docker_client.api.exec_create(victim_id, ["true"])["Id"]
        alice_stopped_id = _ok(w.docker(alice, "create", TEST_IMAGE, "true"))

        tags: list[str] = []
        # mallory publishes an image that says it is hers; alice builds on it (legacy builder).
        bait = f"ds01-ownertest/bait:{unique('t')}"
        tags.append(bait)
        docker_client.images.build(
            fileobj=io.BytesIO(
                f"FROM {TEST_IMAGE}\nLABEL ds01.managed=true ds01.owner={mallory}\n".encode()
            ),
            tag=bait,
            rm=True,
        )
        before = set(_leftovers(docker_client, mallory, set()))
        alice_ctx = _build_dir(alice, "ctx", f"FROM {bait}\nRUN true\n")
        tags.append(f"ds01-ownertest/alice-built:{unique('t')}")
        _legacy_build(w, alice, alice_ctx, tags[-1])
        alice_build_leftovers = _leftovers(docker_client, mallory, before)
        assert alice_build_leftovers, "alice's legacy build left no intermediate containers"

        # Attack 5: build containers labelled with alice's allocation and name.
        forged_ctx = _build_dir(
            mallory,
            "forge",
            f"FROM {TEST_IMAGE}\nLABEL ds01.managed=true ds01.allocation={alice_alloc} "
            f"ds01.owner={alice}\nRUN true\n",
        )
        tags.append(f"ds01-ownertest/forged:{unique('t')}")
        _legacy_build(w, mallory, forged_ctx, tags[-1])
        forged = _leftovers(docker_client, alice, {victim_id, alice_stopped_id})
        assert forged, "mallory's legacy build left no intermediate containers"

        mallory_mine_id = _ok(
            w.docker(mallory, "run", "-d", "--name", unique("mine"), TEST_IMAGE, *STOPPABLE)
        )
        mallory_stopped_id = _ok(w.docker(mallory, "create", TEST_IMAGE, "true"))
        mallory_vol, mallory_net = unique("malvol"), unique("malnet")
        _ok(w.docker(mallory, "volume", "create", mallory_vol))
        _ok(w.docker(mallory, "network", "create", mallory_net))
        # The reconciler acts on Docker events as they come: give it time to act on the
        # forged build containers' start/die/destroy (it must not). Deliberately a fixed time:
        # acting on an event leaves nothing to wait for when the right answer is to do nothing.
        time.sleep(3)
        with w.agent(mallory) as agent:
            yield Scene(
                w,
                alice,
                mallory,
                victim,
                victim_id,
                alice_alloc,
                alice_vol,
                legacy_vol,
                alice_net_id,
                alice_exec,
                alice_stopped_id,
                alice_build_leftovers,
                forged,
                mallory_mine_id,
                mallory_stopped_id,
                mallory_vol,
                mallory_net,
                agent,
                tags,
            )
        for net in docker_client.networks.list(names=[alice_net, mallory_net]):
            net.remove()
        for vol in (legacy_vol,):
            docker_client.volumes.get(vol).remove(force=True)
        for tag in tags:
            docker_client.images.remove(tag, force=True)


# ---- attack 5: a forged ds01.allocation label ------------------------------------------------


def test_forged_allocation_label_leaves_alices_allocation_live(
    scene: Scene, docker_client: docker.DockerClient
) -> None:
    w = scene.w
    rows = _db(w, "SELECT state, container_id FROM allocations WHERE id = ?", scene.alice_alloc)
    assert rows == [("active", scene.victim_id)]
    assert docker_client.containers.get(scene.victim_id).status == "running"
    # ... and no allocation of hers moved: each live one is bound to the container it was
    # made for (her running victim and her created-but-never-started container).
    live = _db(
        w,
        "SELECT container_id, state FROM allocations WHERE user = ? AND state != 'released' "
        "ORDER BY id",
        scene.alice,
    )
    assert live == [(scene.victim_id, "active"), (scene.alice_stopped_id, "active")]
    # The forged containers are nobody's: ds01 never recorded an owner for them.
    for cid in scene.forged:
        assert _db(w, "SELECT owner FROM objects WHERE key = ?", cid) == []


def test_forged_containers_are_not_in_alices_lists(scene: Scene) -> None:
    w = scene.w
    ps = set(_ok(w.docker(scene.alice, "ps", "-a", "--no-trunc", "--format", "{{.ID}}")).split())
    assert ps == {scene.victim_id, scene.alice_stopped_id}
    out = json.loads(_ok(w.d.cli("container", "list", "--json", user=scene.alice)))
    assert sorted(c["id"] for c in out) == sorted([scene.victim_id, scene.alice_stopped_id])
    assert {c["owner"] for c in out} == {scene.alice}


def test_alice_can_use_her_container_and_her_allocation_binds_by_id(scene: Scene) -> None:
    w = scene.w
    _ok(w.docker(scene.alice, "exec", scene.victim, "true"))
    assert _ok(w.docker(scene.alice, "inspect", "-f", "{{.State.Running}}", scene.victim)) == (
        "true"
    )


# ---- the cross-user matrix -------------------------------------------------------------------

CONTAINER_OPS = [
    ("GET", "{ref}/json", None),
    ("POST", "{ref}/start", None),
    ("POST", "{ref}/stop?t=1", None),
    ("POST", "{ref}/kill", None),
    ("DELETE", "{ref}?force=1", None),
    ("GET", "{ref}/logs?stdout=1", None),
    ("POST", "{ref}/exec", {"Cmd": ["true"]}),
]
REFS = ["name", "id", "prefix"]


def _ref(scene: Scene, how: str) -> str:
    return {"name": scene.victim, "id": scene.victim_id, "prefix": scene.victim_id[:10]}[how]


def _refused(reply: Any, rule: str) -> None:
    assert reply.status == 403, (reply.status, reply.message)
    assert RULES[rule].why in reply.message, reply.message


@pytest.mark.parametrize("how", REFS)
@pytest.mark.parametrize(("method", "path", "body"), CONTAINER_OPS)
def test_mallory_cannot_act_on_alices_container(
    scene: Scene, how: str, method: str, path: str, body: Any
) -> None:
    target = path.format(ref=_ref(scene, how))
    reply = scene.agent.request(method, f"{V}/containers/{target}", body)
    _refused(reply, "container.not_owner")


def test_a_container_just_created_is_its_creators_in_the_next_requests(scene: Scene) -> None:
    """The gate keeps the inspect it judged right after a create, with the owner it had just
    recorded (ownership.remember), for the attach, wait and start that follow: mallory's
    requests for the new ID, right after alice's create, are judged on that kept owner."""
    cid = _ok(scene.w.docker(scene.alice, "create", TEST_IMAGE, "true"))
    try:
        for method, path in (
            ("POST", f"/containers/{cid}/start"),
            ("GET", f"/containers/{cid}/json"),
            ("POST", f"/containers/{cid}/wait"),
            ("DELETE", f"/containers/{cid}?force=1"),
        ):
            _refused(scene.agent.request(method, f"{V}{path}", None), "container.not_owner")
    finally:
        _ok(scene.w.docker(scene.alice, "rm", "-f", cid))


@pytest.mark.parametrize(
    ("method", "path", "body", "rule"),
    [
        ("GET", "/exec/{alice_exec}/json", None, "container.not_owner"),
        ("POST", "/exec/{alice_exec}/start", {"Detach": True}, "container.not_owner"),
        ("GET", "/volumes/{alice_vol}", None, "volume.not_owner"),
        ("DELETE", "/volumes/{alice_vol}", None, "volume.not_owner"),
        ("GET", "/volumes/{legacy_vol}", None, "volume.not_owner"),
        ("GET", "/networks/{alice_net_id}", None, "network.not_owner"),
        ("DELETE", "/networks/{alice_net_id}", None, "network.not_owner"),
        (
            "POST",
            "/networks/{alice_net_id}/connect",
            {"Container": "{mallory_mine_id}"},
            "network.not_owner",
        ),
    ],
)
def test_mallory_cannot_act_on_alices_exec_volume_network(
    scene: Scene, method: str, path: str, body: Any, rule: str
) -> None:
    fmt = {k: v for k, v in vars(scene).items() if isinstance(v, str)}
    if body is not None:
        body = json.loads(json.dumps(body).replace("{mallory_mine_id}", scene.mallory_mine_id))
    reply = scene.agent.request(method, V + path.format(**fmt), body)
    _refused(reply, rule)


@pytest.mark.parametrize(("method", "suffix"), [("GET", "/json"), ("DELETE", "?force=1")])
def test_containers_labelled_as_mallorys_are_not_hers(
    scene: Scene, method: str, suffix: str
) -> None:
    """alice's build from mallory's image left containers labelled ds01.owner=<mallory>:
    the label gives mallory nothing."""
    for cid in scene.alice_build_leftovers:
        reply = scene.agent.request(method, f"{V}/containers/{cid}{suffix}")
        _refused(reply, "container.not_owner")


def test_mallorys_lists_hold_only_hers(scene: Scene, docker_client: docker.DockerClient) -> None:
    w, m = scene.w, scene.mallory
    ps = set(_ok(w.docker(m, "ps", "-a", "--no-trunc", "--format", "{{.ID}}")).split())
    assert ps == {scene.mallory_mine_id, scene.mallory_stopped_id}
    assert _ok(w.docker(m, "volume", "ls", "-q")).split() == [scene.mallory_vol]
    nets = _ok(w.docker(m, "network", "ls", "--format", "{{.Name}}")).split()
    # the engine's built-in networks (this test engine may run without a default bridge)
    builtin = [n.name for n in docker_client.networks.list(names=["bridge", "host", "none"])]
    assert sorted(nets) == sorted([*builtin, scene.mallory_net])


def test_a_volume_labelled_before_owner_records_is_adopted(scene: Scene) -> None:
    w = scene.w
    vols = sorted(_ok(w.docker(scene.alice, "volume", "ls", "-q")).split())
    assert vols == sorted([scene.alice_vol, scene.legacy_vol])
    assert _db(
        w, "SELECT owner, origin FROM objects WHERE kind = 'volume' AND key = ?", (scene.legacy_vol)
    ) == [(scene.alice, "adopted")]
    assert _db(
        w, "SELECT owner, origin FROM objects WHERE kind = 'volume' AND key = ?", (scene.alice_vol)
    ) == [(scene.alice, "gate")]
    assert _ok(w.docker(scene.alice, "volume", "inspect", "-f", "{{.Name}}", scene.legacy_vol)) == (
        scene.legacy_vol
    )


# ---- names -----------------------------------------------------------------------------------


def _deploy_and_retire(scene: Scene, name: str) -> None:
    """alice's `ds01 container deploy NAME` goes through, records her as the owner (origin
    deploy), and `retire` drops the record with the container."""
    w = scene.w
    out = json.loads(
        _ok(
            w.d.cli(
                "container",
                "deploy",
                name,
                "--image",
                TEST_IMAGE,
                "--cpu-only",
                "--detach",
                "--json",
                "--",
                *STOPPABLE,
                user=scene.alice,
            )
        )
    )
    assert out["docker_name"] == f"{sanitize_username(scene.alice)}.{name}"
    assert _db(w, "SELECT owner, origin FROM objects WHERE key = ?", out["id"]) == [
        (scene.alice, "deploy")
    ]
    _ok(w.d.cli("container", "retire", name, user=scene.alice))
    assert _db(w, "SELECT owner FROM objects WHERE key = ?", out["id"]) == []


def test_mallory_cannot_create_a_container_with_alices_deploy_name(scene: Scene) -> None:
    w = scene.w
    squat = f"{sanitize_username(scene.alice)}.job"
    for name in (squat, f"/{squat}"):
        r = w.docker(scene.mallory, "run", "-d", "--name", name, TEST_IMAGE, *STOPPABLE)
        assert r.returncode != 0
        assert f"ds01: the container name '{squat}' was refused" in r.stderr, r.stderr
        assert RULES["create.name_reserved"].why in r.stderr, r.stderr
    _deploy_and_retire(scene, "job")


def test_mallory_cannot_rename_to_alices_deploy_name(scene: Scene) -> None:
    w = scene.w
    squat = f"{sanitize_username(scene.alice)}.job2"
    r = w.docker(scene.mallory, "rename", scene.mallory_stopped_id, squat)
    assert r.returncode != 0
    assert f"ds01: the container name '{squat}' was refused" in r.stderr, r.stderr
    assert RULES["create.name_reserved"].why in r.stderr, r.stderr
    # Her own prefix is hers to use.
    _ok(
        w.docker(
            scene.mallory,
            "rename",
            scene.mallory_stopped_id,
            f"{sanitize_username(scene.mallory)}.renamed",
        )
    )
    _deploy_and_retire(scene, "job2")


# ---- prune -----------------------------------------------------------------------------------


def test_container_prune_removes_only_mallorys_own(
    scene: Scene, docker_client: docker.DockerClient
) -> None:
    w = scene.w
    out = _ok(w.docker(scene.mallory, "container", "prune", "-f"))
    assert scene.mallory_stopped_id in out
    existing = {c.id for c in docker_client.containers.list(all=True)}
    assert scene.mallory_stopped_id not in existing
    # alice's stopped container and her build leftovers "of mallory" are still there
    kept = [scene.alice_stopped_id, *scene.alice_build_leftovers, *scene.forged]
    assert [c for c in kept if c not in existing] == []
    assert scene.mallory_mine_id in existing

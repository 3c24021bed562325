"""Issue 9's attacks from a gate user to host root, written as the attacks: each got through
before the fix (on dockerd 20.10, API 1.41, minimum 1.12) and must now be refused — or made
harmless — with the named rule, while the engine is left holding nothing that breaks an
invariant. mallory is the attacker; her own directories are the ones she mounts.

Also here: what the one invariant checker does at start (a container made behind ds01's
back is refused) and in the sweep (a running one is stopped).
"""

from __future__ import annotations

import io
import json
import os
import pwd
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest
from gate_support import (
    STOPPABLE,
    TEST_IMAGE,
    Agent,
    GateWorld,
    as_user,
    gate_world,
    unique,
    user_dir,
)

from support import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.root]

DEVICE_LIST_IMAGE = "ds01-gatetest/device-list-volume:latest"


@dataclass
class Attack:
    w: GateWorld
    mallory: str
    uid: int
    gid: int
    agent: Agent
    client: docker.DockerClient


@pytest.fixture(scope="module")
def attack(docker_host: str, docker_client: docker.DockerClient) -> Iterator[Attack]:
    docker_client.images.build(
        fileobj=io.BytesIO(
            f"FROM {TEST_IMAGE}\nVOLUME /var/run/nvidia-container-devices/all\n".encode()
        ),
        tag=DEVICE_LIST_IMAGE,
        rm=True,
    )
    with gate_world(docker_host) as w:
        mallory = w.user("mallory")
        pw = pwd.getpwnam(mallory)
        with w.agent(mallory) as agent:
            yield Attack(w, mallory, pw.pw_uid, pw.pw_gid, agent, docker_client)
    docker_client.images.remove(DEVICE_LIST_IMAGE, force=True)


def refused(r: object, rule_text: str) -> None:
    """A docker CLI result that failed with the gate's message."""
    assert getattr(r, "returncode", 0) != 0, getattr(r, "stdout", "")
    assert rule_text in getattr(r, "stderr", ""), getattr(r, "stderr", "")


def inspect(a: Attack, name: str) -> dict[str, object]:
    return a.client.api.inspect_container(name)  # type: ignore[no-any-return]


def gate_events(a: Attack, rule: str) -> list[sqlite3.Row]:
    db = sqlite3.connect(a.w.d.state_dir / "ds01.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute(
            "SELECT * FROM events WHERE kind = 'gate' AND reason = ? AND user = ?",
            (rule, a.mallory),
        ).fetchall()
    finally:
        db.close()


# ---- 1. a legacy start body with host settings ----------------------------------------------


def test_a_start_body_with_host_settings_is_refused_at_any_api_version(attack: Attack) -> None:
    a = attack
    name = unique("legacy")
    r = a.w.docker(a.mallory, "create", "--name", name, TEST_IMAGE, *STOPPABLE)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    body = {"Binds": ["/:/host"], "PidMode": "host", "NetworkMode": "host", "Privileged": True}
    old = a.agent.request("POST", f"/v1.23/containers/{cid}/start", body)
    assert (old.status, old.message.splitlines()[0]) == (
        403,
        "ds01: Docker API version 1.23 was refused (the gate speaks 1.40 and newer)",
    )
    for path in (f"/v1.41/containers/{cid}/start", f"/containers/{cid}/restart"):
        current = a.agent.request("POST", path, body)
        assert current.status == 403, current.message
        assert "with a request body was refused" in current.message
    stored = inspect(a, cid)
    assert stored["State"]["Running"] is False  # type: ignore[index]
    assert stored["HostConfig"]["Binds"] is None  # type: ignore[index]
    assert stored["HostConfig"]["Privileged"] is False  # type: ignore[index]
    # What SDKs send on start — nothing, {} or null — still works.
    ok = a.agent.request("POST", f"/v1.41/containers/{cid}/start", raw_body=b"{}")
    assert ok.status == 204, ok.message
    assert len(gate_events(a, "request.api_version")) >= 1
    assert len(gate_events(a, "body.not_allowed")) >= 2
    a.w.docker(a.mallory, "rm", "-f", name)


# ---- 2. --volumes-from carries a host directory into a root container -----------------------


def test_volumes_from_a_host_directory_runs_as_the_caller(attack: Attack) -> None:
    a = attack
    d = user_dir(a.mallory, unique("vf"))
    src = unique("vfsrc")
    r = a.w.docker(a.mallory, "run", "-d", "--name", src, "-v", f"{d}:/d", TEST_IMAGE, *STOPPABLE)
    assert r.returncode == 0, r.stderr
    r = a.w.docker(
        a.mallory,
        "run",
        "--name",
        unique("vfroot"),
        "--volumes-from",
        src,
        TEST_IMAGE,
        "sh",
        "-c",
        "cp /bin/busybox /d/bb; chown 0:0 /d/bb; chmod 4755 /d/bb; id -u; id -g",
    )
    # It ran, but as mallory: the chown to root failed, and no set-uid root file exists.
    assert r.stdout.split()[-2:] == [str(a.uid), str(a.gid)], r.stdout + r.stderr
    st = os.stat(os.path.join(d, "bb"))
    assert st.st_uid == a.uid
    assert not (st.st_uid == 0 and st.st_mode & stat.S_ISUID)
    a.w.docker(a.mallory, "rm", "-f", src)


# ---- 3. docker cp after a bind source was swapped for a symlink ------------------------------


def test_copying_out_of_a_container_with_host_directories_is_refused(attack: Attack) -> None:
    a = attack
    x = user_dir(a.mallory, unique("x"))
    name = unique("cpswap")
    r = a.w.docker(a.mallory, "run", "-d", "--name", name, "-v", f"{x}:/x", TEST_IMAGE, *STOPPABLE)
    assert r.returncode == 0, r.stderr
    assert as_user(a.mallory, ["sh", "-c", f"rmdir {x} && ln -s /etc {x}"]).returncode == 0
    for args in (("cp", f"{name}:/x/shadow", "-"), ("cp", f"{name}:/etc/hostname", "-")):
        r = a.w.docker(a.mallory, *args)
        refused(r, "was refused: it has host directories mounted")
        assert "root:" not in r.stdout
    refused(a.w.docker(a.mallory, "export", name), "it has host directories mounted")
    # Stopped, the container may not start again: its bind source now resolves to /etc.
    assert a.w.docker(a.mallory, "stop", "-t", "1", name).returncode == 0
    r = a.w.docker(a.mallory, "start", name)
    refused(r, "it mounts")
    assert "(resolves to /etc)" in r.stderr
    assert inspect(a, name)["State"]["Running"] is False  # type: ignore[index]
    a.w.docker(a.mallory, "rm", "-f", name)


# ---- 6. -u UID without a group ran with gid 0 ------------------------------------------------


def test_a_user_without_a_group_gets_the_callers_group(attack: Attack) -> None:
    a = attack
    d = user_dir(a.mallory, unique("gid"))
    name = unique("gid")
    r = a.w.docker(
        a.mallory,
        "run",
        "-d",
        "--name",
        name,
        "-u",
        str(a.uid),
        "-v",
        f"{d}:/d",
        TEST_IMAGE,
        *STOPPABLE,
    )
    assert r.returncode == 0, r.stderr
    assert inspect(a, name)["Config"]["User"] == f"{a.uid}:{a.gid}"  # type: ignore[index]
    r = a.w.docker(a.mallory, "exec", "-u", str(a.uid), name, "id", "-g")
    assert r.stdout.strip() == str(a.gid), r.stderr
    r = a.w.docker(a.mallory, "exec", "-u", f"{a.uid}:", name, "id", "-g")
    assert r.stdout.strip() == str(a.gid), r.stderr
    a.w.docker(a.mallory, "rm", "-f", name)


# ---- 8. an image VOLUME on NVIDIA's device-list path; gate GPUs get device-list mounts -------


@pytest.mark.parametrize("gpus", [(), ("--gpus", "1")], ids=["cpu only", "one GPU"])
def test_an_image_volume_on_the_device_list_path_is_refused_and_undone(
    attack: Attack, gpus: tuple[str, ...]
) -> None:
    a = attack
    name = unique("devlist")
    r = a.w.docker(a.mallory, "run", "--name", name, *gpus, DEVICE_LIST_IMAGE, "true")
    refused(r, f"creating container '{name}' was refused")
    assert "/var/run/nvidia-container-devices/all, where NVIDIA reads a GPU list" in r.stderr
    assert a.client.containers.list(all=True, filters={"name": name}) == []
    held = a.w.d.cli("quota", "--json", user=a.mallory)
    assert held.returncode == 0, held.stderr
    assert [x for x in json.loads(held.stdout)["allocations"] if x["container"] == name] == []


def test_a_gate_gpu_container_is_pinned_by_device_list_mounts_and_env(attack: Attack) -> None:
    a = attack
    name = unique("pinned")
    r = a.w.docker(a.mallory, "run", "-d", "--name", name, "--gpus", "1", TEST_IMAGE, *STOPPABLE)
    assert r.returncode == 0, r.stderr
    stored = inspect(a, name)
    (unit,) = stored["HostConfig"]["DeviceRequests"][0]["DeviceIDs"]  # type: ignore[index]
    lists = [
        (m["Source"], m["Destination"], m["RW"])
        for m in stored["Mounts"]  # type: ignore[attr-defined]
        if "nvidia-container-devices" in m["Destination"]
    ]
    assert lists == [("/dev/null", f"/var/run/nvidia-container-devices/{unit}", False)]
    assert f"NVIDIA_VISIBLE_DEVICES={unit}" in stored["Config"]["Env"]  # type: ignore[index]
    a.w.docker(a.mallory, "rm", "-f", name)


# ---- lesser: CPU quota -1, a tmpfs over /dev/shm ---------------------------------------------


def test_a_negative_cpu_quota_is_refused_at_create_and_update(attack: Attack) -> None:
    a = attack
    refused(
        a.w.docker(a.mallory, "run", "--rm", "--cpu-quota", "-1", TEST_IMAGE, "true"),
        "a negative CpuQuota (no CPU limit) was refused",
    )
    name = unique("quota")
    assert (
        a.w.docker(a.mallory, "run", "-d", "--name", name, TEST_IMAGE, *STOPPABLE).returncode == 0
    )
    refused(
        a.w.docker(a.mallory, "update", "--cpu-quota", "-1", name),
        "a negative CpuQuota (no CPU limit) was refused",
    )
    hc = inspect(a, name)["HostConfig"]
    assert (hc["NanoCpus"], hc["CpuQuota"]) == (1_000_000_000, 0)  # type: ignore[index]
    a.w.docker(a.mallory, "rm", "-f", name)


@pytest.mark.parametrize(
    "opts",
    [("--tmpfs", "/dev/shm:size=100g"), ("--mount", "type=tmpfs,dst=/dev//shm/")],
    ids=["--tmpfs", "--mount type=tmpfs"],
)
def test_a_tmpfs_over_dev_shm_is_refused(attack: Attack, opts: tuple[str, ...]) -> None:
    a = attack
    refused(a.w.docker(a.mallory, "run", "--rm", *opts, TEST_IMAGE, "true"), "was refused")
    assert gate_events(a, "create.shm_tmpfs")


# ---- the invariant checker at start and in the sweep -----------------------------------------


def _made_behind_ds01s_back(a: Attack, owner: str, *, start: bool) -> str:
    """A container made on the engine's own socket, recorded as `owner`'s (as if an engine bug
    or an admin's slip had stored it so): privileged when it is not to run (this sandbox's
    kernel refuses privileged containers), else with the host's /etc mounted."""
    c = a.client.containers.create(
        TEST_IMAGE,
        list(STOPPABLE),
        name=unique("behind"),
        privileged=not start,
        volumes=["/etc:/hostetc:ro"] if start else None,
        labels={"ds01.managed": "true", "ds01.owner": owner},
    )
    db = sqlite3.connect(a.w.d.state_dir / "ds01.db", timeout=10)
    try:
        with db:
            db.execute(
                "INSERT INTO objects (kind, key, owner, origin, created_at) "
                "VALUES ('container', ?, ?, 'test', ?)",
                (c.id, owner, time.time()),
            )
    finally:
        db.close()
    if start:
        c.start()
    return str(c.id)


def test_a_container_that_breaks_an_invariant_does_not_start(attack: Attack) -> None:
    a = attack
    cid = _made_behind_ds01s_back(a, a.mallory, start=False)
    r = a.w.docker(a.mallory, "start", cid)
    refused(r, "was refused: it is privileged")
    assert inspect(a, cid)["State"]["Running"] is False  # type: ignore[index]
    assert gate_events(a, "container.invariant")
    a.client.api.remove_container(cid, force=True)


def test_the_sweep_stops_a_running_container_that_breaks_an_invariant(
    docker_host: str, docker_client: docker.DockerClient
) -> None:
    with gate_world(docker_host) as w:
        victim = w.user("swept")
        with w.agent(victim) as agent:
            a = Attack(w, victim, 0, 0, agent, docker_client)
            cid = _made_behind_ds01s_back(a, victim, start=True)
            w.d.stop()
            w.d.start()  # the startup reconcile pass runs the sweep
            wait_for(
                lambda: not docker_client.api.inspect_container(cid)["State"]["Running"],
                "the sweep to stop the privileged container",
            )
            db = sqlite3.connect(w.d.state_dir / "ds01.db")
            try:
                rows = db.execute(
                    "SELECT user, message, details FROM events WHERE kind = 'container' "
                    "AND action = 'stopped' AND reason = 'invariant'"
                ).fetchall()
            finally:
                db.close()
            assert len(rows) == 1, rows
            user, message, details = rows[0]
            assert user == victim
            assert "it mounts /etc: you may not mount /etc;" in message
            assert json.loads(details)["violations"] == [
                "cgroup_parent",
                "gpus",
                "host_path",
                "limit",
                "user",
            ]
            docker_client.api.remove_container(cid, force=True)


def test_a_network_with_an_address_range_of_ones_choosing_is_refused(attack: Attack) -> None:
    a = attack
    net = unique("subnet")
    r = a.w.docker(a.mallory, "network", "create", "--subnet", "10.99.0.0/16", net)
    refused(r, "a network with the address range")
    assert a.client.networks.list(names=[net]) == []
    r = a.w.docker(a.mallory, "network", "create", net)
    assert r.returncode == 0, r.stderr
    assert a.w.docker(a.mallory, "network", "rm", net).returncode == 0


def test_a_pulled_tag_may_be_pulled_again_by_another_user(attack: Attack) -> None:
    """Its name means the registry's image either way; a locally made tag may not be (see
    test_gate_images.py). No registry is reachable here: the gate forwards the pull, and the
    engine's own error comes back."""
    a = attack
    tag = f"ds01-gatetest/pulled:{unique('t')}"
    a.client.images.get(TEST_IMAGE).tag(tag)
    db = sqlite3.connect(a.w.d.state_dir / "ds01.db", timeout=10)
    try:
        with db:
            db.execute(
                "INSERT INTO objects (kind, key, owner, origin, created_at) "
                "VALUES ('tag', ?, 'someone-else', 'pull', ?)",
                (f"docker.io/{tag}", time.time()),
            )
    finally:
        db.close()
    r = a.w.docker(a.mallory, "pull", tag, timeout=60)
    assert "ds01:" not in r.stderr, r.stderr
    assert not gate_events(a, "image.tag_not_owner")
    a.client.images.remove(tag)


def test_docker_cp_into_a_container_with_host_directories_copies_nothing(attack: Attack) -> None:
    """The CLI first asks the engine about the destination (HEAD …/archive): the gate refuses
    that with a head-only answer (a HEAD reply has no body), and the copy never starts."""
    a = attack
    d = user_dir(a.mallory, unique("cpin"))
    as_user(a.mallory, ["sh", "-c", f"echo x > {d}/f.txt"])
    name = unique("cpin")
    r = a.w.docker(a.mallory, "run", "-d", "--name", name, "-v", f"{d}:/d", TEST_IMAGE, *STOPPABLE)
    assert r.returncode == 0, r.stderr
    r = a.w.docker(a.mallory, "cp", f"{d}/f.txt", f"{name}:/tmp/")
    assert r.returncode != 0, r.stdout
    assert "Unsolicited response" not in r.stderr, r.stderr
    r = a.w.docker(a.mallory, "exec", name, "ls", "/tmp")
    assert "f.txt" not in r.stdout
    assert gate_events(a, "container.archive_get")
    a.w.docker(a.mallory, "rm", "-f", name)


def test_events_show_only_ones_own_containers_whatever_the_labels_say(attack: Attack) -> None:
    """A legacy build step from an image labelled ds01.owner=<victim> carries that label; its
    events must not reach the victim's `docker events` (nor the victim's reach anyone else)."""
    a = attack
    victim = a.w.user("victim")
    since = str(int(time.time()) - 1)
    own = unique("own")
    r = a.w.docker(victim, "run", "--name", own, TEST_IMAGE, "true")
    assert r.returncode == 0, r.stderr
    ctx = user_dir(a.mallory, unique("lbl"))
    dockerfile = f"FROM {TEST_IMAGE}\nLABEL ds01.owner={victim}\nRUN true\n"
    as_user(a.mallory, ["sh", "-c", f"cat > {ctx}/Dockerfile"], input=dockerfile)
    r = a.w.docker(a.mallory, "build", "--rm=false", ctx, env={"DOCKER_BUILDKIT": "0"})
    assert r.returncode == 0, r.stderr
    until = str(int(time.time()) + 2)
    time.sleep(2)  # deliberately past `until`: the query then returns instead of following
    seen = a.w.container_events(victim, since, until)
    assert {name for name, _ in seen} == {own}, seen
    assert {action for _, action in seen} >= {"create", "start", "die"}
    a.w.docker(victim, "rm", own)

"""Containers end to end as real Unix users, through the real `ds01` CLI and a real ds01d on the
private Docker engine, on the simulated mixed-MIG machine (examples/machines/8xH100-mig-mixed).

One daemon and one set of containers serve the whole module: alice has one whole GPU and a
3g.40gb slice, bob two whole GPUs, and an LDAP-style user (h.baker…@hertie-school.lan) one
3g.40gb slice. Inside each container NVIDIA_VISIBLE_DEVICES must be exactly its allocation.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from containers_support import (
    BIN,
    STOPPABLE,
    TEST_IMAGE,
    Users,
    add_user,
    api_deploy,
    as_user,
    cli_json,
    containers_of,
    db_live,
    db_live_units,
    deploy,
    exec_in,
    gid_of,
    home_of,
    live_allocations,
    need,
    process_env,
    remove_owned,
    run_in_pty,
    running_daemon,
    uid_of,
    unique_user,
    user_dir,
)

pytestmark = [pytest.mark.docker, pytest.mark.root]

MiB = 1024 * 1024
GiB = 1024 * MiB

# A command that proves who runs inside: it writes a file into /workspace first.
WRITES_WORKSPACE = ("sh", "-c", "touch /workspace/made-by-container; " + STOPPABLE[2])


@dataclass
class World:
    d: Any
    alice: str
    bob: str
    baker: str
    baker_has_at: bool
    workspace: str
    # short container name → (owner, deploy --json output)
    deployed: dict[str, tuple[str, dict[str, Any]]]


CONFIG = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 3
  max_units_per_container: 2
  max_containers: 4
  allow_full_gpu: true
  gpu_hold_after_stop: 2s
  cpus: 1.5
  memory: 256m
  shm: 64m
  pids: 300
users:
  {alice}:
    cpus: 1
    memory: 512m
    memory_swap: 1g
    shm: 32m
    pids: 150
"""


@pytest.fixture(scope="module")
def world(docker_host: str, docker_client: docker.DockerClient) -> Iterator[World]:
    need(os.geteuid() == 0, "creating Unix users needs root")
    users = Users()
    alice, bob = unique_user("alice"), unique_user("bob")
    tag = unique_user("")
    baker = f"h.baker{tag}@hertie-school.lan"
    try:
        add_user(users, alice)
        add_user(users, bob)
        # '@' is outside useradd's default name rule; --badname (shadow ≥ 4.9) lets it through.
        has_at = add_user(users, baker, badname=True)
        if not has_at:
            baker = f"h.baker{tag}"
            assert add_user(users, baker), "useradd refused a dotted name"
        workspace = user_dir(alice, "thesis")
        with running_daemon(CONFIG.format(alice=alice), docker_host) as d:
            try:
                plan = [
                    (alice, "one-gpu", ("--gpus", "1", "--workspace", workspace)),
                    (alice, "slice", ("--mig", "3g.40gb")),
                    (bob, "two-gpus", ("--gpus", "2")),
                    (baker, "ldap", ("--mig", "3g.40gb")),
                ]
                deployed = {
                    name: (
                        owner,
                        deploy(
                            d,
                            owner,
                            name,
                            *opts,
                            command=WRITES_WORKSPACE if "--workspace" in opts else STOPPABLE,
                        ),
                    )
                    for owner, name, opts in plan
                }
                yield World(d, alice, bob, baker, has_at, workspace, deployed)
            finally:
                remove_owned(docker_client, [alice, bob, baker])
    finally:
        users.cleanup()


def _units_of(world: World, short: str) -> list[str]:
    _, out = world.deployed[short]
    return [u["uuid"] for u in out["gpus"]]


# ---- pinning -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("short", "kind", "count", "profile"),
    [
        pytest.param("one-gpu", "gpu", 1, None, id="deploy --gpus 1 pins one whole GPU"),
        pytest.param("two-gpus", "gpu", 2, None, id="deploy --gpus 2 pins two whole GPUs"),
        pytest.param("slice", "mig", 1, "3g.40gb", id="deploy --mig 3g.40gb pins one slice"),
        pytest.param("ldap", "mig", 1, "3g.40gb", id="an LDAP-style user's slice is pinned"),
    ],
)
def test_the_container_sees_exactly_its_allocated_units(
    world: World,
    docker_client: docker.DockerClient,
    short: str,
    kind: str,
    count: int,
    profile: str | None,
) -> None:
    owner, out = world.deployed[short]
    assert [(u["kind"], u["profile"]) for u in out["gpus"]] == [(kind, profile)] * count
    uuids = _units_of(world, short)
    prefix = "GPU-" if kind == "gpu" else "MIG-"
    assert all(u.startswith(prefix) for u in uuids)
    # The allocation the admin sees for this container is the same set of units.
    (alloc,) = [
        a for a in live_allocations(world.d) if a["user"] == owner and a["container"] == short
    ]
    assert alloc["state"] == "active"
    assert [u["uuid"] for u in alloc["units"]] == uuids
    # Docker's nvidia driver wrote the pinned IDs into the container's PID 1 environment.
    env = process_env(docker_client, out["docker_name"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == ",".join(uuids)
    # And ds01 asked Docker for exactly these IDs, by ID, never by count.
    requests = docker_client.containers.get(out["id"]).attrs["HostConfig"]["DeviceRequests"]
    assert [(r["Driver"], r["DeviceIDs"], r["Count"]) for r in requests] == [("nvidia", uuids, 0)]


def test_no_unit_is_in_two_containers(world: World) -> None:
    per_container = [_units_of(world, short) for short in world.deployed]
    flat = [u for units in per_container for u in units]
    assert len(flat) == 5  # 1 GPU + 1 slice, 2 GPUs, 1 slice
    assert len(set(flat)) == len(flat)
    # The database agrees: exactly these units are live, each once.
    assert sorted(db_live_units(world.d)) == sorted(flat)
    assert [state for _, state in db_live(world.d)] == ["active"] * 4


# ---- limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("short", "nano_cpus", "memory", "swap", "shm", "pids"),
    [
        pytest.param(
            "one-gpu",
            1_000_000_000,
            512 * MiB,
            1 * GiB,
            32 * MiB,
            150,
            id="a user override changes only the keys it sets",
        ),
        pytest.param(
            "two-gpus",
            1_500_000_000,
            256 * MiB,
            256 * MiB,
            64 * MiB,
            300,
            id="defaults apply, swap equals memory when unset",
        ),
    ],
)
def test_limits_come_from_the_users_resolved_config(
    world: World,
    docker_client: docker.DockerClient,
    short: str,
    nano_cpus: int,
    memory: int,
    swap: int,
    shm: int,
    pids: int,
) -> None:
    _, out = world.deployed[short]
    host = docker_client.containers.get(out["id"]).attrs["HostConfig"]
    got = {k: host[k] for k in ("NanoCpus", "Memory", "MemorySwap", "ShmSize", "PidsLimit")}
    assert got == {
        "NanoCpus": nano_cpus,
        "Memory": memory,
        "MemorySwap": swap,
        "ShmSize": shm,
        "PidsLimit": pids,
    }
    # The kernel enforces them: read the container's own cgroup (v1 or v2) and /dev/shm.
    cg = _cgroup_limits(docker_client, out["docker_name"])
    assert cg == {"memory": memory, "pids": pids, "cpu": nano_cpus // 1000}
    shm_kib = exec_in(docker_client, out["docker_name"], "df", "-k", "/dev/shm").split()[-5]
    assert int(shm_kib) * 1024 == shm


def _cgroup_limits(client: docker.DockerClient, name: str) -> dict[str, int]:
    """memory limit (bytes), pids max and CPU quota per 1 s period (µs) as the container sees
    them, on cgroup v1 or v2."""
    script = (
        "if [ -f /sys/fs/cgroup/cgroup.controllers ]; then "
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max; else "
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max "
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us; fi"
    )
    words = exec_in(client, name, "sh", "-c", script).split()
    memory, pids, quota, period = int(words[0]), int(words[1]), int(words[2]), int(words[3])
    return {"memory": memory, "pids": pids, "cpu": quota * 1_000_000 // period}


# ---- identity and files ------------------------------------------------------------------


def test_files_written_in_the_workspace_belong_to_the_user(
    world: World, docker_client: docker.DockerClient
) -> None:
    uid, gid = uid_of(world.alice), gid_of(world.alice)
    # Written by the container's own command at start…
    st = os.stat(os.path.join(world.workspace, "made-by-container"))
    assert (st.st_uid, st.st_gid) == (uid, gid)
    # …and by a process exec'd later; the container's user is the caller's uid:gid, not root.
    _, out = world.deployed["one-gpu"]
    exec_in(docker_client, out["docker_name"], "sh", "-c", "echo hi > /workspace/later")
    st = os.stat(os.path.join(world.workspace, "later"))
    assert (st.st_uid, st.st_gid) == (uid, gid)
    assert docker_client.containers.get(out["id"]).attrs["Config"]["User"] == f"{uid}:{gid}"
    assert exec_in(docker_client, out["docker_name"], "pwd").strip() == "/workspace"


def test_the_ldap_style_name_goes_through_the_sanitiser(
    world: World, docker_client: docker.DockerClient
) -> None:
    # With '@' when useradd takes it (--badname), else the dotted name alone.
    _, out = world.deployed["ldap"]
    tag = world.baker.removeprefix("h.baker").removesuffix("@hertie-school.lan")
    digest = hashlib.sha256(world.baker.encode()).hexdigest()[:8]
    domain = "_hertie_school_lan" if world.baker_has_at else ""
    sanitised = f"h_baker{tag}{domain}_{digest}"
    assert out["owner"] == world.baker
    assert out["docker_name"] == f"{sanitised}.ldap"
    attrs = docker_client.containers.get(out["id"]).attrs
    driver = docker_client.info()["CgroupDriver"]
    want_parent = f"/ds01/{sanitised}" if driver == "cgroupfs" else f"ds01-{sanitised}.slice"
    assert attrs["HostConfig"]["CgroupParent"] == want_parent
    assert attrs["Config"]["Labels"]["ds01.owner"] == world.baker
    assert attrs["Config"]["User"] == f"{uid_of(world.baker)}:{gid_of(world.baker)}"
    # The user sees and manages it under the short name.
    (listed,) = cli_json(world.d, "container", "list", user=world.baker)
    assert (listed["name"], listed["state"]) == ("ldap", "running")


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("container", "stop", "{name}"), id="stop"),
        pytest.param(("container", "logs", "{name}"), id="logs"),
        pytest.param(("container", "shell", "{name}"), id="shell"),
        pytest.param(("container", "retire", "{name}"), id="retire"),
        pytest.param(("container", "inspect", "{name}"), id="inspect"),
        pytest.param(("container", "stop", "{docker_name}"), id="stop by the Docker name"),
    ],
)
def test_a_user_cannot_touch_another_users_container(
    world: World, docker_client: docker.DockerClient, args: tuple[str, ...]
) -> None:
    _, out = world.deployed["one-gpu"]
    argv = [a.format(name="one-gpu", docker_name=out["docker_name"]) for a in args]
    r = world.d.cli(*argv, user=world.bob)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "you have no container named" in r.stderr
    assert docker_client.containers.get(out["id"]).status == "running"


def test_a_user_lists_only_their_own_containers(world: World) -> None:
    mine = cli_json(world.d, "container", "list", user=world.bob)
    assert [(c["name"], c["owner"]) for c in mine] == [("two-gpus", world.bob)]
    r = world.d.cli("container", "list", "--all", user=world.bob)
    assert r.returncode == 1
    assert "admin" in r.stderr


# ---- mounts ------------------------------------------------------------------------------


def test_a_symlink_to_etc_is_refused(world: World, docker_client: docker.DockerClient) -> None:
    link = os.path.join(home_of(world.bob), "etc-link")
    assert as_user(world.bob, ["ln", "-sfn", "/etc", link]).returncode == 0
    before = (db_live(world.d), len(containers_of(docker_client, world.bob)))
    out = api_deploy(world.d, world.bob, name="sneaky", cpu_only=True, workspace=link)
    assert out["error"]["reason"] == "path_not_allowed"
    assert "resolves to /etc" in out["error"]["what"]
    # The CLI says the same, with exit 1.
    r = world.d.cli(
        "container",
        "deploy",
        "sneaky",
        "--image",
        TEST_IMAGE,
        "--cpu-only",
        "--detach",
        "--workspace",
        link,
        user=world.bob,
    )
    assert r.returncode == 1
    assert f"you may not mount {link} (resolves to /etc)" in r.stderr
    assert (db_live(world.d), len(containers_of(docker_client, world.bob))) == before


def test_another_users_home_is_refused(world: World, docker_client: docker.DockerClient) -> None:
    before = (db_live(world.d), len(containers_of(docker_client, world.bob)))
    for path in (home_of(world.alice), world.workspace):
        out = api_deploy(world.d, world.bob, name="peek", cpu_only=True, workspace=path)
        assert out["error"]["reason"] == "path_not_allowed", path
    assert (db_live(world.d), len(containers_of(docker_client, world.bob))) == before


# ---- CPU only ----------------------------------------------------------------------------


def test_cpu_only_has_no_gpu_and_says_so(world: World, docker_client: docker.DockerClient) -> None:
    r = world.d.cli(
        "container",
        "deploy",
        "cpu",
        "--image",
        TEST_IMAGE,
        "--cpu-only",
        "--detach",
        "--",
        *STOPPABLE,
        user=world.bob,
    )
    try:
        assert r.returncode == 0, r.stderr
        assert "CPU-only container: no GPU is visible inside (NVIDIA_VISIBLE_DEVICES=void)." in (
            r.stdout.replace("\n", " ")
        )
        (c,) = [
            c for c in containers_of(docker_client, world.bob) if c.labels["ds01.name"] == "cpu"
        ]
        assert c.attrs["HostConfig"]["DeviceRequests"] in (None, [])
        assert process_env(docker_client, c.name)["NVIDIA_VISIBLE_DEVICES"] == "void"
        (listed,) = [
            x for x in cli_json(world.d, "container", "list", user=world.bob) if x["name"] == "cpu"
        ]
        assert (listed["gpus"], listed["gpu_device_ids"]) == ([], [])
    finally:
        world.d.cli("container", "retire", "cpu", user=world.bob)


# ---- shells on a terminal ----------------------------------------------------------------

PROMPT = b"$ "


def test_container_shell_runs_as_the_user_and_returns_the_exit_status(world: World) -> None:
    rc, screen = run_in_pty(
        world.alice,
        [str(BIN / "ds01"), "container", "shell", "one-gpu"],
        world.d.env,
        type_after=PROMPT,
        keys=b"id -u; exit 3\r",
    )
    assert re.search(rf"(?m)^{uid_of(world.alice)}\r?$", screen), screen
    assert rc == 3, screen


def test_deploy_without_detach_opens_a_shell(
    world: World, docker_client: docker.DockerClient
) -> None:
    try:
        rc, screen = run_in_pty(
            world.bob,
            [
                str(BIN / "ds01"),
                "container",
                "deploy",
                "interactive",
                "--image",
                TEST_IMAGE,
                "--cpu-only",
            ],
            world.d.env,
            type_after=PROMPT,
            keys=b"id -u; exit 3\r",
        )
        assert "interactive is running" in screen
        assert re.search(rf"(?m)^{uid_of(world.bob)}\r?$", screen), screen
        assert rc == 3, screen
        # Leaving the shell leaves the container running (it is a separate exec).
        (c,) = [
            c
            for c in containers_of(docker_client, world.bob)
            if c.labels["ds01.name"] == "interactive"
        ]
        assert c.status == "running"
    finally:
        world.d.cli("container", "retire", "interactive", user=world.bob)

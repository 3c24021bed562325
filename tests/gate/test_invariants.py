"""The one invariant checker (services/invariants.py), case by case on literal inspect data.

Each case starts from a container that holds every invariant (as the engine stores one made
by the gate for alice: uid 1000, gid 1000, cgroupfs driver, one GPU) and changes one thing an
attacker could get the engine to store; the expected violation codes are literal.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ds01.model.gpueq import GpuEq
from ds01.model.limits import Limits
from ds01.services.invariants import Expectation, violations

GPU = "GPU-aaaaaaaa-1111-2222-3333-444444444444"
OTHER_GPU = "GPU-bbbbbbbb-1111-2222-3333-444444444444"
HOME = "/home/alice/work"

LIMITS = Limits(
    max_gpueq=GpuEq.parse("2"),
    max_units_per_container=2,
    max_containers=4,
    allow_full_gpu=True,
    cpus=2.0,
    memory_bytes=1024**3,
    memory_swap_bytes=None,
    shm_bytes=64 * 1024**2,
    pids=500,
)
OWNERS = {"alice-other": "alice", "bob-c": "bob"}


def host_path(path: str, read_write: bool) -> str | None:
    if path == HOME or path.startswith(HOME + "/"):
        return None
    if path == "/data/shared":
        return "that share is read-only" if read_write else None
    return "you may not mount it"


EXP = Expectation(
    owner="alice",
    uid=1000,
    gid=1000,
    gids=frozenset({1000, 1500}),
    owner_is_root=False,
    limits=LIMITS,
    cap_add=frozenset({"NET_BIND_SERVICE"}),
    cgroup_parent="/ds01/alice",
    units=(GPU,),
    runtimes=frozenset({"runc"}),
    host_path=host_path,
    container_owner=OWNERS.get,
)

GOOD: dict[str, Any] = {
    "Id": "c" * 64,
    "AppArmorProfile": "docker-default",
    "Config": {
        "User": "1000:1000",
        "Env": ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all", f"NVIDIA_VISIBLE_DEVICES={GPU}"],
    },
    "HostConfig": {
        "Privileged": False,
        "CapAdd": ["NET_BIND_SERVICE"],
        "Runtime": "runc",
        "SecurityOpt": ["no-new-privileges"],
        "MaskedPaths": ["/proc/kcore"],
        "ReadonlyPaths": ["/proc/sys"],
        "CgroupParent": "/ds01/alice",
        "PidMode": "",
        "IpcMode": "private",
        "UTSMode": "",
        "UsernsMode": "",
        "NetworkMode": "default",
        "NanoCpus": 2_000_000_000,
        "CpuQuota": 0,
        "Memory": 1024**3,
        "MemorySwap": 1024**3,
        "ShmSize": 64 * 1024**2,
        "PidsLimit": 500,
        "Tmpfs": {"/tmp": "size=10m"},
        "RestartPolicy": {"Name": "no"},
        "DeviceRequests": [
            {"Driver": "nvidia", "Count": 0, "DeviceIDs": [GPU], "Capabilities": [["gpu"]]}
        ],
    },
    "Mounts": [
        {"Type": "bind", "Source": HOME, "Destination": "/w", "RW": True},
        {"Type": "volume", "Name": "v1", "Driver": "local", "Destination": "/v", "RW": True},
        {
            "Type": "bind",
            "Source": "/dev/null",
            "Destination": f"/var/run/nvidia-container-devices/{GPU}",
            "RW": False,
        },
    ],
}


def changed(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one key (dotted path) set to value; value None deletes it."""
    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return data


def with_mount(mount: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    data["Mounts"].append(mount)
    return data


def codes(data: dict[str, Any], exp: Expectation = EXP) -> list[str]:
    return sorted({v.code for v in violations(data, exp)})


def test_a_container_as_the_gate_makes_it_holds_every_invariant() -> None:
    assert violations(GOOD, EXP) == []


CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("privileged", changed("HostConfig.Privileged", True), ["privileged"]),
    ("an added capability", changed("HostConfig.CapAdd", ["cap_sys_admin"]), ["capabilities"]),
    (
        "a replaced capability set",
        changed("HostConfig.Capabilities", ["CAP_SYS_ADMIN"]),
        ["capabilities"],
    ),
    ("a host device", changed("HostConfig.Devices", [{"PathOnHost": "/dev/sda"}]), ["devices"]),
    ("a device cgroup rule", changed("HostConfig.DeviceCgroupRules", ["c *:* rwm"]), ["devices"]),
    ("another runtime", changed("HostConfig.Runtime", "nvidia"), ["runtime"]),
    (
        "seccomp unconfined",
        changed("HostConfig.SecurityOpt", ["no-new-privileges", "seccomp=unconfined"]),
        ["security_opt"],
    ),
    ("AppArmor unconfined", changed("AppArmorProfile", "unconfined"), ["security_opt"]),
    ("masked /proc paths removed", changed("HostConfig.MaskedPaths", []), ["security_opt"]),
    ("read-only /proc paths removed", changed("HostConfig.ReadonlyPaths", []), ["security_opt"]),
    ("real-time CPU", changed("HostConfig.CpuRealtimeRuntime", 950000), ["engine_setting"]),
    ("OOM killer off", changed("HostConfig.OomKillDisable", True), ["engine_setting"]),
    ("a lowered OOM score", changed("HostConfig.OomScoreAdj", -500), ["engine_setting"]),
    ("no cgroup parent", changed("HostConfig.CgroupParent", ""), ["cgroup_parent"]),
    (
        "another user's cgroup parent",
        changed("HostConfig.CgroupParent", "/ds01/bob"),
        ["cgroup_parent"],
    ),
    ("host pid namespace", changed("HostConfig.PidMode", "host"), ["namespace"]),
    ("host network", changed("HostConfig.NetworkMode", "host"), ["namespace"]),
    ("host ipc", changed("HostConfig.IpcMode", "host"), ["namespace"]),
    ("host uts", changed("HostConfig.UTSMode", "host"), ["namespace"]),
    ("host userns", changed("HostConfig.UsernsMode", "host"), ["namespace"]),
    (
        "another user's pid namespace",
        changed("HostConfig.PidMode", "container:bob-c"),
        ["namespace"],
    ),
    (
        "an unknown container's network",
        changed("HostConfig.NetworkMode", "container:zzz"),
        ["namespace"],
    ),
    (
        "volumes of another user's container",
        changed("HostConfig.VolumesFrom", ["bob-c:ro"]),
        ["volumes_from"],
    ),
    (
        "cpu quota -1 next to NanoCpus (docker update --cpu-quota -1)",
        changed("HostConfig.CpuQuota", -1),
        ["limit"],
    ),
    ("no CPU limit", changed("HostConfig.NanoCpus", 0), ["limit"]),
    ("more CPUs", changed("HostConfig.NanoCpus", 3_000_000_000), ["limit"]),
    (
        "quota/period above the limit",
        {
            **changed("HostConfig.NanoCpus", 0),
            "HostConfig": {
                **GOOD["HostConfig"],
                "NanoCpus": 0,
                "CpuQuota": 300000,
                "CpuPeriod": 100000,
            },
        },
        ["limit"],
    ),
    ("no memory limit", changed("HostConfig.Memory", 0), ["limit"]),
    ("unlimited swap", changed("HostConfig.MemorySwap", -1), ["limit"]),
    ("default swap (twice the memory)", changed("HostConfig.MemorySwap", 0), ["limit"]),
    ("more shared memory", changed("HostConfig.ShmSize", 128 * 1024**2), ["limit"]),
    ("a tmpfs over /dev/shm", changed("HostConfig.Tmpfs", {"/dev/shm": "size=100g"}), ["limit"]),
    (
        "a tmpfs mount over /dev//shm/",
        with_mount({"Type": "tmpfs", "Destination": "/dev//shm/"}),
        ["limit"],
    ),
    ("no process limit", changed("HostConfig.PidsLimit", None), ["limit"]),
    ("process limit -1", changed("HostConfig.PidsLimit", -1), ["limit"]),
    (
        "GPUs by count",
        changed("HostConfig.DeviceRequests", [{"Driver": "nvidia", "Count": -1, "DeviceIDs": []}]),
        ["device_list", "gpus"],
    ),
    (
        "a GPU outside the allocation",
        changed(
            "HostConfig.DeviceRequests",
            [{"Driver": "nvidia", "Count": 0, "DeviceIDs": [GPU, OTHER_GPU]}],
        ),
        ["device_list", "gpus"],
    ),
    (
        "an image VOLUME on the device-list path",
        with_mount(
            {
                "Type": "volume",
                "Driver": "local",
                "Destination": "/var/run/nvidia-container-devices/all",
            }
        ),
        ["device_list"],
    ),
    (
        "a device-list bind under /run",
        with_mount(
            {
                "Type": "bind",
                "Source": "/dev/null",
                "Destination": "/run/nvidia-container-devices/../nvidia-container-devices/0",
            }
        ),
        ["device_list"],
    ),
    ("no device-list mount for its GPU", {**GOOD, "Mounts": GOOD["Mounts"][:2]}, ["device_list"]),
    (
        "a wider NVIDIA_VISIBLE_DEVICES",
        changed("Config.Env", ["NVIDIA_VISIBLE_DEVICES=all"]),
        ["gpus"],
    ),
    (
        "a host path the owner may not mount",
        with_mount({"Type": "bind", "Source": "/etc", "Destination": "/e", "RW": False}),
        ["host_path"],
    ),
    (
        "a read-only share mounted read-write",
        with_mount({"Type": "bind", "Source": "/data/shared", "Destination": "/s", "RW": True}),
        ["host_path"],
    ),
    (
        "a volume of another driver",
        with_mount({"Type": "volume", "Driver": "nfs", "Destination": "/n"}),
        ["host_path"],
    ),
    ("host path and root (no --user)", changed("Config.User", ""), ["user"]),
    ("host path and uid without gid (gid 0)", changed("Config.User", "1000"), ["user"]),
    ("host path and uid:0", changed("Config.User", "1000:0"), ["user"]),
    ("host path and a user name", changed("Config.User", "alice"), ["user"]),
    ("host path and group root added", changed("HostConfig.GroupAdd", ["0"]), ["user"]),
    ("host path without no-new-privileges", changed("HostConfig.SecurityOpt", None), ["user"]),
    (
        "host path and a restart policy",
        changed("HostConfig.RestartPolicy", {"Name": "always"}),
        ["user"],
    ),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_container_that_breaks_an_invariant_is_named(
    data: dict[str, Any], expected: list[str]
) -> None:
    assert codes(data) == expected


def test_a_gid_from_the_owners_other_groups_and_a_read_only_share_are_fine() -> None:
    data = changed("Config.User", "1000:1500")
    data["Mounts"].append(
        {"Type": "bind", "Source": "/data/shared", "Destination": "/s", "RW": False}
    )
    assert codes(data) == []


def test_a_cpu_only_container_must_say_void() -> None:
    cpu = changed("HostConfig.DeviceRequests", [])
    cpu["Mounts"] = GOOD["Mounts"][:2]
    cpu_exp = Expectation(**{**EXP.__dict__, "units": ()})
    assert codes(cpu, cpu_exp) == ["gpus"]
    cpu["Config"]["Env"] = ["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_VISIBLE_DEVICES=void"]
    assert codes(cpu, cpu_exp) == []


def test_without_a_live_allocation_no_gpu_is_allowed() -> None:
    assert codes(GOOD, Expectation(**{**EXP.__dict__, "units": None})) == ["gpus"]


def test_without_host_paths_root_in_the_container_is_fine() -> None:
    data = changed("Config.User", "")
    data["Mounts"] = [m for m in data["Mounts"] if m.get("Source") != HOME]
    data["HostConfig"]["SecurityOpt"] = None
    data["HostConfig"]["RestartPolicy"] = {"Name": "always"}
    assert codes(data) == []


def test_volumes_from_a_container_of_the_same_owner_is_fine() -> None:
    assert codes(changed("HostConfig.VolumesFrom", ["alice-other"])) == []

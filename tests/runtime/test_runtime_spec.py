"""ContainerSpec and create_body (runtime/stamp.py): the Engine API create body for a decided
container, stamped as every ds01 container is, without Docker.

Expected values are literals (STYLE 15): the sanitised owner for 'h.baker@hertie-school.lan' is
'h_baker_hertie_school_lan_f9aae0b9'.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from ds01.errors import UsageError
from ds01.runtime import ContainerSpec, WorkspaceMount, container_info, create_body
from ds01.runtime.spec import cgroup_parent

NOW = datetime(2026, 3, 1, 12, 30, 0, tzinfo=UTC)
GPU = "GPU-aaaaaaaa-1111-2222-3333-444444444444"
MIG = "MIG-bbbbbbbb-5555-6666-7777-888888888888"
LEGACY_MIG = "MIG-GPU-cccccccc-1111-2222-3333-444444444444/1/0"

MakeSpec = Callable[..., ContainerSpec]


def body_for(spec: ContainerSpec, driver: str = "cgroupfs") -> dict[str, Any]:
    return create_body(spec, driver, now=NOW)


def env_of(body: dict[str, Any]) -> dict[str, str]:
    return dict(str(e).split("=", 1) for e in body["Env"])


def test_gpu_units_are_requested_by_exact_uuids_in_order(make_spec: MakeSpec) -> None:
    body = body_for(make_spec(gpu_uuids=(MIG, GPU, LEGACY_MIG)))
    assert body["HostConfig"]["DeviceRequests"] == [
        {
            "Driver": "nvidia",
            "Count": 0,
            "DeviceIDs": [MIG, GPU, LEGACY_MIG],
            "Capabilities": [["gpu"]],
            "Options": {},
        }
    ]
    # The env names the same units, over any image ENV NVIDIA_VISIBLE_DEVICES=all.
    assert env_of(body)["NVIDIA_VISIBLE_DEVICES"] == (
        "MIG-bbbbbbbb-5555-6666-7777-888888888888,GPU-aaaaaaaa-1111-2222-3333-444444444444,"
        "MIG-GPU-cccccccc-1111-2222-3333-444444444444/1/0"
    )


def test_each_unit_is_also_listed_as_a_device_list_mount(make_spec: MakeSpec) -> None:
    """NVIDIA's hook reads these when env-var selection is off for unprivileged containers
    (host layer 2), so the pin holds on a hardened host too."""
    body = body_for(make_spec(gpu_uuids=(MIG, GPU)))
    lists = [
        (m["Target"], m["Source"], m["ReadOnly"])
        for m in body["HostConfig"]["Mounts"]
        if m["Target"].startswith("/var/run/nvidia-container-devices/")
    ]
    assert lists == [
        (
            "/var/run/nvidia-container-devices/MIG-bbbbbbbb-5555-6666-7777-888888888888",
            "/dev/null",
            True,
        ),
        (
            "/var/run/nvidia-container-devices/GPU-aaaaaaaa-1111-2222-3333-444444444444",
            "/dev/null",
            True,
        ),
    ]


def test_a_cpu_only_container_has_no_device_list_mounts(make_spec: MakeSpec) -> None:
    body = body_for(make_spec())
    mounts = body["HostConfig"]["Mounts"]
    assert [m for m in mounts if "nvidia-container-devices" in m["Target"]] == []


def test_gpu_container_drops_a_user_supplied_visible_devices(make_spec: MakeSpec) -> None:
    body = body_for(make_spec(gpu_uuids=(GPU,), env={"NVIDIA_VISIBLE_DEVICES": "all", "A": "1"}))
    assert body["Env"] == ["A=1", f"NVIDIA_VISIBLE_DEVICES={GPU}"]


def test_cpu_only_container_gets_no_device_request_and_visible_devices_void(
    make_spec: MakeSpec,
) -> None:
    body = body_for(make_spec(env={"NVIDIA_VISIBLE_DEVICES": "all", "HF_HOME": "/data/hf"}))
    assert body["HostConfig"]["DeviceRequests"] == []
    assert env_of(body) == {"NVIDIA_VISIBLE_DEVICES": "void", "HF_HOME": "/data/hf"}


@pytest.mark.parametrize(
    "uuid",
    ["all", "none", "0", "GPU-aaa,GPU-bbb", "GPU-", "gpu-aaa", "MIG-aaa bbb", ""],
    ids=[
        "all would expose every GPU",
        "none is not a unit",
        "an index is not a unit",
        "a comma would smuggle in a second unit",
        "an empty GPU uuid",
        "lower-case prefix",
        "a space",
        "empty string",
    ],
)
def test_anything_but_a_unit_uuid_is_refused(make_spec: MakeSpec, uuid: str) -> None:
    with pytest.raises(UsageError):
        make_spec(gpu_uuids=(uuid,))


def test_the_same_unit_twice_is_refused(make_spec: MakeSpec) -> None:
    with pytest.raises(UsageError, match="duplicate"):
        make_spec(gpu_uuids=(GPU, GPU))


def test_limits_become_engine_limits_and_no_swap_by_default(
    make_spec: MakeSpec, make_limits: Callable[..., Any]
) -> None:
    lim = make_limits(cpus=1.5, memory_bytes=8 * 2**30, shm_bytes=2 * 2**30, pids=4096)
    body = body_for(make_spec(limits=lim))
    hc = body["HostConfig"]
    assert {k: hc[k] for k in ("NanoCpus", "Memory", "MemorySwap", "ShmSize", "PidsLimit")} == {
        "NanoCpus": 1_500_000_000,
        "Memory": 8589934592,
        "MemorySwap": 8589934592,
        "ShmSize": 2147483648,
        "PidsLimit": 4096,
    }


def test_memory_swap_limit_is_passed_as_memory_plus_swap(
    make_spec: MakeSpec, make_limits: Callable[..., Any]
) -> None:
    lim = make_limits(memory_bytes=1 * 2**30, memory_swap_bytes=3 * 2**30)
    body = body_for(make_spec(limits=lim))
    hc = body["HostConfig"]
    assert (hc["Memory"], hc["MemorySwap"]) == (1073741824, 3221225472)


def test_unset_limits_are_left_out(make_spec: MakeSpec) -> None:
    body = body_for(make_spec())
    for key in ("NanoCpus", "Memory", "MemorySwap", "ShmSize", "PidsLimit"):
        assert key not in body["HostConfig"]


def test_ds01_labels_overwrite_user_labels_and_unknown_ds01_labels_are_dropped(
    make_spec: MakeSpec,
) -> None:
    body = body_for(
        make_spec(
            allocation_id=17,
            labels={
                "ds01.owner": "mallory",
                "ds01.managed": "false",
                "ds01.allocation": "1",
                "ds01.exempt": "true",
                "project": "llm",
            },
        )
    )
    assert body["Labels"] == {
        "project": "llm",
        "ds01.managed": "true",
        "ds01.owner": "h.baker@hertie-school.lan",
        "ds01.name": "thesis",
        "ds01.created": "2026-03-01T12:30:00+00:00",
        "ds01.allocation": "17",
    }


def test_no_allocation_means_no_allocation_label_even_if_the_user_sets_one(
    make_spec: MakeSpec,
) -> None:
    body = body_for(make_spec(labels={"ds01.allocation": "5"}))
    assert "ds01.allocation" not in body["Labels"]


@pytest.mark.parametrize(
    ("owner", "driver", "parent"),
    [
        ("alice", "cgroupfs", "/ds01/alice"),
        ("alice", "systemd", "ds01-alice.slice"),
        ("h.baker@hertie-school.lan", "cgroupfs", "/ds01/h_baker_hertie_school_lan_f9aae0b9"),
        ("h.baker@hertie-school.lan", "systemd", "ds01-h_baker_hertie_school_lan_f9aae0b9.slice"),
    ],
    ids=[
        "plain name under cgroupfs is a path",
        "plain name under systemd is a slice",
        "LDAP name under cgroupfs is sanitised",
        "LDAP name under systemd is a sanitised slice",
    ],
)
def test_cgroup_parent_follows_the_engines_cgroup_driver(
    make_spec: MakeSpec, owner: str, driver: str, parent: str
) -> None:
    assert body_for(make_spec(owner=owner), driver)["HostConfig"]["CgroupParent"] == parent


def test_an_unknown_cgroup_driver_is_refused() -> None:
    with pytest.raises(UsageError, match="cgroup driver"):
        cgroup_parent("alice", "weird")


def test_identity_and_isolation_arguments(make_spec: MakeSpec) -> None:
    spec = make_spec(command=("python", "train.py"), tty=True, stdin_open=True)
    assert spec.docker_name == "h_baker_hertie_school_lan_f9aae0b9.thesis"
    body = body_for(spec)
    hc = body["HostConfig"]
    assert (
        body["Image"],
        body["User"],
        body["Cmd"],
        hc["Privileged"],
        body["Tty"],
        body["OpenStdin"],
    ) == ("ds01-test/busybox:latest", "4242:4343", ["python", "train.py"], False, True, True)
    # Nothing that widens the container beyond Docker's defaults is ever set.
    for key in (
        "CapAdd",
        "Devices",
        "NetworkMode",
        "PidMode",
        "IpcMode",
        "UsernsMode",
        "UTSMode",
        "SecurityOpt",
        "Binds",
        "Runtime",
    ):
        assert key not in hc
    assert "Volumes" not in body


def test_workspace_mounts_are_bind_mounts(make_spec: MakeSpec) -> None:
    body = body_for(
        make_spec(
            mounts=(
                WorkspaceMount("/home/alice/ws", "/workspace"),
                ("/data/shared", "/data", True),
            )
        )
    )
    assert body["HostConfig"]["Mounts"] == [
        {"Type": "bind", "Source": "/home/alice/ws", "Target": "/workspace", "ReadOnly": False},
        {"Type": "bind", "Source": "/data/shared", "Target": "/data", "ReadOnly": True},
    ]
    # It sees host paths: it may never gain privileges (set-uid files in the image included).
    assert body["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]


def test_relative_mount_paths_are_refused(make_spec: MakeSpec) -> None:
    with pytest.raises(UsageError, match="absolute"):
        make_spec(mounts=(("ws", "/workspace", False),))


@pytest.mark.parametrize(
    "name", ["", "-lead", "a/b", "a..b", "x" * 64], ids=lambda n: f"name {n[:10]!r}"
)
def test_invalid_short_names_are_refused(make_spec: MakeSpec, name: str) -> None:
    with pytest.raises(UsageError):
        make_spec(name=name)


def test_spec_does_not_change_when_the_callers_dicts_do(make_spec: MakeSpec) -> None:
    env = {"A": "1"}
    labels = {"x": "1"}
    s = make_spec(env=env, labels=labels)
    env["A"] = "2"
    labels["ds01.owner"] = "mallory"
    assert (dict(s.env), dict(s.labels)) == ({"A": "1"}, {"x": "1"})
    with pytest.raises(TypeError):
        s.env["B"] = "x"  # type: ignore[index]


INSPECT = {
    "Id": "f00d",
    "Name": "/alice.thesis",
    "Created": "2026-03-01T12:30:00.123456789Z",
    "State": {
        "Status": "exited",
        "ExitCode": 3,
        "StartedAt": "2026-03-01T12:30:01.5Z",
        "FinishedAt": "0001-01-01T00:00:00Z",
    },
    "Config": {
        "Image": "pytorch/pytorch:2.3",
        "Labels": {"ds01.managed": "true", "ds01.owner": "alice", "ds01.name": "thesis"},
    },
    "HostConfig": {
        "DeviceRequests": [
            {
                "Driver": "nvidia",
                "Count": 0,
                "DeviceIDs": [GPU, MIG],
                "Capabilities": [["gpu"]],
                "Options": {},
            }
        ]
    },
}


def test_container_info_reads_labels_state_times_and_pinned_units() -> None:
    info = container_info(INSPECT)
    assert info.__dict__ == {
        "id": "f00d",
        "name": "alice.thesis",
        "short_name": "thesis",
        "owner": "alice",
        "allocation_id": None,
        "image": "pytorch/pytorch:2.3",
        "state": "exited",
        "exit_code": 3,
        "created": datetime(2026, 3, 1, 12, 30, 0, 123456, tzinfo=UTC),
        "started_at": datetime(2026, 3, 1, 12, 30, 1, 500000, tzinfo=UTC),
        "finished_at": None,
        "gpu_device_ids": (GPU, MIG),
        "gpu_unpinned": False,
        "mounts": (),
        "env": (),
        "cpus": None,
        "memory_bytes": None,
        "memory_swap_bytes": None,
        "shm_bytes": None,
        "pids": None,
    }


@pytest.mark.parametrize(
    ("request_", "ids", "unpinned"),
    [
        ({"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}, (), True),
        ({"Driver": "nvidia", "Count": 2, "DeviceIDs": None}, (), True),
        ({"Driver": "other", "Count": 1, "Capabilities": [["fpga"]]}, (), False),
    ],
    ids=["--gpus all is unpinned", "--gpus 2 is unpinned", "a non-GPU device request is ignored"],
)
def test_container_info_flags_gpu_requests_by_count(
    request_: dict[str, Any], ids: tuple[str, ...], unpinned: bool
) -> None:
    data = {**INSPECT, "HostConfig": {"DeviceRequests": [request_]}}
    info = container_info(data)
    assert (info.gpu_device_ids, info.gpu_unpinned) == (ids, unpinned)

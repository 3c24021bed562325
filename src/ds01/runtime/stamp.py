"""The one container stamp (issue 11 item 1): what ds01 writes over every container it creates,
whether `ds01 container deploy` asked or a user's `docker create` through the gate did.

It works on the Engine API's create body (`POST /containers/create`), the one form both paths
share: deploy builds a plain body from its ContainerSpec (runtime/spec.py), the gate forwards
the body it checked, and both stamp it here before the engine sees it:

- labels: the user's, minus ds01's namespace, then ds01's own (managed, owner, name,
  allocation, created), so they always win;
- GPUs: DeviceRequests for exactly the allocated units (Docker's nvidia driver), the same units
  as NVIDIA_VISIBLE_DEVICES over any image or request ENV ("void" for CPU-only), and one
  device-list bind per unit for hosts where NVIDIA's hook reads mounts, not the env;
- limits: the owner's CPU, memory (no swap unless allowed), /dev/shm and PID limits, wherever the
  request set none (the gate refuses requests above them before this);
- the user's cgroup parent, Privileged false, and no-new-privileges when host directories are
  mounted (invariant I9).

What is stamped is then checked on the container as the engine stored it, by the one invariant
checker (services/invariants.py), on both paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ds01.model.limits import Limits
from ds01.runtime.spec import (
    DEVICE_LIST_DIR,
    ENV_VISIBLE_DEVICES,
    LABEL_ALLOCATION,
    LABEL_CREATED,
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_OWNER,
    LABEL_PREFIX,
    NVIDIA_DRIVER,
    ContainerSpec,
    cgroup_parent,
    visible_devices,
)

NANO = 1_000_000_000
DEFAULT_CPU_PERIOD = 100_000
NO_NEW_PRIVILEGES = "no-new-privileges"


@dataclass(frozen=True)
class Stamp:
    owner: str
    name: str  # the ds01.name label: the short name ('' when a gate caller gave none)
    allocation_id: int | None
    units: tuple[str, ...]  # the allocated units, by UUID
    cgroup_parent: str  # runtime.spec.cgroup_parent(owner, the engine's cgroup driver)
    limits: Limits  # the owner's, fitted to the host (services/hostpaths.host_fitted)
    host_dirs: bool  # host directories are mounted


def apply(body: dict[str, Any], stamp: Stamp, *, now: datetime | None = None) -> dict[str, Any]:
    """Stamp ds01's part on an Engine API create body; changes `body` and returns it."""
    hc = body.get("HostConfig")
    if not isinstance(hc, dict):
        hc = body["HostConfig"] = {}
    fill_limits(hc, stamp.limits)
    hc["DeviceRequests"] = device_requests(stamp.units)
    hc["Mounts"] = [*(hc.get("Mounts") or []), *device_list_mounts(stamp.units)]
    hc["CgroupParent"] = stamp.cgroup_parent
    hc["Privileged"] = False
    if stamp.host_dirs:
        opts = [str(o) for o in hc.get("SecurityOpt") or []]
        if not any(o.lower().startswith(NO_NEW_PRIVILEGES) for o in opts):
            hc["SecurityOpt"] = [*opts, NO_NEW_PRIVILEGES]
    env = [str(e) for e in body.get("Env") or [] if str(e).split("=", 1)[0] != ENV_VISIBLE_DEVICES]
    body["Env"] = [*env, f"{ENV_VISIBLE_DEVICES}={visible_devices(stamp.units)}"]
    labels = {
        str(k): str(v)
        for k, v in (body.get("Labels") or {}).items()
        if not str(k).startswith(LABEL_PREFIX)
    }
    labels.update(
        {
            LABEL_MANAGED: "true",
            LABEL_OWNER: stamp.owner,
            LABEL_NAME: stamp.name,
            LABEL_CREATED: (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds"),
        }
    )
    if stamp.allocation_id is not None:
        labels[LABEL_ALLOCATION] = str(stamp.allocation_id)
    body["Labels"] = labels
    return body


def create_body(
    spec: ContainerSpec, cgroup_driver: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """The Engine API create body for a deploy: the spec's own settings, then the stamp.
    cgroup_driver is the engine's ('docker info': CgroupDriver)."""
    body: dict[str, Any] = {
        "Image": spec.image,
        "User": f"{spec.uid}:{spec.gid}",
        "Env": [f"{k}={v}" for k, v in spec.env.items()],
        "Labels": dict(spec.labels),
        "Tty": spec.tty,
        "OpenStdin": spec.stdin_open,
        "HostConfig": {
            # Mounts, not Binds: a bind Mount fails when the host path is missing, where '-v'
            # would have the root daemon create it.
            "Mounts": [
                {
                    "Type": "bind",
                    "Source": m.host_path,
                    "Target": m.container_path,
                    "ReadOnly": m.read_only,
                }
                for m in spec.mounts
            ],
        },
    }
    if spec.command is not None:
        body["Cmd"] = list(spec.command)
    if spec.working_dir is not None:
        body["WorkingDir"] = spec.working_dir
    return apply(
        body,
        Stamp(
            owner=spec.owner,
            name=spec.name,
            allocation_id=spec.allocation_id,
            units=spec.gpu_uuids,
            cgroup_parent=cgroup_parent(spec.owner, cgroup_driver),
            limits=spec.limits,
            host_dirs=bool(spec.mounts),
        ),
        now=now,
    )


def device_requests(units: tuple[str, ...]) -> list[dict[str, Any]]:
    """Exactly these units, by UUID, with Docker's nvidia driver (none for CPU-only)."""
    if not units:
        return []
    return [
        {
            "Driver": NVIDIA_DRIVER,
            "Count": 0,
            "DeviceIDs": list(units),
            "Capabilities": [["gpu"]],
            "Options": {},
        }
    ]


def device_list_mounts(units: tuple[str, ...]) -> list[dict[str, Any]]:
    """One read-only /dev/null bind per unit at DEVICE_LIST_DIR/<UUID>: NVIDIA's hook reads the
    device list there when env-var selection is off for unprivileged containers (host layer 2).
    Only ds01 makes such mounts (the gate refuses them from users)."""
    return [
        {
            "Type": "bind",
            "Source": "/dev/null",
            "Target": f"{DEVICE_LIST_DIR}/{u}",
            "ReadOnly": True,
        }
        for u in units
    ]


def fill_limits(hc: dict[str, Any], limits: Limits) -> None:
    """The owner's limit wherever the request set none."""
    if limits.cpus is not None and effective_cpus(hc) is None:
        hc["NanoCpus"] = round(limits.cpus * NANO)
    if limits.memory_bytes is not None:
        if _int(hc.get("Memory")) <= 0:
            hc["Memory"] = limits.memory_bytes
        if _int(hc.get("MemorySwap")) == 0:
            hc["MemorySwap"] = swap_allowed(int(hc["Memory"]), limits)
    if limits.shm_bytes is not None and _int(hc.get("ShmSize")) <= 0:
        hc["ShmSize"] = limits.shm_bytes
    if limits.pids is not None and _int(hc.get("PidsLimit")) <= 0:
        hc["PidsLimit"] = limits.pids


def effective_cpus(hc: Mapping[str, Any]) -> float | None:
    """The CPU limit the engine applies; None when there is none. A negative CpuQuota next to
    NanoCpus is how `docker update --cpu-quota -1` lifts a limit: read as none."""
    nano, quota = _int(hc.get("NanoCpus")), _int(hc.get("CpuQuota"))
    if quota < 0:
        return None
    if nano > 0:
        return nano / NANO
    if quota > 0:
        return quota / (_int(hc.get("CpuPeriod")) or DEFAULT_CPU_PERIOD)
    return None


def swap_allowed(memory: int, limits: Limits) -> int:
    """memory + the swap the limits allow on top of the memory cap (MemorySwap's meaning):
    equal to memory, i.e. no swap, unless the limits allow some."""
    cap = limits.memory_bytes or 0
    total = limits.memory_swap_bytes if limits.memory_swap_bytes is not None else cap
    return memory + max(0, total - cap)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0

"""What a ds01 container is: the frozen ContainerSpec, and the names every path shares (labels,
the device-list directory, the cgroup parent). The Engine API body made from a spec, and what
ds01 stamps on it (GPU pinning, limits, labels), is runtime/stamp.py: the one stamp that the
Docker gate uses too. Both are pure — no engine call — so every rule is tested without Docker.

Must not decide anything: which units, which limits, which host paths a user may mount and
whether the user may create a container at all are decided before a spec exists (services,
scheduler, gate). Must not talk to the engine (engine.py does).

Pinning rules (BRIEF §2 layer 2, §6 items 1 and 3):
- GPUs are requested only by exact UUIDs (never ``count``, never ``all``), driver "nvidia".
- A CPU-only container gets ``NVIDIA_VISIBLE_DEVICES=void``: where nvidia is the engine's default
  runtime, an image's ``ENV NVIDIA_VISIBLE_DEVICES=all`` would otherwise expose every GPU.
- ``ds01.*`` labels and ``NVIDIA_VISIBLE_DEVICES`` are ds01's: user-supplied values are dropped
  and ds01's set last, so no label can claim another owner or allocation.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from ds01.errors import UsageError
from ds01.identity import docker_container_name, sanitize_username, user_slice
from ds01.model.limits import Limits

# Label keys ds01 stamps on every container it creates. Readers (list, reconcile, gate) use these
# names, never string literals of their own.
LABEL_PREFIX = "ds01."
LABEL_MANAGED = "ds01.managed"
LABEL_OWNER = "ds01.owner"
LABEL_ALLOCATION = "ds01.allocation"
LABEL_CREATED = "ds01.created"
LABEL_NAME = "ds01.name"

NVIDIA_DRIVER = "nvidia"
ENV_VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
# "void" (not "none"): nvidia-container-runtime treats "none" as "no GPU but still inject the
# driver libraries", "void" as "behave like runc" — a CPU-only container gets nothing NVIDIA.
VISIBLE_DEVICES_CPU_ONLY = "void"

CGROUP_DRIVERS = ("systemd", "cgroupfs")

# A unit UUID as the driver prints it: GPU-<uuid>, MIG-<uuid>, or legacy MIG-GPU-<uuid>/<gi>/<ci>.
# Checked here because the IDs are joined with ',' into NVIDIA_VISIBLE_DEVICES: an ID holding a
# ',' (or being "all") would widen the pin.
_UNIT_UUID = re.compile(r"(GPU|MIG)-[A-Za-z0-9][A-Za-z0-9/-]*")


class WorkspaceMount(NamedTuple):
    """A bind mount: host path → container path. Whether the owner may mount host_path is
    decided before the spec is built (PATH_NOT_ALLOWED); here it is only checked for form."""

    host_path: str
    container_path: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """A container ds01 has decided to create, with everything needed to create it.

    owner: the user's account name (NSS), e.g. 'h.baker@hertie-school.lan'.
    uid, gid: the process inside runs as this uid:gid, never root unless the owner is root.
    name: the user's short name ('thesis'); the engine name is ``docker_name``.
    gpu_uuids: the allocated units, in order; empty = CPU-only.
    allocation_id: the store's allocation row, or None for a container without one (CPU-only).
    """

    owner: str
    uid: int
    gid: int
    name: str
    image: str
    limits: Limits
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    gpu_uuids: tuple[str, ...] = ()
    mounts: tuple[WorkspaceMount, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    allocation_id: int | None = None
    tty: bool = False
    stdin_open: bool = False
    working_dir: str | None = None

    def __post_init__(self) -> None:
        # Frozen means frozen: callers keep no handle that could change env or labels later.
        # Plain (host, container, ro) tuples are accepted for mounts.
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "gpu_uuids", tuple(self.gpu_uuids))
        object.__setattr__(self, "mounts", tuple(WorkspaceMount(*m) for m in self.mounts))
        # Validates owner and name (raises UsageError) before anything reaches the engine.
        docker_container_name(self.owner, self.name)
        if self.uid < 0 or self.gid < 0:
            raise UsageError(f"invalid uid:gid {self.uid}:{self.gid} for {self.owner!r}")
        if not self.image:
            raise UsageError("no image given", fix="Name an image, e.g. 'pytorch/pytorch:latest'.")
        for uuid in self.gpu_uuids:
            if not _UNIT_UUID.fullmatch(uuid):
                raise UsageError(
                    f"invalid GPU/MIG UUID {uuid!r}",
                    why="Containers are pinned by exact unit UUIDs (GPU-…, MIG-…).",
                )
        if len(set(self.gpu_uuids)) != len(self.gpu_uuids):
            raise UsageError(f"duplicate unit in {list(self.gpu_uuids)}")
        for m in self.mounts:
            if not (m.host_path.startswith("/") and m.container_path.startswith("/")):
                raise UsageError(
                    f"mount {m.host_path!r} → {m.container_path!r}: paths must be absolute"
                )

    @property
    def docker_name(self) -> str:
        """The engine-side name, '<sanitised owner>.<name>' (identity.docker_container_name)."""
        return docker_container_name(self.owner, self.name)

    @property
    def cpu_only(self) -> bool:
        return not self.gpu_uuids


def normalize_cap(name: str) -> str:
    """'cap_sys_admin', 'SYS_ADMIN', 'CAP_SYS_ADMIN' → 'SYS_ADMIN' (Docker accepts all three)."""
    return name.strip().upper().removeprefix("CAP_")


def cgroup_parent(owner: str, cgroup_driver: str) -> str:
    """The cgroup parent for the owner's containers, so per-user accounting and limits can sit on
    one node: a systemd slice with the systemd driver (it accepts only '*.slice' names), an
    absolute cgroupfs path with the cgroupfs driver."""
    if cgroup_driver == "systemd":
        return user_slice(owner)
    if cgroup_driver == "cgroupfs":
        return f"/ds01/{sanitize_username(owner)}"
    raise UsageError(
        f"unknown Docker cgroup driver {cgroup_driver!r}",
        why=f"ds01 knows {', '.join(CGROUP_DRIVERS)}.",
        fix="Check 'docker info' (Cgroup Driver) and report it to the ds01 maintainers.",
    )


# The NVIDIA hook's "volume-mounts" device list: with host layer 2
# (accept-nvidia-visible-devices-envvar-when-unprivileged = false,
#  accept-nvidia-visible-devices-as-volume-mounts = true) the hook ignores NVIDIA_VISIBLE_DEVICES
# in unprivileged containers and takes the devices from mounts at this path instead. Only ds01
# creates such mounts (the gate refuses them from users), so the list is exactly the allocation.
DEVICE_LIST_DIR = "/var/run/nvidia-container-devices"
DEVICE_LIST_DIRS = (DEVICE_LIST_DIR, "/run/nvidia-container-devices")


def is_device_list_path(target: str) -> bool:
    """True for a container path where NVIDIA's hook would read a device list."""
    norm = posixpath.normpath("/" + target.strip().lstrip("/"))
    return any(norm == d or norm.startswith(d + "/") for d in DEVICE_LIST_DIRS)


def visible_devices(gpu_uuids: tuple[str, ...]) -> str:
    """NVIDIA_VISIBLE_DEVICES for a container pinned to these units."""
    return ",".join(gpu_uuids) if gpu_uuids else VISIBLE_DEVICES_CPU_ONLY

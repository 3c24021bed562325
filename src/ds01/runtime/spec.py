"""What a ds01 container is: the frozen ContainerSpec and the Docker create arguments made from it.

Owns the one translation from a decided container (owner, allocated units, resolved limits) to
the Docker SDK's ``containers.create`` keyword arguments: GPU pinning by DeviceRequests, resource
limits, the cgroup parent, owner labels. ``create_kwargs`` is pure — no engine call, no clock
unless none is passed — so every rule here is tested without Docker.

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
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NamedTuple

from docker.types import DeviceRequest, Mount

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


def ds01_labels(spec: ContainerSpec, now: datetime) -> dict[str, str]:
    """The labels ds01 owns. ds01.allocation is absent when the spec has no allocation."""
    labels = {
        LABEL_MANAGED: "true",
        LABEL_OWNER: spec.owner,
        LABEL_NAME: spec.name,
        LABEL_CREATED: now.astimezone(UTC).isoformat(timespec="seconds"),
    }
    if spec.allocation_id is not None:
        labels[LABEL_ALLOCATION] = str(spec.allocation_id)
    return labels


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


def device_list_mounts(gpu_uuids: tuple[str, ...]) -> list[Mount]:
    """One read-only /dev/null bind per unit at DEVICE_LIST_DIR/<UUID>."""
    return [
        Mount(target=f"{DEVICE_LIST_DIR}/{u}", source="/dev/null", type="bind", read_only=True)
        for u in gpu_uuids
    ]


def create_kwargs(
    spec: ContainerSpec, cgroup_driver: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``DockerClient.containers.create(**kwargs)``.

    cgroup_driver is the engine's ('docker info': CgroupDriver), "systemd" or "cgroupfs".
    now stamps ds01.created (defaults to the current UTC time).
    """
    limits = spec.limits
    now = now or datetime.now(UTC)

    # User labels first, minus anything in ds01's namespace; ds01's last, so they always win.
    labels = {k: v for k, v in spec.labels.items() if not k.startswith(LABEL_PREFIX)}
    labels.update(ds01_labels(spec, now))

    env = {k: v for k, v in spec.env.items() if k != ENV_VISIBLE_DEVICES}
    device_requests: list[DeviceRequest] = []
    if spec.gpu_uuids:
        # Docker's nvidia driver (active when nvidia-container-runtime-hook is on dockerd's PATH)
        # puts exactly these IDs into NVIDIA_VISIBLE_DEVICES. The same value is also set as the
        # container's own env, over any image ENV (nvidia/cuda images say "all"), so that the
        # stored container never names wider devices than its pin (invariant I7).
        env[ENV_VISIBLE_DEVICES] = visible_devices(spec.gpu_uuids)
        device_requests.append(
            DeviceRequest(
                driver=NVIDIA_DRIVER, device_ids=list(spec.gpu_uuids), capabilities=[["gpu"]]
            )
        )
    else:
        env[ENV_VISIBLE_DEVICES] = VISIBLE_DEVICES_CPU_ONLY

    kwargs: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command) if spec.command is not None else None,
        "name": spec.docker_name,
        "user": f"{spec.uid}:{spec.gid}",
        "environment": env,
        "labels": labels,
        "device_requests": device_requests,
        "cgroup_parent": cgroup_parent(spec.owner, cgroup_driver),
        # Said explicitly, not left to defaults: a create must never widen these.
        "privileged": False,
        "tty": spec.tty,
        "stdin_open": spec.stdin_open,
        # Mounts, not volumes: a bind Mount fails when the host path is missing, where '-v'
        # would have the root daemon create it.
        "mounts": [
            Mount(target=m.container_path, source=m.host_path, type="bind", read_only=m.read_only)
            for m in spec.mounts
        ]
        + device_list_mounts(spec.gpu_uuids),
    }
    if spec.mounts:
        # A container that sees host paths runs as its owner and can never gain privileges
        # (set-uid files in the image included): invariant I9.
        kwargs["security_opt"] = ["no-new-privileges"]
    if spec.working_dir is not None:
        kwargs["working_dir"] = spec.working_dir
    if limits.cpus is not None:
        kwargs["nano_cpus"] = round(limits.cpus * 1_000_000_000)
    if limits.memory_bytes is not None:
        kwargs["mem_limit"] = limits.memory_bytes
        # MemorySwap is memory + swap. Docker's default (-1 or 2× memory) would let a container
        # swap; equal to memory means no swap unless the limits say otherwise.
        kwargs["memswap_limit"] = (
            limits.memory_swap_bytes
            if limits.memory_swap_bytes is not None
            else limits.memory_bytes
        )
    if limits.shm_bytes is not None:
        kwargs["shm_size"] = limits.shm_bytes
    if limits.pids is not None:
        kwargs["pids_limit"] = limits.pids
    return kwargs

"""Request and response bodies of the API, shared by server and client. Imports only pydantic
and ds01.model, so the client stays light."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # No path, user name, image, environment or command can hold a NUL: refused here, once,
        # for every text of every request body, before it reaches the OS (a 500 otherwise).
        where = _nul_at(data, "")
        if where is not None:
            shown = "".join(c if c.isprintable() else "?" for c in where[:80])
            raise ValueError(f"{shown or 'body'}: NUL characters are not allowed")
        return data


def _nul_at(value: Any, where: str) -> str | None:
    """The path of the first text (or key) holding a NUL, or None."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{where}.{k}" if where else str(k)
            if isinstance(k, str) and "\x00" in k:
                return here
            found = _nul_at(v, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _nul_at(v, f"{where}[{i}]")
            if found is not None:
                return found
    return None


class AllocateIn(_In):
    """Exactly one of gpus, mig, gpueq or cpu_only (AllocationRequest.from_options checks)."""

    gpus: int | None = Field(default=None, ge=1, le=64, description="Whole GPUs")
    mig: list[str] | None = Field(default=None, min_length=1, description="MIG profiles")
    gpueq: str | None = Field(default=None, description="Any units worth at least this")
    cpu_only: bool = False
    container: str | None = Field(default=None, description="Container the GPUs are for")


class ReleaseIn(_In):
    reason: str = Field(default="user_release", min_length=1, max_length=500)


class DrainIn(_In):
    target: str = Field(min_length=1, description="Unit UUID, GPU UUID or GPU index")
    reason: str = Field(min_length=1, max_length=500)


class UnitOut(BaseModel):
    uuid: str
    name: str = Field(
        default="",
        description="The unit's one name in every view: '3' (a whole GPU) or '7/1.0' "
        "(GPU index / GPU-instance id . compute-instance id)",
    )
    kind: str
    gpu_uuid: str
    gpu_index: int
    model: str
    profile: str | None
    memory_total_mib: int | None
    gpueq: float
    gpueq_exact: str
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


class AllocationOut(BaseModel):
    id: int
    user: str
    group: str | None
    container: str | None
    state: str
    units: list[UnitOut]
    gpueq: float
    gpueq_exact: str
    created_at: str
    expires_at: str | None = None
    hold_until: str | None = None
    released_at: str | None = None
    release_reason: str | None = None
    warnings: list[str] = Field(
        default=[], description="What to know about the units, e.g. one busy outside ds01"
    )
    lifecycle: LifecycleOut | None = Field(
        default=None, description="Its idle and runtime countdowns (in `ds01 quota`)"
    )


class UnitProcessOut(BaseModel):
    pid: int | None = Field(description="null when hidden (privacy: hide_others)")
    name: str | None = Field(description="null when unknown or hidden")
    owner: str | None = Field(
        description="Host user of a process outside ds01, the holder for a ds01 container's "
        "own; null when unknown; '(hidden)' under privacy: hide_others"
    )
    used_memory_mib: int | None = None
    foreign: bool = Field(description="True: not the work of the ds01 container holding the unit")


class UnitStatusOut(UnitOut):
    drained: bool = False
    drain_reason: str | None = None
    user: str | None = Field(default=None, description="Holder; null when free or hidden")
    allocation_id: int | None = None
    state: str | None = Field(default=None, description="Allocation state; null when free")
    container: str | None = None
    hold_until: str | None = None
    utilization_pct: float | None = Field(
        default=None, description="GPU utilization; null when unknown (MIG devices)"
    )
    memory_used_mib: int | None = None
    processes: list[UnitProcessOut] = Field(
        default=[], description="Compute processes on the unit, from the latest sample"
    )
    busy: bool = Field(
        default=False,
        description="Free, but in use outside ds01 (a process, memory or utilization): "
        "placement gives it last",
    )


class StatusOut(BaseModel):
    backend: str
    sampled_at: str | None
    units: list[UnitStatusOut]
    free_gpueq: float
    total_gpueq: float
    warnings: list[str] = []


class LimitValue(BaseModel):
    value: Any
    source: str
    kind: str | None = Field(
        default=None,
        description="How value reads: gpueq | int | float | bool | size (bytes) | duration (s)",
    )


class OfferOut(BaseModel):
    """Units of one kind the scheduler would grant the caller now, in one new container."""

    profile: str | None = Field(description="MIG profile; null for whole GPUs")
    count: int = Field(description="The most of them granted now (max_units_per_container)")


class QuotaOut(BaseModel):
    user: str
    group: str | None
    limits: dict[str, LimitValue]
    allocations: list[AllocationOut]
    used_gpueq: float
    used_gpueq_exact: str
    max_gpueq: float
    remaining_gpueq: float
    containers: int
    max_containers: int
    exempt: bool
    can_get: list[OfferOut] = Field(
        default=[], description="What the scheduler would grant now, one kind at a time"
    )
    suggested: str | None = Field(
        default=None, description="The GPU request hints suggest to this user, e.g. --mig 1g.10gb"
    )


class EventOut(BaseModel):
    id: int
    ts: str
    kind: str
    action: str
    actor: str | None
    user: str | None
    allocation_id: int | None
    reason: str
    message: str
    details: dict[str, Any]


class UsageFiguresOut(BaseModel):
    key: str = Field(description="the user or group ('' for no group; 'total' in total)")
    gpu_hours: float = Field(description="gpueq·hours held (reserved, running or held)")
    active_gpu_hours: float = Field(description="of gpu_hours, units judged in use")
    idle_gpu_hours: float = Field(description="of gpu_hours, units judged idle")
    unknown_gpu_hours: float = Field(description="of gpu_hours, neither (unit not sampled)")
    idle_share: float | None = Field(description="idle_gpu_hours / gpu_hours; null: none held")
    energy_kwh: float = Field(description="GPU energy attributed to the allocations")
    co2_kg: float = Field(description="energy_kwh × grid_intensity_g_per_kwh / 1000")
    unmetered_gpu_hours: float = Field(
        description="of gpu_hours, on GPUs reporting neither energy nor power (not in energy)"
    )
    allocations: int
    containers: int = Field(description="allocations made for a container")


class MachineUsageOut(BaseModel):
    sampled_hours: float = Field(description="hours covered by samples (ds01d running)")
    capacity_gpu_hours: float = Field(description="every unit's gpueq × sampled time")
    energy_kwh: float = Field(description="all GPUs' energy")
    unallocated_energy_kwh: float = Field(description="of it, charged to no allocation")
    co2_kg: float


class UsagePointOut(BaseModel):
    hour: str = Field(description="the UTC hour's start, ISO 8601")
    key: str
    gpu_hours: float


class UsageReportOut(BaseModel):
    start: str = Field(description="ISO 8601; hours that begin at or after it (rounded down)")
    end: str = Field(description="ISO 8601; hours that begin before it")
    by: str = Field(description="user | group")
    scope: str = Field(description="all (an admin's report) | own | user (an admin's --user)")
    grid_intensity_g_per_kwh: float
    rows: list[UsageFiguresOut]
    total: UsageFiguresOut
    machine: MachineUsageOut | None = Field(description="admins' reports of everyone only")
    series: list[UsagePointOut] = Field(description="with ?series=1: gpu hours per hour")


class WhoAmIOut(BaseModel):
    user: str
    uid: int
    groups: list[str]
    admin: bool


class LoopOut(BaseModel):
    """One background loop of ds01d: its last successful pass (epoch seconds, None before the
    first), the error it is failing with now (None while it works), the seconds it waits
    between passes (None for a loop driven by events) and when it started (epoch seconds)."""

    last_ok: float | None
    failing: str | None
    interval_s: float | None = None
    running_since: float | None = None


class HealthOut(BaseModel):
    status: str
    version: str
    backend: str
    docker: str
    loops: dict[str, LoopOut] = {}
    # Broken state invariants found by the last check (docs/allocation.md, "Invariants"),
    # e.g. "I5: allocation 12 is active but its audit log ends with 'released'".
    invariants: list[str] = []
    # Config keys changed by a reload that take effect only when ds01d restarts.
    restart_needed: list[str] = []


class ErrorBody(BaseModel):
    kind: str
    what: str
    why: str | None = None
    fix: str | None = None
    reason: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


class DeployIn(_In):
    name: str = Field(min_length=1, max_length=63)
    image: str = Field(min_length=1, max_length=512)
    gpus: int | None = Field(default=None, ge=1, le=64)
    mig: list[str] | None = Field(default=None, min_length=1)
    gpueq: str | None = None
    cpu_only: bool = False
    workspace: str | None = None
    data: list[str] = []
    env: dict[str, str] = {}
    command: list[str] | None = None
    interactive: bool = False
    queue: bool = Field(
        default=False,
        description="When quota allows but no units are free, queue the request instead of "
        "refusing it (the deploy stream ends in a 'queued' line)",
    )


class KeepAliveIn(_In):
    duration: str = Field(
        min_length=1, max_length=32, description="How long, as config durations: 6h, 90m, 1h30m"
    )


class ContainerAllocationOut(BaseModel):
    id: int
    state: str
    hold_until: str | None = None
    expires_at: str | None = None
    gpueq: float
    gpueq_exact: str


class MountOut(BaseModel):
    type: str = Field(description="bind | volume | tmpfs")
    source: str = Field(description="Host directory (or volume name)")
    target: str = Field(description="Path inside the container")
    read_only: bool


class ContainerLimitsOut(BaseModel):
    """The limits the engine enforces; null where none is set."""

    cpus: float | None = None
    memory_bytes: int | None = None
    memory_swap_bytes: int | None = Field(
        default=None, description="Memory plus swap (-1: swap unlimited)"
    )
    shm_bytes: int | None = None
    pids: int | None = None


class LifecycleOut(BaseModel):
    idle_since: str | None = Field(
        default=None, description="Since when its GPUs are idle (null: in use)"
    )
    next_stop: str | None = Field(
        default=None,
        description="What will stop it first: idle_timeout | max_runtime (null: nothing)",
    )
    stop_at: str | None = Field(default=None, description="When, unless it is used again")
    kept_until: str | None = Field(
        default=None, description="A keep-alive holds off the idle stop until then"
    )


class ContainerOut(BaseModel):
    name: str = Field(description="Your short name for it")
    docker_name: str
    id: str
    owner: str | None
    image: str
    state: str = Field(description="created | running | paused | restarting | exited | dead")
    created: str | None
    started_at: str | None
    finished_at: str | None
    exit_code: int | None = Field(
        default=None, description="Of its last run, once it has exited (137: killed by SIGKILL)"
    )
    gpus: list[UnitOut] = Field(description="Units it is pinned to (from its allocation)")
    gpu_device_ids: list[str] = Field(description="Device IDs in the container's config")
    allocation: ContainerAllocationOut | None
    note: str | None = None
    warnings: list[str] = Field(
        default=[], description="What to know about its units, e.g. one busy outside ds01"
    )
    mounts: list[MountOut] = Field(
        default=[], description="Directories mounted in it (not NVIDIA's device-list binds)"
    )
    limits: ContainerLimitsOut | None = None
    lifecycle: LifecycleOut | None = Field(
        default=None,
        description="Its idle and runtime countdowns (docs/containers.md, 'Idle and runtime "
        "limits'); null until ds01d has judged its GPUs once",
    )
    env: dict[str, str] = Field(
        default={},
        description="Its environment (the image's too); the value of a name containing TOKEN, "
        "KEY, SECRET, PASSWORD, PASSWD or CREDENTIAL (any case) is ***",
    )


class UnitStatsOut(BaseModel):
    """One allocated unit as ds01d's latest GPU sample reads it (the whole unit: it is the
    container's alone)."""

    uuid: str
    name: str = Field(description="'3' (a whole GPU) or '7/1.0' (a MIG device), as elsewhere")
    model: str
    profile: str | None = Field(description="MIG profile, e.g. 3g.40gb; null for a whole GPU")
    memory_used_mib: int | None = Field(description="GPU memory in use; null when unknown")
    memory_total_mib: int | None
    utilization_pct: float | None = Field(
        description="Percent of the time a kernel ran (NVML utilization.gpu); null when "
        "unknown, and always null for a MIG device: NVML reports none per MIG device"
    )
    note: str | None = Field(default=None, description="Why a value is null, when it always is")


class ContainerStatsOut(BaseModel):
    """A running container's CPU, memory and GPUs from ds01d's own samples (docs/containers.md,
    'Stats'): CPU and memory from its cgroup, read every gpu.sample_interval; GPUs from the
    latest GPU sample. Null is unknown, never 0."""

    name: str = Field(description="Its short name, as `ds01 container list` shows it")
    docker_name: str
    id: str
    owner: str
    taken_at: str | None = Field(description="When its cgroup was read; null before the first read")
    cpu_pct: float | None = Field(
        description="CPU used between ds01d's last two reads, percent of one core (200 = two "
        "cores busy, as docker stats shows it); null on the first read"
    )
    cpu_limit: float | None = Field(description="Cores it may use (--cpus); null: no limit")
    memory_used_bytes: int | None = Field(
        description="Memory in use: the cgroup's usage minus its inactive file cache (docker "
        "stats' formula; files in /dev/shm count)"
    )
    memory_limit_bytes: int | None = Field(description="Its memory limit; null: no limit")
    memory_pct: float | None = Field(description="memory_used_bytes of memory_limit_bytes, %")
    gpus: list[UnitStatsOut] = Field(description="Its allocated units; empty for CPU-only")
    gpu_sampled_at: str | None = Field(description="When the GPU sample was taken")


class OrphanOut(BaseModel):
    container_id: str
    docker_name: str
    owner: str | None
    gpu_device_ids: list[str]
    problem: str


# ---- bare-metal grants and host GPU processes (docs/grants.md) --------------------------------


class ExemptIn(_In):
    """Exactly one of until (an ISO date or time, local unless it says) or duration ("3d")."""

    user: str = Field(min_length=1, max_length=256)
    countdown: Literal["idle", "runtime"]
    until: str | None = Field(default=None, max_length=64)
    duration: str | None = Field(default=None, max_length=64)
    reason: str = Field(max_length=2000, description="Why, for the audit log (1-500 characters)")


class ReserveIn(_In):
    """An admin's reservation of units (docs/queue.md, Reservations). Times as people write
    them (now, 18:00, 2026-12-20, '2026-12-20 18:00', ISO with an offset) or a length: from
    now for `start`, from `start` for `end` ("4h")."""

    units: list[str] = Field(
        min_length=1,
        max_length=256,
        description="GPU indices ('0'), MIG device names ('7/1.0') or UUIDs, as "
        "'ds01 gpu status' shows them",
    )
    start: str = Field(min_length=1, max_length=64)
    end: str = Field(min_length=1, max_length=64)
    party: str = Field(min_length=1, max_length=256, description="for whom: a user, or group:NAME")
    reason: str = Field(max_length=2000, description="Why, for the audit log (1-500 characters)")
    grace: str | None = Field(
        default=None,
        max_length=64,
        description="unused this long after its start, its units return to the pool "
        "(default: config reservations.grace)",
    )


class UnreserveIn(_In):
    reason: str = Field(default="cancelled", min_length=1, max_length=500)


class ReservationOut(BaseModel):
    id: int
    units: list[str] = Field(description="unit UUIDs")
    unit_names: list[str] = Field(description="the units as 'ds01 gpu status' names them")
    user: str | None = Field(description="reserved for this user, or")
    group: str | None = Field(description="for the members of this group")
    start: str
    end: str
    grace_s: float
    reason: str
    status: str = Field(
        description="upcoming | waiting (open, not used yet) | in_use | expired (unused "
        "after its grace period) | ended | cancelled"
    )
    used_at: str | None = None
    created_by: str
    created_at: str
    ended_at: str | None = None
    ended_by: str | None = None
    warnings: list[str] = Field(
        default_factory=list,
        description="on creation: units in use now that the reservation does not take away",
    )


class UnexemptIn(_In):
    user: str = Field(min_length=1, max_length=256)
    countdown: Literal["idle", "runtime"]
    reason: str = Field(default="ended", min_length=1, max_length=500)


class ExemptionOut(BaseModel):
    id: int
    user: str
    countdown: str = Field(description="idle | runtime")
    until: str
    reason: str
    created_by: str
    created_at: str


class GrantIn(_In):
    """Exactly one of duration ("4h", "30m", "90s") or permanent."""

    user: str = Field(min_length=1, max_length=256)
    duration: str | None = Field(default=None, max_length=64)
    permanent: bool = False
    reason: str = Field(max_length=2000, description="Why, for the audit log (1-500 characters)")


class RevokeIn(_In):
    user: str = Field(min_length=1, max_length=256)
    reason: str = Field(default="revoked", min_length=1, max_length=500)


class GrantOut(BaseModel):
    id: int
    user: str
    granted_by: str
    reason: str
    granted_at: str
    until: str | None = Field(description="When it ends; null for a permanent grant")
    permanent: bool
    ended_at: str | None = None
    end_reason: str | None = Field(default=None, description="expired | revoked | replaced")
    ended_by: str | None = None


class AccessEntryOut(BaseModel):
    """One user who may compute on the bare host."""

    user: str
    kind: str = Field(description="exempt (config exempt_users) | grant")
    until: str | None = Field(description="When the access ends; null: no end")
    reason: str | None = None
    granted_by: str | None = None
    granted_at: str | None = None
    grant_id: int | None = None


class AccessOut(BaseModel):
    """The caller's own access to GPUs on the bare host."""

    user: str
    state: str = Field(description="exempt | granted | containers_only")
    until: str | None = Field(description="End of the grant; null unless granted with an end")
    reason: str | None = Field(description="The grant's reason; null unless granted")
    how: str = Field(description="How this user gets GPU work done")


class HostProcessOut(BaseModel):
    """A GPU compute process, mapped to its container or its host user."""

    pid: int
    user: str | None = Field(description="Owner (real uid) by name; null when NSS lacks it")
    uid: int
    name: str
    status: str = Field(
        description="container | container_unallocated | system | exempt | granted | violation"
    )
    gpu_uuids: list[str]
    gpu_indices: list[int]
    unit_uuids: list[str]
    used_memory_mib: int | None
    container_id: str | None
    allocation_id: int | None
    cause: str | None = Field(description="For a violation: no_grant | grant_ended")
    policy: str | None = Field(description="For a violation: report | terminate")
    action: str | None = Field(description="sigterm_sent | sigkill_sent | refused, or null")
    first_seen: str


class QueueEntryOut(BaseModel):
    """A queue entry. Another user's entry shows only its place, size and age (and its user,
    unless privacy is hide_others); name, image and note are the owner's and admins'."""

    id: int
    user: str | None = Field(description="null when hidden (privacy: hide_others)")
    name: str | None = Field(description="the container's name; null for others' entries")
    image: str | None = None
    request: str | None = Field(description="what it waits for: '1 GPU', 'MIG 3g.40gb'")
    state: str = Field(description="queued | admitting | admitted | cancelled | expired | failed")
    position: int | None = Field(description="1 = next; null once it has ended")
    size: float = Field(description="units asked for")
    queued_at: str
    waited_s: float
    note: str | None = Field(description="why it waits, or how it ended")
    priority: float | None = None
    estimated_start: str | None = Field(
        default=None,
        description="when it is expected to start, from the known ends of what runs now "
        "(max runtime, idle stops, holds); null: unknown, or it is not waiting",
    )
    allocation_id: int | None = None
    container_id: str | None = None
    mine: bool
    origin: str = Field(
        default="deploy",
        description="deploy (ds01 container deploy --queue) | gate (a docker create the gate "
        "holds open while it waits: gate.queue wait)",
    )


class QueueOut(BaseModel):
    entries: list[QueueEntryOut]
    waiting: int = Field(description="entries waiting in the whole queue")


class TopOut(BaseModel):
    """GET /v1/top: what `ds01 top` shows, in one answer. Each part is what its own endpoint
    answers the caller; the admin parts are null for others."""

    admin_parts: bool = Field(description="whether health, host_processes and orphans were asked")
    whoami: WhoAmIOut
    status: StatusOut = Field(description="GET /v1/gpu/status")
    allocations: list[AllocationOut] = Field(
        description="GET /v1/allocations?gpus=1 (an admin's: all=1)"
    )
    queue: QueueOut | None = Field(description="GET /v1/queue?all=1; null without a queue")
    events: list[EventOut] = Field(description="GET /v1/events?limit=EVENTS (?events=, 10)")
    health: HealthOut | None = None
    host_processes: list[HostProcessOut] | None = None
    orphans: list[OrphanOut] | None = None


class QueueFactorOut(BaseModel):
    name: str = Field(description="fairshare | age | group | size")
    value: float = Field(description="the factor, 0..1")
    weight: float = Field(description="its weight (queue.weights)")
    points: float = Field(description="value × weight")


class QueueExplainOut(BaseModel):
    entry: QueueEntryOut
    usage_gpueq_s: float | None = Field(
        description="the user's GPU use in gpueq·seconds, decayed with queue.usage_half_life"
    )
    factors: list[QueueFactorOut]
    total: float | None = Field(description="the priority: the sum of the factors' points")

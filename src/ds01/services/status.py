"""What `ds01 gpu status` and `ds01 quota` report, each assembled here once: the unit table with
its holders (and the privacy rule, which holders a caller may see), and a user's limits, live
allocations and what is left of their quota (the gate's `--gpus all` reads the same).

Reads only, one read transaction each; blocking (the state database), so the event loop calls
them in a thread. Must not talk to Docker or NVML: GPU facts come from the MachineSample passed
in. Rendering (JSON, tables) is the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from ds01.config import ResolvedLimits
from ds01.identity import Caller, is_admin
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import GpuProcess, MachineSample
from ds01.scheduler.busy import is_busy
from ds01.scheduler.snapshot import UnitUse
from ds01.services.allocation import AllocationService
from ds01.store.allocations import AllocationRow
from ds01.store.units import UnitRow


@dataclass(frozen=True)
class UnitProcess:
    """A compute process on a unit, as `ds01 gpu status` shows it. Under `privacy:
    hide_others` another user's process shows only that it runs: owner_shown False, and its
    owner, pid and name are not given out (a caller who is not an admin)."""

    pid: int
    name: str | None
    owner: str | None  # the host user (foreign), or the unit's holder (a ds01 container's own)
    used_memory_mib: int | None
    foreign: bool  # not the work of the ds01 container that holds the unit
    owner_shown: bool = True


@dataclass(frozen=True)
class UnitLine:
    """One unit of `ds01 gpu status`."""

    row: UnitRow
    allocation: AllocationRow | None
    # False for another user's holding under `privacy: hide_others` (the caller no admin):
    # who holds it, which allocation and container are not shown, only that it is held.
    holder_shown: bool
    utilization_pct: float | None  # None: unknown (MIG devices report none; no sample yet)
    memory_used_mib: int | None
    processes: tuple[UnitProcess, ...] = ()
    busy: bool = False  # free, but in use outside ds01 (scheduler/busy.py): placed last


@dataclass(frozen=True)
class GpuStatus:
    units: tuple[UnitLine, ...]
    free: GpuEq  # units neither held nor drained
    total: GpuEq
    sample: MachineSample | None


def gpu_status(
    allocations: AllocationService, caller: Caller, sample: MachineSample | None
) -> GpuStatus:
    config = allocations.config
    hide = config.privacy == "hide_others" and not is_admin(caller, config)
    util: dict[str, float | None] = {}
    mem_used: dict[str, int | None] = {}
    if sample is not None:
        for g in sample.gpus:
            util[g.uuid] = g.utilization_pct
            mem_used[g.uuid] = g.memory_used_mib
            for m in g.mig_devices:
                mem_used[m.uuid] = m.memory_used_mib
    on_unit: dict[str, list[GpuProcess]] = {}
    for p in sample.processes if sample is not None else ():
        on_unit.setdefault(p.unit_uuid or p.gpu_uuid, []).append(p)
    use = allocations.unit_use()
    lines: list[UnitLine] = []
    free = total = GpuEq(0)
    for view in allocations.status():
        u, a = view.unit.unit, view.allocation
        total = total + u.gpueq
        is_free = a is None and not view.unit.drained
        if is_free:
            free = free + u.gpueq
        procs = _processes(on_unit.get(u.uuid, ()), use.get(u.uuid), a, caller, hide)
        lines.append(
            UnitLine(
                row=view.unit,
                allocation=a,
                holder_shown=a is not None and (a.user == caller.name or not hide),
                utilization_pct=util.get(u.uuid),
                memory_used_mib=mem_used.get(u.uuid),
                processes=procs,
                busy=is_free and is_busy(use.get(u.uuid), u),
            )
        )
    return GpuStatus(units=tuple(lines), free=free, total=total, sample=sample)


def _processes(
    found: Iterable[GpuProcess],
    use: UnitUse | None,
    holding: AllocationRow | None,
    caller: Caller,
    hide: bool,
) -> tuple[UnitProcess, ...]:
    """The sample's processes on one unit. Foreign ones (services/unituse.py: not in the ds01
    container that holds the unit) carry the host user the process watch found; the others
    belong to the unit's holder. Without the daemon's process view every one counts as
    foreign, as busy.py counts any process on a free unit."""
    foreign = {p.pid: p for p in use.processes} if use is not None else None
    out: list[UnitProcess] = []
    for p in found:
        f = foreign.get(p.pid) if foreign is not None else None
        outside = foreign is None or f is not None
        if outside:
            owner = f.owner if f is not None else None
        else:
            owner = holding.user if holding is not None else None
        out.append(
            UnitProcess(
                pid=p.pid,
                name=p.name or (f.name if f is not None else None),
                owner=owner,
                used_memory_mib=p.used_memory_mib,
                foreign=outside,
                # Under hide_others only the caller's own processes say whose they are.
                owner_shown=not hide or (owner is not None and owner == caller.name),
            )
        )
    return tuple(out)


# Limits fields whose config key (the key ResolvedLimits.sources uses) has another name.
_CONFIG_KEY = {
    "memory_bytes": "memory",
    "memory_swap_bytes": "memory_swap",
    "shm_bytes": "shm",
    "max_runtime_s": "max_runtime",
    "idle_timeout_s": "idle_timeout",
    "gpu_hold_after_stop_s": "gpu_hold_after_stop",
    "group_max_gpueq": "max_gpueq_total",
}


def limit_kind(name: str) -> str | None:
    """How a Limits field's value reads (config/schema.py LIMIT_KINDS): 'size' for
    memory_bytes, 'duration' for idle_timeout_s, …; None for a field it does not list."""
    from ds01.config.schema import LIMIT_KINDS

    key = _CONFIG_KEY.get(name, name)
    return "gpueq" if key == "max_gpueq_total" else LIMIT_KINDS.get(key)


@dataclass(frozen=True)
class Quota:
    """A user's effective limits, their live allocations, and what is left."""

    resolved: ResolvedLimits
    allocations: tuple[AllocationRow, ...]
    exempt: bool  # keeps bare-metal GPU access on the host

    @property
    def used(self) -> GpuEq:
        return GpuEq.total(r.gpueq for r in self.allocations)

    @property
    def left(self) -> GpuEq:
        """What the user may still take (negative when an admin lowered the limit)."""
        return self.resolved.limits.max_gpueq - self.used

    @property
    def containers(self) -> int:
        """Containers (or bare reservations) holding an allocation."""
        return len({r.container or f"#{r.id}" for r in self.allocations})

    def limits(self) -> dict[str, tuple[object, str]]:
        """Each limit by its field name: (value, where it came from: "defaults", "group:<name>"
        or "user:<name>")."""
        lim = self.resolved.limits
        return {
            f.name: (
                getattr(lim, f.name),
                self.resolved.sources.get(_CONFIG_KEY.get(f.name, f.name), "defaults"),
            )
            for f in fields(lim)
            if f.name != "group"
        }


def quota(allocations: AllocationService, caller: Caller) -> Quota:
    return Quota(
        resolved=allocations.limits_for(caller),
        allocations=tuple(allocations.live_allocations(caller, all_users=False)),
        exempt=allocations.config.is_exempt(caller.name),
    )

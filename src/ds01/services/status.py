"""What `ds01 gpu status` and `ds01 quota` report, each assembled here once: the unit table with
its holders (and the privacy rule, which holders a caller may see), and a user's limits, live
allocations and what is left of their quota (the gate's `--gpus all` reads the same).

Reads only, one read transaction each; blocking (the state database), so the event loop calls
them in a thread. Must not talk to Docker or NVML: GPU facts come from the MachineSample passed
in. Rendering (JSON, tables) is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ds01.config import ResolvedLimits
from ds01.identity import Caller, is_admin
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import MachineSample
from ds01.services.allocation import AllocationService
from ds01.store.allocations import AllocationRow
from ds01.store.units import UnitRow


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
    lines: list[UnitLine] = []
    free = total = GpuEq(0)
    for view in allocations.status():
        u, a = view.unit.unit, view.allocation
        total = total + u.gpueq
        if a is None and not view.unit.drained:
            free = free + u.gpueq
        lines.append(
            UnitLine(
                row=view.unit,
                allocation=a,
                holder_shown=a is not None and (a.user == caller.name or not hide),
                utilization_pct=util.get(u.uuid),
                memory_used_mib=mem_used.get(u.uuid),
            )
        )
    return GpuStatus(units=tuple(lines), free=free, total=total, sample=sample)


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

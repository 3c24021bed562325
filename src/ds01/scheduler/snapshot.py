"""The frozen view the scheduler decides on: every unit, who holds what, and the request."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property

from ds01.model.allocation import AllocState
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Unit


@dataclass(frozen=True)
class ForeignProcess:
    """A compute process on a unit that no ds01 allocation accounts for (issue 13, item 2)."""

    pid: int
    name: str | None
    owner: str | None  # None: unknown (gone, not a process of this host, or no such user)
    used_memory_mib: int | None = None


@dataclass(frozen=True)
class UnitUse:
    """What the daemon's latest MachineSample says runs on a unit. Read once per sample by
    services/, never by an NVML call during a decision. None means unknown: MIG devices report
    no utilization, and a unit the sample does not list reports nothing."""

    processes: tuple[ForeignProcess, ...] = ()
    memory_used_mib: int | None = None
    utilization_pct: float | None = None


@dataclass(frozen=True)
class UnitState:
    """One unit as the store sees it. alloc_id/holder are None when the unit is free."""

    unit: Unit
    alloc_id: int | None = None
    holder: str | None = None
    drained: bool = False
    last_released_at: datetime | None = None  # for least-recently-used placement
    use: UnitUse | None = None  # None: no sample yet (busy.py treats it as quiet)
    # An admin's reservation keeps it from this request (scheduler/reservations.py): how it is
    # described to the requester ('reserved for alice from 14:00 to 18:00 (reservation 3: …)').
    reserved: str | None = None

    @property
    def free(self) -> bool:
        return self.alloc_id is None and not self.drained and self.reserved is None


@dataclass(frozen=True)
class Holding:
    """One live allocation (reserved, active or held) and its units."""

    alloc_id: int
    user: str
    state: AllocState
    units: tuple[Unit, ...]
    container: str | None = None
    group: str | None = None
    hold_until: datetime | None = None

    @cached_property
    def gpueq(self) -> GpuEq:
        # Kept: the quota rules ask for it several times per decision (a Fraction sum each).
        return GpuEq.total(u.gpueq for u in self.units)


@dataclass(frozen=True)
class Snapshot:
    units: tuple[UnitState, ...]
    holdings: tuple[Holding, ...] = ()
    now: datetime | None = None


class RequestKind(StrEnum):
    GPUS = "gpus"  # N whole GPUs
    MIG = "mig"  # a list of MIG profiles
    GPUEQ = "gpueq"  # any units worth at least X, smallest fitting first
    CPU = "cpu"  # no GPU at all


@dataclass(frozen=True)
class Request:
    user: str
    kind: RequestKind
    count: int = 0  # for GPUS
    profiles: tuple[str, ...] = ()  # for MIG
    gpueq: GpuEq | None = None  # for GPUEQ
    container: str | None = None
    # Units to take when free (a restarted container gets its old units back if possible).
    preferred_units: tuple[str, ...] = field(default=())
    # A re-allocation for a container that already counts towards max_containers.
    existing_container: bool = False


@dataclass(frozen=True)
class Placement:
    units: tuple[Unit, ...]
    # Said to the user with the result: e.g. a unit that is busy outside ds01 (busy.py).
    warnings: tuple[str, ...] = ()

    @property
    def gpueq(self) -> GpuEq:
        return GpuEq.total(u.gpueq for u in self.units)

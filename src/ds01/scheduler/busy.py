"""Units busy outside ds01 (issue 13, item 2): "Placement prefers units with no foreign
processes and low memory use; a request that can only be met by a busy unit is met with a
warning that names the process owner (or refused, if config says so)."

The rule, on the UnitUse that services/ copied from the daemon's latest MachineSample:

- A free unit is *busy* when a compute process runs on it (any process on a free unit is
  foreign: ds01 containers run only on units they hold), or its utilization is at least
  BUSY_UTILIZATION_PCT, or more than BUSY_MEMORY_FRACTION of its memory is in use.
- Unknown is not busy: no sample yet, or a MIG device that reports no utilization, says nothing
  against a unit. (Refusing on "unknown" would refuse every request before the first sample.)
- place() first chooses among the quiet units only; only when they cannot satisfy the request
  does it choose among all free units, and then judge() warns (allocation.busy_units: warn,
  the default) or refuses with RefusalReason.UNIT_BUSY (refuse).

Pure: reads the Snapshot's UnitUse, imports no store, Docker or NVML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from enum import StrEnum
from fractions import Fraction
from typing import Final

from ds01.errors import RefusalReason
from ds01.model.inventory import Unit, UnitKind
from ds01.scheduler import explain
from ds01.scheduler.facts import Facts
from ds01.scheduler.snapshot import UnitState, UnitUse

BUSY_UTILIZATION_PCT: Final = 10.0
BUSY_MEMORY_FRACTION: Final = Fraction(1, 10)


class BusyPolicy(StrEnum):
    """config allocation.busy_units: what a request that only busy units can meet gets."""

    WARN = "warn"
    REFUSE = "refuse"


def is_busy(use: UnitUse | None, unit: Unit) -> bool:
    if use is None:
        return False
    if use.processes:
        return True
    if use.utilization_pct is not None and use.utilization_pct >= BUSY_UTILIZATION_PCT:
        return True
    total = unit.memory_total_mib
    used = use.memory_used_mib
    # used / total > BUSY_MEMORY_FRACTION, exactly, without building a Fraction per unit.
    limit = BUSY_MEMORY_FRACTION
    return bool(total and used is not None and used * limit.denominator > total * limit.numerator)


def quiet(facts: Facts) -> Facts:
    """facts with the busy units taken out of the free ones (the first placement pass)."""
    free = tuple(us for us in facts.free if not is_busy(us.use, us.unit))
    return facts if len(free) == len(facts.free) else replace(facts, free=free)


def _gib(mib: int) -> str:
    return f"{mib / 1024:.0f}"


def describe(us: UnitState) -> str:
    """'GPU 1 (GPU-…): 1 process (python, pid 4242, of carol), 70 of 80 GiB used, 94 % busy'."""
    use = us.use or UnitUse()
    parts: list[str] = []
    if use.processes:
        procs = ", ".join(
            f"{p.name or 'process'} pid {p.pid} of {p.owner or 'an unknown user'}"
            for p in use.processes
        )
        n = len(use.processes)
        parts.append(f"{n} process{'es' if n != 1 else ''} outside ds01 ({procs})")
    if use.memory_used_mib is not None and us.unit.memory_total_mib:
        parts.append(
            f"{_gib(use.memory_used_mib)} of {_gib(us.unit.memory_total_mib)} GiB memory used"
        )
    if use.utilization_pct is not None:
        parts.append(f"{use.utilization_pct:.0f} % busy")
    u = us.unit
    name = u.title + (f" {u.profile}" if u.kind is UnitKind.MIG and u.profile else "")
    return f"{name} ({u.uuid}): {', '.join(parts)}"


def judge(facts: Facts, units: Sequence[Unit], policy: BusyPolicy) -> tuple[str, ...]:
    """Warnings for the busy units among those chosen; with REFUSE, the refusal instead."""
    by_uuid = {us.unit.uuid: us for us in facts.free}
    busy = [by_uuid[u.uuid] for u in units if u.uuid in by_uuid and is_busy(by_uuid[u.uuid].use, u)]
    if not busy:
        return ()
    lines = [describe(us) for us in busy]
    if policy is BusyPolicy.REFUSE:
        raise explain.refusal(
            RefusalReason.UNIT_BUSY,
            units="; ".join(lines),
        )
    return tuple(f"only a busy unit was free: {line}" for line in lines)

"""What a request costs in quota terms (issue: "quota checks … compute the quota with the actual
chosen units"), as distinct types so a held amount cannot be passed where an asked one belongs.

A Demand exists twice per decision: first as the least the request can cost on this machine
(before placement, so a hopeless request is refused on quota before any unit is looked at),
then exactly, from the units actually chosen (a `gpueq=0.5` request may take a 4/7 slice).
Owns no rule; quotas.py and explain.py read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Unit, UnitKind
from ds01.scheduler.snapshot import RequestKind

# The same GpuEq shape plays three parts in every quota check (Kueue's PreemptorNewShare /
# TargetOldShare idea): what is already held, what the request adds, and the cap.
HeldGpuEq = NewType("HeldGpuEq", GpuEq)
AskedGpuEq = NewType("AskedGpuEq", GpuEq)
CapGpuEq = NewType("CapGpuEq", GpuEq)
UnitCount = NewType("UnitCount", int)


@dataclass(frozen=True)
class Demand:
    """The units, whole GPUs and gpueq a request takes.

    exact is False when gpueq (or units) is only a lower bound — a gpueq=X request before
    placement, or a MIG profile that weighs differently on two GPU models here; the refusal
    text then says "at least". It is True once computed from chosen units.
    """

    kind: RequestKind
    units: UnitCount
    whole_gpus: UnitCount
    gpueq: AskedGpuEq
    exact: bool

    @classmethod
    def of_units(cls, kind: RequestKind, units: tuple[Unit, ...]) -> Demand:
        return cls(
            kind=kind,
            units=UnitCount(len(units)),
            whole_gpus=UnitCount(sum(1 for u in units if u.kind is UnitKind.GPU)),
            gpueq=AskedGpuEq(GpuEq.total(u.gpueq for u in units)),
            exact=True,
        )

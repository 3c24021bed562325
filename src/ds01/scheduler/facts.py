"""Facts read once from a Snapshot: which units are free, who holds what, per-GPU MIG usage.

Every rule module reads these instead of walking the snapshot again, which keeps place()
O(units + holdings) (issue: "place() should be O(units + holdings)"). Pure; no rule lives here.

"Free" is conservative (STYLE 12): a unit is taken when its UnitState names an allocation or a
holder, *or* when any live Holding lists it — if the two disagree, the unit is not handed out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from ds01.model.allocation import LIVE_STATES
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Unit, UnitKind
from ds01.model.profile import MigProfile, profile_or_none
from ds01.scheduler.snapshot import Holding, Snapshot, UnitState

# Sort stand-in for "never released": compared only against other never-released units.
_NEVER = datetime.min


def profile_of(unit: Unit) -> MigProfile | None:
    """The MIG profile of a unit (model/profile.py); None for whole GPUs and for MIG devices
    whose profile is unnamed or of a shape ds01 does not know."""
    if unit.kind is not UnitKind.MIG:
        return None
    return profile_or_none(unit.profile)


def lru_key(us: UnitState) -> tuple[bool, datetime, int, str]:
    """Least recently used first: never released (None) beats any time, then oldest release,
    then GPU index and UUID so the order is total and the result deterministic."""
    released = us.last_released_at
    return (released is not None, released or _NEVER, us.unit.gpu_index, us.unit.uuid)


@dataclass(frozen=True)
class Facts:
    snapshot: Snapshot
    live: tuple[Holding, ...]  # holdings in a live state, by alloc_id
    free: tuple[UnitState, ...]  # units placement may choose, in snapshot order
    holding_of: Mapping[str, Holding]  # unit uuid → the live holding that has it
    taken: frozenset[str]  # uuids held by anyone (drained-but-free units are not in it)
    mig_used: Mapping[str, GpuEq]  # gpu uuid → gpueq of its taken MIG units
    mig_free: Mapping[str, GpuEq]  # gpu uuid → gpueq of its free MIG units
    # Every MIG profile on the machine, whatever its units' state → the gpueq of its units
    # (a profile name on two GPU models with different slice counts has two).
    profile_weights: Mapping[MigProfile, frozenset[GpuEq]]

    @property
    def usable(self) -> tuple[Unit, ...]:
        """Every unit that is not drained, free or not: what an empty machine could offer."""
        return tuple(us.unit for us in self.snapshot.units if not us.drained)

    def machine_profiles(self) -> frozenset[MigProfile]:
        """Every MIG profile present on the machine, whatever its state."""
        return frozenset(self.profile_weights)

    def free_of(self, profile: MigProfile) -> tuple[UnitState, ...]:
        """The free units of one MIG profile, in snapshot order."""
        return self._free_by_profile.get(profile, ())

    @cached_property
    def _free_by_profile(self) -> Mapping[MigProfile, tuple[UnitState, ...]]:
        # Grouped by profile text first: parsed once per distinct name, not once per unit.
        by_text: dict[str, list[UnitState]] = {}
        for us in self.free:
            if us.unit.kind is UnitKind.MIG and us.unit.profile is not None:
                by_text.setdefault(us.unit.profile, []).append(us)
        out: dict[MigProfile, tuple[UnitState, ...]] = {}
        for text, units in by_text.items():
            p = profile_or_none(text)
            if p is None:
                continue
            if p in out:  # two spellings of one profile: back in snapshot order
                merged = {id(us) for us in (*out[p], *units)}
                out[p] = tuple(us for us in self.free if id(us) in merged)
            else:
                out[p] = tuple(units)
        return out

    def holder_of(self, us: UnitState) -> str | None:
        h = self.holding_of.get(us.unit.uuid)
        return h.user if h is not None else us.holder


def read(snapshot: Snapshot) -> Facts:
    live = tuple(
        sorted(
            (h for h in snapshot.holdings if h.state in LIVE_STATES),
            key=lambda h: h.alloc_id,
        )
    )
    holding_of = {u.uuid: h for h in live for u in h.units}
    taken: set[str] = set(holding_of)
    free: list[UnitState] = []
    # Per GPU, the taken and the free MIG gpueq as exact sums of integers (GpuEq.add_to),
    # one Fraction per GPU rather than one per unit: this loop runs on every decision.
    used: dict[str, dict[int, int]] = {}
    left: dict[str, dict[int, int]] = {}
    # Profile text → its units' gpueq, keyed by (numerator, denominator): parsed and hashed
    # once per distinct name and weight, not once per unit.
    by_text: dict[str, dict[tuple[int, int], GpuEq]] = {}
    for us in snapshot.units:
        u = us.unit
        busy = us.alloc_id is not None or us.holder is not None or u.uuid in holding_of
        if busy:
            taken.add(u.uuid)
        if u.kind is UnitKind.MIG:
            gpu_used = used.setdefault(u.gpu_uuid, {})
            gpu_left = left.setdefault(u.gpu_uuid, {})
            if busy:
                GpuEq.add_to(gpu_used, u.gpueq)
            elif not us.drained and us.reserved is None:
                GpuEq.add_to(gpu_left, u.gpueq)
            if u.profile is not None:
                f = u.gpueq.fraction
                by_text.setdefault(u.profile, {})[(f.numerator, f.denominator)] = u.gpueq
        if not busy and not us.drained and us.reserved is None:
            free.append(us)
    weights: dict[MigProfile, set[GpuEq]] = {}
    for text, ws in by_text.items():
        p = profile_or_none(text)  # = profile_of() of each of those (MIG) units
        if p is not None:
            weights.setdefault(p, set()).update(ws.values())
    return Facts(
        snapshot=snapshot,
        live=live,
        free=tuple(free),
        holding_of=holding_of,
        taken=frozenset(taken),
        mig_used={g: GpuEq.of_parts(parts) for g, parts in used.items()},
        mig_free={g: GpuEq.of_parts(parts) for g, parts in left.items()},
        profile_weights={p: frozenset(ws) for p, ws in weights.items()},
    )

"""Choosing units for a `gpueq=X` request: "any units worth at least X, smallest fitting MIG
slice first" (issue, Request kinds).

The rule, in order of what matters:

1. Fewest units. One unit is what most work can use (CUDA sees one MIG device per process), so
   a single unit worth >= X always beats a combination. k = the fewest units whose gpueq can
   reach X: the k largest candidates are summed, so k is exact, not a heuristic.
2. Smallest total, smallest pieces first. The k units are picked one slot at a time: each slot
   takes the smallest candidate that still lets the remaining slots reach X with the largest
   candidates left. For k == 1 this is exactly "the smallest single unit whose gpueq >= X".
   For k > 1 it is a greedy, not a subset-sum optimum; on <= 64 units in 1/7 or 1/4 steps the
   difference is rare and small, and the result is still minimal in unit count.
3. Ties go to the caller's preference order (placement.py): MIG slices before whole GPUs of
   the same worth, then packing, then least recently used.

Every slot scans the candidates once, so choose() is O(k × units) with k <= max units.
Pure: takes sorted candidates, returns chosen ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from ds01.model.gpueq import GpuEq
from ds01.scheduler.snapshot import UnitState


def fewest_units(weights: Sequence[GpuEq], target: GpuEq) -> int | None:
    """The fewest of `weights` whose sum reaches target; None when all of them do not."""
    acc = GpuEq(0)
    for n, w in enumerate(sorted(weights, reverse=True), start=1):
        acc += w
        if acc >= target:
            return n
    return None


def choose(
    preferred_order: Sequence[UnitState], target: GpuEq, max_units: int
) -> tuple[UnitState, ...] | None:
    """Pick the fewest, smallest units from preferred_order worth at least target.

    preferred_order must be sorted smallest gpueq first, ties in the caller's preference.
    None when target cannot be reached with at most max_units of them.
    """
    if not target:
        return ()
    k = fewest_units([us.unit.gpueq for us in preferred_order], target)
    if k is None or k > max_units:
        return None
    # Largest first, for "the best the other slots could still add"; which of two equal
    # weights comes first does not change those sums.
    largest = sorted(preferred_order, key=lambda us: us.unit.gpueq, reverse=True)
    chosen: list[UnitState] = []
    picked: set[str] = set()
    need = target
    for slot in range(k):
        others = k - slot - 1
        # The best the other slots can add: the `others` largest not yet picked, or — if the
        # candidate itself is among them — the `others + 1` largest minus the candidate.
        top = [us for us in largest if us.unit.uuid not in picked][: others + 1]
        top_ids = {us.unit.uuid for us in top[:others]}
        best_others = GpuEq.total(us.unit.gpueq for us in top[:others])
        best_with_next = GpuEq.total(us.unit.gpueq for us in top)
        for us in preferred_order:
            if us.unit.uuid in picked:
                continue
            rest = best_with_next - us.unit.gpueq if us.unit.uuid in top_ids else best_others
            if us.unit.gpueq + rest >= need:
                chosen.append(us)
                picked.add(us.unit.uuid)
                need = need - us.unit.gpueq
                break
        else:  # pragma: no cover - the largest candidate always qualifies (k is feasible)
            return None
    return tuple(chosen)

"""Which free units a request gets (issue, Placement rules). Quotas are not checked here.

- Never: a drained unit, a unit anyone holds, or the same unit twice (facts.free guarantees
  the first two, each chooser the third).
- preferred_units first, when free and matching: a restarted container gets its old units back.
- Whole GPUs (`gpus=N`): only units of kind GPU — a GPU in MIG mode is never handed out whole.
  Least recently used first (never used is best), ties by GPU index. For N >= 2 the units come
  from one NVLink group when one group has enough free, else one NUMA node, else LRU order.
- MIG slices (`mig=P,…`): per profile the best-fitting free device, packing onto GPUs that
  already have slices taken and then onto the GPU with the least free left, so that untouched
  GPUs stay free for whole-GPU and large-slice requests.
- gpueq (`gpueq=X`): fit.py; whole GPUs only when the user may have them.

Each chooser returns the units, or None when the free units cannot satisfy the request;
place() then asks explain.py to say what is free instead.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Unit, UnitKind
from ds01.model.profile import MigProfile
from ds01.scheduler import fit
from ds01.scheduler.facts import Facts, lru_key
from ds01.scheduler.snapshot import UnitState


def _preferred(candidates: Sequence[UnitState], preferred: Sequence[str]) -> list[UnitState]:
    """The candidates named in preferred, in the caller's order, each once."""
    by_uuid = {us.unit.uuid: us for us in candidates}
    out: list[UnitState] = []
    for uuid in dict.fromkeys(preferred):
        if uuid in by_uuid:
            out.append(by_uuid[uuid])
    return out


def _one_group(
    ordered: Sequence[UnitState], need: int, key: Callable[[Unit], Hashable | None]
) -> list[UnitState] | None:
    """The first `need` units (in the given order) that share one known key, taking the group
    that fills up first — i.e. whose need-th unit comes earliest in LRU order."""
    groups: dict[Hashable, list[UnitState]] = {}
    for us in ordered:
        k = key(us.unit)
        if k is None:
            continue
        members = groups.setdefault(k, [])
        members.append(us)
        if len(members) == need:
            return members
    return None


def whole_gpus(facts: Facts, count: int, preferred: Sequence[str]) -> tuple[Unit, ...] | None:
    """`count` whole GPUs, or None when fewer are free."""
    candidates = [us for us in facts.free if us.unit.kind is UnitKind.GPU]
    if len(candidates) < count:
        return None
    chosen = _preferred(candidates, preferred)[:count]
    taken = {us.unit.uuid for us in chosen}
    rest = sorted((us for us in candidates if us.unit.uuid not in taken), key=lru_key)
    need = count - len(chosen)
    if need > 1:
        group = (
            _one_group(rest, need, lambda u: u.nvlink_group)
            or _one_group(rest, need, lambda u: u.numa_node)
            or rest[:need]
        )
    else:
        group = rest[:need]
    return _in_gpu_order(chosen + group)


def mig_slices(
    facts: Facts, profiles: Sequence[MigProfile], preferred: Sequence[str]
) -> tuple[Unit, ...] | None:
    """One free device of exactly each requested profile, in request order; None if short."""
    used = dict(facts.mig_used)
    free_left = dict(facts.mig_free)
    picked: set[str] = set()
    out: list[Unit] = []
    for profile in profiles:
        candidates = [us for us in facts.free_of(profile) if us.unit.uuid not in picked]
        if not candidates:
            return None
        mine = _preferred(candidates, preferred)
        if mine:
            pick = mine[0]
        else:
            # Packing: a GPU with slices taken before an untouched one, then the GPU with the
            # least free gpueq left (best fit), then least recently used. Per GPU as one int
            # (its place in that order, equal GPUs equal), so that comparing candidates
            # compares no fractions.
            gpus = sorted({us.unit.gpu_uuid for us in candidates})
            rank = {k: i for i, k in enumerate(sorted({(not used[g], free_left[g]) for g in gpus}))}
            place = {g: rank[(not used[g], free_left[g])] for g in gpus}
            pick = min(candidates, key=lambda us: (place[us.unit.gpu_uuid], lru_key(us)))
        u = pick.unit
        picked.add(u.uuid)
        used[u.gpu_uuid] += u.gpueq
        free_left[u.gpu_uuid] -= u.gpueq
        out.append(u)
    return tuple(out)


def gpueq_units(
    facts: Facts,
    target: GpuEq,
    preferred: Sequence[str],
    *,
    allow_whole: bool,
    max_units: int,
) -> tuple[Unit, ...] | None:
    """Units worth at least target (fit.py), at most max_units of them; None if impossible."""
    candidates = [us for us in facts.free if allow_whole or us.unit.kind is not UnitKind.GPU]
    ordered = sorted(
        candidates,
        key=lambda us: (
            us.unit.gpueq,
            us.unit.kind is UnitKind.GPU,  # a slice before a whole GPU of the same worth
            not facts.mig_used.get(us.unit.gpu_uuid),  # then packing, as for mig=
            facts.mig_free.get(us.unit.gpu_uuid, GpuEq(0)),
            lru_key(us),
        ),
    )
    # Preferred units first, only while they are still needed.
    head: list[UnitState] = []
    got = GpuEq(0)
    for us in _preferred(ordered, preferred):
        if got >= target or len(head) >= max_units:
            break
        head.append(us)
        got += us.unit.gpueq
    head_ids = {us.unit.uuid for us in head}
    tail = fit.choose(
        [us for us in ordered if us.unit.uuid not in head_ids],
        target - got,
        max_units - len(head),
    )
    if tail is None and head:
        # The preferred units made the rest impossible: the request matters more than them.
        head, tail = [], fit.choose(ordered, target, max_units)
    if tail is None:
        return None
    return _in_gpu_order(head + list(tail))


def _in_gpu_order(chosen: Sequence[UnitState]) -> tuple[Unit, ...]:
    """Whole-GPU and gpueq placements are listed by GPU index: the order the container sees."""
    return tuple(us.unit for us in sorted(chosen, key=lambda us: (us.unit.gpu_index, us.unit.uuid)))

"""What a user could still get right now, and the one request every hint suggests.

Pure, like place(): it asks place() itself, on the same Snapshot, whether a request would be
granted, so `ds01 quota`'s "what you can still get", `ds01 access`, a deploy with no GPU option
and the gate's hints follow the quota and placement rules exactly instead of re-deriving them.

    offers(snapshot, user, limits)           for each kind of free unit (whole GPU, each MIG
                                             profile), the most of it place() grants now
    suggested(snapshot, user, limits)        the one request to suggest: a whole GPU when the
                                             limits allow them, else the smallest MIG slice
    flag(request)                            how a person types it: '--gpus 1', '--mig 1g.10gb'
"""

from __future__ import annotations

from dataclasses import dataclass

from ds01.errors import Ds01Error
from ds01.model.inventory import UnitKind
from ds01.model.limits import Limits
from ds01.model.profile import MigProfile
from ds01.scheduler.facts import profile_of, read
from ds01.scheduler.place import place
from ds01.scheduler.snapshot import Request, RequestKind, Snapshot


@dataclass(frozen=True)
class Offer:
    """`count` units of one kind that place() would grant this user now, in one container.
    profile is None for whole GPUs."""

    profile: str | None
    count: int

    @property
    def what(self) -> str:
        """'1 × 3g.40gb', '2 × whole GPU'."""
        return f"{self.count} × {self.profile or 'whole GPU'}"


def _request(user: str, profile: str | None, n: int) -> Request:
    if profile is None:
        return Request(user=user, kind=RequestKind.GPUS, count=n)
    return Request(user=user, kind=RequestKind.MIG, profiles=(profile,) * n)


def _grants(snapshot: Snapshot, request: Request, limits: Limits) -> bool:
    try:
        place(snapshot, request, limits)
    except Ds01Error:  # a Refusal, or a profile name the machine cannot use
        return False
    return True


def offers(snapshot: Snapshot, user: str, limits: Limits) -> tuple[Offer, ...]:
    """For whole GPUs and each MIG profile with a free unit, the most units of it that place()
    grants `user` now (as a new container, within max_units_per_container): whole GPUs first,
    then profiles smallest first. Kinds place() refuses even one of are left out."""
    facts = read(snapshot)
    kinds: dict[str | None, int] = {}
    for us in facts.free:
        if us.unit.kind is UnitKind.GPU:
            kinds[None] = kinds.get(None, 0) + 1
        elif (p := profile_of(us.unit)) is not None:
            kinds[p.name] = kinds.get(p.name, 0) + 1
    order = sorted(
        kinds, key=lambda k: (k is not None, MigProfile.order(_parse(k)) if k else (0, ""))
    )
    out: list[Offer] = []
    for kind in order:
        most = 0
        for n in range(1, min(kinds[kind], limits.max_units_per_container) + 1):
            if not _grants(snapshot, _request(user, kind, n), limits):
                break
            most = n
        if most:
            out.append(Offer(kind, most))
    return tuple(out)


def _parse(name: str) -> MigProfile:
    from ds01.model.profile import parse_profile

    return parse_profile(name)


def suggested(snapshot: Snapshot, user: str, limits: Limits) -> Request:
    """The one GPU request to suggest to `user` (and what a deploy with no GPU option asks for):
    one whole GPU when their limits allow whole GPUs (or the machine has no MIG slice at all);
    else one MIG slice — the smallest profile place() would grant now, or, when none would,
    the smallest profile on the machine (its refusal then says why)."""
    facts = read(snapshot)
    profiles = sorted(facts.machine_profiles(), key=MigProfile.order)
    if limits.allow_full_gpu or not profiles:
        return _request(user, None, 1)
    for p in profiles:
        if _grants(snapshot, _request(user, p.name, 1), limits):
            return _request(user, p.name, 1)
    return _request(user, profiles[0].name, 1)


def flag(request: Request) -> str:
    """The request as command-line options: '--gpus 1', '--mig 1g.10gb', '--gpueq 0.5'."""
    if request.kind is RequestKind.GPUS:
        return f"--gpus {request.count}"
    if request.kind is RequestKind.MIG:
        return f"--mig {','.join(request.profiles)}"
    if request.kind is RequestKind.GPUEQ and request.gpueq is not None:
        return f"--gpueq {request.gpueq.display()}"
    return "--cpu-only"

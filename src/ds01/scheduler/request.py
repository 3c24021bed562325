"""Reading a request before any unit is chosen: is it well formed (→ BAD_REQUEST, or
MigProfileError for a name that is no MIG profile), does this machine have the MIG profiles it
names at all (→ UNKNOWN_PROFILE), and what is the least it can cost (the pre-placement Demand
the quota rules check first).

Fail closed (BRIEF §3): fields that belong to another request kind are an error, not ignored —
a `gpus` request that also names profiles is a caller bug, and guessing which one was meant
could hand out the wrong thing.
"""

from __future__ import annotations

from ds01.model.gpueq import GpuEq
from ds01.model.inventory import UnitKind
from ds01.model.limits import Limits
from ds01.model.profile import MigProfile, parse_profile
from ds01.scheduler import explain, fit
from ds01.scheduler.demand import AskedGpuEq, Demand, UnitCount
from ds01.scheduler.facts import Facts
from ds01.scheduler.snapshot import Request, RequestKind

_FIELDS = {
    RequestKind.GPUS: "count",
    RequestKind.MIG: "profiles",
    RequestKind.GPUEQ: "gpueq",
    RequestKind.CPU: "",
}


def validate(request: Request) -> tuple[MigProfile, ...]:
    """Raise BAD_REQUEST for a request no machine could satisfy as written, and
    MigProfileError (a usage error, the same as at every other entry point) for a profile name
    that is not one. Returns the request's MIG profiles, parsed (model/profile.py)."""
    stray = [
        name
        for name, present in (
            ("count", request.count != 0),
            ("profiles", bool(request.profiles)),
            ("gpueq", request.gpueq is not None),
        )
        if present and name != _FIELDS[request.kind]
    ]
    if stray:
        raise explain.bad_request(
            f"a {request.kind.value} request also sets {', '.join(stray)}",
            "Each request asks for one thing: gpus=N, mig=PROFILE,…, gpueq=X or none (CPU only).",
            "Ask for one of them.",
        )
    if request.kind is RequestKind.GPUS and request.count < 1:
        raise explain.bad_request(
            f"gpus={request.count} asks for no GPU",
            "A GPU request needs at least 1 whole GPU.",
            "Ask for gpus=1 or more, or for a CPU-only container.",
        )
    if request.kind is RequestKind.MIG and not request.profiles:
        raise explain.bad_request(
            "mig= names no profile",
            "A MIG request needs at least one profile, such as 3g.40gb.",
            "Name the profiles (--mig 3g.40gb), or see 'ds01 gpu status'.",
        )
    if request.kind is RequestKind.GPUEQ and not request.gpueq:
        shown = request.gpueq.display() if request.gpueq is not None else "(missing)"
        raise explain.bad_request(
            f"gpueq={shown} asks for nothing",
            "A gpueq request needs an amount above 0, such as 0.5 or 2.",
            "Ask for gpueq=0.5 or more, or for a CPU-only container.",
        )
    return tuple(parse_profile(text) for text in request.profiles)


def resolve_profiles(facts: Facts, profiles: tuple[MigProfile, ...]) -> tuple[MigProfile, ...]:
    """The request's profiles; each must exist somewhere on this machine, exactly (a request
    for 1g.10gb is not served by a 1g.10gb+me unit: docs/allocation.md)."""
    have = facts.machine_profiles()
    for p in profiles:
        if p not in have:
            raise explain.unknown_profile(p, have)
    return profiles


def least_demand(
    facts: Facts, request: Request, profiles: tuple[MigProfile, ...], limits: Limits
) -> Demand:
    """The least the request can cost on this machine, whatever is free right now.

    gpus=N costs exactly N. mig= costs at least the lightest device of each profile (the
    weights differ only if one profile name exists on two GPU models with different slice
    counts). gpueq=X costs at least X, in the fewest units that could reach X; it needs a
    whole GPU when MIG slices alone cannot reach X within max_units_per_container — that is
    "can only be satisfied by whole GPUs" (issue, rule 1).
    """
    kind = request.kind
    if kind is RequestKind.CPU:
        return Demand(kind, UnitCount(0), UnitCount(0), AskedGpuEq(GpuEq(0)), exact=True)
    if kind is RequestKind.GPUS:
        n = UnitCount(request.count)
        return Demand(kind, n, n, AskedGpuEq(GpuEq(request.count)), exact=True)
    if kind is RequestKind.MIG:
        # Over every unit, drained ones too: resolve_profiles() found each profile among them.
        weights = facts.profile_weights
        cost = GpuEq.total(min(weights[p]) for p in profiles)
        exact = all(len(weights[p]) == 1 for p in profiles)
        return Demand(kind, UnitCount(len(profiles)), UnitCount(0), AskedGpuEq(cost), exact=exact)
    assert request.gpueq is not None  # validate() ran
    x = request.gpueq
    usable = facts.usable
    cap = limits.max_units_per_container
    k_mig = fit.fewest_units([u.gpueq for u in usable if u.kind is UnitKind.MIG], x)
    k_any = fit.fewest_units([u.gpueq for u in usable], x)
    if limits.allow_full_gpu or (k_mig is not None and k_mig <= cap):
        k, whole = (k_any if limits.allow_full_gpu else k_mig), 0
    elif k_any is not None and (k_mig is None or k_any <= cap):
        k, whole = k_any, 1  # only whole GPUs can do it (within the unit limit)
    else:
        k, whole = k_mig, 0  # nothing fits within the unit limit: rule 2 will say so
    # k is None when the whole machine cannot reach X; placement refuses that for capacity.
    return Demand(kind, UnitCount(k or 1), UnitCount(whole), AskedGpuEq(x), exact=False)

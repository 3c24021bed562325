"""Refusal texts: every word the scheduler says when it says no (STYLE 10, BRIEF §7).

One table, TEXTS, holds the three lines of each refusal — what failed, why, what to do — as
format templates; PHRASES holds the few variants a template picks from. The functions below only
gather the numbers and names and fill the templates, so wording changes happen in one place and
tests can pin exact text. Capacity refusals say what *is* free and, when a hold ends at a known
time, what frees up next (issue, Refusal texts).

Numbers are GpuEq shown with GpuEq.display(); nothing here does quota arithmetic beyond the
sums the message prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from ds01.errors import Refusal, RefusalReason
from ds01.model.allocation import AllocState
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import UnitKind
from ds01.model.profile import MigProfile
from ds01.scheduler.demand import CapGpuEq, Demand, HeldGpuEq
from ds01.scheduler.facts import Facts, profile_of
from ds01.scheduler.snapshot import Holding, Request, RequestKind, UnitState
from ds01.timetext import clock


@dataclass(frozen=True)
class Text:
    what: str
    why: str
    fix: str


TEXTS: Final[dict[RefusalReason, Text]] = {
    RefusalReason.BAD_REQUEST: Text(
        what="request: {problem}.",
        why="{detail}",
        fix="{fix}",
    ),
    RefusalReason.UNKNOWN_PROFILE: Text(
        what="request: this machine has no {profile} MIG slice.",
        why="{has}",
        fix="{fix}",
    ),
    RefusalReason.FULL_GPU_NOT_ALLOWED: Text(
        what="quota: whole GPUs are not allowed for you ({asked}).",
        why="Your limits set allow_full_gpu to false{detail}.",
        fix="{fix}",
    ),
    RefusalReason.MAX_UNITS_PER_CONTAINER: Text(
        what="quota: this request needs {least}{units} units; at most {limit} per container.",
        why="{basis}Your limits set max_units_per_container to {limit}.",
        fix="Ask for fewer units, or spread the work over several containers.",
    ),
    RefusalReason.MAX_CONTAINERS: Text(
        what="quota: you have {count} of {limit} containers ({names}).",
        why="A new container would make {after}; your limits set max_containers to {limit}.",
        fix="Retire one (ds01 container retire NAME) or ask an admin.",
    ),
    RefusalReason.MAX_GPUEQ: Text(
        what="quota: you hold {held} of {limit} gpueq{listing}.",
        why="This request needs {least}{asked} gpueq{basis}; max_gpueq is {limit},"
        " so {room} more fits.",
        fix="{fix}",
    ),
    RefusalReason.GROUP_MAX_GPUEQ: Text(
        what="quota: group '{group}' holds {held} of {limit} gpueq{listing}.",
        why="This request needs {least}{asked} gpueq{basis}; the group's cap is {limit},"
        " so {room} more fits.",
        fix="Wait for a group member to retire a container, or ask an admin.",
    ),
    RefusalReason.NO_CAPACITY: Text(
        what="capacity: {shortfall} ({busy}); {free_now}.",
        why="{next_free}",
        fix="{fix}",
    ),
    RefusalReason.UNIT_BUSY: Text(
        what="capacity: only units busy outside ds01 are free: {units}.",
        why="This machine's config sets allocation.busy_units to refuse.",
        fix="Try again when they are idle (see 'ds01 gpu status'), or ask for other units.",
    ),
}

PHRASES: Final[dict[str, str]] = {
    # FULL_GPU_NOT_ALLOWED
    "full.asked.gpus": "gpus={n} asks for whole GPUs",
    "full.asked.gpueq": "gpueq={x} needs a whole GPU here",
    "full.detail.gpueq": ", and the MIG slices here cannot reach {x} gpueq within {limit} units",
    "full.fix.mig": "Ask for a MIG slice instead (--mig {example}), or ask an admin.",
    "full.fix.none": "This machine has no MIG slices; ask an admin.",
    # MAX_UNITS_PER_CONTAINER
    "units.basis.gpueq": "The fewest units worth {x} gpueq on this machine are {n}. ",
    # MAX_GPUEQ / GROUP_MAX_GPUEQ
    "gpueq.basis.fit": " (the smallest free fit for gpueq={x})",
    "gpueq.fix.retire": "Retire one (ds01 container retire NAME) or ask an admin.",
    "gpueq.fix.less": "Ask for at most {room} gpueq, or ask an admin.",
    "gpueq.fix.none": "Ask an admin to raise max_gpueq.",
    # UNKNOWN_PROFILE
    "profile.has": "Its MIG profiles are {profiles}.",
    "profile.has.none": "None of its GPUs is in MIG mode.",
    "profile.fix": "Ask for one of those (--mig {example}), or see 'ds01 gpu status'.",
    "profile.fix.variant": "Of that size it has {other}: ask for it by that name"
    " (--mig {other}) if it will do.",
    "profile.fix.none": "Ask for whole GPUs (--gpus N) instead.",
    # NO_CAPACITY
    "cap.short.gpus.none": "no free whole GPU",
    "cap.short.gpus.some": "only {free} free whole GPU{s}, {n} asked",
    "cap.short.mig.none": "no free {profile} slice",
    "cap.short.mig.some": "only {free} free {profile} slice{s}, {n} asked",
    "cap.short.gpueq": "no free units add up to {x} gpueq within {limit} units",
    "cap.busy": "{n} in use by {users} user{s}",
    "cap.busy.drained": "{n} drained",
    "cap.busy.reserved": "{n} reserved for others",
    "cap.busy.nothing": "none in use",
    "cap.busy.no_gpus": "every GPU here is in MIG mode",
    "cap.next": "The next {what} frees up at {at}, when a stopped container's hold ends.",
    "cap.next.drained": "An admin has drained the others; they return when undrained.",
    "cap.next.reserved": "{units} {verb} {reservation}.",
    "cap.fix.reserved": "Or wait in line: deploy with --queue, and ds01 starts it as soon as"
    " units are free for you.",
    "cap.next.total": "This machine has {total} in all.",
    "cap.next.unknown": "No hold ends at a known time: the units in use belong to"
    " running or starting containers.",
    "cap.fix.mig": "Ask for a free profile instead (--mig {example}), or try again later.",
    "cap.fix.slice": "Ask for a MIG slice instead (--mig {example}), or try again later.",
    "cap.fix.fewer": "Ask for fewer GPUs (--gpus {free}), or try again later.",
    "cap.fix.later": "Try again later, or ask an admin.",
    "cap.fix.less": "Ask for less, or try again later.",
    "free.none": "nothing is free",
    "free.else": "nothing else is free",
    "free.slices": "{profiles} slices",
    "free.gpus": "{n} whole GPU{s}",
    "free.is": "{things} {verb} free",
}


def refusal(reason: RefusalReason, **fields: object) -> Refusal:
    """Fill reason's three templates from TEXTS."""
    t = TEXTS[reason]
    return Refusal(reason, t.what.format(**fields), t.why.format(**fields), t.fix.format(**fields))


def _p(key: str, **fields: object) -> str:
    return PHRASES[key].format(**fields)


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _and(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def sorted_profiles(profiles: Iterable[MigProfile]) -> list[str]:
    """Their names, smallest slices first: '1g.10gb' before '2g.20gb' before '3g.40gb'."""
    return [p.name for p in sorted(set(profiles), key=MigProfile.order)]


def describe_holding(h: Holding, now: datetime | None) -> str:
    """'thesis: 1×A100-SXM4-40GB 1, held until 14:05'."""
    name = h.container or f"allocation {h.alloc_id}"
    counts = Counter(u.label for u in h.units)
    units = " + ".join(f"{n}×{label}" for label, n in counts.items()) or "no units"
    text = f"{name}: {units} {h.gpueq.display()}"
    if h.state is AllocState.HELD and h.hold_until is not None:
        text += f", held until {clock(h.hold_until, now or h.hold_until)}"
    elif h.state is AllocState.RESERVED:
        text += ", reserved"
    return text


# ---- request problems ----------------------------------------------------------------------


def bad_request(problem: str, detail: str, fix: str) -> Refusal:
    return refusal(RefusalReason.BAD_REQUEST, problem=problem, detail=detail, fix=fix)


def unknown_profile(profile: MigProfile, machine_profiles: Iterable[MigProfile]) -> Refusal:
    present = set(machine_profiles)
    have = sorted_profiles(present)
    # The same size in another variant ('1g.10gb+me' for '1g.10gb'): matching is exact, so
    # say which name to ask for (docs/allocation.md).
    same_size = sorted_profiles(
        p
        for p in present
        if (p.compute_slices, p.gpu_slices, p.memory_gb)
        == (profile.compute_slices, profile.gpu_slices, profile.memory_gb)
    )
    if same_size:
        has = _p("profile.has", profiles=", ".join(have))
        fix = _p("profile.fix.variant", other=same_size[0])
    elif have:
        has = _p("profile.has", profiles=", ".join(have))
        fix = _p("profile.fix", example=have[0])
    else:
        has, fix = _p("profile.has.none"), _p("profile.fix.none")
    return refusal(RefusalReason.UNKNOWN_PROFILE, profile=profile, has=has, fix=fix)


# ---- quotas --------------------------------------------------------------------------------


def full_gpu_not_allowed(request: Request, facts: Facts, max_units: int) -> Refusal:
    profiles = sorted_profiles(facts.machine_profiles())
    fix = _p("full.fix.mig", example=profiles[0]) if profiles else _p("full.fix.none")
    if request.kind is RequestKind.GPUEQ and request.gpueq is not None:
        x = request.gpueq.display()
        asked = _p("full.asked.gpueq", x=x)
        detail = _p("full.detail.gpueq", x=x, limit=max_units)
    else:
        asked, detail = _p("full.asked.gpus", n=request.count), ""
    return refusal(RefusalReason.FULL_GPU_NOT_ALLOWED, asked=asked, detail=detail, fix=fix)


def max_units(request: Request, demand: Demand, limit: int) -> Refusal:
    basis = least = ""
    if request.gpueq is not None and not demand.exact:
        # Before placement a gpueq request's unit count is the fewest that could reach X.
        basis = _p("units.basis.gpueq", x=request.gpueq.display(), n=demand.units)
        least = "at least "
    return refusal(
        RefusalReason.MAX_UNITS_PER_CONTAINER,
        least=least,
        units=demand.units,
        limit=limit,
        basis=basis,
    )


def max_containers(names: Sequence[str], limit: int) -> Refusal:
    return refusal(
        RefusalReason.MAX_CONTAINERS,
        count=len(names),
        limit=limit,
        names=", ".join(names) or "none",
        after=len(names) + 1,
    )


def _basis(request: Request, demand: Demand) -> str:
    """Why the asked amount is what it is, when it is not simply what was asked."""
    if (
        request.kind is RequestKind.GPUEQ
        and request.gpueq is not None
        and demand.exact
        and demand.gpueq != request.gpueq
    ):
        return _p("gpueq.basis.fit", x=request.gpueq.display())
    return ""


def _least(demand: Demand) -> str:
    return "" if demand.exact else "at least "


def max_gpueq(
    request: Request,
    demand: Demand,
    *,
    mine: Sequence[Holding],
    held: HeldGpuEq,
    cap: CapGpuEq,
    now: datetime | None,
) -> Refusal:
    room = cap - held
    listing = " (" + ", ".join(describe_holding(h, now) for h in mine) + ")" if mine else ""
    if mine:
        fix = _p("gpueq.fix.retire")
    elif room:
        fix = _p("gpueq.fix.less", room=room.display())
    else:
        fix = _p("gpueq.fix.none")
    return refusal(
        RefusalReason.MAX_GPUEQ,
        held=held.display(),
        limit=cap.display(),
        listing=listing,
        least=_least(demand),
        asked=demand.gpueq.display(),
        basis=_basis(request, demand),
        room=room.display(),
        fix=fix,
    )


def group_max_gpueq(
    request: Request,
    demand: Demand,
    *,
    group: str,
    members: Sequence[tuple[str, GpuEq]],
    held: HeldGpuEq,
    cap: CapGpuEq,
) -> Refusal:
    listing = (
        " (" + ", ".join(f"{user} {g.display()}" for user, g in members) + ")" if members else ""
    )
    return refusal(
        RefusalReason.GROUP_MAX_GPUEQ,
        group=group,
        held=held.display(),
        limit=cap.display(),
        listing=listing,
        least=_least(demand),
        asked=demand.gpueq.display(),
        basis=_basis(request, demand),
        room=(cap - held).display(),
    )


# ---- capacity ------------------------------------------------------------------------------


def _free_now(
    facts: Facts, *, but_profile: MigProfile | None = None, but_gpus: bool = False
) -> tuple[str, list[str]]:
    """('1g.10gb slices and 1 whole GPU are free', those profiles), leaving out what the
    shortfall already counted (the short profile, or whole GPUs)."""
    profiles = sorted_profiles(
        p for p in (profile_of(us.unit) for us in facts.free) if p is not None and p != but_profile
    )
    gpus = 0 if but_gpus else sum(1 for us in facts.free if us.unit.kind is UnitKind.GPU)
    things: list[str] = []
    if profiles:
        things.append(_p("free.slices", profiles=_and(profiles)))
    if gpus:
        things.append(_p("free.gpus", n=gpus, s=_s(gpus)))
    if not things:
        return _p("free.else" if but_profile or but_gpus else "free.none"), profiles
    verb = "is" if not profiles and gpus == 1 else "are"
    return _p("free.is", things=" and ".join(things), verb=verb), profiles


def _busy(facts: Facts, matching: Sequence[UnitState]) -> str:
    """'2 in use by 2 users, 1 drained' for the units that could have served the request."""
    in_use = [us for us in matching if us.unit.uuid in facts.taken]
    users = {facts.holder_of(us) for us in in_use}
    drained = sum(1 for us in matching if us.drained and us.unit.uuid not in facts.taken)
    reserved = _reserved(facts, matching)
    parts: list[str] = []
    if in_use:
        parts.append(_p("cap.busy", n=len(in_use), users=len(users), s=_s(len(users))))
    if drained:
        parts.append(_p("cap.busy.drained", n=drained))
    if reserved:
        parts.append(_p("cap.busy.reserved", n=len(reserved)))
    return ", ".join(parts) or _p("cap.busy.nothing")


def _reserved(facts: Facts, matching: Sequence[UnitState]) -> list[UnitState]:
    return [
        us
        for us in matching
        if us.reserved is not None and not us.drained and us.unit.uuid not in facts.taken
    ]


def _next_free(facts: Facts, matching: Sequence[UnitState], what: str, total: str) -> str:
    """When the first held allocation over one of `matching` ends its hold, if any does;
    else why nothing will free up by itself. Units an admin reserved for others are named
    with their reservation: they are why a request can be refused on an idle machine."""
    reserved = _reserved(facts, matching)
    if reserved:
        first = reserved[0].reserved
        same = [us for us in reserved if us.reserved == first]
        return _p(
            "cap.next.reserved",
            units=_and([us.unit.title for us in same]),
            verb="is" if len(same) == 1 else "are",
            reservation=first,
        )
    ends = [
        h.hold_until
        for us in matching
        if (h := facts.holding_of.get(us.unit.uuid)) is not None
        and h.state is AllocState.HELD
        and h.hold_until is not None
    ]
    if not ends:
        if any(us.unit.uuid in facts.taken for us in matching):
            return _p("cap.next.unknown")
        if any(us.drained for us in matching):
            return _p("cap.next.drained")
        return _p("cap.next.total", total=total)
    end = min(ends)
    return _p("cap.next", what=what, at=clock(end, facts.snapshot.now or end))


def no_capacity(
    request: Request, facts: Facts, profiles: Sequence[MigProfile], limit_units: int
) -> Refusal:
    """What was short, who uses it, what is free instead, and what frees up next."""
    if request.kind is RequestKind.GPUS:
        fields = _short_of_gpus(request.count, facts)
    elif request.kind is RequestKind.MIG:
        fields = _short_of_slices(profiles, facts)
    else:
        assert request.gpueq is not None  # validate() ran
        fields = _short_of_gpueq(request.gpueq, facts, limit_units)
    if _reserved(facts, facts.snapshot.units):
        fields["fix"] = f"{fields['fix']} {_p('cap.fix.reserved')}"
    return refusal(RefusalReason.NO_CAPACITY, **fields)


def _short_of_gpus(count: int, facts: Facts) -> dict[str, str]:
    free_now, free_profiles = _free_now(facts, but_gpus=True)
    matching = [us for us in facts.snapshot.units if us.unit.kind is UnitKind.GPU]
    have = sum(1 for us in facts.free if us.unit.kind is UnitKind.GPU)
    n = len(matching)
    if have:
        fix = _p("cap.fix.fewer", free=have)
    elif free_profiles:
        fix = _p("cap.fix.slice", example=free_profiles[0])
    else:
        fix = _p("cap.fix.later")
    return {
        "shortfall": (
            _p("cap.short.gpus.some", free=have, s=_s(have), n=count)
            if have
            else _p("cap.short.gpus.none")
        ),
        "busy": _busy(facts, matching) if matching else _p("cap.busy.no_gpus"),
        "free_now": free_now,
        "next_free": _next_free(facts, matching, "whole GPU", f"{n} whole GPU{_s(n)}"),
        "fix": fix,
    }


def _short_of_slices(profiles: Sequence[MigProfile], facts: Facts) -> dict[str, str]:
    # The first profile the free units cannot cover, counting repeats: mig_slices() fails
    # exactly when there is one.
    wanted = Counter(profiles)
    free_by = Counter(profile_of(us.unit) for us in facts.free)
    short = next(p for p in profiles if free_by[p] < wanted[p])
    free_now, free_profiles = _free_now(facts, but_profile=short)
    matching = [us for us in facts.snapshot.units if profile_of(us.unit) == short]
    have = free_by[short]
    n = len(matching)
    return {
        "shortfall": (
            _p("cap.short.mig.some", free=have, s=_s(have), profile=short, n=wanted[short])
            if have
            else _p("cap.short.mig.none", profile=short)
        ),
        "busy": _busy(facts, matching),
        "free_now": free_now,
        "next_free": _next_free(facts, matching, f"{short} slice", f"{n} {short} slice{_s(n)}"),
        "fix": (
            _p("cap.fix.mig", example=free_profiles[0]) if free_profiles else _p("cap.fix.later")
        ),
    }


def _short_of_gpueq(target: GpuEq, facts: Facts, limit_units: int) -> dict[str, str]:
    matching = facts.snapshot.units
    worth = GpuEq.total(u.gpueq for u in facts.usable).display()
    return {
        "shortfall": _p("cap.short.gpueq", x=target.display(), limit=limit_units),
        "busy": _busy(facts, matching),
        "free_now": _free_now(facts)[0],
        "next_free": _next_free(facts, matching, "unit", f"{worth} gpueq"),
        "fix": _p("cap.fix.less") if facts.free else _p("cap.fix.later"),
    }

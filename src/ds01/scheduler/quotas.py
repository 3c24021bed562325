"""The five quota rules, one function each, checked in the issue's order (issue, Quota checks):

1. allow_full_gpu          a whole GPU for a user whose limits forbid it  → FULL_GPU_NOT_ALLOWED
2. max_units_per_container more units than one container may have        → MAX_UNITS_PER_CONTAINER
3. max_containers          one container more than the user may run      → MAX_CONTAINERS
4. max_gpueq               what the user holds (reserved, active *and* held: a held GPU is still
                           kept from everyone else) + the request > cap    → MAX_GPUEQ
5. group_max_gpueq         the same over every holding of the user's group → GROUP_MAX_GPUEQ

A request that breaks two rules gets the earlier one. A CPU-only request is checked against
rule 3 only: it takes no GPU, but it is still a container.

All gpueq arithmetic goes through GpuEq (exact fractions); never floats (BRIEF §4, STYLE 9).
Each rule returns the Refusal or None, so tests can call one rule on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ds01.errors import Refusal
from ds01.model.gpueq import GpuEq
from ds01.model.limits import Limits
from ds01.scheduler import explain
from ds01.scheduler.demand import AskedGpuEq, CapGpuEq, Demand, HeldGpuEq
from ds01.scheduler.facts import Facts
from ds01.scheduler.snapshot import Holding, Request, RequestKind

Rule = Callable[[Facts, Request, Limits, Demand], Refusal | None]


def exceeds(held: HeldGpuEq, asked: AskedGpuEq, cap: CapGpuEq) -> bool:
    """held + asked > cap, exactly. Equal to the cap is allowed: the cap is what one may hold."""
    return held + asked > cap


def mine(facts: Facts, user: str) -> list[Holding]:
    return [h for h in facts.live if h.user == user]


def full_gpu(facts: Facts, request: Request, limits: Limits, demand: Demand) -> Refusal | None:
    """Rule 1: allow_full_gpu."""
    if demand.whole_gpus and not limits.allow_full_gpu:
        return explain.full_gpu_not_allowed(request, facts, limits.max_units_per_container)
    return None


def units_per_container(
    facts: Facts, request: Request, limits: Limits, demand: Demand
) -> Refusal | None:
    """Rule 2: max_units_per_container."""
    if demand.units > limits.max_units_per_container:
        return explain.max_units(request, demand, limits.max_units_per_container)
    return None


def containers(facts: Facts, request: Request, limits: Limits, demand: Demand) -> Refusal | None:
    """Rule 3: max_containers, counting distinct containers among the user's live holdings.

    A holding not yet bound to a container counts as one of its own. A request for a container
    the user already has (existing_container, or the same name) adds none.
    """
    names = list(
        dict.fromkeys(h.container or f"allocation {h.alloc_id}" for h in mine(facts, request.user))
    )
    if request.existing_container or (request.container is not None and request.container in names):
        return None
    if len(names) + 1 > limits.max_containers:
        return explain.max_containers(names, limits.max_containers)
    return None


def user_gpueq(facts: Facts, request: Request, limits: Limits, demand: Demand) -> Refusal | None:
    """Rule 4: max_gpueq over everything the user holds, held-but-stopped included."""
    holdings = mine(facts, request.user)
    held = HeldGpuEq(GpuEq.total(h.gpueq for h in holdings))
    cap = CapGpuEq(limits.max_gpueq)
    if exceeds(held, demand.gpueq, cap):
        return explain.max_gpueq(
            request, demand, mine=holdings, held=held, cap=cap, now=facts.snapshot.now
        )
    return None


def group_gpueq(facts: Facts, request: Request, limits: Limits, demand: Demand) -> Refusal | None:
    """Rule 5: the group's aggregate cap, over every member's holdings (Holding.group)."""
    if limits.group is None or limits.group_max_gpueq is None:
        return None
    per_user: dict[str, GpuEq] = {}
    for h in facts.live:
        if h.group == limits.group:
            per_user[h.user] = per_user.get(h.user, GpuEq(0)) + h.gpueq
    held = HeldGpuEq(GpuEq.total(per_user.values()))
    cap = CapGpuEq(limits.group_max_gpueq)
    if exceeds(held, demand.gpueq, cap):
        members = sorted(per_user.items(), key=lambda kv: (-kv[1].fraction, kv[0]))
        return explain.group_max_gpueq(
            request, demand, group=limits.group, members=members, held=held, cap=cap
        )
    return None


# The order is the rule: a request that breaks two limits is refused for the earlier one.
RULES: Final[tuple[Rule, ...]] = (
    full_gpu,
    units_per_container,
    containers,
    user_gpueq,
    group_gpueq,
)
CPU_RULES: Final[tuple[Rule, ...]] = (containers,)


def check(facts: Facts, request: Request, limits: Limits, demand: Demand) -> None:
    """Raise the first rule's Refusal, in RULES order."""
    rules = CPU_RULES if request.kind is RequestKind.CPU else RULES
    for rule in rules:
        refused = rule(facts, request, limits, demand)
        if refused is not None:
            raise refused

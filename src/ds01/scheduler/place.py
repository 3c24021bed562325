"""place(): the scheduler's one entry point, as numbered steps (STYLE 7, after Kueue's
schedule()). Pure: it decides on the Snapshot it is given and changes nothing; services/ builds
the snapshot inside the database transaction and writes the Placement in the same one.

Quota before capacity: a request over quota is refused for quota even when nothing is free,
because that answer stays true when units free up, and the other would send the user waiting
for nothing. Because MIG and gpueq requests only have an exact cost once units are chosen, the
quota rules run twice: on the least the request can cost (step 4), then on the units actually
chosen (step 6) — so a `gpueq=0.5` that lands on a 4/7 slice is checked, and refused, at 4/7.
"""

from __future__ import annotations

from collections.abc import Sequence

from ds01.model.inventory import Unit
from ds01.model.limits import Limits
from ds01.model.profile import MigProfile
from ds01.scheduler import busy, explain, placement, quotas
from ds01.scheduler.busy import BusyPolicy
from ds01.scheduler.demand import Demand
from ds01.scheduler.facts import Facts, read
from ds01.scheduler.request import least_demand, resolve_profiles, validate
from ds01.scheduler.snapshot import Placement, Request, RequestKind, Snapshot


def place(
    snapshot: Snapshot,
    request: Request,
    limits: Limits,
    busy_units: BusyPolicy = BusyPolicy.WARN,
) -> Placement:
    """Choose units for request, or raise Refusal with its RefusalReason and a what/why/fix
    (MigProfileError, a usage error, for a MIG profile name that is not one). busy_units:
    config allocation.busy_units, for a request only units busy outside ds01 can meet."""
    # 1. Is the request well formed?           → BAD_REQUEST, or MigProfileError (usage)
    profiles = validate(request)
    # 2. Read the snapshot once: free units, holdings, per-GPU MIG usage.
    facts = read(snapshot)
    # 3. Does this machine have the MIG profiles named at all?     → UNKNOWN_PROFILE
    resolve_profiles(facts, profiles)
    # 4. Quotas, in order, on the least the request can cost.      → the five quota reasons
    quotas.check(facts, request, limits, least_demand(facts, request, profiles, limits))
    if request.kind is RequestKind.CPU:
        return Placement(units=())
    # 5. Choose free units: quiet ones first (busy.py), then any.  → NO_CAPACITY
    units = _choose(busy.quiet(facts), request, profiles, limits) or _choose(
        facts, request, profiles, limits
    )
    if units is None:
        raise explain.no_capacity(request, facts, profiles, limits.max_units_per_container)
    # 6. Quotas again, on what the chosen units really cost.       → MAX_GPUEQ, GROUP_MAX_GPUEQ
    quotas.check(facts, request, limits, Demand.of_units(request.kind, units))
    # 7. Units busy outside ds01: a warning, or a refusal.         → UNIT_BUSY
    warnings = busy.judge(facts, units, busy_units)
    return Placement(units=units, warnings=warnings)


def _choose(
    facts: Facts, request: Request, profiles: Sequence[MigProfile], limits: Limits
) -> tuple[Unit, ...] | None:
    if request.kind is RequestKind.GPUS:
        return placement.whole_gpus(facts, request.count, request.preferred_units)
    if request.kind is RequestKind.MIG:
        return placement.mig_slices(facts, profiles, request.preferred_units)
    assert request.gpueq is not None  # validate() ran
    return placement.gpueq_units(
        facts,
        request.gpueq,
        request.preferred_units,
        allow_whole=limits.allow_full_gpu,
        max_units=limits.max_units_per_container,
    )

"""Allocation endpoints (`ds01 alloc …`, `ds01 quota`): reserve, list, read and release
allocations, and the caller's quota (services/status.py assembles it)."""

from __future__ import annotations

from aiohttp import web

from ds01.api import convert
from ds01.api.http import caller_of, deps_of, flag, off_loop, ok, parse_body
from ds01.api.schemas import AllocateIn, LimitValue, OfferOut, QuotaOut, ReleaseIn
from ds01.errors import UsageError
from ds01.identity import Caller, validate_container_name
from ds01.lifecycle.countdown import Outlook
from ds01.model.gpueq import GpuEq
from ds01.scheduler import options
from ds01.scheduler.snapshot import Request
from ds01.services.allocation import AllocationRequest
from ds01.services.status import Quota, limit_kind, quota


def allocation_request(body: AllocateIn) -> AllocationRequest:
    if body.container is not None:
        # The one name rule: the name reaches other users' tables and the audit log.
        validate_container_name(body.container)
    return AllocationRequest.from_options(
        gpus=body.gpus,
        mig=body.mig,
        gpueq=body.gpueq,
        cpu_only=body.cpu_only,
        container=body.container,
    )


def _alloc_id(request: web.Request) -> int:
    text = request.match_info["id"]
    # Digits only, and no more than a database row ID has: int() of 5,000 digits raises a
    # message about sys.set_int_max_str_digits, and a 2**64 an OverflowError in SQLite.
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) < 2**63):
        raise UsageError(f"allocation id must be a number, got {text[:40]!r}")
    return int(text)


async def allocate(request: web.Request) -> web.Response:
    req = allocation_request(await parse_body(request, AllocateIn))
    warnings: list[str] = []
    deps = deps_of(request)
    allocations = deps.allocations
    row = await deps.decider.run(
        allocations.db,
        allocations.allocate,
        caller_of(request),
        req,
        on_warning=warnings.append,
    )
    out = convert.allocation_out(row).model_copy(update={"warnings": warnings})
    return ok(out, status=201)


async def list_allocations(request: web.Request) -> web.Response:
    deps = deps_of(request)
    rows = await off_loop(
        deps.allocations.live_allocations, caller_of(request), flag(request, "all")
    )
    if flag(request, "gpus"):
        # `ds01 top`: its units' deadlines and users' GPU use, not the CPU-only containers
        # (which may be most of 500 allocations: converting those is most of the answer).
        rows = [r for r in rows if r.units]
    # With their countdowns (next stop and when), as `ds01 quota` shows them: `ds01 top`'s
    # deadlines, and `admin alloc list --json`'s idle allocations.
    outlooks = await off_loop(deps.outlooks, rows) if rows else {}
    return ok([convert.allocation_out(r, outlooks.get(r.id)) for r in rows])


async def get_allocation(request: web.Request) -> web.Response:
    alloc_id = _alloc_id(request)
    row = await off_loop(deps_of(request).allocations.get, caller_of(request), alloc_id)
    return ok(convert.allocation_out(row))


async def release_allocation(request: web.Request) -> web.Response:
    body = await parse_body(request, ReleaseIn)
    alloc_id = _alloc_id(request)
    deps = deps_of(request)
    allocations = deps.allocations
    row = await deps.decider.run(
        allocations.db, allocations.release, caller_of(request), alloc_id, body.reason
    )
    return ok(convert.allocation_out(row))


def _jsonable(v: object) -> object:
    return v.as_text() if isinstance(v, GpuEq) else v


def quota_out(
    caller: Caller,
    q: Quota,
    offers: tuple[options.Offer, ...] = (),
    suggested: Request | None = None,
    outlooks: dict[int, Outlook] | None = None,
) -> QuotaOut:
    lim = q.resolved.limits
    return QuotaOut(
        user=caller.name,
        group=q.resolved.group,
        limits={
            name: LimitValue(value=_jsonable(value), source=source, kind=limit_kind(name))
            for name, (value, source) in q.limits().items()
        },
        allocations=[convert.allocation_out(r, (outlooks or {}).get(r.id)) for r in q.allocations],
        used_gpueq=round(float(q.used), 4),
        used_gpueq_exact=q.used.as_text(),
        max_gpueq=round(float(lim.max_gpueq), 4),
        remaining_gpueq=round(float(q.left), 4),
        containers=q.containers,
        max_containers=lim.max_containers,
        exempt=q.exempt,
        can_get=[OfferOut(profile=o.profile, count=o.count) for o in offers],
        suggested=options.flag(suggested) if suggested is not None else None,
    )


async def get_quota(request: web.Request) -> web.Response:
    caller = caller_of(request)
    allocations = deps_of(request).allocations
    q = await off_loop(quota, allocations, caller)
    offers, suggested = await off_loop(allocations.offers, caller)
    outlooks = await off_loop(deps_of(request).outlooks, list(q.allocations))
    return ok(quota_out(caller, q, offers, suggested, outlooks))

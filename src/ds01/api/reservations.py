"""Admins' reservations of units (services/reservations.py): create, list, cancel."""

from __future__ import annotations

from aiohttp import web

from ds01.api import convert
from ds01.api.http import caller_of, deps_of, flag, off_loop, ok, parse_body
from ds01.api.schemas import ReservationOut, ReserveIn, UnreserveIn
from ds01.errors import UsageError
from ds01.services.allocation import AllocationService
from ds01.services.reservations import status_of
from ds01.store.reservations import Reservation


def reservation_out(
    svc: AllocationService, r: Reservation, now: float, warnings: tuple[str, ...] = ()
) -> ReservationOut:
    names = {v.unit.unit.uuid: v.unit.unit.name for v in svc.status()}
    return ReservationOut(
        id=r.id,
        units=list(r.units),
        unit_names=[names.get(u, u) for u in r.units],
        user=r.user,
        group=r.group,
        start=convert.iso(r.start) or "",
        end=convert.iso(r.end) or "",
        grace_s=r.grace_s,
        reason=r.reason,
        status=status_of(r, now),
        used_at=convert.iso(r.used_at),
        created_by=r.created_by,
        created_at=convert.iso(r.created_at) or "",
        ended_at=convert.iso(r.ended_at),
        ended_by=r.ended_by,
        warnings=list(warnings),
    )


def _id(request: web.Request) -> int:
    raw = request.match_info["id"]
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(
            f"reservation id must be a number, got {raw[:40]!r}",
            fix="See the ids with 'ds01 admin reservations'.",
        ) from None
    if value < 1:
        raise UsageError(f"reservation id must be positive, got {value}")
    return value


async def reserve(request: web.Request) -> web.Response:
    svc = deps_of(request).allocations
    body = await parse_body(request, ReserveIn)
    made = await off_loop(
        svc.reservations.create,
        caller_of(request),
        body.units,
        body.start,
        body.end,
        body.party,
        body.reason,
        body.grace,
    )
    now = svc.reservations.now()
    return ok(reservation_out(svc, made.reservation, now, made.warnings), status=201)


async def list_reservations(request: web.Request) -> web.Response:
    svc = deps_of(request).allocations
    found = await off_loop(svc.reservations.listing, caller_of(request), flag(request, "all"))
    now = svc.reservations.now()
    return ok([reservation_out(svc, r, now) for r in found])


async def cancel(request: web.Request) -> web.Response:
    svc = deps_of(request).allocations
    body = await parse_body(request, UnreserveIn)
    r = await off_loop(svc.reservations.cancel, caller_of(request), _id(request), body.reason)
    return ok(reservation_out(svc, r, svc.reservations.now()))

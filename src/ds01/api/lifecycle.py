"""Admins' exemptions from the idle and runtime limits (lifecycle/exemptions.py)."""

from __future__ import annotations

from aiohttp import web

from ds01.api import convert
from ds01.api.http import caller_of, deps_of, off_loop, ok, parse_body
from ds01.api.schemas import ExemptIn, ExemptionOut, UnexemptIn
from ds01.lifecycle.exemptions import Exemptions
from ds01.model.activity import Countdown, Exemption


def _service(request: web.Request) -> Exemptions:
    svc = deps_of(request).exemptions
    assert svc is not None  # the routes are served only with it (api/routes.py: Needs)
    return svc


def exemption_out(e: Exemption) -> ExemptionOut:
    return ExemptionOut(
        id=e.id,
        user=e.user,
        countdown=e.countdown.value,
        until=convert.iso(e.until) or "",
        reason=e.reason,
        created_by=e.created_by,
        created_at=convert.iso(e.created_at) or "",
    )


async def exempt(request: web.Request) -> web.Response:
    body = await parse_body(request, ExemptIn)
    e = await off_loop(
        _service(request).exempt,
        caller_of(request),
        body.user,
        Countdown(body.countdown),
        body.until,
        body.duration,
        body.reason,
    )
    return ok(exemption_out(e), status=201)


async def unexempt(request: web.Request) -> web.Response:
    body = await parse_body(request, UnexemptIn)
    e = await off_loop(
        _service(request).end, caller_of(request), body.user, Countdown(body.countdown), body.reason
    )
    return ok(exemption_out(e))


async def list_exemptions(request: web.Request) -> web.Response:
    found = await off_loop(_service(request).listing, caller_of(request))
    return ok([exemption_out(e) for e in found])

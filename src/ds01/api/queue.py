"""Queue endpoints (issue 16): the caller's entries (or everyone's, as privacy allows), cancel,
and the priority of one entry factor by factor. Who may see what is QueueService's rule."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from ds01.api.http import caller_of, deps_of, flag, off_loop, ok
from ds01.api.schemas import QueueEntryOut, QueueExplainOut, QueueFactorOut, QueueOut
from ds01.errors import UsageError
from ds01.identity import Caller
from ds01.services.gatequeue import origin_of
from ds01.services.queue import Placed, QueueService, describe_request


def _service(request: web.Request) -> QueueService:
    svc = deps_of(request).queue
    assert svc is not None  # the routes are served only with it (api/routes.py: Needs)
    return svc


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def entry_out(svc: QueueService, caller: Caller, p: Placed, now: float) -> QueueEntryOut:
    e = p.entry
    full = svc.may_see(caller, e)
    return QueueEntryOut(
        id=e.id,
        user=e.user if svc.shows_user(caller, e) else None,
        name=e.name if full else None,
        image=str(e.request.get("image")) if full else None,
        request=describe_request(e.request) if full else None,
        state=e.state.value,
        position=p.position,
        size=e.size,
        queued_at=_iso(e.created_at),
        waited_s=round(
            max(
                0.0,
                (now if e.state.value in ("queued", "admitting") else e.updated_at) - e.created_at,
            ),
            1,
        ),
        note=e.note if full else None,
        priority=round(p.priority.total, 3) if p.priority is not None and full else None,
        estimated_start=_iso(p.estimated_start) if p.estimated_start is not None else None,
        allocation_id=e.allocation_id if full else None,
        container_id=e.container_id if full else None,
        mine=e.user == caller.name,
        origin=origin_of(e.request),
    )


def _entry_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(
            f"queue entry id must be a number, got {raw[:40]!r}",
            fix="See the ids with 'ds01 queue'.",
        ) from None
    if value < 1:
        raise UsageError(f"queue entry id must be positive, got {value}")
    return value


async def list_queue(request: web.Request) -> web.Response:
    svc = _service(request)
    caller = caller_of(request)
    all_users = flag(request, "all")
    placed = await off_loop(svc.entries, caller, all_users)
    waiting = await off_loop(svc.waiting_count)
    now = svc.now()
    return ok(QueueOut(entries=[entry_out(svc, caller, p, now) for p in placed], waiting=waiting))


async def cancel(request: web.Request) -> web.Response:
    svc = _service(request)
    caller = caller_of(request)
    entry = await off_loop(svc.cancel, caller, _entry_id(request))
    return ok(entry_out(svc, caller, Placed(entry, None, None), svc.now()))


async def explain(request: web.Request) -> web.Response:
    svc = _service(request)
    caller = caller_of(request)
    p = await off_loop(svc.explain, caller, _entry_id(request))
    pr = p.priority
    return ok(
        QueueExplainOut(
            entry=entry_out(svc, caller, p, svc.now()),
            usage_gpueq_s=round(pr.usage, 1) if pr is not None else None,
            factors=[
                QueueFactorOut(
                    name=f.name,
                    value=round(f.value, 4),
                    weight=f.weight,
                    points=round(f.points, 3),
                )
                for f in (pr.factors if pr is not None else ())
            ],
            # The sum of the points as shown, so that the numbers on the screen add up.
            total=round(sum(round(f.points, 3) for f in pr.factors), 3) if pr is not None else None,
        )
    )

"""The audit log endpoint (`ds01 events`): yours, or anyone's for admins."""

from __future__ import annotations

from aiohttp import web

from ds01.api import convert
from ds01.api.http import caller_of, deps_of, off_loop, ok
from ds01.errors import UsageError
from ds01.model.events import EventKind


async def list_events(request: web.Request) -> web.Response:
    q = request.query
    since: float | None = None
    if "since" in q:
        try:
            since = float(q["since"])
        except ValueError:
            raise UsageError("since must be a unix timestamp") from None
    kind = q.get("kind")
    if kind is not None and kind not in set(EventKind):
        raise UsageError(
            f"kind: {kind!r} is not an event kind",
            fix=f"Use one of: {', '.join(EventKind)}.",
        )
    try:
        limit = max(1, min(int(q.get("limit", "1000")), 10000))
    except ValueError:
        raise UsageError("limit must be a number") from None
    evs = await off_loop(
        deps_of(request).allocations.events,
        caller_of(request),
        user=q.get("user"),
        since=since,
        kind=kind,
        limit=limit,
    )
    return ok([convert.event_out(e) for e in evs])

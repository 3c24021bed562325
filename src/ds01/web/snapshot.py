"""What the web status page shows, as one JSON document: every unit with its holder and state and
its activity trend, the queue, and recent events.

A TCP connection has no SO_PEERCRED identity, so the page is one view for everybody: what any
user may see — a stranger who is no admin (VISITOR). Each part is assembled by the function that
answers the same question for `ds01 gpu status` (services/status.py, api/units.py) and `ds01
queue --all` (services/queue.py, api/queue.py), with VISITOR as the caller, so `privacy:
hide_others` hides other users' names here exactly as it does there. Left out on purpose, as
admin-only or not the page's business: processes and their owners, grants, quotas, queued
requests' contents, events' free text and the reasons admins write.

Events: `ds01 events` shows a user only their own, but allocations and the queue are public
facts under `privacy: show_all` (`gpu status` and `queue --all` show them); the page lists the
newest of those (PUBLIC_EVENTS), with the unit names and the reason code, the user as privacy
allows, never the message.

Blocking (the state database): called in a worker thread.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ds01.api.queue import entry_out
from ds01.api.units import unit_status_out
from ds01.config import Config
from ds01.identity import Caller
from ds01.model.inventory import MachineSample
from ds01.services.allocation import AllocationService
from ds01.services.queue import QueueService
from ds01.services.status import GpuStatus, gpu_status
from ds01.services.unithistory import UnitHistory
from ds01.store import events

# Nobody in particular: no user has this name (names are never empty), it is not root and in no
# group, so it is no admin and owns nothing.
VISITOR = Caller(uid=-1, gid=-1, pid=0, name="", groups=frozenset())

HIDDEN = "(hidden)"  # what api/units.py shows for a holder privacy hides
# kind → actions the page lists. Refusals stay private (a user's failed requests), and so do
# gate, grant, host, notify and daemon events (admins' business).
PUBLIC_EVENTS: dict[str, frozenset[str]] = {
    "alloc": frozenset({"reserved", "activated", "held", "released"}),
    "queue": frozenset({"queued", "admitted", "cancelled", "expired"}),
    "admin": frozenset({"drained", "undrained"}),
}
RECENT_EVENTS = 20
EVENTS_WITHIN_S = 86400.0  # older events are not "recent" (and not searched for)
# Fields of api/units.py's unit line the page shows (processes, allocation ids: not).
UNIT_FIELDS = (
    "uuid",
    "name",
    "kind",
    "gpu_index",
    "model",
    "profile",
    "memory_total_mib",
    "gpueq",
    "gpueq_exact",
    "drained",
    "user",
    "state",
    "container",
    "hold_until",
    "utilization_pct",
    "memory_used_mib",
    "busy",
)


@dataclass(frozen=True)
class Sources:
    """Where a snapshot's parts come from: ds01d's services and its latest sample."""

    allocations: AllocationService
    queue: QueueService | None
    sample: Callable[[], MachineSample | None]
    history: UnitHistory
    backend_name: str
    config: Callable[[], Config]
    now: Callable[[], float] = time.time


def change_key(src: Sources) -> tuple[object, ...]:
    """Moves whenever the snapshot may have changed: a new sample (utilization, the queue's
    estimates), a new event (every allocation, queue and drain change writes one in its own
    transaction), a reloaded config (privacy). One read of the events' primary key."""
    with src.allocations.db.transaction(immediate=False) as conn:
        last = events.last_id(conn)
    sample = src.sample()
    return (id(sample), sample.taken_at if sample else None, last, id(src.config()))


def build(src: Sources) -> dict[str, Any]:
    config = src.config()
    sample = src.sample()
    now = src.now()
    status = gpu_status(src.allocations, VISITOR, sample)
    trends = src.history.trends(now)
    units = []
    for line in status.units:
        out = unit_status_out(line).model_dump(include=set(UNIT_FIELDS))
        out["state"] = out["state"] or ("drained" if out["drained"] else "free")
        trend = trends.get(line.row.unit.uuid)
        out["trend"] = (
            {"measure": trend.measure.value, "points": [list(p) for p in trend.points]}
            if trend is not None
            else None
        )
        units.append(out)
    return {
        "host": socket.gethostname(),
        "generated_at": _iso(now),
        "backend": src.backend_name,
        "sampled_at": _iso(sample.taken_at.timestamp()) if sample and sample.taken_at else None,
        "privacy": config.privacy,
        "free_gpueq": round(float(status.free), 4),
        "total_gpueq": round(float(status.total), 4),
        "window_s": src.history.window_s,
        "units": units,
        "queue": _queue(src.queue, now),
        "events": _events(src, status, config.privacy == "hide_others", now),
    }


def _queue(svc: QueueService | None, now: float) -> dict[str, Any]:
    if svc is None:
        return {"waiting": 0, "entries": []}
    entries = []
    for p in svc.entries(VISITOR, all_users=True):
        e = entry_out(svc, VISITOR, p, now)
        entries.append(
            {
                "position": e.position,
                "user": e.user if e.user is not None else HIDDEN,
                "size": e.size,
                "state": e.state,
                "queued_at": e.queued_at,
                "waited_s": e.waited_s,
                "estimated_start": e.estimated_start,
            }
        )
    return {"waiting": len(entries), "entries": entries}


def _events(src: Sources, status: GpuStatus, hide: bool, now: float) -> list[dict[str, Any]]:
    with src.allocations.db.transaction(immediate=False) as conn:
        found = events.query(
            conn,
            kinds=tuple(PUBLIC_EVENTS),
            since=now - EVENTS_WITHIN_S,
            limit=RECENT_EVENTS * 4,  # some of each kind's actions are not public
        )
    names = {line.row.unit.uuid: line.row.unit.title for line in status.units}
    held: dict[
        int, list[str]
    ] = {}  # live allocation id → its units' names (activated and held events name none)
    for line in status.units:
        if line.allocation is not None:
            held.setdefault(line.allocation.id, []).append(line.row.unit.title)
    out = []
    for e in found:
        if e.action not in PUBLIC_EVENTS.get(e.kind, frozenset()):
            continue
        uuids = e.details.get("units")
        if isinstance(uuids, list):
            units = [names.get(str(u), "?") for u in uuids]
        else:
            units = held.get(e.allocation_id or 0, [])
        user = e.user
        if user is not None and hide:
            user = HIDDEN
        out.append(
            {
                "at": _iso(e.ts),
                "kind": e.kind,
                "action": e.action,
                "user": user,
                "units": units,
                # Codes only (request, idle_timeout, user_release, …); an admin's drain reason
                # is free text and stays in `gpu status`.
                "reason": e.reason if e.kind != "admin" else None,
            }
        )
    return out[-RECENT_EVENTS:][::-1]  # newest first


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")

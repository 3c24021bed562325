"""Turn store rows and model values into API schemas (one place for the JSON shape)."""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime
from typing import Any

from ds01.api.schemas import AllocationOut, ErrorBody, ErrorOut, EventOut, LifecycleOut, UnitOut
from ds01.errors import Ds01Error, Refusal
from ds01.lifecycle.countdown import Outlook
from ds01.model.activity import STOP_REASON
from ds01.model.inventory import Unit
from ds01.store.allocations import AllocationRow
from ds01.store.events import Event


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return _iso_second(math.floor(t))  # what isoformat(timespec="seconds") keeps of t


@functools.lru_cache(maxsize=4096)
def _iso_second(s: int) -> str:
    # An answer names a few instants, most of them this second's: formatting each anew was
    # 2% of an allocate+release cycle's CPU in ds01d.
    return datetime.fromtimestamp(s, UTC).isoformat(timespec="seconds")


def unit_out(u: Unit) -> dict[str, Any]:
    return unit_model(u).model_dump()


def unit_model(u: Unit) -> UnitOut:
    return UnitOut(
        uuid=u.uuid,
        name=u.name,
        kind=u.kind.value,
        gpu_uuid=u.gpu_uuid,
        gpu_index=u.gpu_index,
        model=u.model,
        profile=u.profile,
        memory_total_mib=u.memory_total_mib,
        gpueq=round(float(u.gpueq), 4),
        gpueq_exact=u.gpueq.as_text(),
        gpu_instance_id=u.gpu_instance_id,
        compute_instance_id=u.compute_instance_id,
    )


def lifecycle_out(o: Outlook) -> LifecycleOut:
    return LifecycleOut(
        idle_since=iso(o.idle_since),
        next_stop=None if o.next_stop is None else STOP_REASON[o.next_stop],
        stop_at=iso(o.stop_at),
        kept_until=iso(o.kept_until),
    )


def allocation_out(a: AllocationRow, outlook: Outlook | None = None) -> AllocationOut:
    return AllocationOut(
        id=a.id,
        user=a.user,
        group=a.group,
        container=a.container,
        state=a.state.value,
        units=[unit_model(u) for u in a.units],
        gpueq=round(float(a.gpueq), 4),
        gpueq_exact=a.gpueq.as_text(),
        created_at=iso(a.created_at) or "",
        expires_at=iso(a.expires_at),
        hold_until=iso(a.hold_until),
        released_at=iso(a.released_at),
        release_reason=a.release_reason,
        lifecycle=None if outlook is None else lifecycle_out(outlook),
    )


def event_out(e: Event) -> EventOut:
    return EventOut(
        id=e.id,
        ts=iso(e.ts) or "",
        kind=e.kind,
        action=e.action,
        actor=e.actor,
        user=e.user,
        allocation_id=e.allocation_id,
        reason=e.reason,
        message=e.message,
        details=e.details,
    )


def error_body(err: Ds01Error) -> ErrorOut:
    """The one JSON shape of an error, for responses and for NDJSON stream lines."""
    return ErrorOut(
        error=ErrorBody(
            kind=err.kind,
            what=err.what,
            why=err.why,
            fix=err.fix,
            reason=err.reason.value if isinstance(err, Refusal) else None,
        )
    )

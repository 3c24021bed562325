"""The lifecycle's records in the database (store/activity.py), one short transaction each, with
their audit events (issue 15). Decides nothing: lifecycle/countdown.py decides, lifecycle/
reclaim.py acts. Must not talk to Docker or NVML.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ds01.model.activity import ActivityRecord, Countdown, WarningRecord
from ds01.store import activity as store
from ds01.store import events
from ds01.store.allocations import AllocationRow
from ds01.store.db import Database
from ds01.timetext import clock

DAEMON = "ds01d"


@dataclass(frozen=True)
class Observed:
    """An allocation's record after a sample, its warnings, and how many sent warnings a
    reset of the idle countdown cancelled (0: none)."""

    record: ActivityRecord
    warnings: list[WarningRecord]
    cancelled: int
    keep_until: float | None = None  # the idle countdown is held off until then (keep-alive)


class ActivityBook:
    def __init__(self, db: Database) -> None:
        self.db = db

    def read(self, ids: list[int]) -> dict[int, Observed]:
        """The records (with warnings and keep-alive) of these allocations that have one."""
        out: dict[int, Observed] = {}
        with self.db.transaction(immediate=False) as conn:
            for alloc_id in ids:
                rec = store.get(conn, alloc_id)
                if rec is not None:
                    out[alloc_id] = Observed(
                        rec, store.warnings(conn, alloc_id), 0, store.keepalive(conn, alloc_id)
                    )
        return out

    def keep_alive(self, row: AllocationRow, until: float, by: str, now: float) -> int:
        """Hold off the allocation's idle countdown until `until` (`ds01 container
        keep-alive`): its idle warnings sent so far are void (they announced an earlier stop);
        the idle countdown starts again from `until` at the earliest. Returns how many sent
        warnings that voided. One transaction, with the audit event."""
        with self.db.transaction() as conn:
            store.set_keepalive(conn, row.id, until, by, now)
            voided = store.clear_warnings(conn, row.id, Countdown.IDLE)
            _event(
                conn,
                row,
                "keep_alive",
                "keep_alive",
                f"{row.container or 'container'} is kept from an idle stop until "
                f"{clock(until, now)}",
                {"until": until, "voided_warnings": voided},
                now,
                actor=by,
            )
        return voided

    def last_capacity_refusal(self) -> float | None:
        with self.db.transaction(immediate=False) as conn:
            return store.last_capacity_refusal(conn)

    def forget_inactive(self) -> int:
        with self.db.transaction() as conn:
            return store.forget_inactive(conn)

    def observe(
        self,
        row: AllocationRow,
        update: Callable[[ActivityRecord], ActivityRecord],
        now: float,
    ) -> Observed:
        """Apply `update` (countdown.observe with this sample) to the allocation's record, made
        here when missing or when the allocation was activated again since (a new idle run).
        When the idle run ends with idle warnings sent, they are cancelled and an event says
        so, in the same transaction."""
        with self.db.transaction() as conn:
            old = store.get(conn, row.id)
            if old is None or old.active_since != row.updated_at:
                store.clear_warnings(conn, row.id, Countdown.IDLE)
                old = ActivityRecord(
                    row.id, active_since=row.updated_at, runtime_from=row.created_at
                )
            new = update(old)
            cancelled = 0
            if old.idle_since is not None and new.idle_since is None:
                cancelled = store.clear_warnings(conn, row.id, Countdown.IDLE)
                if cancelled:
                    last = new.recent[-1].signal if new.recent else ""
                    _event(
                        conn,
                        row,
                        "idle_cleared",
                        "activity",
                        f"{row.container or 'container'} is in use again ({last}); the idle"
                        " countdown is cancelled",
                        {"idle_since": old.idle_since, "signal": last},
                        now,
                    )
            if new != old:
                store.put(conn, new)
            return Observed(
                new, store.warnings(conn, row.id), cancelled, store.keepalive(conn, row.id)
            )

    def warned(
        self,
        row: AllocationRow,
        done: list[WarningRecord],
        *,
        action: str,
        reason: str,
        message: str,
        details: dict[str, Any],
        now: float,
    ) -> None:
        """Record the stages dealt with (the sent one and those skipped) and the event."""
        with self.db.transaction() as conn:
            for w in done:
                store.add_warning(conn, w)
            _event(conn, row, action, reason, message, details, now)

    def record(
        self,
        row: AllocationRow,
        *,
        action: str,
        reason: str,
        message: str,
        details: dict[str, Any],
        now: float,
    ) -> None:
        with self.db.transaction() as conn:
            _event(conn, row, action, reason, message, details, now)

    def shift(self, step_s: float) -> int:
        with self.db.transaction() as conn:
            return store.shift(conn, step_s)


def _event(
    conn: sqlite3.Connection,
    row: AllocationRow,
    action: str,
    reason: str,
    message: str,
    details: dict[str, Any],
    now: float,
    actor: str = DAEMON,
) -> None:
    """One container event about an allocation's countdown (all of the lifecycle's events)."""
    events.record(
        conn,
        kind="container",
        action=action,
        reason=reason,
        actor=actor,
        user=row.user,
        allocation_id=row.id,
        message=message,
        details=details,
        ts=now,
    )

"""The lifecycle tables (migration 6): one activity record per active allocation and the
countdown warnings already dealt with (model/activity.py says what each field means).

Rows of allocations that are no longer active are deleted by forget_inactive(), so the tables
stay as small as the number of running GPU containers. Must not decide anything.
"""

from __future__ import annotations

import json
import sqlite3

from ds01.model.activity import ActivityRecord, Countdown, Verdict, WarningRecord


def get(conn: sqlite3.Connection, allocation_id: int) -> ActivityRecord | None:
    r = conn.execute(
        "SELECT * FROM lifecycle_activity WHERE allocation_id = ?", (allocation_id,)
    ).fetchone()
    if r is None:
        return None
    recent = tuple(Verdict(float(v[0]), v[1], str(v[2])) for v in json.loads(r["recent"]))
    return ActivityRecord(
        allocation_id=int(r["allocation_id"]),
        active_since=float(r["active_since"]),
        runtime_from=float(r["runtime_from"]),
        idle_run=int(r["idle_run"]),
        idle_since=r["idle_since"],
        last_sample=r["last_sample"],
        recent=recent,
    )


def put(conn: sqlite3.Connection, rec: ActivityRecord) -> None:
    recent = json.dumps([[v.ts, v.active, v.signal] for v in rec.recent])
    conn.execute(
        "INSERT INTO lifecycle_activity (allocation_id, active_since, runtime_from, idle_run,"
        " idle_since, last_sample, recent) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (allocation_id) DO UPDATE SET active_since = excluded.active_since,"
        " runtime_from = excluded.runtime_from, idle_run = excluded.idle_run,"
        " idle_since = excluded.idle_since, last_sample = excluded.last_sample,"
        " recent = excluded.recent",
        (
            rec.allocation_id,
            rec.active_since,
            rec.runtime_from,
            rec.idle_run,
            rec.idle_since,
            rec.last_sample,
            recent,
        ),
    )


def warnings(conn: sqlite3.Connection, allocation_id: int) -> list[WarningRecord]:
    return [
        WarningRecord(
            allocation_id=int(r["allocation_id"]),
            countdown=Countdown(r["countdown"]),
            stage=str(r["stage"]),
            deadline=float(r["deadline"]),
            done_at=float(r["done_at"]),
            sent=bool(r["sent"]),
        )
        for r in conn.execute(
            "SELECT * FROM lifecycle_warnings WHERE allocation_id = ? ORDER BY done_at",
            (allocation_id,),
        )
    ]


def add_warning(conn: sqlite3.Connection, w: WarningRecord) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO lifecycle_warnings (allocation_id, countdown, stage, deadline,"
        " done_at, sent) VALUES (?, ?, ?, ?, ?, ?)",
        (w.allocation_id, w.countdown.value, w.stage, w.deadline, w.done_at, int(w.sent)),
    )


def clear_warnings(conn: sqlite3.Connection, allocation_id: int, countdown: Countdown) -> int:
    """Forget one countdown's warnings (activity reset it); how many had been sent."""
    sent = conn.execute(
        "SELECT COUNT(*) FROM lifecycle_warnings WHERE allocation_id = ? AND countdown = ?"
        " AND sent = 1",
        (allocation_id, countdown.value),
    ).fetchone()[0]
    conn.execute(
        "DELETE FROM lifecycle_warnings WHERE allocation_id = ? AND countdown = ?",
        (allocation_id, countdown.value),
    )
    return int(sent)


def forget_inactive(conn: sqlite3.Connection) -> int:
    """Delete the records of allocations that are not active (held, released); how many."""
    # From the small tables to the allocations by primary key: no scan of the whole history.
    n = 0
    for table in ("lifecycle_activity", "lifecycle_warnings", "lifecycle_keepalive"):
        n += conn.execute(
            f"DELETE FROM {table} WHERE allocation_id IN (SELECT t.allocation_id FROM {table} t"
            " LEFT JOIN allocations a ON a.id = t.allocation_id"
            " WHERE a.state IS NULL OR a.state != 'active')"
        ).rowcount
    return n


def shift(conn: sqlite3.Connection, step_s: float) -> int:
    """Move every stored time by step_s (a wall-clock step, services/clock.py): each countdown
    keeps the time it had left. active_since is not moved: it names an activation by the
    allocation's updated_at, which stays. Returns how many records moved."""
    n = conn.execute(
        "UPDATE lifecycle_activity SET runtime_from = runtime_from + ?,"
        " idle_since = idle_since + ?",
        (step_s, step_s),
    ).rowcount
    conn.execute(
        "UPDATE lifecycle_warnings SET deadline = deadline + ?, done_at = done_at + ?",
        (step_s, step_s),
    )
    conn.execute(
        "UPDATE lifecycle_keepalive SET until = until + ?, set_at = set_at + ?", (step_s, step_s)
    )
    return int(n)


def keepalive(conn: sqlite3.Connection, allocation_id: int) -> float | None:
    """Until when the allocation's idle countdown is held off (`ds01 container keep-alive`)."""
    row = conn.execute(
        "SELECT until FROM lifecycle_keepalive WHERE allocation_id = ?", (allocation_id,)
    ).fetchone()
    return None if row is None else float(row[0])


def set_keepalive(
    conn: sqlite3.Connection, allocation_id: int, until: float, set_by: str, now: float
) -> None:
    conn.execute(
        "INSERT INTO lifecycle_keepalive (allocation_id, until, set_by, set_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (allocation_id) DO UPDATE SET until = excluded.until,"
        " set_by = excluded.set_by, set_at = excluded.set_at",
        (allocation_id, until, set_by, now),
    )

"""The lifecycle tables (migrations 6, 8, 9): one activity record per active allocation, the
countdown warnings already dealt with, keep-alives, and admins' exemptions (model/activity.py
says what each field means).

Rows of allocations that are no longer active are deleted by forget_inactive(), so the tables
stay as small as the number of running GPU containers. Must not decide anything.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ds01.model.activity import ActivityRecord, Countdown, Exemption, Verdict, WarningRecord


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
    conn.execute(
        "UPDATE lifecycle_exemptions SET until = until + ?, created_at = created_at + ?"
        " WHERE ended_at IS NULL",
        (step_s, step_s),
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


_EXEMPTION = (
    "SELECT id, user, countdown, until, reason, created_by, created_at FROM lifecycle_exemptions"
)


def _exemption(r: tuple[Any, ...]) -> Exemption:
    return Exemption(int(r[0]), r[1], Countdown(r[2]), float(r[3]), r[4], r[5], float(r[6]))


def live_exemptions(conn: sqlite3.Connection, now: float) -> list[Exemption]:
    """Exemptions in force at `now`, oldest first."""
    rows = conn.execute(
        f"{_EXEMPTION} WHERE ended_at IS NULL AND until > ? ORDER BY id", (now,)
    ).fetchall()
    return [_exemption(r) for r in rows]


def end_exemption(
    conn: sqlite3.Connection, user: str, countdown: Countdown, by: str, now: float
) -> Exemption | None:
    """End the user's exemption from `countdown` in force at `now`; it, or None."""
    row = conn.execute(
        f"{_EXEMPTION} WHERE user = ? AND countdown = ? AND ended_at IS NULL AND until > ?",
        (user, countdown.value, now),
    ).fetchone()
    if row is None:
        return None
    conn.execute(
        "UPDATE lifecycle_exemptions SET ended_at = ?, ended_by = ? WHERE id = ?", (now, by, row[0])
    )
    return _exemption(row)


def add_exemption(
    conn: sqlite3.Connection,
    user: str,
    countdown: Countdown,
    until: float,
    reason: str,
    by: str,
    now: float,
) -> Exemption:
    """A new exemption; one in force for the same user and countdown ends (replaced)."""
    end_exemption(conn, user, countdown, by, now)
    cur = conn.execute(
        "INSERT INTO lifecycle_exemptions (user, countdown, until, reason, created_by, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (user, countdown.value, until, reason, by, now),
    )
    assert cur.lastrowid is not None
    return Exemption(cur.lastrowid, user, countdown, until, reason, by, now)


def exemption_ends(conn: sqlite3.Connection) -> dict[tuple[str, Countdown], float]:
    """Per user and countdown, until when the latest exemption held (or holds) it off: its
    end, or when an admin ended it. The lifecycle needs past ends too: a countdown whose
    stages fell due while exempt gives its full notice once the exemption is over."""
    rows = conn.execute(
        "SELECT user, countdown, MAX(COALESCE(MIN(ended_at, until), until))"
        " FROM lifecycle_exemptions GROUP BY user, countdown"
    ).fetchall()
    return {(r[0], Countdown(r[1])): float(r[2]) for r in rows}


def last_capacity_refusal(conn: sqlite3.Connection) -> float | None:
    """When a GPU request was last refused for lack of free units (events, migration 10)."""
    row = conn.execute(
        "SELECT MAX(ts) FROM events WHERE kind = 'alloc' AND action = 'refused'"
        " AND reason = 'no_capacity'"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def idle_runs(conn: sqlite3.Connection) -> dict[int, tuple[float, float | None]]:
    """allocation id → (active_since, idle_since) of every activity record, in one read (the
    metrics' idle seconds per unit; idle_since None: not idle)."""
    rows = conn.execute(
        "SELECT allocation_id, active_since, idle_since FROM lifecycle_activity"
    ).fetchall()
    return {int(r[0]): (float(r[1]), None if r[2] is None else float(r[2])) for r in rows}

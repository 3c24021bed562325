"""The `reservations` table: admins' reservations of units (issue 16 item 5).

Plain reads and writes inside the caller's transaction. A reservation's states:

    open → cancelled     an admin cancelled it
    open → expired       its party did not use it within its grace period: units back in the pool
    open → ended         its window is over

Must not decide what a reservation keeps back (scheduler/reservations.py does).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

STATES = ("open", "cancelled", "expired", "ended")


@dataclass(frozen=True)
class Reservation:
    id: int
    units: tuple[str, ...]
    user: str | None
    group: str | None
    reason: str
    start: float
    end: float
    grace_s: float
    created_by: str
    created_at: float
    state: str
    used_at: float | None
    ended_at: float | None
    ended_by: str | None


_COLS = (
    'id, units, for_user, for_group, reason, start, "end", grace_s, created_by, created_at,'
    " state, used_at, ended_at, ended_by"
)


def _row(r: tuple[Any, ...]) -> Reservation:
    return Reservation(
        id=int(r[0]),
        units=tuple(json.loads(r[1])),
        user=r[2],
        group=r[3],
        reason=str(r[4]),
        start=float(r[5]),
        end=float(r[6]),
        grace_s=float(r[7]),
        created_by=str(r[8]),
        created_at=float(r[9]),
        state=str(r[10]),
        used_at=r[11],
        ended_at=r[12],
        ended_by=r[13],
    )


def add(
    conn: sqlite3.Connection,
    *,
    units: tuple[str, ...],
    user: str | None,
    group: str | None,
    reason: str,
    start: float,
    end: float,
    grace_s: float,
    by: str,
    now: float,
) -> int:
    cur = conn.execute(
        'INSERT INTO reservations (units, for_user, for_group, reason, start, "end", grace_s,'
        " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (json.dumps(list(units)), user, group, reason, start, end, grace_s, by, now),
    )
    return int(cur.lastrowid or 0)


def get(conn: sqlite3.Connection, rid: int) -> Reservation | None:
    r = conn.execute(f"SELECT {_COLS} FROM reservations WHERE id = ?", (rid,)).fetchone()
    return _row(r) if r is not None else None


def open_ones(conn: sqlite3.Connection) -> list[Reservation]:
    """Every open reservation, by start."""
    return [
        _row(r)
        for r in conn.execute(
            f"SELECT {_COLS} FROM reservations WHERE state = 'open' ORDER BY start, id"
        )
    ]


def recent(conn: sqlite3.Connection, since: float) -> list[Reservation]:
    """Open reservations and those that ended after `since`, by start."""
    return [
        _row(r)
        for r in conn.execute(
            f"SELECT {_COLS} FROM reservations WHERE state = 'open' OR ended_at >= ?"
            " ORDER BY start, id",
            (since,),
        )
    ]


def end(conn: sqlite3.Connection, rid: int, state: str, by: str, now: float) -> bool:
    """open → state; False when it is not open (any more)."""
    assert state in STATES and state != "open"
    cur = conn.execute(
        "UPDATE reservations SET state = ?, ended_at = ?, ended_by = ? WHERE id = ?"
        " AND state = 'open'",
        (state, now, by, rid),
    )
    return cur.rowcount == 1


def mark_used(conn: sqlite3.Connection, rid: int, at: float) -> bool:
    cur = conn.execute(
        "UPDATE reservations SET used_at = ? WHERE id = ? AND used_at IS NULL AND state = 'open'",
        (at, rid),
    )
    return cur.rowcount == 1

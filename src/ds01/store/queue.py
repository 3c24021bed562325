"""The `queue` table: deploy requests waiting for capacity (issue 16).

Plain reads and writes inside the caller's transaction. An entry's states:

    queued → admitting → admitted      the dispatcher deployed it
    queued → cancelled                 its owner or an admin cancelled it
    queued → expired                   it waited longer than queue.max_wait
    admitting → queued                 the deploy was refused for now (capacity, quota)
    admitting → failed                 the deploy failed for good (image gone, name in use)
    queued → cancelled                 (a docker create the gate held open) its client went away
    admitting → cancelled              the same, as the dispatcher handed it its units
    admitting → failed                 (the same) ds01d restarted while admitting it

`admitting` is written and committed before the deploy starts, so an entry is admitted at most
once: a second dispatcher (or a restarted one) never takes an entry that is not `queued`
(take() changes exactly one row or none). Must not decide order or policy (services/queue.py,
queue/priority.py do).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class EntryState(StrEnum):
    QUEUED = "queued"
    ADMITTING = "admitting"
    ADMITTED = "admitted"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"


WAITING = (EntryState.QUEUED, EntryState.ADMITTING)


@dataclass(frozen=True)
class Entry:
    id: int
    user: str
    group: str | None
    name: str
    request: dict[str, Any]
    size: float
    state: EntryState
    created_at: float
    updated_at: float
    note: str | None
    allocation_id: int | None
    container_id: str | None


_COLS = (
    "id, user, grp, name, request, size, state, created_at, updated_at, note, allocation_id,"
    " container_id"
)


def _entry(r: tuple[Any, ...]) -> Entry:
    return Entry(
        id=int(r[0]),
        user=str(r[1]),
        group=r[2],
        name=str(r[3]),
        request=json.loads(r[4]),
        size=float(r[5]),
        state=EntryState(r[6]),
        created_at=float(r[7]),
        updated_at=float(r[8]),
        note=r[9],
        allocation_id=r[10],
        container_id=r[11],
    )


def add(
    conn: sqlite3.Connection,
    *,
    user: str,
    group: str | None,
    name: str,
    request: dict[str, Any],
    size: float,
    now: float,
) -> int:
    """A new queued entry; sqlite3.IntegrityError when the user already has one waiting for
    a container of that name (the partial unique index queue_waiting_name)."""
    cur = conn.execute(
        "INSERT INTO queue (user, grp, name, request, size, state, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
        (user, group, name, json.dumps(request, sort_keys=True), size, now, now),
    )
    return int(cur.lastrowid or 0)


def get(conn: sqlite3.Connection, entry_id: int) -> Entry | None:
    row = conn.execute(f"SELECT {_COLS} FROM queue WHERE id = ?", (entry_id,)).fetchone()
    return _entry(row) if row is not None else None


def waiting(conn: sqlite3.Connection) -> list[Entry]:
    """Every queued or admitting entry, oldest first."""
    return [
        _entry(r)
        for r in conn.execute(
            f"SELECT {_COLS} FROM queue WHERE state IN ('queued', 'admitting') ORDER BY id"
        )
    ]


def of_user(conn: sqlite3.Connection, user: str, limit: int = 50) -> list[Entry]:
    """The user's entries, newest first (ended ones too)."""
    return [
        _entry(r)
        for r in conn.execute(
            f"SELECT {_COLS} FROM queue WHERE user = ? ORDER BY id DESC LIMIT ?", (user, limit)
        )
    ]


def take(conn: sqlite3.Connection, entry_id: int, now: float) -> bool:
    """queued → admitting; False when the entry is no longer queued (taken, cancelled)."""
    cur = conn.execute(
        "UPDATE queue SET state = 'admitting', updated_at = ? WHERE id = ? AND state = 'queued'",
        (now, entry_id),
    )
    return cur.rowcount == 1


def set_state(
    conn: sqlite3.Connection,
    entry_id: int,
    state: EntryState,
    now: float,
    *,
    from_states: tuple[EntryState, ...],
    note: str | None = None,
    allocation_id: int | None = None,
    container_id: str | None = None,
) -> bool:
    """Move an entry in one of `from_states` to `state`; False when it was in none of them."""
    marks = ", ".join("?" for _ in from_states)
    cur = conn.execute(
        "UPDATE queue SET state = ?, updated_at = ?, note = ?,"
        " allocation_id = COALESCE(?, allocation_id), container_id = COALESCE(?, container_id)"
        f" WHERE id = ? AND state IN ({marks})",
        (state.value, now, note, allocation_id, container_id, entry_id, *from_states),
    )
    return cur.rowcount == 1


def set_note(conn: sqlite3.Connection, entry_id: int, note: str | None) -> None:
    conn.execute("UPDATE queue SET note = ? WHERE id = ?", (note, entry_id))


def set_container(conn: sqlite3.Connection, entry_id: int, container_id: str) -> None:
    """The container made for an admitted entry after its admission (a gate create)."""
    conn.execute("UPDATE queue SET container_id = ? WHERE id = ?", (container_id, entry_id))


@dataclass(frozen=True)
class UsageRow:
    """One allocation's use, for fair share: its units' gpueq (exact text each), when it
    started and ended (None: live), and whether a queue entry admitted it (entry penalty)."""

    user: str
    created_at: float
    released_at: float | None
    gpueqs: tuple[str, ...]
    from_queue: bool


def usage(conn: sqlite3.Connection, users: list[str], since: float) -> list[UsageRow]:
    """The allocations of `users` live at or after `since` (older use has decayed away)."""
    if not users:
        return []
    marks = ", ".join("?" for _ in users)
    rows = conn.execute(
        "SELECT a.id, a.user, a.created_at, a.released_at, u.gpueq"
        " FROM allocations a JOIN allocation_units au ON au.allocation_id = a.id"
        " JOIN units u ON u.uuid = au.unit_uuid"
        f" WHERE a.user IN ({marks}) AND (a.released_at IS NULL OR a.released_at >= ?)"
        " ORDER BY a.id",
        (*users, since),
    ).fetchall()
    # Allocations the queue admitted (their entry penalty): one read, not a lookup per row.
    admitted = {
        int(r[0])
        for r in conn.execute("SELECT allocation_id FROM queue WHERE allocation_id IS NOT NULL")
    }
    out: dict[int, UsageRow] = {}
    for r in rows:
        prev = out.get(int(r[0]))
        gpueqs = (*prev.gpueqs, str(r[4])) if prev else (str(r[4]),)
        out[int(r[0])] = UsageRow(str(r[1]), float(r[2]), r[3], gpueqs, int(r[0]) in admitted)
    return list(out.values())


def allocation_after(
    conn: sqlite3.Connection, user: str, container: str, since: float
) -> tuple[int, str, str | None] | None:
    """The newest allocation of `user` for container `container` made at or after `since`
    (id, state, container_id), live or not: what an entry's deploy left behind."""
    row = conn.execute(
        "SELECT id, state, container_id FROM allocations WHERE user = ? AND container = ?"
        " AND created_at >= ? ORDER BY id DESC LIMIT 1",
        (user, container, since),
    ).fetchone()
    return (int(row[0]), str(row[1]), row[2]) if row is not None else None


def waiting_by_user(conn: sqlite3.Connection) -> dict[str, int]:
    """user → entries still waiting (queued or admitting), by the queue_open index."""
    rows = conn.execute(
        "SELECT user, COUNT(*) FROM queue WHERE state IN ('queued', 'admitting') GROUP BY user"
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}

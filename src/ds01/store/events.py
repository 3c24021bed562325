"""The audit log: append-only events written by the daemon inside the decision's transaction."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from ds01.model.events import EventKind


@dataclass(frozen=True)
class Event:
    id: int
    ts: float
    kind: str
    action: str
    actor: str | None
    user: str | None
    allocation_id: int | None
    reason: str
    message: str
    details: dict[str, Any]


def record(
    conn: sqlite3.Connection,
    *,
    kind: str,
    action: str,
    reason: str,
    actor: str | None = None,
    user: str | None = None,
    allocation_id: int | None = None,
    message: str = "",
    details: dict[str, Any] | None = None,
    ts: float | None = None,
) -> int:
    EventKind(kind)  # a kind nobody can ask for would be an event nobody finds
    cur = conn.execute(
        "INSERT INTO events (ts, kind, action, actor, user, allocation_id, reason, message,"
        " details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            time.time() if ts is None else ts,
            kind,
            action,
            actor,
            user,
            allocation_id,
            reason,
            message,
            json.dumps(details or {}, sort_keys=True, default=str),
        ),
    )
    return int(cur.lastrowid or 0)


def query(
    conn: sqlite3.Connection,
    *,
    user: str | None = None,
    since: float | None = None,
    kind: str | None = None,
    allocation_id: int | None = None,
    limit: int = 1000,
    kinds: tuple[str, ...] = (),
) -> list[Event]:
    """The newest `limit` events that match every filter given, oldest first; `kinds`: any
    of these kinds."""
    sql = "SELECT * FROM events WHERE 1=1"
    args: list[Any] = []
    if user is not None:
        sql += " AND user = ?"
        args.append(user)
    if since is not None:
        sql += " AND ts >= ?"
        args.append(since)
    if kind is not None:
        sql += " AND kind = ?"
        args.append(kind)
    if allocation_id is not None:
        sql += " AND allocation_id = ?"
        args.append(allocation_id)
    if kinds:
        sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
        args.extend(kinds)
    # Newest `limit` events, returned oldest first so a log reads top to bottom.
    sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?) ORDER BY id ASC"
    args.append(limit)
    return [
        Event(
            id=r["id"],
            ts=r["ts"],
            kind=r["kind"],
            action=r["action"],
            actor=r["actor"],
            user=r["user"],
            allocation_id=r["allocation_id"],
            reason=r["reason"],
            message=r["message"],
            details=json.loads(r["details"]),
        )
        for r in conn.execute(sql, args)
    ]


def last_id(conn: sqlite3.Connection) -> int:
    """The newest event's id (0 for an empty log)."""
    row = conn.execute("SELECT MAX(id) FROM events").fetchone()
    return int(row[0] or 0)


def tally_after(
    conn: sqlite3.Connection, after_id: int, upto_id: int
) -> list[tuple[str, str, str, int]]:
    """(kind, action, reason, count) of the events with after_id < id <= upto_id: the audit
    log's counters (metrics/tally.py) read in id ranges, each range by the primary key."""
    rows = conn.execute(
        "SELECT kind, action, reason, COUNT(*) FROM events WHERE id > ? AND id <= ?"
        " GROUP BY kind, action, reason",
        (after_id, upto_id),
    ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]

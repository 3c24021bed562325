"""Bare-metal grants, their sent warnings, and reported host GPU processes (migration 2).

Plain table access: the caller holds the transaction and records the event in it. A user has at
most one live grant (a partial unique index); ending one is final (`end()` only touches rows
whose `ended_at` is NULL).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

END_REASONS = ("expired", "revoked", "replaced")


@dataclass(frozen=True)
class GrantRow:
    id: int
    user: str
    granted_by: str
    reason: str
    created_at: float
    until: float | None  # None: permanent
    ended_at: float | None
    end_reason: str | None
    ended_by: str | None

    @property
    def live(self) -> bool:
        return self.ended_at is None


def _row(r: sqlite3.Row) -> GrantRow:
    return GrantRow(
        id=r["id"],
        user=r["user"],
        granted_by=r["granted_by"],
        reason=r["reason"],
        created_at=r["created_at"],
        until=r["until"],
        ended_at=r["ended_at"],
        end_reason=r["end_reason"],
        ended_by=r["ended_by"],
    )


def insert(
    conn: sqlite3.Connection,
    *,
    user: str,
    granted_by: str,
    reason: str,
    now: float,
    until: float | None,
) -> int:
    cur = conn.execute(
        "INSERT INTO grants (user, granted_by, reason, created_at, until) VALUES (?, ?, ?, ?, ?)",
        (user, granted_by, reason, now, until),
    )
    return int(cur.lastrowid or 0)


def get(conn: sqlite3.Connection, grant_id: int) -> GrantRow | None:
    r = conn.execute("SELECT * FROM grants WHERE id = ?", (grant_id,)).fetchone()
    return _row(r) if r is not None else None


def live(conn: sqlite3.Connection) -> list[GrantRow]:
    """Every live grant (the expiry pass runs this once per tick: it uses the partial index)."""
    rows = conn.execute("SELECT * FROM grants WHERE ended_at IS NULL ORDER BY user").fetchall()
    return [_row(r) for r in rows]


def live_for(conn: sqlite3.Connection, user: str) -> GrantRow | None:
    r = conn.execute("SELECT * FROM grants WHERE ended_at IS NULL AND user = ?", (user,)).fetchone()
    return _row(r) if r is not None else None


def end(conn: sqlite3.Connection, grant_id: int, *, now: float, reason: str, by: str) -> bool:
    """End a live grant; False when it had already ended (two enders raced; one is enough)."""
    if reason not in END_REASONS:
        raise ValueError(f"unknown end reason {reason!r}")
    cur = conn.execute(
        "UPDATE grants SET ended_at = ?, end_reason = ?, ended_by = ?"
        " WHERE id = ? AND ended_at IS NULL",
        (now, reason, by, grant_id),
    )
    return cur.rowcount == 1


def shift_live(conn: sqlite3.Connection, step_s: float) -> int:
    """Move every live grant that has an end by step_s seconds, for a wall-clock step
    (services/clock.py): its end, and its start with it, so it keeps both the time it had left
    and its length (which decides the warnings that apply). Returns how many moved."""
    cur = conn.execute(
        "UPDATE grants SET until = until + ?, created_at = created_at + ?"
        " WHERE ended_at IS NULL AND until IS NOT NULL",
        (step_s, step_s),
    )
    return cur.rowcount


def history(conn: sqlite3.Connection, user: str | None = None, limit: int = 200) -> list[GrantRow]:
    sql = "SELECT * FROM grants"
    args: list[object] = []
    if user is not None:
        sql += " WHERE user = ?"
        args.append(user)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return [_row(r) for r in conn.execute(sql, args)]


# ---- warnings --------------------------------------------------------------------------------


def warnings_done(conn: sqlite3.Connection, grant_id: int) -> set[int]:
    """The warning offsets (seconds before the end) already handled for a grant."""
    rows = conn.execute(
        "SELECT before_s FROM grant_warnings WHERE grant_id = ?", (grant_id,)
    ).fetchall()
    return {int(r[0]) for r in rows}


def mark_warning(
    conn: sqlite3.Connection, grant_id: int, before_s: int, *, now: float, sent: bool
) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO grant_warnings (grant_id, before_s, done_at, sent)"
        " VALUES (?, ?, ?, ?)",
        (grant_id, before_s, now, 1 if sent else 0),
    )


# ---- host process reports --------------------------------------------------------------------


def mark_reported(
    conn: sqlite3.Connection,
    *,
    boot_id: str,
    pid: int,
    started: int,
    uid: int | None,
    user: str | None,
    cause: str,
    now: float,
) -> bool:
    """Remember that a process was reported; False when it already was (before a restart)."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO host_process_reports"
        " (boot_id, pid, started, uid, user, cause, reported_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (boot_id, pid, started, uid, user, cause, now),
    )
    return cur.rowcount == 1


def forget_other_boots(conn: sqlite3.Connection, boot_id: str) -> int:
    """Reports from earlier boots name processes that cannot exist any more."""
    cur = conn.execute("DELETE FROM host_process_reports WHERE boot_id != ?", (boot_id,))
    return cur.rowcount

"""Banner notices waiting for a user's next `ds01` command (notify.channels: banner).

Owns the `banners` table: a notice is added when ds01d tells the user something, and removed
when it is handed to one of their commands (take) or when it is older than the configured age.
A user keeps at most KEEP notices (the newest): a user away for a week gets the latest news,
not a screenful. Must not decide who may take a user's notices (the API hands a caller only
their own, by SO_PEERCRED) and must not print anything.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

KEEP = 20
MAX_MESSAGE = 2000  # characters; a longer message is cut (the other channels have it whole)


@dataclass(frozen=True)
class Banner:
    id: int
    user: str
    topic: str
    message: str
    created_at: float


def add(conn: sqlite3.Connection, user: str, topic: str, message: str, ts: float) -> int:
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    cur = conn.execute(
        "INSERT INTO banners (user, topic, message, created_at) VALUES (?, ?, ?, ?)",
        (user, topic, message, ts),
    )
    conn.execute(
        "DELETE FROM banners WHERE user = ? AND id NOT IN"
        " (SELECT id FROM banners WHERE user = ? ORDER BY id DESC LIMIT ?)",
        (user, user, KEEP),
    )
    return int(cur.lastrowid or 0)


def expire(conn: sqlite3.Connection, before: float) -> int:
    """Drop every notice made before `before`, unseen; how many."""
    return conn.execute("DELETE FROM banners WHERE created_at < ?", (before,)).rowcount


def pending_users(conn: sqlite3.Connection) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT DISTINCT user FROM banners")}


def pending(conn: sqlite3.Connection, user: str) -> list[Banner]:
    """The user's notices, oldest first."""
    return [
        Banner(int(r[0]), str(r[1]), str(r[2]), str(r[3]), float(r[4]))
        for r in conn.execute(
            "SELECT id, user, topic, message, created_at FROM banners WHERE user = ? ORDER BY id",
            (user,),
        )
    ]


def remove(conn: sqlite3.Connection, ids: list[int]) -> None:
    conn.executemany("DELETE FROM banners WHERE id = ?", [(i,) for i in ids])

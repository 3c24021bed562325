"""Checkpointer: ds01d's WAL checkpoints on a connection of their own (store/db.py), on a real
SQLite file: the committing connection stops copying the WAL into the database by itself, the
background checkpoint copies all of it, and what it copied is what a fresh reader sees."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ds01.store import events
from ds01.store.db import FALLBACK_CHECKPOINT_PAGES, Checkpointer, Database


def _wal_bytes(db: Database) -> int:
    wal = Path(f"{db.path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def _write(db: Database, n: int) -> None:
    for i in range(n):
        with db.transaction() as conn:
            events.record(
                conn, kind="daemon", action="test", reason="t", message=f"e{i}", ts=float(i)
            )


def test_commits_leave_the_wal_to_the_checkpointer_which_copies_all_of_it(tmp_path: Path) -> None:
    db = Database(tmp_path / "ds01.db")
    cp = Checkpointer(db.path)
    cp.take_over(db)
    assert db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == FALLBACK_CHECKPOINT_PAGES
    # Far more than SQLite's default of 1,000 pages between checkpoints: the WAL keeps growing
    # (the committing connection did not copy it back and start it again).
    _write(db, 600)
    assert _wal_bytes(db) > 1000 * 4096
    frames, copied = cp.run()
    assert frames > 1000 and copied == frames
    # A reader that opens the database file now sees every event.
    reader = sqlite3.connect(f"file:{db.path}?mode=ro", uri=True)
    try:
        n = reader.execute("SELECT COUNT(*) FROM events WHERE action = 'test'").fetchone()[0]
    finally:
        reader.close()
    assert n == 600
    # The next commit starts the WAL again from its beginning (its frames counted anew).
    _write(db, 1)
    frames_after, _ = cp.run()
    assert frames_after < frames
    cp.close()
    db.close()


def test_without_a_checkpointer_sqlite_checkpoints_by_itself(tmp_path: Path) -> None:
    db = Database(tmp_path / "ds01.db")
    assert db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    db.close()

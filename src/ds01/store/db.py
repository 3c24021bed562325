"""Connection handling and the one transaction helper.

Every decision runs inside `transaction()` — by default BEGIN IMMEDIATE, so the write lock is
taken before the snapshot is read and no other writer can slip in between a check and its write.
Nested calls become savepoints. Any exception, including KeyboardInterrupt/CancelledError
(BaseException), rolls back: a half-written decision must never survive.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ds01.errors import StateError
from ds01.store.migrations import migrate


class Database:
    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StateError(
                f"state database {self.path} does not exist",
                fix="Start ds01d once to create it, or pass the right --state-dir.",
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (see transaction()).
            self.conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against process crashes (kill -9) in WAL mode; only a power
            # loss can drop the last commits, and the reconcile at start repairs from Docker.
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA busy_timeout=10000")
        except sqlite3.Error as e:
            raise StateError(
                f"cannot open state database {self.path}: {e}",
                fix="Check that the state directory exists and is writable by ds01d.",
            ) from e
        self._depth = 0
        # One connection shared by the event loop and worker threads: a transaction must never
        # interleave with another thread's statements, so the outermost level holds this lock.
        self._lock = threading.RLock()
        with self.transaction():
            migrate(self.conn)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield from self._transaction(immediate)

    def _transaction(self, immediate: bool) -> Iterator[sqlite3.Connection]:
        if self._depth == 0:
            self.conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        else:
            self.conn.execute(f"SAVEPOINT sp{self._depth}")
        self._depth += 1
        try:
            yield self.conn
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self.conn.execute("ROLLBACK")
            else:
                self.conn.execute(f"ROLLBACK TO sp{self._depth}")
                self.conn.execute(f"RELEASE sp{self._depth}")
            raise
        else:
            self._depth -= 1
            if self._depth == 0:
                self.conn.execute("COMMIT")
            else:
                self.conn.execute(f"RELEASE sp{self._depth}")

    def integrity_check(self) -> list[str]:
        """Problems SQLite finds in the file; empty when healthy."""
        rows = self.conn.execute("PRAGMA integrity_check").fetchall()
        msgs = [str(r[0]) for r in rows]
        return [] if msgs == ["ok"] else msgs

"""Connection handling and the one transaction helper.

Every decision runs inside `transaction()` — by default BEGIN IMMEDIATE, so the write lock is
taken before the snapshot is read and no other writer can slip in between a check and its write.
Nested calls become savepoints. Any exception, including KeyboardInterrupt/CancelledError
(BaseException), rolls back: a half-written decision must never survive. A write that fails
because the state disk is full (SQLite's "database or disk is full", ENOSPC) rolls back too and
reaches the caller as `StateDiskFull` ("state disk full": what, why, what to do), never as a raw
SQLite error; the next transaction works again as soon as there is space.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ds01.errors import StateDiskFull, StateError
from ds01.store.migrations import migrate

log = logging.getLogger("ds01d.store")

SQLITE_HEADER = b"SQLite format 3\x00"
# How long a statement waits for another process's lock (an admin's sqlite3, a backup).
BUSY_TIMEOUT_MS = 10_000
PAGE_SIZE = 2048  # bytes, for a new database (see Database.__init__)
_SQLITE_BUSY = 5  # primary result code; extended ones (BUSY_RECOVERY, ...) share the low byte
# A "disk I/O error" from SQLite on a file system with less than this free counts as disk full
# (growing the WAL index -shm reports SQLITE_IOERR_SHMSIZE rather than SQLITE_FULL).
_NEARLY_FULL_BYTES = 64 * 1024


def would_have_waited(exc: BaseException) -> bool:
    """exc is SQLite saying another connection holds the lock (SQLITE_BUSY and kin)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.OperationalError)
        and code is not None
        and code & 0xFF == _SQLITE_BUSY
    )


def free_bytes(path: Path) -> int | None:
    """Space an unprivileged writer may still use on the file system holding `path`."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def is_disk_full(exc: BaseException, path: Path | None = None) -> bool:
    """True when `exc` says a write failed for want of space (on `path`'s file system)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc):
        return True
    if "disk I/O error" in str(exc) and path is not None:
        free = free_bytes(path)
        return free is not None and free < _NEARLY_FULL_BYTES
    return False


def disk_full_error(
    exc: BaseException, path: Path, doing: str = "save a change to"
) -> StateDiskFull:
    """The "state disk full" error for a failed write to `path` (the database or a backup)."""
    where = path.parent
    return StateDiskFull(
        f"state disk full: ds01d could not {doing} {path}",
        why=f"The file system holding {where} has no space left ({exc}); nothing was changed.",
        fix=f"Free space on the state disk (df -h {where}), then try again; ds01d carries on "
        "by itself once there is space, no restart needed.",
    )


# The WAL's size, in pages, at which the committing connection checkpoints by itself when
# background checkpoints (Checkpointer) have fallen behind: a safety net, ~80 MB.
FALLBACK_CHECKPOINT_PAGES = 20_000


class Checkpointer:
    """ds01d's WAL checkpoints on a connection of their own, called from a background loop.

    By default the connection that commits copies the WAL into the database file (and fsyncs
    it) in the middle of a commit every 1,000 pages: a few milliseconds on a real disk, paid by
    whichever decision happened to commit then — on the event loop, for an allocation made
    there (api/http.py Decider). PASSIVE never waits for the writer nor makes it wait."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def take_over(self, db: Database) -> None:
        """From now on db's connection checkpoints only past FALLBACK_CHECKPOINT_PAGES."""
        with db.transaction(immediate=False) as conn:
            conn.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_CHECKPOINT_PAGES}")

    def run(self) -> tuple[int, int]:
        """One PASSIVE checkpoint: (frames in the WAL, frames copied into the database).
        StateDiskFull when the database file cannot grow (the WAL keeps every change)."""
        try:
            if self._conn is None:
                # Any thread (the loop's step runs in a worker); never waits for a lock.
                self._conn = sqlite3.connect(
                    self._path, isolation_level=None, check_same_thread=False, timeout=0
                )
            row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            if is_disk_full(exc, self._path.parent):
                raise disk_full_error(exc, self._path, "copy the log into") from exc
            raise
        _busy, frames, copied = row
        return int(frames), int(copied)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Database:
    """The state database. read_only=True (`ds01d --check`) opens it without writing anything:
    no journal-mode change, no migration."""

    def __init__(self, path: Path | str, *, create: bool = True, read_only: bool = False) -> None:
        self.path = Path(path)
        if (not create or read_only) and not self.path.exists():
            raise StateError(
                f"state database {self.path} does not exist",
                fix="Start ds01d once to create it, or pass the right --state-dir.",
            )
        try:
            if read_only:
                self.conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, timeout=10.0
                )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # isolation_level=None: we issue BEGIN/COMMIT ourselves (see transaction()).
                self.conn = sqlite3.connect(
                    str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0
                )
            self.conn.row_factory = sqlite3.Row
            if not read_only:
                # Only a new, empty database takes it (an existing one keeps its page size).
                # Every commit appends each page it touched to the WAL, checksummed: an
                # allocate or a release touches ~10 pages (rows and their indexes), and at 2 KiB
                # a cycle's SQLite work was 0.7x that at the default 4 KiB (measured here).
                self.conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
                self.conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL is durable against process crashes (kill -9) in WAL mode; only a
                # power loss can drop the last commits, and the reconcile at start repairs
                # from Docker.
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # TEMP objects (store/live.py's generation counter and its triggers) in memory: in
            # a file, every transaction that moves the counter opens a journal for it (+0.1 ms).
            self.conn.execute("PRAGMA temp_store=MEMORY")
        except sqlite3.Error as e:
            raise StateError(
                f"cannot open state database {self.path}: {e}",
                fix="Check that the state directory exists and is writable by ds01d.",
            ) from e
        self._depth = 0
        # Rollbacks so far, at any level: what was read inside a rolled-back level may come
        # back at the same generation with other contents (store/live.py's pending view).
        self.rollbacks = 0
        # after_commit() callbacks of the open transaction, each with the level it was added at.
        self._after: list[tuple[int, Callable[[], None]]] = []
        # One connection shared by the event loop and worker threads: a transaction must never
        # interleave with another thread's statements, so the outermost level holds this lock.
        self._lock = threading.RLock()
        if not read_only:
            with self.transaction():
                migrate(self.conn)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield from self._transaction(immediate)

    @contextmanager
    def without_waiting(self) -> Iterator[bool]:
        """For work that must never wait (api/http.py's Decider runs it on the event loop):
        yields False when another thread holds the connection; else holds it for the block
        with SQLite's busy timeout at 0, so that a statement that would wait for another
        process's lock fails at once instead (would_have_waited() tells that failure)."""
        if not self._lock.acquire(blocking=False):
            yield False
            return
        try:
            self.conn.execute("PRAGMA busy_timeout=0")
            try:
                yield True
            finally:
                self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        finally:
            self._lock.release()

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Inside a transaction: run fn once the outermost transaction has committed, still
        under the connection's lock (so callbacks run in commit order, before any other
        transaction begins). Dropped if the level it was added at rolls back. For what mirrors
        the database in memory (store/live.py): it changes only after the change is durable."""
        assert self._depth > 0, "after_commit outside a transaction"
        self._after.append((self._depth, fn))

    def _run_after_commit(self) -> None:
        done, self._after = self._after, []
        for _, fn in done:
            try:
                fn()
            except Exception:  # the commit stands; the callback's owner must cope (live.py)
                log.exception("after-commit callback failed")

    def _drop_after(self, depth: int) -> None:
        """Forget the callbacks of levels >= depth (they rolled back)."""
        self._after = [(d, fn) for d, fn in self._after if d < depth]

    def _transaction(self, immediate: bool) -> Iterator[sqlite3.Connection]:
        if self._depth == 0:
            self._after = []
            if self.conn.in_transaction:  # a ROLLBACK that failed earlier left one open
                self._rollback()
            self.conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        else:
            self.conn.execute(f"SAVEPOINT sp{self._depth}")
        self._depth += 1
        try:
            yield self.conn
        except BaseException as exc:
            self._drop_after(self._depth)
            self._depth -= 1
            self._rollback()
            if is_disk_full(exc, self.path.parent):
                raise disk_full_error(exc, self.path) from exc
            raise
        else:
            self._depth -= 1
            try:
                if self._depth == 0:
                    self.conn.execute("COMMIT")
                else:
                    self.conn.execute(f"RELEASE sp{self._depth}")
            except sqlite3.Error as exc:
                # Not saved (a full disk fails here, when the WAL is appended): leave nothing
                # of it pending. A savepoint's failure goes to the enclosing level's rollback.
                self._drop_after(self._depth + 1)
                if self._depth == 0:
                    self._rollback()
                if is_disk_full(exc, self.path.parent):
                    raise disk_full_error(exc, self.path) from exc
                raise
            if self._depth == 0:
                self._run_after_commit()
            else:  # a released savepoint's callbacks now belong to the enclosing level
                self._after = [(min(d, self._depth), fn) for d, fn in self._after]

    def _rollback(self) -> None:
        """Undo the current level. SQLite may already have rolled the whole transaction back
        itself (it does on SQLITE_FULL); then there is nothing left to undo at any level."""
        self.rollbacks += 1
        if not self.conn.in_transaction:
            return
        try:
            if self._depth == 0:
                self.conn.execute("ROLLBACK")
            else:
                self.conn.execute(f"ROLLBACK TO sp{self._depth}")
                self.conn.execute(f"RELEASE sp{self._depth}")
        except sqlite3.Error:
            # Keep the caller's error; the next transaction rolls back what is left.
            log.exception("rollback of the state database failed")

    def integrity_check(self) -> list[str]:
        """Problems SQLite finds in the file; empty when healthy."""
        rows = self.conn.execute("PRAGMA integrity_check").fetchall()
        msgs = [str(r[0]) for r in rows]
        return [] if msgs == ["ok"] else msgs


def read_only_check(path: Path, pragma: str = "integrity_check") -> list[str]:
    """SQLite's integrity_check or quick_check of the file, opened read-only (it changes nothing,
    migrates nothing and takes no write lock: a running ds01d is not disturbed); ["ok"] when
    sound. Raises sqlite3.Error when the file cannot be read at all."""
    if pragma not in ("integrity_check", "quick_check"):
        raise ValueError(pragma)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        return [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}").fetchall()]
    finally:
        conn.close()


def verify_state_file(path: Path) -> None:
    """Refuse a state database that exists but cannot be the one ds01d wrote: empty (0 bytes),
    not an SQLite file, or damaged (SQLite's quick_check). Starting on it would silently forget
    every allocation, grant and event. A missing file is a first start and passes."""
    if not path.exists():
        return
    fix = (
        f"Restore {path.name} from a backup, or start once with 'ds01d --init' to begin with an "
        "empty state (the damaged file is kept beside it; running containers become orphans)."
    )
    with open(path, "rb") as fh:
        head = fh.read(len(SQLITE_HEADER))
    if not head:
        raise StateError(f"state database {path} is empty (0 bytes)", fix=fix)
    if head != SQLITE_HEADER:
        raise StateError(f"state database {path} is not an SQLite database", fix=fix)
    try:
        rows = read_only_check(path, "quick_check")
    except sqlite3.Error as e:
        raise StateError(f"state database {path} is damaged ({e})", fix=fix) from e
    if rows != ["ok"]:
        raise StateError(f"state database {path} is damaged: {'; '.join(rows[:3])}", fix=fix)


def set_aside(path: Path, label: str = "broken") -> Path:
    """Move a state database (and its WAL files) aside: a refused one for `ds01d --init`
    (ds01.db.broken-<time>), the replaced one for `ds01d --restore` (label "before-restore")."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.{label}-{stamp}")
    n = 1
    while any(Path(str(target) + s).exists() for s in ("", "-wal", "-shm")):
        n += 1
        target = path.with_name(f"{path.name}.{label}-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            src.rename(Path(str(target) + suffix))
    return target

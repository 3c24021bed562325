"""Online backups of the state database, and `ds01d --restore FILE`.

A backup is a consistent snapshot taken with SQLite's backup API in one step, through its own
read-only connection: in WAL mode that is one read transaction, so the daemon keeps writing
meanwhile and the copy holds exactly the commits made before it began. The copy is written to a
hidden temp name (mode 0600), checked (quick_check), synced, and only then renamed to
`ds01-<UTC time>.db`; the oldest beyond `keep` are deleted. A failed backup (a full disk)
removes its temp file and raises; the caller (a supervised loop) logs it and tries again.

A restore copies the chosen file the same way into the state directory, checks it there (an
SQLite file, integrity check, a ds01 schema no newer than this ds01), moves the current
ds01.db and its -wal/-shm aside and renames the copy into place. The caller holds the daemon's
locks (nothing may run on the state directory meanwhile).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ds01.errors import InputError, StateDiskFull, StateError
from ds01.store.db import (
    disk_full_error,
    free_bytes,
    is_disk_full,
    set_aside,
    verify_state_file,
)
from ds01.store.migrations import MIGRATIONS, schema_version

BACKUP_DIR_NAME = "backups"
_NAME = re.compile(r"^ds01-\d{8}T\d{6}Z\.db$")
_TEMP = re.compile(r"^\.ds01-\d{8}T\d{6}Z\.db\.tmp(-journal|-wal|-shm)?$")
_SIDE_FILES = ("-journal", "-wal", "-shm")


def default_backup_dir(state_dir: Path) -> Path:
    return state_dir / BACKUP_DIR_NAME


def list_backups(backup_dir: Path) -> list[Path]:
    """ds01's own backups in `backup_dir`, oldest first (by the time in their names)."""
    try:
        names = [p.name for p in backup_dir.iterdir() if _NAME.match(p.name)]
    except FileNotFoundError:
        return []
    return [backup_dir / n for n in sorted(names)]


def backup_due(backup_dir: Path, interval_s: float, now: float | None = None) -> bool:
    """True when the newest backup is `interval_s` old (or there is none). Restarts therefore
    do not add backups (which would rotate older ones out); a newest backup dated in the future
    (the clock stepped back) counts as due."""
    now = time.time() if now is None else now
    backups = list_backups(backup_dir)
    if not backups:
        return True
    try:
        age = now - backups[-1].stat().st_mtime
    except FileNotFoundError:
        return True
    return age >= interval_s or age < -interval_s


def _remove(path: Path) -> None:
    for suffix in ("", *_SIDE_FILES):
        with contextlib.suppress(FileNotFoundError):
            Path(str(path) + suffix).unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_private(path: Path, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # exactly this mode, whatever the umask
    finally:
        os.close(fd)


@contextlib.contextmanager
def _closing(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    try:
        yield conn
    finally:
        conn.close()


def _read_only_uri(path: Path) -> str:
    return path.resolve().as_uri() + "?mode=ro"  # percent-encodes '?', '#', '%' in names


def _copy_database(source: Path, target: Path) -> None:
    """One-step SQLite backup of `source` (read-only) into the new file `target`, left as a
    self-contained rollback-journal database (no -wal beside it), then quick_check'ed."""
    with (
        _closing(sqlite3.connect(_read_only_uri(source), uri=True, timeout=10.0)) as src,
        _closing(sqlite3.connect(str(target), isolation_level=None, timeout=10.0)) as dst,
    ):
        src.backup(dst)  # pages=-1: all in one step, one consistent snapshot
        # The copy carries the source's WAL flag; make it one file (ds01d sets WAL again).
        dst.execute("PRAGMA journal_mode=DELETE")
        rows = [str(r[0]) for r in dst.execute("PRAGMA quick_check").fetchall()]
    if rows != ["ok"]:
        raise StateError(
            f"the copy of {source} fails SQLite's check: {'; '.join(rows[:3])}",
            fix="Check the disk holding it (dmesg, smartctl).",
        )
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += Path(str(path) + suffix).stat().st_size
    return total


@dataclass(frozen=True)
class BackupResult:
    path: Path
    deleted: list[Path]


def take_backup(db_path: Path, backup_dir: Path, keep: int) -> BackupResult:
    """Write one backup of `db_path` into `backup_dir` and keep only the newest `keep`.

    Refuses (StateDiskFull) to start when the backup would leave less free space than the
    database's own size: a backup must never be what fills the state disk."""
    created = not backup_dir.exists()
    backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if created:
        os.chmod(backup_dir, 0o700)
    for stale in backup_dir.iterdir():  # left by a crash in the middle of a backup
        if _TEMP.match(stale.name):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
    need = _size(db_path)
    free = free_bytes(backup_dir)
    if free is not None and free < 2 * need:
        raise StateDiskFull(
            f"state disk full: no backup of {db_path} written",
            why=f"{backup_dir} has {free} bytes free; a backup needs {need}, and as much again "
            "must stay free for ds01d's own writes.",
            fix=f"Free space on that disk (df -h {backup_dir}) or set state.backup_dir to "
            "another one; the next attempt follows by itself.",
        )
    name = time.strftime("ds01-%Y%m%dT%H%M%SZ.db", time.gmtime())
    final = backup_dir / name
    temp = backup_dir / f".{name}.tmp"
    try:
        _create_private(temp)
        _copy_database(db_path, temp)
        os.replace(temp, final)
        _fsync_dir(backup_dir)
    except BaseException as exc:
        _remove(temp)
        if is_disk_full(exc, backup_dir):
            raise disk_full_error(exc, final, doing="write the backup") from exc
        if isinstance(exc, sqlite3.Error):
            raise StateError(
                f"backup of {db_path} to {final} failed: {exc}",
                fix="Check the state and backup directories (permissions, space, dmesg).",
            ) from exc
        raise
    deleted: list[Path] = []
    backups = list_backups(backup_dir)
    for old in backups[: max(0, len(backups) - keep)]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
            deleted.append(old)
    return BackupResult(final, deleted)


def backup_if_due(
    db_path: Path, backup_dir: Path, interval_s: float, keep: int
) -> BackupResult | None:
    if not backup_due(backup_dir, interval_s):
        return None
    return take_backup(db_path, backup_dir, keep)


# ---- restore ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreResult:
    source: Path
    db: Path
    kept: Path | None  # where the replaced database went (None: there was none)
    version: int
    latest: int
    allocations: int
    live: int
    events: int

    def lines(self) -> list[str]:
        out = [
            f"restored {self.db} from {self.source} (schema version {self.version}; "
            f"{self.allocations} allocations, {self.live} live; {self.events} events)"
        ]
        if self.kept is not None:
            out.append(
                f"the state database it replaced is kept as {self.kept} "
                "(with its -wal and -shm files, if it had any)"
            )
        if self.version < self.latest:
            out.append(f"ds01d migrates it to schema version {self.latest} at its next start")
        out.append(
            "start ds01d now (systemctl start ds01d); at start it reconciles the restored "
            "allocations with the containers Docker runs"
        )
        return out


def _refuse(source: Path, why: str, fix: str | None = None) -> InputError:
    return InputError(
        f"cannot restore the ds01 state from {source}",
        why=why,
        fix=fix
        or "Pick another backup (ls -l /var/lib/ds01/backups, or the config's state.backup_dir).",
    )


def restore_state(db_path: Path, source: Path) -> RestoreResult:
    """Install `source` as the state database `db_path`; the caller holds the daemon's locks."""
    if not source.exists():
        raise _refuse(source, f"{source} does not exist.")
    if not source.is_file():
        raise _refuse(source, f"{source} is not a regular file.")
    if source.resolve() == db_path.resolve():
        raise _refuse(source, f"{source} is the state database itself.")
    try:
        verify_state_file(source)
    except StateError as err:
        raise _refuse(source, err.what[:1].upper() + err.what[1:] + ".") from None
    db_path.parent.mkdir(parents=True, exist_ok=True)
    temp = db_path.with_name(f".{db_path.name}.restore.tmp")
    _remove(temp)
    try:
        _create_private(temp)
        try:
            _copy_database(source, temp)
        except sqlite3.Error as exc:
            if is_disk_full(exc, db_path.parent):
                raise
            raise _refuse(source, f"SQLite cannot read it: {exc}.") from None
        except StateError as err:
            raise _refuse(source, err.what + ".") from None
        result = _inspect(source, temp)
        if db_path.exists():
            os.chmod(temp, db_path.stat().st_mode & 0o777)
        kept = None
        if any(Path(str(db_path) + s).exists() for s in ("", "-wal", "-shm")):
            kept = set_aside(db_path, "before-restore")
        os.replace(temp, db_path)
        _fsync_dir(db_path.parent)
    except BaseException as exc:
        _remove(temp)
        if is_disk_full(exc, db_path.parent):
            raise StateDiskFull(
                f"state disk full: {db_path} was not restored from {source}",
                why=f"The file system holding {db_path.parent} has no space left ({exc}); "
                "the state database is unchanged.",
                fix=f"Free space on the state disk (df -h {db_path.parent}), then run the "
                "restore again.",
            ) from exc
        raise
    return RestoreResult(source=source, db=db_path, kept=kept, **result)


def _inspect(source: Path, copy: Path) -> dict[str, int]:
    latest = max(v for v, _, _ in MIGRATIONS)
    with _closing(sqlite3.connect(_read_only_uri(copy), uri=True)) as conn:
        problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if problems != ["ok"]:
            raise _refuse(source, f"SQLite's integrity check fails: {'; '.join(problems[:3])}.")
        version = schema_version(conn)
        if version < 1:
            raise _refuse(source, "It is an SQLite database, but not one ds01 wrote.")
        if version > latest:
            raise _refuse(
                source,
                f"It has schema version {version}, newer than this ds01 ({latest}).",
                fix="Restore it with the ds01 version that wrote it, or pick an older backup.",
            )
        try:
            allocations, live = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(state != 'released'), 0) FROM allocations"
            ).fetchone()
            (events,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
        except sqlite3.Error as exc:
            raise _refuse(source, f"Its ds01 tables cannot be read: {exc}.") from None
    return {
        "version": version,
        "latest": latest,
        "allocations": int(allocations),
        "live": int(live),
        "events": int(events),
    }

"""Online backups of the state database and `ds01d --restore FILE` (issue 10, item 4).

A running ds01d writes a backup every `state.backup_interval` (SQLite's backup API, one
consistent snapshot while it keeps writing), private (0600 in a 0700 directory), renamed into
place only when complete, and keeps the newest `state.backup_keep`. `ds01d --restore FILE`
installs one after checking it, keeps the replaced database beside it, and is refused while a
daemon runs and for anything that is not a sound ds01 state database."""

from __future__ import annotations

import shutil
import sqlite3
import stat
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from loadgen import NOWHERE

from ds01.api.schemas import AllocateIn
from ds01.errors import NotFound
from support import Daemon, wait_for


def config(extra: str = "") -> str:
    return f"""\
admin_group: ds01t-admins
defaults:
  max_gpueq: 8
  max_units_per_container: 7
  max_containers: 20
  allow_full_gpu: true
docker:
  host: {NOWHERE}
allocation:
  reservation_timeout: 1h
state:
  backup_interval: 1s
{extra}"""


def backups(backup_dir: Path) -> list[Path]:
    if not backup_dir.exists():
        return []
    return sorted(p for p in backup_dir.iterdir() if p.name.startswith("ds01-"))


def restore(d: Daemon, source: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*d.argv(), "--restore", str(source)], capture_output=True, text=True, timeout=60
    )


def problems(db: Path) -> list[str]:
    """What is inconsistent in a state database: SQLite's integrity check, and every allocation
    against its audit events and unit rows (each written in one transaction with it)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        found = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        found = [] if found == ["ok"] else found
        for alloc_id, state, reserved, released, live_units in conn.execute(
            """SELECT a.id, a.state,
                 (SELECT COUNT(*) FROM events e WHERE e.allocation_id = a.id
                    AND e.action = 'reserved'),
                 (SELECT COUNT(*) FROM events e WHERE e.allocation_id = a.id
                    AND e.action = 'released'),
                 (SELECT COUNT(*) FROM allocation_units u WHERE u.allocation_id = a.id
                    AND u.live = 1)
               FROM allocations a"""
        ):
            is_live = state != "released"
            if reserved != 1 or released != (0 if is_live else 1) or bool(live_units) != is_live:
                found.append(
                    f"allocation {alloc_id} ({state}): {reserved} reserved, "
                    f"{released} released events, {live_units} live units"
                )
        orphan_events = conn.execute(
            "SELECT COUNT(*) FROM events WHERE allocation_id IS NOT NULL"
            " AND allocation_id NOT IN (SELECT id FROM allocations)"
        ).fetchone()[0]
        if orphan_events:
            found.append(f"{orphan_events} events of allocations that do not exist")
    finally:
        conn.close()
    return found


def live_allocations(db: Path) -> dict[int, set[str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT a.id, u.unit_uuid FROM allocations a JOIN allocation_units u"
            " ON u.allocation_id = a.id AND u.live = 1 WHERE a.state != 'released'"
        ).fetchall()
    finally:
        conn.close()
    out: dict[int, set[str]] = {}
    for alloc_id, unit in rows:
        out.setdefault(int(alloc_id), set()).add(str(unit))
    return out


def test_backups_appear_privately_and_the_oldest_are_rotated_out(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    backup_dir = d.base / "elsewhere" / "backups"
    d.write_config(config(f"  backup_keep: 2\n  backup_dir: {backup_dir}\n"))
    d.start()
    seen: set[str] = set()

    def four_seen() -> bool:
        now = backups(backup_dir)
        assert len(now) <= 3  # keep, plus the newest for the moment before the rotation
        seen.update(p.name for p in now)
        return len(seen) >= 4

    with d.client() as c:
        c.allocate(AllocateIn(gpus=1, container="kept"))
        wait_for(four_seen, "four backups", 60)
        assert c.health().loops["backup"].failing is None
    assert d.stop() == 0
    left = backups(backup_dir)
    assert [p.name for p in left] == sorted(seen | {p.name for p in left})[-2:]
    assert stat.S_IMODE(backup_dir.stat().st_mode) == 0o700
    assert sorted(p.name for p in backup_dir.iterdir()) == [p.name for p in left]  # no temp files
    for p in left:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        assert p.read_bytes()[18:20] == b"\x01\x01"  # a self-contained file, no -wal needed
        assert problems(p) == []
        assert len(live_allocations(p)) == 1
    assert not (d.state_dir / "backups").exists()  # state.backup_dir was used instead
    assert "state backup written: " in d.log()


def test_a_backup_taken_under_write_load_restores_to_what_it_held(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=config("  backup_keep: 100\n"))
    backup_dir = d.state_dir / "backups"
    stop = threading.Event()
    errors: list[BaseException] = []
    writes = [0]

    def load(name: str) -> None:
        # Allocate and release continuously, keeping a few allocations live all the time.
        live: deque[int] = deque()
        try:
            with d.client() as c:
                i = 0
                while not stop.is_set():
                    i += 1
                    live.append(c.allocate(AllocateIn(gpueq="1/7", container=f"{name}-{i}")).id)
                    if len(live) > 4:
                        c.release(live.popleft())
                    writes[0] += 1
        except BaseException as e:  # reported by the test
            errors.append(e)

    threads = [threading.Thread(target=load, args=(f"w{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    try:
        first = wait_for(
            lambda: writes[0] > 20 and backups(backup_dir), "load and a first backup", 60
        )
        under_load = wait_for(
            lambda: len(set(now := backups(backup_dir)) - set(first)) >= 3 and now,
            "three backups under load",
            60,
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    chosen = under_load[-1]  # begun and finished while both writers were busy
    taken = d.base / "chosen.db"
    shutil.copyfile(chosen, taken)
    assert problems(taken) == []
    held = live_allocations(taken)
    assert 1 <= len(held) <= 10

    # Change the state after the backup: release everything, take something else.
    with d.client() as c:
        for a in c.allocations(all_users=True):
            c.release(a.id)
        other = c.allocate(AllocateIn(gpus=1, container="after-the-backup"))

    db = d.state_dir / "ds01.db"
    r = restore(d, taken)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith(f"ds01d: error: another ds01d is already running on {d.state_dir}")
    assert "Stop the other one (systemctl stop ds01d)" in r.stderr
    assert not list(d.state_dir.glob("ds01.db.before-restore-*"))

    assert d.stop() == 0
    before = db.read_bytes()
    r = restore(d, taken)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert out[0].startswith(f"ds01d: restored {db} from {taken} (schema version ")
    assert f"{len(held)} live;" in out[0]
    kept = d.state_dir.glob("ds01.db.before-restore-*")
    main_kept = [p for p in kept if not p.name.endswith(("-wal", "-shm"))]
    assert len(main_kept) == 1 and main_kept[0].read_bytes() == before
    assert out[1].startswith(f"ds01d: the state database it replaced is kept as {main_kept[0]}")
    assert out[-1].startswith("ds01d: start ds01d now")
    assert not Path(f"{db}-wal").exists()

    d.start()
    with d.client() as c:
        now = {a.id: {u.uuid for u in a.units} for a in c.allocations(all_users=True)}
        assert now == held
        with pytest.raises(NotFound):
            c.allocation(other.id)  # made after the backup
        # The restored state works: a new allocation gets a fresh id and no held unit.
        new = c.allocate(AllocateIn(gpus=1, container="after-the-restore"))
        assert new.id not in held and not {u.uuid for u in new.units} & set().union(*held.values())


def test_restore_refuses_what_is_not_a_sound_ds01_state_database(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    with d.client() as c:
        c.allocate(AllocateIn(gpus=1, container="mine"))
    assert d.stop() == 0
    db = d.state_dir / "ds01.db"
    before = db.read_bytes()

    empty = d.base / "empty.db"
    empty.write_bytes(b"")
    garbage = d.base / "garbage.db"
    garbage.write_bytes(b"PK\x03\x04 not a database at all" * 100)
    foreign = d.base / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE notes (x TEXT)")
    conn.commit()
    conn.close()
    newer = d.base / "newer.db"
    shutil.copyfile(db, newer)
    conn = sqlite3.connect(newer)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
    conn.commit()
    conn.close()
    damaged = d.base / "damaged.db"
    data = bytearray(before)
    page = int.from_bytes(data[16:18], "big")
    data[2 * page :] = b"\xa5" * (len(data) - 2 * page)
    damaged.write_bytes(bytes(data))

    cases = {
        d.base / "missing.db": f"{d.base / 'missing.db'} does not exist.",
        d.base: f"{d.base} is not a regular file.",
        empty: f"State database {empty} is empty (0 bytes).",
        garbage: f"State database {garbage} is not an SQLite database.",
        damaged: f"State database {damaged} is damaged",
        foreign: "It is an SQLite database, but not one ds01 wrote.",
        newer: "It has schema version 999, newer than this ds01",
    }
    for source, why in cases.items():
        r = restore(d, source)
        assert r.returncode == 2, (source, r.stdout, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 3, r.stderr
        assert lines[0] == f"ds01d: error: cannot restore the ds01 state from {source}"
        assert lines[1].startswith(f"  {why}"), (source, lines[1])
        assert lines[2].startswith("  Pick another backup") or lines[2].startswith(
            "  Restore it with the ds01 version that wrote it"
        )
        assert "Traceback" not in r.stderr and r.stdout == ""
        assert db.read_bytes() == before
        assert sorted(
            p.name for p in d.state_dir.iterdir() if p.name.startswith(("ds01.db", "."))
        ) == ["ds01.db"]

    r = subprocess.run(
        [*d.argv(), "--restore", str(newer), "--init"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "--restore cannot be combined with --check or --init" in r.stderr
    d.start()
    with d.client() as c:
        assert [a.container for a in c.allocations(all_users=True)] == ["mine"]

"""A state database ds01d can trust (issue 10, D6): an empty, foreign or damaged ds01.db is
refused at start with what to do (it would otherwise forget every allocation, grant and event),
`--init` starts afresh and keeps the old file beside it, and `--check` reports without writing
or migrating anything."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ds01.api.schemas import AllocateIn
from ds01.store.migrations import MIGRATIONS, _v1_initial
from support import BIN, Daemon


def refused_start(d: Daemon) -> subprocess.CompletedProcess[str]:
    return subprocess.run(d.argv(), capture_output=True, text=True, timeout=60)


def check(d: Daemon) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "ds01d"),
            "--check",
            "--config",
            str(d.config_path),
            "--sim",
            str(d.machine),
            "--state-dir",
            str(d.state_dir),
            "--run-dir",
            str(d.run_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def damage(db: Path) -> None:
    """Overwrite the allocations table's pages (everything past the first two) with garbage."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for i in range(2 * page, len(data)):
        data[i] = 0xA5
    db.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda db: db.write_bytes(b""), "is empty (0 bytes)"),
        (
            lambda db: db.write_bytes(b"PK\x03\x04 not a database at all" * 100),
            "is not an SQLite database",
        ),
        (damage, "is damaged"),
    ],
    ids=["empty", "not SQLite", "damaged pages"],
)
def test_a_state_database_that_cannot_be_trusted_is_refused_until_init(
    daemon_factory: Any, make: Any, what: str
) -> None:
    d: Daemon = daemon_factory()
    with d.client() as c:
        for i in range(3):  # BASIC_CONFIG: three containers at most
            c.allocate(AllocateIn(gpueq="1/7", container=f"c{i}"))
    assert d.stop() == 0
    db = d.state_dir / "ds01.db"
    for extra in ("-wal", "-shm"):
        Path(str(db) + extra).unlink(missing_ok=True)
    make(db)
    before = db.read_bytes()

    r = refused_start(d)
    assert r.returncode == 1, r.stderr
    assert f"ds01d: error: state database {db} {what}" in r.stderr
    assert "start once with 'ds01d --init'" in r.stderr
    assert db.read_bytes() == before  # untouched

    r = check(d)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"state database {db} {what}" in r.stderr
    assert db.read_bytes() == before

    d.extra_args = ["--init"]
    d.start()
    with d.client() as c:
        assert c.health().status == "ok"
        assert c.allocations(all_users=True) == []
    kept = [p for p in d.state_dir.iterdir() if p.name.startswith("ds01.db.broken-")]
    assert [p.read_bytes() for p in kept if not p.name.endswith(("-wal", "-shm"))] == [before]
    assert "starting with an empty state (--init)" in d.log()


def test_check_reads_an_old_schema_without_migrating_it(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    d.state_dir.mkdir(parents=True, exist_ok=True)
    db = d.state_dir / "ds01.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at REAL NOT NULL)"
    )
    _v1_initial(conn)
    conn.execute("INSERT INTO schema_migrations VALUES (1, 'initial schema', 0)")
    conn.close()
    before = db.read_bytes()
    r = check(d)
    assert r.returncode == 0, r.stderr
    latest = max(v for v, _, _ in MIGRATIONS)
    assert f"state: schema version 1; ds01d migrates it to {latest} at its next start" in r.stdout
    assert db.read_bytes() == before
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
    conn.close()


def test_check_reports_a_broken_state_invariant_and_the_daemon_audits_it(
    daemon_factory: Any,
) -> None:
    d: Daemon = daemon_factory()
    with d.client() as c:
        alloc = c.allocate(AllocateIn(gpueq="1/7", container="c0"))
    assert d.stop() == 0
    r = check(d)
    assert r.returncode == 0, r.stderr
    # The audit log loses the allocation's history (a hand edit, a damaged restore).
    conn = sqlite3.connect(d.state_dir / "ds01.db", isolation_level=None)
    conn.execute("DELETE FROM events WHERE allocation_id = ?", (alloc.id,))
    conn.close()

    r = check(d)
    assert r.returncode == 2
    line = f"state: invariant I5: allocation {alloc.id} is reserved but its audit log ends with"
    assert f"{line} no event" in r.stderr

    d.start()  # ds01d checks at start: logs it and audits it once, and keeps serving
    assert f"state invariant broken: I5: allocation {alloc.id} is reserved" in d.log()
    with d.client() as c:
        audited = c.events(kind="daemon")
    assert [(e.action, e.reason) for e in audited] == [("invariant", "I5")]

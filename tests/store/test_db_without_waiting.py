"""Database.without_waiting (what lets ds01d make an allocation decision on its event loop) and
allocations.reread (one row read back after a write), on a real SQLite file with a second real
connection standing in for an admin's sqlite3."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from ds01.model.allocation import AllocState
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Unit, UnitKind
from ds01.store import allocations as allocs
from ds01.store import units as units_store
from ds01.store.db import BUSY_TIMEOUT_MS, Database, would_have_waited


def _mig(gpu: int, gi: int, ci: int | None, uuid: str) -> Unit:
    return Unit(
        uuid=uuid,
        kind=UnitKind.MIG,
        gpu_uuid=f"GPU-{gpu}",
        gpu_index=gpu,
        model="NVIDIA H100 80GB HBM3",
        memory_total_mib=9984,
        gpueq=GpuEq.of(1, 7),
        profile="1g.10gb",
        gpu_instance_id=gi,
        compute_instance_id=ci,
    )


# Listed out of the order the database returns them in (gpu, gi, ci with NULL first, uuid).
UNITS = (
    _mig(1, 9, 0, "MIG-d"),
    _mig(0, 13, 0, "MIG-c"),
    _mig(0, 7, None, "MIG-b"),
    _mig(0, 7, 0, "MIG-a"),
)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(tmp_path / "ds01.db")
    with d.transaction() as conn:
        units_store.sync(conn, UNITS, now=1000.0)
    return d


def _busy_timeout(db: Database) -> int:
    return int(db.conn.execute("PRAGMA busy_timeout").fetchone()[0])


def test_a_write_lock_held_by_another_process_fails_at_once_and_changes_nothing(
    db: Database,
) -> None:
    admin = sqlite3.connect(db.path, timeout=1, isolation_level=None)
    admin.execute("BEGIN IMMEDIATE")
    try:
        with db.without_waiting() as here:
            assert here
            assert _busy_timeout(db) == 0
            with pytest.raises(sqlite3.OperationalError) as caught, db.transaction() as conn:
                allocs.insert(
                    conn, user="u", uid=1, group=None, container="c", request={},
                    units=UNITS[:1], now=1.0, expires_at=None,
                )  # fmt: skip
            assert would_have_waited(caught.value)
        assert _busy_timeout(db) == BUSY_TIMEOUT_MS  # waiting again outside the block
    finally:
        admin.execute("ROLLBACK")
        admin.close()
    with db.transaction() as conn:
        assert allocs.live(conn) == []


def test_another_thread_holding_the_connection_is_not_waited_for(db: Database) -> None:
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction():
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(10)
        with db.without_waiting() as here:
            assert not here
    finally:
        leave.set()
        t.join(10)
    with db.without_waiting() as here:
        assert here


def test_other_errors_are_not_taken_for_a_busy_database(db: Database) -> None:
    with pytest.raises(sqlite3.OperationalError) as caught, db.transaction() as conn:
        conn.execute("SELECT * FROM no_such_table")
    assert not would_have_waited(caught.value)
    assert not would_have_waited(ValueError("database is locked"))


def test_reread_is_what_get_reads(db: Database) -> None:
    with db.transaction() as conn:
        alloc_id = allocs.insert(
            conn, user="u", uid=1, group="g", container="c", request={"kind": "mig"},
            units=UNITS, now=5.0, expires_at=65.0,
        )  # fmt: skip
        fresh = allocs.reread(conn, alloc_id, UNITS)
        assert fresh == allocs.get(conn, alloc_id)
        assert [u.uuid for u in fresh.units] == ["MIG-b", "MIG-a", "MIG-c", "MIG-d"]
        allocs.transition(conn, alloc_id, AllocState.RELEASED, 9.0, release_reason="done")
        released = allocs.reread(conn, alloc_id, fresh.units)
        assert released == allocs.get(conn, alloc_id)
        assert (released.state, released.released_at) == (AllocState.RELEASED, 9.0)

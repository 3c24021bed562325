"""The state database on a real SQLite file: the constraint, the transition table, rollback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ds01.errors import InvalidTransition, StateError, UnitAlreadyAllocated
from ds01.model.allocation import AllocState
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Unit, UnitKind
from ds01.store import allocations as allocs
from ds01.store import events
from ds01.store import units as units_store
from ds01.store.db import Database

GPU0 = Unit(
    uuid="GPU-00000000-0000-0000-0000-000000000000",
    kind=UnitKind.GPU,
    gpu_uuid="GPU-00000000-0000-0000-0000-000000000000",
    gpu_index=0,
    model="NVIDIA A100-SXM4-40GB",
    memory_total_mib=40960,
    gpueq=GpuEq(1),
)
MIG = Unit(
    uuid="MIG-11111111-1111-1111-1111-111111111111",
    kind=UnitKind.MIG,
    gpu_uuid="GPU-22222222-2222-2222-2222-222222222222",
    gpu_index=1,
    model="NVIDIA H100 80GB HBM3",
    memory_total_mib=40448,
    gpueq=GpuEq.of(3, 7),
    profile="3g.40gb",
    gpu_instance_id=2,
    compute_instance_id=0,
)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(tmp_path / "ds01.db")
    with d.transaction() as conn:
        units_store.sync(conn, [GPU0, MIG], now=1000.0)
    return d


def _reserve(db: Database, user: str, *units: Unit) -> int:
    with db.transaction() as conn:
        return allocs.insert(
            conn,
            user=user,
            uid=None,
            group=None,
            container=None,
            request={},
            units=units,
            now=1000.0,
            expires_at=1120.0,
        )


def test_a_unit_cannot_be_in_two_live_allocations(db: Database) -> None:
    _reserve(db, "alice", GPU0)
    with pytest.raises(UnitAlreadyAllocated):
        _reserve(db, "bob", GPU0)
    with db.transaction() as conn:
        live = allocs.live(conn)
    assert [(a.user, [u.uuid for u in a.units]) for a in live] == [
        ("alice", ["GPU-00000000-0000-0000-0000-000000000000"])
    ]


def test_the_constraint_holds_even_for_raw_sql(db: Database) -> None:
    """The partial unique index, not Python code, is what refuses the second row."""
    a = _reserve(db, "alice", GPU0)
    with pytest.raises(sqlite3.IntegrityError):
        db.conn.execute(
            "INSERT INTO allocation_units (allocation_id, unit_uuid, live) VALUES (?, ?, 1)",
            (a + 1000, GPU0.uuid),
        )


def test_release_frees_the_unit_for_the_next_user(db: Database) -> None:
    a = _reserve(db, "alice", GPU0, MIG)
    with db.transaction() as conn:
        allocs.transition(conn, a, AllocState.RELEASED, 1010.0, release_reason="test")
    b = _reserve(db, "bob", GPU0)
    with db.transaction() as conn:
        released = allocs.get(conn, a)
        rows = {r.unit.uuid: r.last_released_at for r in units_store.all_units(conn)}
    assert released is not None and released.state is AllocState.RELEASED
    assert released.release_reason == "test"
    assert b == a + 1
    assert rows == {GPU0.uuid: 1010.0, MIG.uuid: 1010.0}


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        pytest.param(["released"], "active", id="released allocation cannot become active"),
        pytest.param([], "held", id="reserved allocation cannot be held before it was active"),
        pytest.param(["active", "held", "released"], "held", id="released stays released"),
    ],
)
def test_transitions_outside_the_table_are_refused(db: Database, path: list[str], bad: str) -> None:
    a = _reserve(db, "alice", GPU0)
    with db.transaction() as conn:
        for step in path:
            allocs.transition(conn, a, AllocState(step), 1001.0)
    with pytest.raises(InvalidTransition), db.transaction() as conn:
        allocs.transition(conn, a, AllocState(bad), 1002.0)


def test_a_failed_decision_leaves_nothing_behind(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as conn:
        allocs.insert(
            conn,
            user="alice",
            uid=None,
            group=None,
            container="x",
            request={},
            units=(GPU0,),
            now=1.0,
            expires_at=2.0,
        )
        events.record(conn, kind="alloc", action="reserved", reason="test")
        raise RuntimeError("crash between write and commit")
    with db.transaction() as conn:
        assert allocs.live(conn) == []
        assert events.query(conn) == []


def test_nested_transactions_roll_back_only_the_inner_part(db: Database) -> None:
    with db.transaction() as conn:
        events.record(conn, kind="daemon", action="outer", reason="test")
        with pytest.raises(ValueError), db.transaction() as inner:
            events.record(inner, kind="daemon", action="inner", reason="test")
            raise ValueError("inner fails")
    with db.transaction() as conn:
        assert [e.action for e in events.query(conn)] == ["outer"]


def test_units_that_disappear_are_marked_gone_not_deleted(db: Database) -> None:
    with db.transaction() as conn:
        result = units_store.sync(conn, [GPU0], now=2000.0)
        present = [r.unit.uuid for r in units_store.all_units(conn)]
        everything = {r.unit.uuid: r.gone for r in units_store.all_units(conn, include_gone=True)}
    assert result.gone == [MIG.uuid]
    assert present == [GPU0.uuid]
    assert everything == {GPU0.uuid: False, MIG.uuid: True}


def test_a_database_from_a_newer_ds01_is_refused(tmp_path: Path) -> None:
    Database(tmp_path / "x.db").close()
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="schema version 99"):
        Database(tmp_path / "x.db")


def test_the_double_allocation_scan_sees_what_the_index_prevents(db: Database) -> None:
    _reserve(db, "alice", GPU0)
    with db.transaction() as conn:
        assert allocs.double_allocations(conn) == []

"""Owner records (store/objects.py, services/owners.py) on a real SQLite file, and migration v3
adopting the containers already bound to allocations from the allocation's user."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ds01.services.owners import ObjectKind, OwnerBook
from ds01.store import migrations, objects
from ds01.store.db import Database

C1 = "a" * 64
C2 = "b" * 64
C3 = "c" * 64


@pytest.fixture
def book(tmp_path: Path) -> OwnerBook:
    return OwnerBook(Database(tmp_path / "ds01.db"))


def test_record_then_owner_and_origin(book: OwnerBook) -> None:
    book.record(ObjectKind.CONTAINER, C1, "alice", origin="gate")
    assert book.owner(ObjectKind.CONTAINER, C1) == "alice"
    assert book.origin(ObjectKind.CONTAINER, C1) == "gate"
    assert book.owner(ObjectKind.CONTAINER, C2) is None
    # kinds are separate name spaces: a volume named like a container ID is another object
    assert book.owner(ObjectKind.VOLUME, C1) is None


def test_record_overwrites_adopt_does_not(book: OwnerBook) -> None:
    book.record(ObjectKind.VOLUME, "data", "alice", origin="gate")
    assert book.adopt(ObjectKind.VOLUME, "data", "mallory", origin="adopted") is False
    assert book.owner(ObjectKind.VOLUME, "data") == "alice"
    book.record(ObjectKind.VOLUME, "data", "bob", origin="gate")
    assert (book.owner(ObjectKind.VOLUME, "data"), book.origin(ObjectKind.VOLUME, "data")) == (
        "bob",
        "gate",
    )
    assert book.adopt(ObjectKind.VOLUME, "scratch", "bob", origin="adopted") is True
    assert book.origin(ObjectKind.VOLUME, "scratch") == "adopted"


def test_adopt_all_counts_only_new_records(book: OwnerBook) -> None:
    book.record(ObjectKind.NETWORK, C1, "alice", origin="gate")
    found = [
        (ObjectKind.NETWORK, C1, "mallory"),
        (ObjectKind.NETWORK, C2, "bob"),
        (ObjectKind.VOLUME, "v", "bob"),
    ]
    assert book.adopt_all(found, origin="adopted") == 2
    assert book.owners(ObjectKind.NETWORK, [C1, C2, C3]) == {C1: "alice", C2: "bob"}
    assert book.owner(ObjectKind.VOLUME, "v") == "bob"


def test_owners_keys_of_and_forget(book: OwnerBook) -> None:
    book.record(ObjectKind.CONTAINER, C1, "alice", origin="gate")
    book.record(ObjectKind.CONTAINER, C2, "alice", origin="deploy")
    book.record(ObjectKind.CONTAINER, C3, "bob", origin="gate")
    book.record(ObjectKind.VOLUME, "alicevol", "alice", origin="gate")
    assert book.owners(ObjectKind.CONTAINER, [C1, C3, "d" * 64]) == {C1: "alice", C3: "bob"}
    assert book.owners(ObjectKind.CONTAINER, []) == {}
    assert book.keys_of(ObjectKind.CONTAINER, "alice") == {C1, C2}
    assert book.keys_of(ObjectKind.VOLUME, "alice") == {"alicevol"}
    book.forget(ObjectKind.CONTAINER, C1)
    book.forget(ObjectKind.CONTAINER, C1)  # twice is harmless
    assert book.owner(ObjectKind.CONTAINER, C1) is None
    assert book.keys_of(ObjectKind.CONTAINER, "alice") == {C2}


def test_owners_reads_more_keys_than_one_query_holds(book: OwnerBook) -> None:
    keys = [f"{i:064x}" for i in range(1203)]
    with book.db.transaction() as conn:
        for k in keys[::2]:
            objects.record(conn, ObjectKind.CONTAINER, k, "alice", origin="gate")
    got = book.owners(ObjectKind.CONTAINER, keys)
    assert len(got) == 602
    assert got[keys[1202]] == "alice"
    assert keys[1201] not in got


def test_unknown_kind_is_refused_by_the_table(book: OwnerBook) -> None:
    with pytest.raises(sqlite3.IntegrityError), book.db.transaction() as conn:
        conn.execute(
            "INSERT INTO objects (kind, key, owner, origin, created_at) "
            "VALUES ('secret', 'x', 'alice', 'gate', 0)"
        )


def test_migration_v3_adopts_containers_bound_to_allocations(tmp_path: Path) -> None:
    conn = sqlite3.connect(str(tmp_path / "old.db"), isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    for version, name, apply in migrations.MIGRATIONS:
        if version < 3:
            apply(conn)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, 1000.0))
    rows = [
        ("alice", C1, "active"),
        ("bob", C2, "released"),  # a released allocation still says whose container it was
        ("carol", None, "reserved"),  # no container yet: nothing to adopt
    ]
    for user, cid, state in rows:
        conn.execute(
            "INSERT INTO allocations (user, container, container_id, state, request, "
            "created_at, updated_at) VALUES (?, 'job', ?, ?, '{}', 500.0, 500.0)",
            (user, cid, state),
        )
    migrations.migrate(conn)
    assert conn.execute("SELECT version FROM schema_migrations WHERE version = 3").fetchone()
    got = conn.execute(
        "SELECT kind, key, owner, origin, created_at FROM objects ORDER BY key"
    ).fetchall()
    assert got == [
        ("container", C1, "alice", "adopted", 500.0),
        ("container", C2, "bob", "adopted", 500.0),
    ]
    conn.close()

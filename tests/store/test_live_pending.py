"""store/live.py's pending View: inside one transaction, each decision sees the ones before it
without reading the tables again (api/http.py's Decider runs several in one transaction, each
in a savepoint), and nothing of a savepoint that rolled back is ever served — even when later
writes bring the generation counter back to the same number."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.store import allocations as allocs
from ds01.store import live
from ds01.store.db import Database


def _add(db: Database, cache: live.LiveCache, user: str) -> int:
    """One allocation without units, noted as the allocation service notes its writes."""
    with db.transaction() as conn:
        before = cache.view(conn).generation
        alloc_id = allocs.insert(
            conn, user=user, uid=1000, group=None, container=user, request={}, units=(),
            now=1.0, expires_at=None,
        )  # fmt: skip
        cache.changed(conn, before, allocs.reread(conn, alloc_id, ()))
    return alloc_id


def _users(view: live.View) -> list[str]:
    return [a.user for a in view.live.values()]


def test_decisions_in_one_transaction_see_each_other_without_reading_again(
    tmp_path: Path,
) -> None:
    db = Database(tmp_path / "ds01.db")
    cache = live.LiveCache(db)
    with db.transaction() as conn:
        _add(db, cache, "ann")  # a savepoint inside the open transaction
        first = cache.view(conn)
        _add(db, cache, "bob")
        second = cache.view(conn)
        assert _users(first) == ["ann"]
        assert _users(second) == ["ann", "bob"]
        assert second is cache.view(conn)  # kept, not read again
    with db.transaction() as conn:
        assert _users(cache.view(conn)) == ["ann", "bob"]  # what was committed
    db.close()


def test_a_rolled_back_savepoint_is_never_served_even_at_a_generation_seen_before(
    tmp_path: Path,
) -> None:
    db = Database(tmp_path / "ds01.db")
    cache = live.LiveCache(db)
    with db.transaction() as conn:
        start = cache.view(conn).generation
        with pytest.raises(RuntimeError), db.transaction():
            _add(db, cache, "ghost")
            raise RuntimeError("refused after its writes")
        # The counter went back with the rollback. A write nobody notes (any code path may
        # write) brings it to the number the ghost's View had.
        allocs.insert(
            conn, user="carl", uid=1000, group=None, container="carl", request={}, units=(),
            now=1.0, expires_at=None,
        )  # fmt: skip
        seen = cache.view(conn)
        assert seen.generation[0] == start[0] + 1
        assert _users(seen) == ["carl"]
    with db.transaction() as conn:
        assert [a.user for a in allocs.live(conn)] == ["carl"]
        assert _users(cache.view(conn)) == ["carl"]
    db.close()

"""api/http.py's Decider on a real state database: decisions that arrive together share one
transaction, each in its own savepoint. A refused one rolls back alone and its caller gets its
error; the others are saved, and none is answered before the commit that saved it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from ds01.api.http import Decider
from ds01.errors import Refusal, RefusalReason
from ds01.store.db import Database


def test_decisions_arriving_together_share_one_commit_and_a_refusal_undoes_only_itself(
    tmp_path: Path,
) -> None:
    db = Database(tmp_path / "ds01.db")
    with db.transaction() as conn:
        conn.execute("CREATE TABLE made (name TEXT PRIMARY KEY)")
    other = sqlite3.connect(tmp_path / "ds01.db")  # another reader: sees only what committed
    seen_by_other: list[int] = []
    commits: list[str] = []

    def decide(name: str, refuse: bool = False) -> str:
        with db.transaction() as conn:
            conn.execute("INSERT INTO made (name) VALUES (?)", (name,))
            db.after_commit(lambda: commits.append(name))
            seen_by_other.append(other.execute("SELECT COUNT(*) FROM made").fetchone()[0])
            if refuse:
                raise Refusal(RefusalReason.NO_CAPACITY, f"no room for {name}")
        return name

    async def main() -> list[object]:
        d = Decider()
        return await asyncio.gather(
            d.run(db, decide, "a"),
            d.run(db, decide, "b", refuse=True),
            d.run(db, decide, "c"),
            return_exceptions=True,
        )

    a, b, c = asyncio.run(main())
    assert (a, c) == ("a", "c")
    assert isinstance(b, Refusal) and b.what == "no room for b"
    assert sorted(r[0] for r in other.execute("SELECT name FROM made")) == ["a", "c"]
    # All three ran before anything was committed: one transaction for the three.
    assert seen_by_other == [0, 0, 0]
    assert commits == ["a", "c"]  # the refused one's after-commit work was dropped
    other.close()
    db.close()


def test_a_failed_commit_fails_every_decision_of_the_batch(tmp_path: Path) -> None:
    db = Database(tmp_path / "ds01.db")
    with db.transaction() as conn:
        conn.execute("CREATE TABLE made (name TEXT PRIMARY KEY)")
        # Checked at COMMIT: a row left dangling fails the whole transaction there.
        conn.execute("CREATE TABLE ref (x TEXT REFERENCES made (name) DEFERRABLE INITIALLY"
                     " DEFERRED)")  # fmt: skip

    def decide(name: str, dangling: bool = False) -> str:
        with db.transaction() as conn:
            conn.execute("INSERT INTO made (name) VALUES (?)", (name,))
            if dangling:
                conn.execute("INSERT INTO ref (x) VALUES ('nowhere')")
        return name

    async def main() -> list[object]:
        d = Decider()
        return await asyncio.gather(
            d.run(db, decide, "a"), d.run(db, decide, "b", dangling=True), return_exceptions=True
        )

    results = asyncio.run(main())
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
    with db.transaction(immediate=False) as conn:
        assert conn.execute("SELECT COUNT(*) FROM made").fetchone()[0] == 0
    db.close()


@pytest.mark.parametrize("n", [1, 5])
def test_every_caller_gets_its_own_answer(tmp_path: Path, n: int) -> None:
    db = Database(tmp_path / "ds01.db")

    async def main() -> list[int]:
        d = Decider()
        return await asyncio.gather(*(d.run(db, lambda i=i: i * i) for i in range(n)))

    assert asyncio.run(main()) == [i * i for i in range(n)]
    db.close()

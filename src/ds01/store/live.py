"""The units table and the live allocations, kept in memory by ds01d: what every decision reads.

Reading them from SQLite and rebuilding them as objects for every decision was most of a
decision's cost, and grew with the host's load (bench/RESULTS.md, alloc). The database stays
the single source of truth; this copy is trusted only where it is provably equal to it:

* The connection keeps a generation counter: a TEMP table that TEMP triggers move in the same
  transaction as any change to units, allocations or allocation_units — by any code path —
  paired with SQLite's data_version, which moves when another connection commits. (TEMP: they
  live with ds01d's connection and need no schema change; the copy starts empty with them.)
  A View is the tables as they were at one generation.
* view(conn) is called inside a transaction: it reads the counter there and returns the kept
  View when it is of that generation, else it reads the tables afresh. Under BEGIN IMMEDIATE
  the counter cannot move between that read and the decision's own writes.
* A writer that knows exactly what it changed (services/allocation.py: one allocation's row,
  read back from the database after its write) calls changed(): the counter is read before and
  after the write, and once the transaction has committed the kept View of the first
  generation becomes the second one with that row applied. Any other change — an un-noted
  write, a rollback, a write by another connection — leaves the kept View behind the counter,
  so the next view() reads the tables again.
* Inside one transaction, each View made (read afresh, or a noted change applied) is also
  pending: several decisions in one transaction (api/http.py's Decider batches them, each in a
  savepoint) each see the ones before without reading the tables again. A pending View is
  served only while no rollback has happened since it was made (Database.rollbacks): a
  rolled-back level takes the counter back, and later writes could reach the same number.
* Nothing is kept across a start: the first view() reads the database.

store/ as it is: plain reads and writes on a connection; no policy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from types import MappingProxyType

from ds01.model.allocation import AllocState
from ds01.store import allocations as allocs
from ds01.store import units as units_store
from ds01.store.allocations import AllocationRow
from ds01.store.db import Database
from ds01.store.units import UnitRow

_TABLES = ("units", "allocations", "allocation_units")


def install(conn: sqlite3.Connection) -> None:
    """The generation counter of this connection (idempotent)."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS live_generation (n INTEGER NOT NULL)")
    if conn.execute("SELECT COUNT(*) FROM temp.live_generation").fetchone()[0] == 0:
        conn.execute("INSERT INTO temp.live_generation (n) VALUES (0)")
    for table in _TABLES:
        for op in ("INSERT", "UPDATE", "DELETE"):
            conn.execute(
                f"CREATE TEMP TRIGGER IF NOT EXISTS live_generation_{table}_{op.lower()}"
                f" AFTER {op} ON main.{table}"
                " BEGIN UPDATE live_generation SET n = n + 1; END"
            )


Generation = tuple[int, int]  # (this connection's changes, data_version: others' commits)


def generation(conn: sqlite3.Connection) -> Generation:
    row = conn.execute(
        "SELECT n, (SELECT data_version FROM pragma_data_version()) FROM temp.live_generation"
    ).fetchone()
    return (int(row[0]), int(row[1]))


@dataclass(frozen=True)
class View:
    """Units not gone (in all_units() order) and live allocations, at one generation."""

    generation: Generation
    units: tuple[UnitRow, ...]
    live: Mapping[int, AllocationRow]  # allocation id → row, in id order

    def holders(self) -> Mapping[str, AllocationRow]:
        """unit uuid → the live allocation that has it (made once per View)."""
        return self._holders

    @cached_property
    def _holders(self) -> Mapping[str, AllocationRow]:
        return MappingProxyType({u.uuid: a for a in self.live.values() for u in a.units})


def read(conn: sqlite3.Connection) -> View:
    """The tables as they are now, inside the caller's transaction."""
    return View(
        generation=generation(conn),
        units=tuple(units_store.all_units(conn)),
        live=MappingProxyType({a.id: a for a in allocs.live(conn)}),
    )


def _with_row(view: View, row: AllocationRow, to: Generation) -> View:
    """view after `row` was written: added or replaced while live; when released, gone from the
    live ones and its units' last_released_at set (the trigger release_frees_units does that
    in the database)."""
    live = {k: v for k, v in view.live.items() if k != row.id}
    units = view.units
    if row.state is AllocState.RELEASED:
        freed = {u.uuid for u in row.units}
        units = tuple(
            replace(r, last_released_at=row.released_at) if r.unit.uuid in freed else r
            for r in units
        )
    else:
        live[row.id] = row
        live = dict(sorted(live.items()))
    return View(generation=to, units=units, live=MappingProxyType(live))


class LiveCache:
    """The kept View. Used only under the database's lock: inside a transaction (view(),
    changed()) or in an after-commit callback (which runs under it too)."""

    def __init__(self, db: Database) -> None:
        with db.transaction(immediate=False) as conn:  # TEMP: works on a read-only file too
            install(conn)
        self._db = db
        self._after_commit = db.after_commit
        self._view: View | None = None
        # The View as the open transaction has it, before it commits: several decisions in
        # one transaction (api/http.py's Decider batches them, each in its own savepoint)
        # each see the ones before. Valid only while no rollback happened since it was made
        # (Database.rollbacks): a level rolled back takes the counter back, and other writes
        # could reach the same generation with other contents.
        self._pending: tuple[int, View] | None = None

    def view(self, conn: sqlite3.Connection) -> View:
        """The units and live allocations as the database has them now (inside a transaction,
        before the caller writes). Reads the tables only when neither the transaction's
        pending View nor the kept one is of the database's generation."""
        now = generation(conn)
        pending = self._pending_view()
        if pending is not None and pending.generation == now:
            return pending
        kept = self._view
        if kept is not None and kept.generation == now:
            return kept
        fresh = read(conn)
        # Kept only once this transaction commits: were it rolled back after writes of its
        # own, the counter would go back and could be reached again with other contents.
        self._after_commit(lambda: self._keep(fresh))
        self._pend(fresh)
        return fresh

    def _pending_view(self) -> View | None:
        p = self._pending
        return p[1] if p is not None and p[0] == self._db.rollbacks else None

    def _pend(self, view: View) -> None:
        self._pending = (self._db.rollbacks, view)
        self._after_commit(self._drop_pending)

    def _drop_pending(self) -> None:
        self._pending = None

    def _keep(self, fresh: View) -> None:
        self._view = fresh  # committed, and callbacks run in commit order: the newest

    def changed(self, conn: sqlite3.Connection, before: Generation, row: AllocationRow) -> None:
        """One allocation was written, and nothing else of the three tables, between the
        generation `before` and now; `row` is what the database holds for it now."""
        after = generation(conn)
        pending = self._pending_view()
        base = pending if pending is not None and pending.generation == before else None
        if base is None and self._view is not None and self._view.generation == before:
            base = self._view
        made = _with_row(base, row, after) if base is not None else None
        if made is not None:
            self._pend(made)

        def apply() -> None:
            kept = self._view
            if kept is None or kept.generation != before:
                return  # not the View this change applies to: the next view() reads afresh
            self._view = None  # should _with_row fail, nothing wrong is kept
            self._view = made if made is not None and base is kept else _with_row(kept, row, after)

        self._after_commit(apply)

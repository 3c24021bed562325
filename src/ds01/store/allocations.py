"""Allocations and their units. Every state change goes through transition(), which checks the
one transition table (model.allocation) and writes nothing else; the caller records the event
in the same transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ds01.errors import InvalidTransition, NotFound, UnitAlreadyAllocated
from ds01.model.allocation import AllocState, can_transition
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Unit
from ds01.store.units import _unit_of


@dataclass(frozen=True)
class AllocationRow:
    id: int
    user: str
    uid: int | None
    group: str | None
    container: str | None
    container_id: str | None
    state: AllocState
    request: dict[str, Any]
    created_at: float
    updated_at: float
    expires_at: float | None
    hold_until: float | None
    released_at: float | None
    release_reason: str | None
    units: tuple[Unit, ...]

    @cached_property
    def gpueq(self) -> GpuEq:
        return GpuEq.total(u.gpueq for u in self.units)  # units never change: kept


def insert(
    conn: sqlite3.Connection,
    *,
    user: str,
    uid: int | None,
    group: str | None,
    container: str | None,
    request: dict[str, Any],
    units: tuple[Unit, ...],
    now: float,
    expires_at: float | None,
) -> int:
    cur = conn.execute(
        "INSERT INTO allocations (user, uid, grp, container, state, request, created_at,"
        " updated_at, expires_at) VALUES (?, ?, ?, ?, 'reserved', ?, ?, ?, ?)",
        (user, uid, group, container, json.dumps(request, sort_keys=True), now, now, expires_at),
    )
    alloc_id = int(cur.lastrowid or 0)
    for u in units:
        try:
            conn.execute(
                "INSERT INTO allocation_units (allocation_id, unit_uuid, live) VALUES (?, ?, 1)",
                (alloc_id, u.uuid),
            )
        except sqlite3.IntegrityError as e:
            raise UnitAlreadyAllocated(
                f"unit {u.uuid} is already in a live allocation",
                why="The database constraint one_live_allocation_per_unit refused it.",
                fix="This is a ds01 bug if it reaches you; please report it.",
            ) from e
    return alloc_id


def transition(
    conn: sqlite3.Connection,
    alloc_id: int,
    dst: AllocState,
    now: float,
    *,
    hold_until: float | None = None,
    release_reason: str | None = None,
    container_id: str | None = None,
) -> AllocState:
    """Move an allocation to dst; returns the state it had. Refuses moves not in the table."""
    row = conn.execute("SELECT state FROM allocations WHERE id = ?", (alloc_id,)).fetchone()
    if row is None:
        raise NotFound(f"allocation {alloc_id} does not exist")
    src = AllocState(row["state"])
    if not can_transition(src, dst):
        raise InvalidTransition(
            f"allocation {alloc_id} cannot go from {src} to {dst}",
            fix="See 'ds01 events' for what happened to it.",
        )
    conn.execute(
        """
        UPDATE allocations SET state = ?, updated_at = ?,
            expires_at = CASE WHEN ? = 'reserved' THEN expires_at ELSE NULL END,
            hold_until = ?,
            released_at = CASE WHEN ? = 'released' THEN ? ELSE released_at END,
            release_reason = COALESCE(?, release_reason),
            container_id = COALESCE(?, container_id)
        WHERE id = ?
        """,
        (
            dst.value,
            now,
            dst.value,
            hold_until,
            dst.value,
            now,
            release_reason,
            container_id,
            alloc_id,
        ),
    )
    return src


def _rows(conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> list[AllocationRow]:
    allocs = conn.execute(f"SELECT * FROM allocations WHERE {where} ORDER BY id", args).fetchall()
    if not allocs:
        return []
    ids = [a["id"] for a in allocs]
    units: dict[int, list[Unit]] = {i: [] for i in ids}
    marks = ",".join("?" * len(ids))
    for r in conn.execute(
        "SELECT au.allocation_id AS aid, u.* FROM allocation_units au"
        f" JOIN units u ON u.uuid = au.unit_uuid WHERE au.allocation_id IN ({marks})"
        " ORDER BY u.gpu_index, u.gpu_instance_id, u.compute_instance_id, u.uuid",
        ids,
    ):
        units[r["aid"]].append(_unit_of(r))
    return [_row_of(a, tuple(units[a["id"]])) for a in allocs]


def _row_of(a: sqlite3.Row, units: tuple[Unit, ...]) -> AllocationRow:
    return AllocationRow(
        id=a["id"],
        user=a["user"],
        uid=a["uid"],
        group=a["grp"],
        container=a["container"],
        container_id=a["container_id"],
        state=AllocState(a["state"]),
        request=json.loads(a["request"]),
        created_at=a["created_at"],
        updated_at=a["updated_at"],
        expires_at=a["expires_at"],
        hold_until=a["hold_until"],
        released_at=a["released_at"],
        release_reason=a["release_reason"],
        units=units,
    )


def _unit_order(u: Unit) -> tuple[int, bool, int, bool, int, str]:
    """_rows()'s ORDER BY gpu_index, gpu_instance_id, compute_instance_id, uuid (NULL first)."""
    gi, ci = u.gpu_instance_id, u.compute_instance_id
    return (u.gpu_index, gi is not None, gi or 0, ci is not None, ci or 0, u.uuid)


def reread(conn: sqlite3.Connection, alloc_id: int, units: Iterable[Unit]) -> AllocationRow:
    """get() after a write in the caller's transaction, reading one row instead of two tables:
    `units` are the allocation's units as read earlier in the same transaction. An
    allocation's units never change after insert() (allocation_units is written once, and
    only its `live` flag moves), and the caller has not written the units table since."""
    a = conn.execute("SELECT * FROM allocations WHERE id = ?", (alloc_id,)).fetchone()
    if a is None:
        raise NotFound(f"allocation {alloc_id} not found")
    return _row_of(a, tuple(sorted(units, key=_unit_order)))


def live(conn: sqlite3.Connection, user: str | None = None) -> list[AllocationRow]:
    if user is None:
        return _rows(conn, "state != 'released'", ())
    return _rows(conn, "state != 'released' AND user = ?", (user,))


def get(conn: sqlite3.Connection, alloc_id: int) -> AllocationRow | None:
    rows = _rows(conn, "id = ?", (alloc_id,))
    return rows[0] if rows else None


def ended_among(conn: sqlite3.Connection, ids: Iterable[int], after_id: int) -> list[AllocationRow]:
    """Released allocations among `ids`, and those with an id above `after_id` (made and
    released since): what ended since the usage ledger last looked (services/usage.py). By
    primary key only: no scan of the history."""
    wanted = sorted(set(ids))
    marks = ",".join("?" * len(wanted))
    where = f"id IN ({marks}) OR id > ?" if wanted else "id > ?"
    return [r for r in _rows(conn, where, (*wanted, after_id)) if r.state is AllocState.RELEASED]


def last_for_container_id(conn: sqlite3.Connection, container_id: str) -> AllocationRow | None:
    """The newest allocation ever bound to this container (live or released)."""
    rows = _rows(
        conn,
        "id = (SELECT MAX(id) FROM allocations WHERE container_id = ?)",
        (container_id,),
    )
    return rows[0] if rows else None


def recent(conn: sqlite3.Connection, user: str | None, limit: int = 200) -> list[AllocationRow]:
    if user is None:
        return _rows(conn, "id IN (SELECT id FROM allocations ORDER BY id DESC LIMIT ?)", (limit,))
    return _rows(
        conn,
        "id IN (SELECT id FROM allocations WHERE user = ? ORDER BY id DESC LIMIT ?)",
        (user, limit),
    )


def due(conn: sqlite3.Connection, now: float) -> list[AllocationRow]:
    """Reservations past their expiry and holds past their end. A reservation with an open
    intent (store/intents.py) is not due: a container may already run on its units, and only
    recovery, which sees the containers, may end it."""
    return _rows(
        conn,
        "(state = 'reserved' AND expires_at IS NOT NULL AND expires_at <= ?"
        " AND id NOT IN (SELECT allocation_id FROM intents))"
        " OR (state = 'held' AND hold_until IS NOT NULL AND hold_until <= ?)",
        (now, now),
    )


def double_allocations(conn: sqlite3.Connection) -> list[str]:
    """Independent scan (not via the index): units that appear in two live allocations."""
    return [
        str(r[0])
        for r in conn.execute(
            "SELECT au.unit_uuid FROM allocation_units au JOIN allocations a"
            " ON a.id = au.allocation_id WHERE a.state != 'released'"
            " GROUP BY au.unit_uuid HAVING COUNT(*) > 1"
        )
    ]


def shift_deadlines(conn: sqlite3.Connection, step_s: float) -> int:
    """Move every live deadline (a reservation's expiry, a hold's end) by step_s seconds, for a
    wall-clock step (services/clock.py): each keeps the time it had left. Returns how many
    allocations moved."""
    cur = conn.execute(
        "UPDATE allocations SET expires_at = expires_at + ?, hold_until = hold_until + ?"
        " WHERE state != 'released' AND (expires_at IS NOT NULL OR hold_until IS NOT NULL)",
        (step_s, step_s),
    )
    return cur.rowcount

"""The units table: what the inventory reported, plus drain flags and LRU times.

Units that disappear from the inventory are marked gone, never deleted: allocations and events
keep pointing at them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Unit, UnitKind


@dataclass(frozen=True)
class UnitRow:
    unit: Unit
    gone: bool
    drained: bool
    drain_reason: str | None
    last_released_at: float | None


_UNIT_COLUMNS = (
    "uuid",
    "kind",
    "gpu_uuid",
    "gpu_index",
    "model",
    "memory_total_mib",
    "gpueq",
    "profile",
    "gpu_instance_id",
    "compute_instance_id",
    "numa_node",
    "nvlink_group",
)


def _unit_of(r: sqlite3.Row) -> Unit:
    return _unit_from(tuple(r[c] for c in _UNIT_COLUMNS))


@lru_cache(maxsize=4096)
def _unit_from(values: tuple[Any, ...]) -> Unit:
    """Units are immutable and read on every decision: build each distinct row once."""
    (uuid, kind, gpu_uuid, gpu_index, model, memory, gpueq, profile, gi, ci, numa, nvlink) = values
    return Unit(
        uuid=uuid,
        kind=UnitKind(kind),
        gpu_uuid=gpu_uuid,
        gpu_index=gpu_index,
        model=model,
        memory_total_mib=memory,
        gpueq=GpuEq(gpueq),
        profile=profile,
        gpu_instance_id=gi,
        compute_instance_id=ci,
        numa_node=numa,
        nvlink_group=nvlink,
    )


def all_units(conn: sqlite3.Connection, include_gone: bool = False) -> list[UnitRow]:
    sql = "SELECT * FROM units" + ("" if include_gone else " WHERE gone = 0")
    sql += " ORDER BY gpu_index, gpu_instance_id, compute_instance_id, uuid"
    return [
        UnitRow(
            unit=_unit_of(r),
            gone=bool(r["gone"]),
            drained=bool(r["drained"]),
            drain_reason=r["drain_reason"],
            last_released_at=r["last_released_at"],
        )
        for r in conn.execute(sql)
    ]


def unit_by_uuid(conn: sqlite3.Connection, uuid: str) -> Unit | None:
    r = conn.execute("SELECT * FROM units WHERE uuid = ?", (uuid,)).fetchone()
    return _unit_of(r) if r else None


@dataclass(frozen=True)
class SyncResult:
    added: list[str]
    gone: list[str]
    returned: list[str]


def sync(conn: sqlite3.Connection, units: Iterable[Unit], now: float) -> SyncResult:
    """Make the table match the inventory: upsert present units, mark missing ones gone."""
    present = {u.uuid: u for u in units}
    known = {r["uuid"]: bool(r["gone"]) for r in conn.execute("SELECT uuid, gone FROM units")}
    added = [u for u in present if u not in known]
    returned = [u for u in present if known.get(u) is True]
    gone = [u for u, was_gone in known.items() if u not in present and not was_gone]
    for u in present.values():
        conn.execute(
            """
            INSERT INTO units (uuid, kind, gpu_uuid, gpu_index, model, memory_total_mib, gpueq,
                profile, gpu_instance_id, compute_instance_id, numa_node, nvlink_group,
                gone, first_seen, last_seen)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)
            ON CONFLICT (uuid) DO UPDATE SET
                kind = excluded.kind, gpu_uuid = excluded.gpu_uuid,
                gpu_index = excluded.gpu_index, model = excluded.model,
                memory_total_mib = excluded.memory_total_mib, gpueq = excluded.gpueq,
                profile = excluded.profile, gpu_instance_id = excluded.gpu_instance_id,
                compute_instance_id = excluded.compute_instance_id,
                numa_node = excluded.numa_node, nvlink_group = excluded.nvlink_group,
                gone = 0, last_seen = excluded.last_seen
            """,
            (
                u.uuid,
                u.kind.value,
                u.gpu_uuid,
                u.gpu_index,
                u.model,
                u.memory_total_mib,
                u.gpueq.as_text(),
                u.profile,
                u.gpu_instance_id,
                u.compute_instance_id,
                u.numa_node,
                u.nvlink_group,
                now,
                now,
            ),
        )
    for uuid in gone:
        conn.execute("UPDATE units SET gone = 1 WHERE uuid = ?", (uuid,))
    return SyncResult(added=added, gone=gone, returned=returned)


def set_drained(conn: sqlite3.Connection, uuids: Iterable[str], drained: bool, reason: str) -> int:
    n = 0
    for uuid in uuids:
        cur = conn.execute(
            "UPDATE units SET drained = ?, drain_reason = ? WHERE uuid = ?",
            (1 if drained else 0, reason if drained else None, uuid),
        )
        n += cur.rowcount
    return n

"""The usage ledger (migration 14): GPU time and energy attributed to allocations, by hour.

ds01d adds to it after each machine sample (services/usage.py decides what each interval
between two samples is worth; this module only stores and sums). Three tables:

* `usage`: one row per (allocation, hour): the owner, group and container as they were, and
  the hour's gpueq-seconds held, of which active and idle (the rest: unknown), energy in
  joules, and the gpueq-seconds held on GPUs that report neither energy nor power
  (unmetered: their energy is not in energy_j).
* `usage_totals`: per user, the same sums since the ledger began, kept in the same
  transaction, so `totals_by_user` (Prometheus counters, metrics/) reads a row per user
  instead of summing the history at every scrape.
* `usage_machine`: per hour, the seconds covered by samples (an hour ds01d was down shows
  fewer), the capacity in gpueq-seconds (every unit, held or not), all GPUs' energy, and the
  part of it not attributed to any allocation (unheld GPUs and MIG slices: "unallocated").

Hours are whole UTC hours (bucket = the hour's first second, unix time). Rows are only ever
added to; nothing here decides anything.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

BUCKET_S = 3600


def bucket_of(t: float) -> int:
    """The hour that time t falls in (its first second)."""
    return int(t // BUCKET_S) * BUCKET_S


@dataclass(frozen=True)
class UsageTotals:
    """One user's usage since the ledger began; every field only grows (Prometheus counters).

    gpueq_seconds: units held (reserved, running or held after a stop) × their gpueq × time.
    active_gpueq_seconds: the part of it whose units were judged in use (lifecycle/activity.py).
    energy_joules: the energy of the GPUs attributed to the user's allocations."""

    gpueq_seconds: float
    active_gpueq_seconds: float
    energy_joules: float


@dataclass(frozen=True)
class Share:
    """One allocation's usage within one hour (a row of `usage`, or an addition to one)."""

    allocation_id: int
    bucket: int
    user: str
    group: str | None
    container: str | None
    gpueq_seconds: float
    active_gpueq_seconds: float
    idle_gpueq_seconds: float
    energy_joules: float
    unmetered_gpueq_seconds: float


@dataclass(frozen=True)
class MachineShare:
    """The whole machine within one hour (a row of `usage_machine`, or an addition to one)."""

    bucket: int
    sampled_seconds: float
    capacity_gpueq_seconds: float
    energy_joules: float
    unallocated_energy_joules: float


@dataclass(frozen=True)
class UsageRow:
    """Usage summed over a range for one key (a user or a group)."""

    key: str
    gpueq_seconds: float
    active_gpueq_seconds: float
    idle_gpueq_seconds: float
    energy_joules: float
    unmetered_gpueq_seconds: float
    allocations: int
    containers: int


@dataclass(frozen=True)
class MachineRow:
    """The machine summed over a range."""

    sampled_seconds: float
    capacity_gpueq_seconds: float
    energy_joules: float
    unallocated_energy_joules: float


def add(conn: sqlite3.Connection, shares: Iterable[Share], machine: Iterable[MachineShare]) -> None:
    """Add one interval's shares; the caller holds the (one) transaction."""
    totals: dict[str, list[float]] = {}
    for s in shares:
        conn.execute(
            "INSERT INTO usage (allocation_id, bucket, user, grp, container, gpueq_seconds,"
            " active_gpueq_seconds, idle_gpueq_seconds, energy_j, unmetered_gpueq_seconds)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (allocation_id, bucket) DO UPDATE"
            " SET container = excluded.container,"
            " gpueq_seconds = gpueq_seconds + excluded.gpueq_seconds,"
            " active_gpueq_seconds = active_gpueq_seconds + excluded.active_gpueq_seconds,"
            " idle_gpueq_seconds = idle_gpueq_seconds + excluded.idle_gpueq_seconds,"
            " energy_j = energy_j + excluded.energy_j,"
            " unmetered_gpueq_seconds = unmetered_gpueq_seconds + excluded.unmetered_gpueq_seconds",
            (
                s.allocation_id,
                s.bucket,
                s.user,
                s.group,
                s.container,
                s.gpueq_seconds,
                s.active_gpueq_seconds,
                s.idle_gpueq_seconds,
                s.energy_joules,
                s.unmetered_gpueq_seconds,
            ),
        )
        t = totals.setdefault(s.user, [0.0, 0.0, 0.0])
        t[0] += s.gpueq_seconds
        t[1] += s.active_gpueq_seconds
        t[2] += s.energy_joules
    for user, (held, active, energy) in totals.items():
        conn.execute(
            "INSERT INTO usage_totals (user, gpueq_seconds, active_gpueq_seconds, energy_j)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (user) DO UPDATE"
            " SET gpueq_seconds = gpueq_seconds + excluded.gpueq_seconds,"
            " active_gpueq_seconds = active_gpueq_seconds + excluded.active_gpueq_seconds,"
            " energy_j = energy_j + excluded.energy_j",
            (user, held, active, energy),
        )
    for m in machine:
        conn.execute(
            "INSERT INTO usage_machine (bucket, sampled_seconds, capacity_gpueq_seconds,"
            " energy_j, unallocated_energy_j) VALUES (?, ?, ?, ?, ?) ON CONFLICT (bucket)"
            " DO UPDATE SET sampled_seconds = sampled_seconds + excluded.sampled_seconds,"
            " capacity_gpueq_seconds = capacity_gpueq_seconds + excluded.capacity_gpueq_seconds,"
            " energy_j = energy_j + excluded.energy_j,"
            " unallocated_energy_j = unallocated_energy_j + excluded.unallocated_energy_j",
            (
                m.bucket,
                m.sampled_seconds,
                m.capacity_gpueq_seconds,
                m.energy_joules,
                m.unallocated_energy_joules,
            ),
        )


def totals_by_user(conn: sqlite3.Connection) -> dict[str, UsageTotals]:
    """Every user's usage since the ledger began (monotonic: Prometheus counters). A read of
    one small table, as cheap as a scrape needs."""
    return {
        str(r[0]): UsageTotals(float(r[1]), float(r[2]), float(r[3]))
        for r in conn.execute(
            "SELECT user, gpueq_seconds, active_gpueq_seconds, energy_j FROM usage_totals"
        )
    }


def _range(start: float, end: float, user: str | None) -> tuple[str, list[object]]:
    where = "bucket >= ? AND bucket < ?"
    args: list[object] = [bucket_of(start), end]
    if user is not None:
        where += " AND user = ?"
        args.append(user)
    return where, args


def summed(
    conn: sqlite3.Connection, start: float, end: float, by: str = "user", user: str | None = None
) -> list[UsageRow]:
    """Usage of the hours that begin in [start, end) — start rounded down to its hour —
    summed per user (by='user') or per group (by='group'; no group: ''), largest first.
    `user`: only that user's rows."""
    column = {"user": "user", "group": "COALESCE(grp, '')"}[by]
    where, args = _range(start, end, user)
    rows = conn.execute(
        f"SELECT {column} AS k, SUM(gpueq_seconds), SUM(active_gpueq_seconds),"
        " SUM(idle_gpueq_seconds), SUM(energy_j), SUM(unmetered_gpueq_seconds),"
        " COUNT(DISTINCT allocation_id),"
        " COUNT(DISTINCT CASE WHEN container IS NOT NULL THEN allocation_id END)"
        f" FROM usage WHERE {where} GROUP BY k ORDER BY SUM(gpueq_seconds) DESC, k",
        args,
    ).fetchall()
    return [
        UsageRow(
            str(r[0]),
            float(r[1]),
            float(r[2]),
            float(r[3]),
            float(r[4]),
            float(r[5]),
            int(r[6]),
            int(r[7]),
        )
        for r in rows
    ]


def series(
    conn: sqlite3.Connection,
    start: float,
    end: float,
    by: str = "user",
    user: str | None = None,
) -> list[tuple[int, str, float]]:
    """(hour, user or group, gpueq-seconds) for every hour with usage in the range, oldest
    first: what the chart draws."""
    column = {"user": "user", "group": "COALESCE(grp, '')"}[by]
    where, args = _range(start, end, user)
    return [
        (int(r[0]), str(r[1]), float(r[2]))
        for r in conn.execute(
            f"SELECT bucket, {column} AS k, SUM(gpueq_seconds) FROM usage WHERE {where}"
            " GROUP BY bucket, k ORDER BY bucket, k",
            args,
        )
    ]


def machine(conn: sqlite3.Connection, start: float, end: float) -> MachineRow:
    """The machine's hours that begin in [start, end), summed."""
    r = conn.execute(
        "SELECT COALESCE(SUM(sampled_seconds), 0), COALESCE(SUM(capacity_gpueq_seconds), 0),"
        " COALESCE(SUM(energy_j), 0), COALESCE(SUM(unallocated_energy_j), 0)"
        " FROM usage_machine WHERE bucket >= ? AND bucket < ?",
        (bucket_of(start), end),
    ).fetchone()
    return MachineRow(float(r[0]), float(r[1]), float(r[2]), float(r[3]))

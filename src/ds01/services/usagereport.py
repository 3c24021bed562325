"""Usage reports (`ds01 report usage`, GET /v1/reports/usage): the usage ledger
(store/usage.py) summed over a time range per user or group, in the units people read — GPU
hours (gpueq·h), the idle share, kWh and kg of CO₂ at the configured grid intensity.

Who sees what: an admin sees every user (or one, with `user`) and the machine's own figures
(capacity, unallocated energy, hours sampled); anyone else sees only their own usage, whatever
`privacy` says — usage is personal. Must not decide anything or write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ds01.config import Config
from ds01.errors import PermissionDenied, UsageError
from ds01.identity import Caller, is_admin
from ds01.store import usage as store
from ds01.store.db import Database

BY = ("user", "group")
J_PER_KWH = 3_600_000.0


@dataclass(frozen=True)
class Figures:
    """One row of a report (or its total). Hours are gpueq·hours: a whole GPU for an hour is 1,
    a 3g.40gb MIG slice on an H100 for an hour is 3/7. unknown_gpu_hours = gpu_hours −
    active − idle (units missing from samples). idle_share = idle / held; None when nothing
    was held."""

    key: str
    gpu_hours: float
    active_gpu_hours: float
    idle_gpu_hours: float
    unknown_gpu_hours: float
    idle_share: float | None
    energy_kwh: float
    co2_kg: float
    unmetered_gpu_hours: float
    allocations: int
    containers: int


@dataclass(frozen=True)
class MachineFigures:
    """The whole machine over the range (admins only): hours covered by samples (less than
    the range where ds01d was down or is younger), capacity in gpueq·hours, the energy of all
    GPUs and the part no allocation was charged (free GPUs and MIG slices)."""

    sampled_hours: float
    capacity_gpu_hours: float
    energy_kwh: float
    unallocated_energy_kwh: float
    co2_kg: float


@dataclass(frozen=True)
class UsageReport:
    start: float
    end: float
    by: str
    scope: str  # "all" (an admin's report) or "own"
    grid_intensity_g_per_kwh: float
    rows: list[Figures]
    total: Figures
    machine: MachineFigures | None
    series: list[tuple[int, str, float]]  # (hour, key, gpu hours), oldest first


def figures(r: store.UsageRow, grid_g_per_kwh: float) -> Figures:
    held = r.gpueq_seconds / 3600
    active = r.active_gpueq_seconds / 3600
    idle = r.idle_gpueq_seconds / 3600
    kwh = r.energy_joules / J_PER_KWH
    return Figures(
        key=r.key,
        gpu_hours=held,
        active_gpu_hours=active,
        idle_gpu_hours=idle,
        unknown_gpu_hours=max(0.0, held - active - idle),
        idle_share=(r.idle_gpueq_seconds / r.gpueq_seconds) if r.gpueq_seconds > 0 else None,
        energy_kwh=kwh,
        co2_kg=kwh * grid_g_per_kwh / 1000,
        unmetered_gpu_hours=r.unmetered_gpueq_seconds / 3600,
        allocations=r.allocations,
        containers=r.containers,
    )


def _total(rows: list[store.UsageRow]) -> store.UsageRow:
    return store.UsageRow(
        "total",
        sum(r.gpueq_seconds for r in rows),
        sum(r.active_gpueq_seconds for r in rows),
        sum(r.idle_gpueq_seconds for r in rows),
        sum(r.energy_joules for r in rows),
        sum(r.unmetered_gpueq_seconds for r in rows),
        sum(r.allocations for r in rows),
        sum(r.containers for r in rows),
    )


class UsageReports:
    def __init__(self, db: Database, config: Callable[[], Config]) -> None:
        self.db = db
        self._config = config

    def usage(
        self,
        caller: Caller,
        *,
        start: float,
        end: float,
        by: str = "user",
        user: str | None = None,
        series: bool = False,
    ) -> UsageReport:
        if by not in BY:
            raise UsageError(
                f"by: {by!r} is not one of {', '.join(BY)}",
                fix="Report by user or by group.",
            )
        if not start < end:
            raise UsageError(
                "the report's start is not before its end",
                why="--from must be earlier than --to.",
                fix="Swap them, or give a later --to.",
            )
        config = self._config()
        admin = is_admin(caller, config)
        if not admin:
            if user not in (None, caller.name):
                raise PermissionDenied(
                    "you can only see your own usage",
                    why="Usage reports of other users are for admins.",
                    fix="Drop --user, or ask an admin.",
                )
            user = caller.name
        grid = config.report.grid_intensity_g_per_kwh
        with self.db.transaction(immediate=False) as conn:
            rows = store.summed(conn, start, end, by, user)
            points = store.series(conn, start, end, by, user) if series else []
            machine = store.machine(conn, start, end) if admin and user is None else None
        return UsageReport(
            start=start,
            end=end,
            by=by,
            scope="all" if admin and user is None else "own" if user == caller.name else "user",
            grid_intensity_g_per_kwh=grid,
            rows=[figures(r, grid) for r in rows],
            total=figures(_total(rows), grid),
            machine=None
            if machine is None
            else MachineFigures(
                sampled_hours=machine.sampled_seconds / 3600,
                capacity_gpu_hours=machine.capacity_gpueq_seconds / 3600,
                energy_kwh=machine.energy_joules / J_PER_KWH,
                unallocated_energy_kwh=machine.unallocated_energy_joules / J_PER_KWH,
                co2_kg=machine.energy_joules / J_PER_KWH * grid / 1000,
            ),
            series=[(b, k, s / 3600) for b, k, s in points],
        )

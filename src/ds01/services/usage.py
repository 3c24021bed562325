"""The usage ledger's bookkeeping (issue 17 item 4): after each machine sample, what the interval
since the previous sample was worth, attributed to the allocations that held units in it, added
to the ledger (store/usage.py) in one short write transaction.

The rules (docs/reports.md says them for admins):

* **Held time** is exact, not sampled: an allocation holds its units from its creation
  (reservation) to its release, in the daemon's clock frame (services/clock.py), so its
  gpueq-seconds in an interval are gpueq × the part of the interval it held them — reserved,
  running or held after a stop alike: a unit kept from others is used.
* **Activity** comes from a sample: the unit's own signal as idle reclaim reads it
  (lifecycle/activity.py: utilization at or above the owner's idle_gpu_util_pct, or a process
  or memory in use on a MIG slice), without the container's CPU. An allocation still live at
  the interval's end is judged by the sample that ends it; one released within it by the
  sample that began it (its last sample). Unknown (a unit missing from the sample) is neither
  active nor idle.
* **Energy** per GPU is the delta of its energy counter (NVML total_energy_consumption, mJ
  since the driver loaded) when the counter went forward; when it went back (the driver was
  reloaded, the counter restarted) or a reading is missing, the mean of the two power readings
  × the interval; with neither, the GPU is unmetered for the interval and its held time counts
  as `unmetered_gpueq_seconds`. A GPU's energy in an interval is spread evenly over it and
  split by gpueq: a whole GPU's holder gets all of it for the time it held it, a MIG slice's
  holder the slice's share of the GPU's compute slices (3g on H100: 3/7). What no allocation
  held (free GPUs, free or unconfigured slices, the time before a holder came) is
  "unallocated" energy, kept per hour for the machine.
* **Gaps are not invented**: the first sample after ds01d starts only sets the baseline, and
  an interval longer than `max_gap` (the sampler failing, the process suspended) or running
  backwards is dropped the same way. Such time shows as hours with fewer `sampled_seconds`.
  A wall-clock step applied by the clock watch moves the baseline with it (clock_stepped), so
  the interval across it keeps its true length.

Must not: talk to Docker or NVML (the daemon's latest sample is read, never a new one taken),
or write anything on the allocation path.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ds01.identity import CallerCache
from ds01.lifecycle.activity import UnitActivity, unit_activity
from ds01.model.allocation import AllocState
from ds01.model.inventory import Gpu, MachineSample
from ds01.services.allocation import AllocationService
from ds01.store import allocations as allocs
from ds01.store import usage as store
from ds01.store.allocations import AllocationRow
from ds01.store.usage import BUCKET_S, MachineShare, Share, bucket_of

log = logging.getLogger("ds01d.usage")


@dataclass(frozen=True)
class Reading:
    """A sample and the daemon-clock time it stands for."""

    at: float
    sample: MachineSample


@dataclass(frozen=True)
class Holding:
    """An allocation's hold over part of an interval, and the verdicts that judge it."""

    row: AllocationRow
    start: float
    end: float
    activity: Mapping[str, UnitActivity]  # unit uuid → verdict


def gpu_energy_j(before: Gpu | None, after: Gpu, seconds: float) -> float | None:
    """The GPU's energy over the interval, in joules; None when it reports neither counter nor
    power. The counter's delta when it went forward (it is the true integral); else (a reset,
    a reading missing) the mean of the power readings there are × the interval."""
    if (
        before is not None
        and before.energy_mj is not None
        and after.energy_mj is not None
        and after.energy_mj >= before.energy_mj
    ):
        return (after.energy_mj - before.energy_mj) / 1000.0
    powers = [g.power_w for g in (before, after) if g is not None and g.power_w is not None]
    if not powers:
        return None
    return sum(powers) / len(powers) * seconds


def _pieces(start: float, end: float) -> list[tuple[int, float]]:
    """[start, end) cut at hour boundaries: (hour, seconds in it)."""
    out: list[tuple[int, float]] = []
    t = start
    while t < end:
        b = bucket_of(t)
        nxt = min(end, b + BUCKET_S)
        out.append((b, nxt - t))
        t = nxt
    return out


def attribute(
    before: Reading, after: Reading, holdings: Iterable[Holding]
) -> tuple[list[Share], list[MachineShare]]:
    """Pure: the interval [before.at, after.at]'s shares per allocation and hour, and the
    machine's per hour (the rules are the module docstring's)."""
    t0, t1 = before.at, after.at
    dt = t1 - t0
    if dt <= 0:
        return [], []
    old = {g.uuid: g for g in before.sample.gpus}
    energy = {g.uuid: gpu_energy_j(old.get(g.uuid), g, dt) for g in after.sample.gpus}
    shares: dict[tuple[int, int], list[float]] = {}
    rows: dict[int, AllocationRow] = {}
    allocated_j = 0.0
    for h in holdings:
        start, end = max(t0, h.start), min(t1, h.end)
        if end <= start:
            continue
        rows[h.row.id] = h.row
        for unit in h.row.units:
            eq = float(unit.gpueq)
            verdict = h.activity.get(unit.uuid)
            gpu_j = energy.get(unit.gpu_uuid)
            for b, secs in _pieces(start, end):
                s = shares.setdefault((h.row.id, b), [0.0, 0.0, 0.0, 0.0, 0.0])
                s[0] += eq * secs
                if verdict is not None and verdict.active is True:
                    s[1] += eq * secs
                elif verdict is not None and verdict.active is False:
                    s[2] += eq * secs
                if gpu_j is None:
                    s[4] += eq * secs
                else:
                    part = gpu_j * eq * secs / dt
                    s[3] += part
                    allocated_j += part
    out = [
        Share(
            allocation_id=aid,
            bucket=b,
            user=rows[aid].user,
            group=rows[aid].group,
            container=rows[aid].container,
            gpueq_seconds=v[0],
            active_gpueq_seconds=v[1],
            idle_gpueq_seconds=v[2],
            energy_joules=v[3],
            unmetered_gpueq_seconds=v[4],
        )
        for (aid, b), v in sorted(shares.items())
    ]
    total_j = sum(e for e in energy.values() if e is not None)
    capacity = sum(float(u.gpueq) for u in after.sample.units())
    unallocated_j = max(0.0, total_j - allocated_j)
    machine = [
        MachineShare(
            bucket=b,
            sampled_seconds=secs,
            capacity_gpueq_seconds=capacity * secs,
            energy_joules=total_j * secs / dt,
            unallocated_energy_joules=unallocated_j * secs / dt,
        )
        for b, secs in _pieces(t0, t1)
    ]
    return out, machine


@dataclass(frozen=True)
class _Last:
    reading: Reading
    live: frozenset[int]  # the allocations live at that sample
    max_id: int  # the highest allocation id seen then


class UsageLedger:
    """ds01d's one writer of the usage ledger: observe() after each new sample."""

    def __init__(
        self,
        allocations: AllocationService,
        *,
        max_gap: Callable[[], float] = lambda: 60.0,
        callers: CallerCache | None = None,
    ) -> None:
        self.allocations = allocations
        self.db = allocations.db
        self._max_gap = max_gap
        self.callers = callers if callers is not None else CallerCache()
        self._lock = threading.Lock()
        self._last: _Last | None = None

    def clock_stepped(self, step_s: float) -> None:
        """The clock watch moved every stored time by step_s: the baseline moves with them."""
        with self._lock:
            last = self._last
            if last is not None:
                r = last.reading
                self._last = _Last(Reading(r.at + step_s, r.sample), last.live, last.max_id)

    def forget(self) -> None:
        """Drop the baseline: the next sample starts a new one (nothing is counted before it)."""
        with self._lock:
            self._last = None

    def _threshold(self, user: str) -> float:
        return self.allocations.limits_for(self.callers.of_name(user)).policy.idle_gpu_util_pct

    def observe(self, sample: MachineSample, now: float) -> int:
        """Add the interval since the previous sample to the ledger; the number of
        (allocation, hour) rows it added to. The first sample, one after a gap of more than
        max_gap, and a clock that went backwards only set the baseline.

        The allocations are read in a read transaction and the shares written in a short write
        transaction of their own: the owners' limits (an NSS lookup on a cache miss, seconds
        with a slow LDAP) are resolved in between, never while holding the write lock that
        allocations wait for. What changes in between is seen by the next pass: a new
        allocation by its id, a release by the allocation's id in `live`."""
        with self._lock:
            last = self._last
            if last is not None and last.reading.sample is sample:
                return 0  # no new sample since the last pass
            reading = Reading(now, sample)
            counted = last is not None and 0 < now - last.reading.at <= self._max_gap()
            with self.db.transaction(immediate=False) as conn:
                live = [r for r in self.allocations.live.view(conn).live.values() if r.units]
                max_id = _max_id(conn)
                ended = (
                    allocs.ended_among(conn, last.live, last.max_id)
                    if last is not None and counted
                    else []
                )
            # Released after `now` was read: the rest of their time is the next interval's.
            late = {r.id for r in ended if r.released_at is not None and r.released_at > now}
            self._last = _Last(reading, frozenset(r.id for r in live) | late, max_id)
            if last is None or not counted:
                if last is not None:
                    log.info(
                        "usage: %.0f s since the last sample; that interval is not counted",
                        now - last.reading.at,
                    )
                return 0
            holdings = self._holdings(last.reading, reading, live, ended)
            shares, machine = attribute(last.reading, reading, holdings)
            with self.db.transaction() as conn:
                store.add(conn, shares, machine)
            return len(shares)

    def _holdings(
        self,
        before: Reading,
        after: Reading,
        live: list[AllocationRow],
        ended: list[AllocationRow],
    ) -> list[Holding]:
        verdicts: dict[tuple[int, float], dict[str, UnitActivity]] = {}

        def judged(which: int, reading: Reading, user: str) -> dict[str, UnitActivity]:
            threshold = self._threshold(user)
            key = (which, threshold)
            if key not in verdicts:
                verdicts[key] = unit_activity(reading.sample, threshold)
            return verdicts[key]

        out = [Holding(r, r.created_at, after.at, judged(1, after, r.user)) for r in live]
        for r in ended:
            if r.state is not AllocState.RELEASED or not r.units:
                continue
            end = r.released_at if r.released_at is not None else after.at
            out.append(Holding(r, r.created_at, end, judged(0, before, r.user)))
        return out

    def totals_by_user(self) -> dict[str, store.UsageTotals]:
        with self.db.transaction(immediate=False) as conn:
            return store.totals_by_user(conn)


def _max_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(id) FROM allocations").fetchone()
    return int(row[0] or 0)

"""The metric families, built at each scrape from ds01d's own state (docs/metrics.md lists
every one, its labels, its unit and the DCGM exporter's field for the same quantity).

Reads: the latest MachineSample (GPUs, MIG devices, processes), the live allocations view
(store/live.py: one generation check, no table read while nothing changed), one read
transaction for the lifecycle's idle runs, the queue's waiting entries per user and the live
grants, the audit log's new events (metrics/tally.py), the usage ledger's totals, and the
state file's size (stat). Nothing here writes, talks to Docker or NVML, or starts a process.

Under `privacy: hide_others` without metrics.token_file the endpoint is readable by every
local user, so no family names a user: the per-user families and ds01_unit_holder_info are
left out (the unit states stay).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ds01 import __version__
from ds01.metrics.tally import EventTally, Key
from ds01.model.allocation import AllocState
from ds01.model.inventory import MachineSample, UnitKind
from ds01.store import activity, grants, queue
from ds01.store.db import Database
from ds01.store.live import LiveCache

MIB = 1024 * 1024
STATES = ("free", "reserved", "active", "held")  # ds01_unit_state's state label
LIVE_STATES = (AllocState.RESERVED, AllocState.ACTIVE, AllocState.HELD)
# The lifecycle's own audit events (kind container; lifecycle/reclaim.py, activitybook.py).
LIFECYCLE_ACTIONS = frozenset(
    {"idle_warning", "runtime_warning", "idle_cleared", "keep_alive", "stopping", "stop_failed"}
)


class UsageTotals(Protocol):
    """One user's totals from the usage ledger (store/usage.py), monotonic."""

    @property
    def gpueq_seconds(self) -> float: ...
    @property
    def active_gpueq_seconds(self) -> float: ...
    @property
    def energy_joules(self) -> float: ...


@dataclass(frozen=True)
class LoopState:
    last_ok: float | None  # epoch seconds of the loop's last good pass
    failing: bool


@dataclass(frozen=True)
class Sources:
    """What the daemon hands the collector: its own state, read without side effects."""

    db: Database
    live: LiveCache
    sample: Callable[[], MachineSample | None]
    sample_interval: Callable[[], float]
    host_process_statuses: Callable[[], Iterable[str]]  # the process watch's last scan
    docker_state: Callable[[], str]  # 'up', 'down', 'unknown' (before the first pass)
    loops: Callable[[], Mapping[str, LoopState]]
    invariant_problems: Callable[[], int]
    hide_users: Callable[[], bool]
    clock: Callable[[], float]
    backend: str
    # store/usage.py's totals_by_user: read in the scrape's one read transaction.
    usage: Callable[[sqlite3.Connection], Mapping[str, UsageTotals]] | None = None


@dataclass(frozen=True)
class _Reads:
    """Everything one scrape reads from the database, in one read transaction."""

    units: tuple[tuple[str, str, str, str, str, str, float, bool, int | None], ...]
    holders: Mapping[str, tuple[str, str, str]]  # unit uuid → (user, container, state)
    idle_since: Mapping[str, float | None]  # unit uuid → the holding allocation's idle run
    allocations: tuple[tuple[str, str, float, str], ...]  # state, user, gpueq, container key
    queued: Mapping[str, int]
    grants: int
    usage: Mapping[str, UsageTotals] | None


class Ds01Collector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.s = sources
        self.tally = EventTally(sources.db)

    def describe(self) -> list[Metric]:
        return []  # families are built at scrape time; nothing is registered ahead

    def collect(self) -> Iterator[Metric]:
        now = self.s.clock()
        hide = self.s.hide_users()
        reads = self._read()
        sample = self.s.sample()
        yield from self._gpus(sample)
        yield from self._units(reads, sample, now, hide)
        yield from self._allocations(reads, hide)
        if not hide:
            yield from self._users(reads)
        yield from self._counters(self.tally.counts())
        yield from self._health(sample, now)

    # ---- reads ----------------------------------------------------------------------

    def _read(self) -> _Reads:
        with self.s.db.transaction(immediate=False) as conn:
            view = self.s.live.view(conn)
            runs = activity.idle_runs(conn)
            queued = queue.waiting_by_user(conn)
            live_grants = len(grants.live(conn))
            usage = self.s.usage(conn) if self.s.usage is not None else None
        units = tuple(
            (
                r.unit.uuid,
                r.unit.name,
                str(r.unit.gpu_index),
                r.unit.model,
                r.unit.profile or "",
                r.unit.kind.value,
                float(r.unit.gpueq),
                r.drained,
                r.unit.memory_total_mib,
            )
            for r in view.units
        )
        holders: dict[str, tuple[str, str, str]] = {}
        idle: dict[str, float | None] = {}
        allocations: list[tuple[str, str, float, str]] = []
        for a in view.live.values():
            allocations.append((a.state.value, a.user, float(a.gpueq), a.container or f"#{a.id}"))
            run = runs.get(a.id) if a.state is AllocState.ACTIVE else None
            for u in a.units:
                holders[u.uuid] = (a.user, a.container or "", a.state.value)
                if a.state is AllocState.ACTIVE:
                    # A record of an earlier activation is not this run's: not judged yet.
                    idle[u.uuid] = run[1] if run is not None and run[0] == a.updated_at else None
        return _Reads(units, holders, idle, tuple(allocations), queued, live_grants, usage)

    # ---- families -------------------------------------------------------------------

    def _gpus(self, sample: MachineSample | None) -> Iterator[Metric]:
        labels = ["gpu", "uuid", "model"]
        power = GaugeMetricFamily("ds01_gpu_power_watts", "Power draw of the GPU.", labels=labels)
        temp = GaugeMetricFamily(
            "ds01_gpu_temperature_celsius", "Core temperature of the GPU.", labels=labels
        )
        energy = CounterMetricFamily(
            "ds01_gpu_energy_joules", "Energy the GPU used since the driver loaded.", labels=labels
        )
        util = GaugeMetricFamily(
            "ds01_gpu_utilization_ratio",
            "Share of the last sample period a kernel ran on the GPU (whole GPUs; none on a"
            " GPU with MIG enabled).",
            labels=labels,
        )
        used = GaugeMetricFamily(
            "ds01_gpu_memory_used_bytes", "Frame buffer memory in use.", labels=labels
        )
        total = GaugeMetricFamily(
            "ds01_gpu_memory_total_bytes", "Frame buffer memory of the GPU.", labels=labels
        )
        for g in sample.gpus if sample is not None else ():
            lv = [str(g.index), g.uuid, g.name]
            _add(power, lv, g.power_w)
            _add(temp, lv, g.temperature_c)
            _add(energy, lv, None if g.energy_mj is None else g.energy_mj / 1000.0)
            _add(util, lv, None if g.utilization_pct is None else g.utilization_pct / 100.0)
            _add(used, lv, None if g.memory_used_mib is None else g.memory_used_mib * MIB)
            _add(total, lv, None if g.memory_total_mib is None else g.memory_total_mib * MIB)
        yield from (power, temp, energy, util, used, total)

    def _units(
        self, reads: _Reads, sample: MachineSample | None, now: float, hide: bool
    ) -> Iterator[Metric]:
        key = ["unit", "uuid"]
        info = GaugeMetricFamily(
            "ds01_unit_info",
            "An allocatable unit (a whole GPU or a MIG device); always 1.",
            labels=[*key, "gpu", "model", "profile", "kind"],
        )
        gpueq = GaugeMetricFamily(
            "ds01_unit_gpueq", "The unit's weight in GPU-equivalents (gpueq).", labels=key
        )
        state = GaugeMetricFamily(
            "ds01_unit_state",
            "1 for the unit's allocation state (free, reserved, active, held), 0 for the others.",
            labels=[*key, "state"],
        )
        drained = GaugeMetricFamily(
            "ds01_unit_drained", "1 while an admin has drained the unit.", labels=key
        )
        holder = GaugeMetricFamily(
            "ds01_unit_holder_info",
            "Who holds the unit; always 1, present only while it is allocated.",
            labels=[*key, "user", "container", "state"],
        )
        util = GaugeMetricFamily(
            "ds01_unit_utilization_ratio",
            "Utilization of a whole-GPU unit (NVML reports none per MIG device).",
            labels=key,
        )
        used = GaugeMetricFamily(
            "ds01_unit_memory_used_bytes", "Memory in use on the unit.", labels=key
        )
        total = GaugeMetricFamily("ds01_unit_memory_total_bytes", "Memory of the unit.", labels=key)
        procs = GaugeMetricFamily(
            "ds01_unit_processes", "Compute processes on the unit in the latest sample.", labels=key
        )
        idle = GaugeMetricFamily(
            "ds01_unit_idle_seconds",
            "How long the active allocation holding the unit has been idle as ds01's lifecycle"
            " judges it (0 while in use or not judged yet); only units of active allocations.",
            labels=key,
        )
        mem: dict[str, int | None] = {}
        pct: dict[str, float | None] = {}
        nprocs: dict[str, int] = {}
        if sample is not None:
            for g in sample.gpus:
                if g.mig_enabled:
                    for m in g.mig_devices:
                        mem[m.uuid] = m.memory_used_mib
                else:
                    mem[g.uuid] = g.memory_used_mib
                    pct[g.uuid] = g.utilization_pct
            for p in sample.processes:
                u = p.unit_uuid or p.gpu_uuid
                nprocs[u] = nprocs.get(u, 0) + 1
        for uuid, name, gpu, model, profile, kind, weight, is_drained, mem_total in reads.units:
            lv = [name, uuid]
            info.add_metric([*lv, gpu, model, profile, kind], 1)
            gpueq.add_metric(lv, weight)
            held = reads.holders.get(uuid)
            now_state = held[2] if held is not None else "free"
            for s in STATES:
                state.add_metric([*lv, s], 1.0 if s == now_state else 0.0)
            drained.add_metric(lv, 1.0 if is_drained else 0.0)
            if held is not None and not hide:
                holder.add_metric([*lv, held[0], held[1], held[2]], 1)
            if kind == UnitKind.GPU.value:
                value = pct.get(uuid)
                _add(util, lv, None if value is None else value / 100.0)
            in_use = mem.get(uuid)
            _add(used, lv, None if in_use is None else in_use * MIB)
            _add(total, lv, None if mem_total is None else mem_total * MIB)
            if sample is not None:
                procs.add_metric(lv, nprocs.get(uuid, 0))
            if uuid in reads.idle_since:
                since = reads.idle_since[uuid]
                idle.add_metric(lv, 0.0 if since is None else max(0.0, now - since))
        yield from (info, gpueq, state, drained)
        if not hide:
            yield holder
        yield from (util, used, total, procs, idle)

    def _allocations(self, reads: _Reads, hide: bool) -> Iterator[Metric]:
        count = GaugeMetricFamily(
            "ds01_allocations", "Live allocations by state.", labels=["state"]
        )
        weight = GaugeMetricFamily(
            "ds01_allocations_gpueq",
            "GPU-equivalents held by live allocations, by state.",
            labels=["state"],
        )
        n = {s.value: 0 for s in LIVE_STATES}
        g = {s.value: 0.0 for s in LIVE_STATES}
        for state, _user, gpueq, _container in reads.allocations:
            n[state] += 1
            g[state] += gpueq
        for s, number in n.items():
            count.add_metric([s], number)
            weight.add_metric([s], g[s])
        capacity = sum(u[6] for u in reads.units)
        drained = sum(u[6] for u in reads.units if u[7])
        free = sum(u[6] for u in reads.units if not u[7] and u[0] not in reads.holders)
        yield count
        yield weight
        yield _gauge("ds01_gpueq_capacity", "GPU-equivalents of every unit present.", capacity)
        yield _gauge("ds01_gpueq_free", "GPU-equivalents neither allocated nor drained.", free)
        yield _gauge("ds01_gpueq_drained", "GPU-equivalents of drained units.", drained)
        yield _gauge(
            "ds01_queue_waiting", "Queued deploys waiting for capacity.", sum(reads.queued.values())
        )
        yield _gauge("ds01_grants_active", "Live bare-metal grants.", reads.grants)
        statuses: dict[str, int] = {}
        for status in self.s.host_process_statuses():
            statuses[status] = statuses.get(status, 0) + 1
        host = GaugeMetricFamily(
            "ds01_host_gpu_processes",
            "GPU compute processes by what the host process watch found (violation: a host"
            " process of a user without a grant or exemption).",
            labels=["status"],
        )
        for status in (
            "container",
            "container_unallocated",
            "system",
            "exempt",
            "granted",
            "violation",
        ):
            host.add_metric([status], statuses.get(status, 0))
        yield host

    def _users(self, reads: _Reads) -> Iterator[Metric]:
        held = GaugeMetricFamily(
            "ds01_user_gpueq",
            "GPU-equivalents the user's live allocations hold.",
            labels=["user"],
        )
        containers = GaugeMetricFamily(
            "ds01_user_containers",
            "Containers (or bare reservations) holding an allocation.",
            labels=["user"],
        )
        queued = GaugeMetricFamily(
            "ds01_user_queued", "The user's queued deploys still waiting.", labels=["user"]
        )
        gpueq: dict[str, float] = {}
        boxes: dict[str, set[str]] = {}
        for _state, user, weight, container in reads.allocations:
            gpueq[user] = gpueq.get(user, 0.0) + weight
            boxes.setdefault(user, set()).add(container)
        for user in sorted(gpueq):
            held.add_metric([user], gpueq[user])
            containers.add_metric([user], len(boxes[user]))
        for user in sorted(reads.queued):
            queued.add_metric([user], reads.queued[user])
        yield from (held, containers, queued)
        if reads.usage is None:
            return
        seconds = CounterMetricFamily(
            "ds01_user_gpueq_seconds",
            "GPU-equivalent seconds the user's allocations held (usage ledger).",
            labels=["user"],
        )
        active = CounterMetricFamily(
            "ds01_user_active_gpueq_seconds",
            "GPU-equivalent seconds weighted by activity (usage ledger).",
            labels=["user"],
        )
        energy = CounterMetricFamily(
            "ds01_user_energy_joules",
            "Energy attributed to the user's allocations (usage ledger).",
            labels=["user"],
        )
        totals = reads.usage
        for user in sorted(totals):
            t = totals[user]
            seconds.add_metric([user], t.gpueq_seconds)
            active.add_metric([user], t.active_gpueq_seconds)
            energy.add_metric([user], t.energy_joules)
        yield from (seconds, active, energy)

    def _counters(self, counts: Mapping[Key, int]) -> Iterator[Metric]:
        refusals = CounterMetricFamily(
            "ds01_allocation_refusals",
            "Refused allocation requests, by reason.",
            labels=["reason"],
        )
        releases = CounterMetricFamily(
            "ds01_allocation_releases", "Released allocations, by reason.", labels=["reason"]
        )
        lifecycle = CounterMetricFamily(
            "ds01_lifecycle_actions",
            "The lifecycle's actions (warnings, stops, keep-alives), by action and reason.",
            labels=["action", "reason"],
        )
        gate = CounterMetricFamily(
            "ds01_gate_refusals", "Docker requests the gate refused, by rule.", labels=["rule"]
        )
        devices = CounterMetricFamily(
            "ds01_device_node_changes",
            "Passes of the device watch that restored, created or failed to fix /dev/nvidia*"
            " nodes (restored: drift undone, e.g. the uvm gate reset by a root CUDA start).",
            labels=["action"],
        )
        host = CounterMetricFamily(
            "ds01_host_process_actions",
            "What the host GPU process watch did (reports, signals), by action.",
            labels=["action"],
        )
        grant = CounterMetricFamily(
            "ds01_grant_events", "Bare-metal grant events, by action.", labels=["action"]
        )
        queued = CounterMetricFamily(
            "ds01_queue_events", "Queue events, by action.", labels=["action"]
        )
        audit = CounterMetricFamily(
            "ds01_audit_events", "Events in the audit log, by kind.", labels=["kind"]
        )
        by: dict[tuple[str, ...], int] = {}

        def add(family: str, *labels: str, n: int) -> None:
            by[(family, *labels)] = by.get((family, *labels), 0) + n

        for (kind, action, reason), n in counts.items():
            add("audit", kind, n=n)
            if kind == "alloc" and action == "refused":
                add("refusals", reason, n=n)
            elif kind == "alloc" and action == "released":
                add("releases", reason, n=n)
            elif kind == "container" and action in LIFECYCLE_ACTIONS:
                add("lifecycle", action, reason, n=n)
            elif kind == "gate" and action == "refused":
                add("gate", reason, n=n)
            elif kind == "host" and action.startswith("devices_"):
                add("devices", action, n=n)
            elif kind == "host" and action.startswith("process_"):
                add("host", action, n=n)
            elif kind == "grant":
                add("grant", action, n=n)
            elif kind == "queue":
                add("queue", action, n=n)
        families = {
            "refusals": refusals,
            "releases": releases,
            "lifecycle": lifecycle,
            "gate": gate,
            "devices": devices,
            "host": host,
            "grant": grant,
            "queue": queued,
            "audit": audit,
        }
        for (family, *labels), n in sorted(by.items()):
            if family == "devices":
                continue
            families[family].add_metric(labels, n)
        # Present from the start at 0, so increase() sees the first restore.
        for name in ("devices_restored", "devices_created", "devices_failed"):
            devices.add_metric([name], by.get(("devices", name), 0))
        yield from families.values()

    def _health(self, sample: MachineSample | None, now: float) -> Iterator[Metric]:
        if sample is not None and sample.taken_at is not None:
            taken = sample.taken_at.timestamp()
            yield _gauge(
                "ds01_sample_age_seconds",
                "Age of ds01d's latest GPU sample.",
                max(0.0, now - taken),
            )
            yield _gauge(
                "ds01_sample_timestamp_seconds", "When ds01d's latest GPU sample was taken.", taken
            )
        yield _gauge(
            "ds01_sample_interval_seconds",
            "gpu.sample_interval: how often ds01d samples.",
            self.s.sample_interval(),
        )
        yield _gauge(
            "ds01_state_db_bytes",
            "Size of the state database with its WAL.",
            _db_bytes(self.s.db.path),
        )
        docker = self.s.docker_state()
        if docker in ("up", "down"):
            yield _gauge(
                "ds01_docker_up",
                "1 while ds01d reaches the Docker engine, 0 while it does not.",
                1.0 if docker == "up" else 0.0,
            )
        failing = GaugeMetricFamily(
            "ds01_loop_failing", "1 while a periodic loop of ds01d fails.", labels=["loop"]
        )
        last = GaugeMetricFamily(
            "ds01_loop_last_ok_timestamp_seconds",
            "When a loop of ds01d last passed.",
            labels=["loop"],
        )
        for name, st in sorted(self.s.loops().items()):
            failing.add_metric([name], 1.0 if st.failing else 0.0)
            if st.last_ok is not None:
                last.add_metric([name], st.last_ok)
        yield failing
        yield last
        yield _gauge(
            "ds01_state_invariant_violations",
            "Broken state invariants the last check found (ds01 doctor lists them).",
            self.s.invariant_problems(),
        )
        build = GaugeMetricFamily(
            "ds01_build_info",
            "ds01d's version and GPU backend; always 1.",
            labels=["version", "backend"],
        )
        build.add_metric([__version__, self.s.backend], 1)
        yield build


def _add(
    family: GaugeMetricFamily | CounterMetricFamily, labels: list[str], v: float | None
) -> None:
    """Unknown is left out, never reported as 0 (STYLE 2)."""
    if v is not None:
        family.add_metric(labels, float(v))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _db_bytes(path: Path) -> float:
    total = 0
    for p in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(OSError):  # no WAL file between checkpoints
            total += os.stat(p).st_size
    return float(total)

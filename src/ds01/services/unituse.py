"""What runs on each unit, for the scheduler's snapshot (issue 13, item 2; scheduler/busy.py).

Owns turning the daemon's latest MachineSample and the host process watch's latest view into
one UnitUse per unit: sample once, read many — no NVML call and no /proc read here, so a
placement decision costs nothing extra. Processes that run in a ds01 container with a live
allocation are not foreign and are left out; the owner of every other one is the user the
process watch found for its pid (None when the watch has not seen it: gone, or not a process
of this host, as the simulated machine's made-up pids are).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from ds01.model.inventory import MachineSample
from ds01.scheduler.snapshot import ForeignProcess, UnitUse
from ds01.services.hostproc import HostProcess, ProcStatus


def unit_use(sample: MachineSample | None, seen: Iterable[HostProcess]) -> dict[str, UnitUse]:
    """unit uuid → UnitUse; empty before the first sample."""
    if sample is None:
        return {}
    by_pid = {p.pid: p for p in seen}
    memory: dict[str, int | None] = {}
    utilization: dict[str, float | None] = {}
    for g in sample.gpus:
        if g.mig_devices:
            for m in g.mig_devices:
                memory[m.uuid] = m.memory_used_mib
                utilization[m.uuid] = None  # NVML reports none per MIG device
        else:
            memory[g.uuid] = g.memory_used_mib
            utilization[g.uuid] = g.utilization_pct
    procs: dict[str, list[ForeignProcess]] = {}
    for p in sample.processes:
        host = by_pid.get(p.pid)
        if host is not None and host.status is ProcStatus.CONTAINER:
            continue  # a ds01 container's own work
        procs.setdefault(p.unit_uuid or p.gpu_uuid, []).append(
            ForeignProcess(
                pid=p.pid,
                name=p.name or (host.name if host else None),
                owner=(host.user or f"uid {host.uid}") if host is not None else None,
                used_memory_mib=p.used_memory_mib,
            )
        )
    return {
        uuid: UnitUse(
            processes=tuple(procs.get(uuid, ())),
            memory_used_mib=memory[uuid],
            utilization_pct=utilization[uuid],
        )
        for uuid in memory
    }


class UnitUseMemo:
    """unit_use() of the latest sample and process scan, computed once per pair: every
    placement decision asks, and the inputs change only every sample interval. Compared by
    identity — the daemon replaces the sample and the scan's tuple, never mutates them."""

    def __init__(
        self,
        sample: Callable[[], MachineSample | None],
        seen: Callable[[], tuple[HostProcess, ...]],
    ) -> None:
        self._sample = sample
        self._seen = seen
        self._kept: tuple[MachineSample | None, tuple[HostProcess, ...], dict[str, UnitUse]] | None
        self._kept = None

    def __call__(self) -> Mapping[str, UnitUse]:
        sample, seen = self._sample(), self._seen()
        kept = self._kept  # one read: another thread may replace it meanwhile
        if kept is not None and kept[0] is sample and kept[1] is seen:
            return kept[2]
        use = unit_use(sample, seen)
        self._kept = (sample, seen, use)
        return use

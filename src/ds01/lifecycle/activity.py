"""Is a unit in use? One verdict per unit from one MachineSample (issue 15, item 1). Pure: no
NVML, no Docker, no clock — the daemon's latest sample is read, never a new one taken.

The signal depends on what the device kind reports (docs/containers.md, "Idle and runtime
limits"):

- A whole GPU that reports utilization (NVML's utilization.gpu): active at or above the
  owner's `policy.idle_gpu_util_pct`, idle below it. Processes that hold memory without
  computing (an idle notebook kernel) do not keep it active: that is what idle reclaim is for.
- A MIG device — NVML reports no utilization per MIG device (BRIEF §6 item 5), and the parent
  GPU's utilization is never used, it mixes the work of every instance on the GPU: active while
  a compute process runs on it, or while its memory in use exceeds MIG_RESERVED_MIB (what the
  driver keeps on an empty instance). Without utilization ds01 cannot tell a process that
  computes from one that only holds the device, so on MIG a process present counts as use.
- A whole GPU whose utilization is unknown (None): judged like a MIG device.
- A unit the sample does not show at all: unknown (None). Unknown is never idle.

The container counts too (lifecycle/cpu.py): its CPU use at or above the owner's
`policy.idle_cpu_pct` (percent of one core) makes the allocation active, whatever its units
show — a job preparing data on the CPU is in use. Below it, the units decide. When the reading
is unknown (the first pass that sees the container, a host without cgroup CPU accounting) the
units decide alone: the GPU signal is the one every host has, and an unknown CPU must not hold
the GPUs forever. `idle_cpu_pct: 0` turns the CPU signal off.

The parent GPU's utilization and the processes of other units never count for a unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from ds01.model.inventory import MachineSample

# Memory an empty MIG device shows in use: the driver's own reservation. Real captures show
# 9-22 MiB on empty H100/H200 instances (tests/fixtures/nvidia-smi/
# table-1xH200-mig-5devices-idle-driver590.txt); anything above this is a program's memory.
MIG_RESERVED_MIB = 64


class Signal(StrEnum):
    """What decided a unit's verdict."""

    UTILIZATION = "utilization"  # a whole GPU's utilization.gpu
    PROCESSES = "processes"  # compute processes on the unit (MIG; a GPU without utilization)
    MEMORY = "memory"  # memory in use above the driver's reservation (MIG, same)
    NONE = "none"  # no process and no memory in use (MIG, same): idle
    MISSING = "missing"  # the unit is not in the sample: unknown
    CPU = "cpu"  # the container's CPU use (percent of one core)


@dataclass(frozen=True)
class UnitActivity:
    uuid: str
    active: bool | None  # None: unknown (never counted as idle)
    signal: Signal
    detail: str  # for people: '3% < 5%', '1 process', '2048 MiB in use'


def unit_activity(sample: MachineSample, idle_gpu_util_pct: float) -> dict[str, UnitActivity]:
    """unit uuid → its verdict, for every unit in the sample."""
    procs: dict[str, int] = {}
    for p in sample.processes:
        key = p.unit_uuid or p.gpu_uuid
        procs[key] = procs.get(key, 0) + 1
    out: dict[str, UnitActivity] = {}
    for g in sample.gpus:
        if g.mig_enabled:
            for m in g.mig_devices:
                out[m.uuid] = _by_processes(m.uuid, procs.get(m.uuid, 0), m.memory_used_mib)
        elif g.utilization_pct is not None:
            util = g.utilization_pct
            busy = util >= idle_gpu_util_pct
            sign = ">=" if busy else "<"
            out[g.uuid] = UnitActivity(
                g.uuid, busy, Signal.UTILIZATION, f"{util:g}% {sign} {idle_gpu_util_pct:g}%"
            )
        else:
            out[g.uuid] = _by_processes(g.uuid, procs.get(g.uuid, 0), g.memory_used_mib)
    return out


def _by_processes(uuid: str, processes: int, memory_used_mib: int | None) -> UnitActivity:
    if processes:
        what = f"{processes} process" + ("es" if processes > 1 else "")
        return UnitActivity(uuid, True, Signal.PROCESSES, what)
    if memory_used_mib is not None and memory_used_mib > MIG_RESERVED_MIB:
        return UnitActivity(uuid, True, Signal.MEMORY, f"{memory_used_mib} MiB in use")
    return UnitActivity(uuid, False, Signal.NONE, "no process, no memory in use")


def container_activity(cpu_pct: float | None, idle_cpu_pct: float) -> UnitActivity | None:
    """The container's own verdict from its CPU use (percent of one core since the previous
    pass): active at or above idle_cpu_pct, idle below; None — the units decide alone — when
    the reading is unknown or idle_cpu_pct is 0 (the CPU signal turned off)."""
    if cpu_pct is None or idle_cpu_pct <= 0:
        return None
    busy = cpu_pct >= idle_cpu_pct
    sign = ">=" if busy else "<"
    return UnitActivity("container", busy, Signal.CPU, f"{cpu_pct:.0f}% {sign} {idle_cpu_pct:g}%")


@dataclass(frozen=True)
class AllocationActivity:
    """An allocation's verdict: idle (False) when every unit is idle, active (True) when any
    unit is, else unknown (None); `signal` says which signals decided, per unit."""

    active: bool | None
    signal: str


def allocation_activity(
    units: Iterable[str],
    by_unit: Mapping[str, UnitActivity],
    container: UnitActivity | None = None,
) -> AllocationActivity:
    """`container`: the container's CPU verdict (container_activity), None when unknown."""
    verdicts = [
        by_unit.get(u, UnitActivity(u, None, Signal.MISSING, "not in the sample")) for u in units
    ]
    if not verdicts:
        return AllocationActivity(None, "no GPU")
    if container is not None:
        verdicts.append(container)
    text = ", ".join(f"{v.signal.value}: {v.detail}" for v in verdicts)
    if any(v.active for v in verdicts):
        return AllocationActivity(True, text)
    if any(v.active is None for v in verdicts):
        return AllocationActivity(None, text)
    return AllocationActivity(False, text)

"""The stable JSON form of an inventory sample (`ds01 gpu inventory --json`, `gpu status --json`).

Owns the field names and their meaning; docs/inventory.md documents every field and a test
pins them. Unknown values are JSON null, never 0. gpueq is given twice: "gpueq" as a number
rounded to 4 places for people and plots, "gpueq_exact" as the exact fraction ('3/7') for
anything that adds them up.

Must not: read any backend, or drop or rename a field (add new ones instead).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ds01.model.gpueq import GpuEq
from ds01.model.inventory import (
    Gpu,
    GpuProcess,
    MachineSample,
    MigDevice,
    Unit,
    UnitKind,
    UnkeyedMigDevice,
    unit_name,
)


def _gpueq(value: GpuEq | None) -> dict[str, Any]:
    if value is None:
        return {"gpueq": None, "gpueq_exact": None}
    return {"gpueq": round(float(value), 4), "gpueq_exact": value.as_text()}


def _mig(gpu_index: int, m: MigDevice) -> dict[str, Any]:
    return {
        "uuid": m.uuid,
        "unit_name": unit_name(gpu_index, UnitKind.MIG, m.gpu_instance_id, m.compute_instance_id),
        "profile": m.profile,
        "gpu_instance_id": m.gpu_instance_id,
        "compute_instance_id": m.compute_instance_id,
        "memory_total_mib": m.memory_total_mib,
        **_gpueq(m.gpueq),
        "index": m.index,
        "memory_used_mib": m.memory_used_mib,
    }


def _unkeyed_mig(gpu_index: int, m: UnkeyedMigDevice) -> dict[str, Any]:
    """A MIG device a capture shows without its UUID: the same fields, uuid and gpueq null
    (it is never a unit)."""
    return {
        "uuid": None,
        "unit_name": unit_name(gpu_index, UnitKind.MIG, m.gpu_instance_id, m.compute_instance_id),
        "profile": m.profile,
        "gpu_instance_id": m.gpu_instance_id,
        "compute_instance_id": m.compute_instance_id,
        "memory_total_mib": m.memory_total_mib,
        **_gpueq(None),
        "index": m.index,
        "memory_used_mib": m.memory_used_mib,
    }


def _gpu(g: Gpu) -> dict[str, Any]:
    return {
        "index": g.index,
        "uuid": g.uuid,
        "name": g.name,
        "memory_total_mib": g.memory_total_mib,
        "mig_enabled": g.mig_enabled,
        "unit_name": None if g.mig_enabled else unit_name(g.index, UnitKind.GPU),
        "mig_devices": [_mig(g.index, m) for m in g.mig_devices]
        + [_unkeyed_mig(g.index, m) for m in g.unkeyed_mig_devices],
        "memory_used_mib": g.memory_used_mib,
        "utilization_pct": g.utilization_pct,
        "temperature_c": g.temperature_c,
        "power_w": g.power_w,
        "energy_mj": g.energy_mj,
        "numa_node": g.numa_node,
        "nvlink_group": g.nvlink_group,
        "pci_bus_id": g.pci_bus_id,
    }


def _process(p: GpuProcess, names: Mapping[str, str]) -> dict[str, Any]:
    return {
        "pid": p.pid,
        "gpu_uuid": p.gpu_uuid,
        "used_memory_mib": p.used_memory_mib,
        "name": p.name,
        "unit_uuid": p.unit_uuid,
        "unit_name": names.get(p.unit_uuid or p.gpu_uuid),
    }


def unit_names(sample: MachineSample) -> dict[str, str]:
    """UUID → the name every view shows (model/inventory.py unit_name), for each GPU and MIG
    device of the sample; a GPU with MIG on is named by its index too (a process whose MIG
    device is unknown is shown on it)."""
    names: dict[str, str] = {}
    for g in sample.gpus:
        names[g.uuid] = unit_name(g.index, UnitKind.GPU)
        for m in g.mig_devices:
            names[m.uuid] = unit_name(
                g.index, UnitKind.MIG, m.gpu_instance_id, m.compute_instance_id
            )
    return names


def sample_to_json(sample: MachineSample) -> dict[str, Any]:
    """The whole sample: GPUs with their MIG devices, and compute processes."""
    names = unit_names(sample)
    return {
        "gpus": [_gpu(g) for g in sample.gpus],
        "processes": [_process(p, names) for p in sample.processes],
        "source": sample.source,
        "taken_at": sample.taken_at.isoformat() if sample.taken_at else None,
        "driver_version": sample.driver_version,
        "warnings": list(sample.warnings),
    }


def unit_utilization(sample: MachineSample, unit: Unit) -> float | None:
    """A unit's utilization: the GPU's for a whole GPU; None for a MIG device, because NVML
    does not measure utilization per MIG device."""
    if unit.kind is UnitKind.MIG:
        return None
    for g in sample.gpus:
        if g.uuid == unit.uuid:
            return g.utilization_pct
    return None


def unit_memory_used(sample: MachineSample, unit: Unit) -> int | None:
    for g in sample.gpus:
        if unit.kind is UnitKind.GPU and g.uuid == unit.uuid:
            return g.memory_used_mib
        for m in g.mig_devices:
            if m.uuid == unit.uuid:
                return m.memory_used_mib
    return None


def unit_processes(sample: MachineSample, unit: Unit) -> list[GpuProcess]:
    """Processes on a unit. A process without a unit UUID counts on its GPU."""
    return [p for p in sample.processes if (p.unit_uuid or p.gpu_uuid) == unit.uuid]


def units_to_json(
    sample: MachineSample, holders: Mapping[str, str | None] | None = None
) -> dict[str, Any]:
    """The allocatable units. With `holders` (unit UUID → who holds it), each unit also gets
    "holder" (null when free); without it the field is absent: this caller does not know."""
    units: list[dict[str, Any]] = []
    for u in sample.units():
        procs = unit_processes(sample, u)
        entry: dict[str, Any] = {
            "uuid": u.uuid,
            "name": u.name,
            "kind": u.kind.value,
            "gpu_index": u.gpu_index,
            "gpu_uuid": u.gpu_uuid,
            "model": u.model,
            "profile": u.profile,
            "label": u.label,
            "memory_total_mib": u.memory_total_mib,
            "memory_used_mib": unit_memory_used(sample, u),
            "utilization_pct": unit_utilization(sample, u),
            **_gpueq(u.gpueq),
            "gpu_instance_id": u.gpu_instance_id,
            "compute_instance_id": u.compute_instance_id,
            "numa_node": u.numa_node,
            "nvlink_group": u.nvlink_group,
            "process_count": len(procs),
        }
        if holders is not None:
            entry["holder"] = holders.get(u.uuid)
        units.append(entry)
    return {
        "units": units,
        "total_gpueq": GpuEq.total(u.gpueq for u in sample.units()).as_text(),
        "source": sample.source,
        "taken_at": sample.taken_at.isoformat() if sample.taken_at else None,
        "warnings": list(sample.warnings),
    }

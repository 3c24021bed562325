"""Joining several captures of one machine into one SmiCapture.

Owns the join rules. It exists because no single nvidia-smi output names everything (see
capture.py): `-q -x` has memory, GI/CI ids and processes but no MIG UUIDs; `-L` has every UUID and
profile but nothing else; a plain table has no UUIDs at all. Taken together on one machine they
describe it fully.

Rules:

* GPUs are the same GPU when their UUIDs match; failing a UUID on either side, their PCI bus ids;
  failing those, their indices. MIG devices of one GPU: by UUID, else by MIG device index, else by
  (GPU instance, compute instance).
* Identity fields (UUID, index, bus id, name, MIG mode, profile, GI/CI ids, driver version) must
  agree wherever both captures know them; a disagreement is a CaptureError, because it means the
  captures come from different machines or from before and after a reconfiguration. A name cut
  short with '...' (tables do that) agrees with the full name it starts.
* Readings (memory, utilization, temperature, power, process memory) come from the first capture
  that has them: they legitimately differ between captures taken seconds apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TypeVar

from ds01.errors import CaptureError
from ds01.inventory.smi.capture import SmiCapture, SmiGpu, SmiMigDevice, SmiProcess

T = TypeVar("T")


def merge_captures(captures: Sequence[SmiCapture]) -> SmiCapture:
    """One capture holding what all of `captures` say about one machine (see module docstring)."""
    if not captures:
        raise CaptureError("no captures given")
    merged = captures[0]
    for other in captures[1:]:
        merged = _merge_two(merged, other)
    return merged


def _merge_two(a: SmiCapture, b: SmiCapture) -> SmiCapture:
    source = f"{a.source} + {b.source}"
    gpus = list(a.gpus)
    for g in b.gpus:
        at = next((i for i, mine in enumerate(gpus) if _same_gpu(mine, g)), None)
        if at is None:
            gpus.append(g)
        else:
            gpus[at] = _merge_gpu(gpus[at], g, source)
    _check_indices(gpus, source)
    if all(g.index is not None for g in gpus):
        gpus.sort(key=lambda g: g.index or 0)
    return SmiCapture(
        formats=a.formats + b.formats,
        source=source,
        gpus=tuple(gpus),
        processes=_merge_processes(a.processes + b.processes, gpus),
        driver_version=_agree(a.driver_version, b.driver_version, source, "the driver version"),
        timestamp=a.timestamp or b.timestamp,
        warnings=a.warnings + tuple(w for w in b.warnings if w not in a.warnings),
    )


def _check_indices(gpus: list[SmiGpu], source: str) -> None:
    """Two GPUs that did not match but share an index mean two machines (or a reboot)."""
    by_index: dict[int, SmiGpu] = {}
    for g in gpus:
        if g.index is None:
            continue
        other = by_index.setdefault(g.index, g)
        if other is not g:
            raise CaptureError(
                f"{source}: the captures disagree on which GPU is GPU {g.index} "
                f"({_describe(other)} vs {_describe(g)}); "
                "they must come from one machine at one moment"
            )


def _describe(g: SmiGpu) -> str:
    return g.uuid or g.pci_bus_id or g.name or "unnamed"


def _same(a: object, b: object) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return a == b


def _first_known(pairs: Sequence[tuple[object, object]]) -> bool:
    """Whether the first attribute both sides know is equal; False when none is known to both."""
    for mine, theirs in pairs:
        if mine is not None and theirs is not None:
            return _same(mine, theirs)
    return False


def _same_gpu(a: SmiGpu, b: SmiGpu) -> bool:
    guessed = a.index_from_position or b.index_from_position
    indices = (None, None) if guessed else (a.index, b.index)
    return _first_known([(a.uuid, b.uuid), (a.pci_bus_id, b.pci_bus_id), indices])


def _same_mig(a: SmiMigDevice, b: SmiMigDevice) -> bool:
    ids_a = None if a.gpu_instance_id is None else (a.gpu_instance_id, a.compute_instance_id)
    ids_b = None if b.gpu_instance_id is None else (b.gpu_instance_id, b.compute_instance_id)
    return _first_known([(a.uuid, b.uuid), (a.index, b.index), (ids_a, ids_b)])


def _first(a: T | None, b: T | None) -> T | None:
    return a if a is not None else b


def _agree(a: T | None, b: T | None, source: str, what: str) -> T | None:
    if a is None or b is None or _same(a, b):
        return _first(a, b)
    raise CaptureError(
        f"{source}: the captures disagree on {what} ({a!r} vs {b!r}); "
        "they must come from one machine at one moment"
    )


def _name(a: str | None, b: str | None, source: str, what: str) -> str | None:
    for short, full in ((a, b), (b, a)):
        if short and full and short.endswith("...") and full.startswith(short[:-3]):
            return full
    return _agree(a, b, source, what)


def _merge_gpu(a: SmiGpu, b: SmiGpu, source: str) -> SmiGpu:
    what = f"GPU {_first(a.index, b.index)}"
    if a.index_from_position != b.index_from_position:
        index = b.index if a.index_from_position else a.index
    else:
        index = _agree(a.index, b.index, source, f"{what}'s index")
    return SmiGpu(
        index=index,
        index_from_position=a.index_from_position and b.index_from_position,
        uuid=_agree(a.uuid, b.uuid, source, f"{what}'s UUID"),
        name=_name(a.name, b.name, source, f"{what}'s name"),
        pci_bus_id=_agree(a.pci_bus_id, b.pci_bus_id, source, f"{what}'s bus id"),
        memory_total_mib=_first(a.memory_total_mib, b.memory_total_mib),
        memory_used_mib=_first(a.memory_used_mib, b.memory_used_mib),
        mig_enabled=_agree(a.mig_enabled, b.mig_enabled, source, f"{what}'s MIG mode"),
        mig_devices=_merge_migs(a.mig_devices, b.mig_devices, source, what),
        lists_mig_devices=a.lists_mig_devices or b.lists_mig_devices,
        utilization_pct=_first(a.utilization_pct, b.utilization_pct),
        temperature_c=_first(a.temperature_c, b.temperature_c),
        power_w=_first(a.power_w, b.power_w),
    )


def _merge_migs(
    a: tuple[SmiMigDevice, ...], b: tuple[SmiMigDevice, ...], source: str, gpu: str
) -> tuple[SmiMigDevice, ...]:
    migs = list(a)
    for m in b:
        at = next((i for i, mine in enumerate(migs) if _same_mig(mine, m)), None)
        if at is None:
            migs.append(m)
            continue
        x = migs[at]
        what = f"{gpu} MIG device {_first(x.index, m.index)}'s"
        migs[at] = SmiMigDevice(
            index=_agree(x.index, m.index, source, f"{what} index"),
            uuid=_agree(x.uuid, m.uuid, source, f"{what} UUID"),
            profile=_agree(x.profile, m.profile, source, f"{what} profile"),
            gpu_instance_id=_agree(x.gpu_instance_id, m.gpu_instance_id, source, f"{what} GI"),
            compute_instance_id=_agree(
                x.compute_instance_id, m.compute_instance_id, source, f"{what} CI"
            ),
            memory_total_mib=_first(x.memory_total_mib, m.memory_total_mib),
            memory_used_mib=_first(x.memory_used_mib, m.memory_used_mib),
            sm_count=_first(x.sm_count, m.sm_count),
        )
    if all(m.index is not None for m in migs):
        migs.sort(key=lambda m: m.index or 0)
    return tuple(migs)


def _same_process(a: SmiProcess, b: SmiProcess) -> bool:
    """Same pid on the same GPU, in the same GI/CI where both captures say which."""
    if a.pid != b.pid:
        return False
    if not _first_known(
        [(a.gpu_uuid, b.gpu_uuid), (a.gpu_pci_bus_id, b.gpu_pci_bus_id), (a.gpu_index, b.gpu_index)]
    ):
        return False
    return all(
        x is None or y is None or x == y
        for x, y in (
            (a.gpu_instance_id, b.gpu_instance_id),
            (a.compute_instance_id, b.compute_instance_id),
        )
    )


def _merge_processes(
    processes: tuple[SmiProcess, ...], gpus: list[SmiGpu]
) -> tuple[SmiProcess, ...]:
    out: list[SmiProcess] = []
    for p in processes:
        probe = SmiGpu(index=p.gpu_index, uuid=p.gpu_uuid, pci_bus_id=p.gpu_pci_bus_id)
        gpu = next((g for g in gpus if _same_gpu(g, probe)), None)
        if gpu is not None:
            # Name the GPU every way the merged captures can, so to_sample() finds it.
            p = replace(p, gpu_uuid=gpu.uuid, gpu_index=gpu.index, gpu_pci_bus_id=gpu.pci_bus_id)  # noqa: PLW2901
        at = next((i for i, q in enumerate(out) if _same_process(q, p)), None)
        if at is None:
            out.append(p)
            continue
        q = out[at]
        out[at] = SmiProcess(
            pid=q.pid,
            gpu_uuid=_first(q.gpu_uuid, p.gpu_uuid),
            gpu_index=_first(q.gpu_index, p.gpu_index),
            gpu_pci_bus_id=_first(q.gpu_pci_bus_id, p.gpu_pci_bus_id),
            gpu_instance_id=_first(q.gpu_instance_id, p.gpu_instance_id),
            compute_instance_id=_first(q.compute_instance_id, p.compute_instance_id),
            used_memory_mib=_first(q.used_memory_mib, p.used_memory_mib),
            # Tables cut long names; the longer spelling is the fuller one, so names never clash.
            name=max(q.name or "", p.name or "", key=len) or None,
            type=_first(q.type, p.type),
        )
    return tuple(out)

"""What the GPU inventory reports: GPUs, MIG devices, processes, and the leaf Unit.

A Unit is what ds01 allocates: a whole GPU with MIG off, or one MIG device (BRIEF §4). Units are
keyed by UUID, never by index. Values a backend does not know are None ("unknown"), never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from ds01.model.gpueq import GpuEq


class UnitKind(StrEnum):
    GPU = "gpu"
    MIG = "mig"


@dataclass(frozen=True)
class MigDevice:
    """One MIG device (a compute instance inside a GPU instance).

    utilization_pct is None: NVML does not report utilization per MIG device.
    """

    uuid: str
    profile: str | None  # "3g.40gb", "1c.3g.71gb"; None when the source does not say
    gpu_instance_id: int | None
    compute_instance_id: int | None
    memory_total_mib: int | None
    gpueq: GpuEq | None  # None only when the profile is unknown
    index: int | None = None  # the driver's MIG device index on its GPU
    memory_used_mib: int | None = None


@dataclass(frozen=True)
class UnkeyedMigDevice:
    """A MIG device an nvidia-smi capture shows without its UUID (`-q -x`, `-q` and the plain
    table print none). It is listed so the inventory tells the whole truth, and it is a separate
    type so that it can never become a unit: units are keyed by UUID (BRIEF §4)."""

    index: int | None  # the driver's MIG device index on its GPU
    gpu_instance_id: int | None
    compute_instance_id: int | None
    memory_total_mib: int | None
    memory_used_mib: int | None = None
    profile: str | None = None


@dataclass(frozen=True)
class Gpu:
    """One physical GPU. mig_enabled None = the source does not say (e.g. MIG unsupported)."""

    index: int
    uuid: str
    name: str
    memory_total_mib: int | None
    mig_enabled: bool | None
    mig_devices: tuple[MigDevice, ...] = ()
    memory_used_mib: int | None = None
    utilization_pct: float | None = None  # nvidia-smi --query-gpu=utilization.gpu
    temperature_c: float | None = None  # temperature.gpu
    power_w: float | None = None  # power.draw
    energy_mj: int | None = None  # total_energy_consumption (millijoules since driver load)
    numa_node: int | None = None
    nvlink_group: str | None = None
    pci_bus_id: str | None = None
    # MIG devices the source shows but cannot name by UUID (captures only; never units).
    unkeyed_mig_devices: tuple[UnkeyedMigDevice, ...] = ()


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on a GPU. unit_uuid is the MIG device when known, else the GPU."""

    pid: int
    gpu_uuid: str
    used_memory_mib: int | None
    name: str | None
    unit_uuid: str | None = None


@dataclass(frozen=True)
class Unit:
    """An allocatable leaf device: a whole GPU (MIG off) or a MIG device."""

    uuid: str
    kind: UnitKind
    gpu_uuid: str
    gpu_index: int
    model: str
    memory_total_mib: int | None
    gpueq: GpuEq
    profile: str | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    numa_node: int | None = None
    nvlink_group: str | None = None

    @property
    def name(self) -> str:
        """The one name of this unit in every table, JSON document, event and refusal:
        '3' for a whole GPU, '7/1.0' for a MIG device (unit_name)."""
        return unit_name(self.gpu_index, self.kind, self.gpu_instance_id, self.compute_instance_id)

    @property
    def title(self) -> str:
        """The name with its kind, for sentences: 'GPU 3', 'MIG 7/1.0'."""
        return f"{'MIG' if self.kind is UnitKind.MIG else 'GPU'} {self.name}"

    @property
    def label(self) -> str:
        """Short human description: 'A100-SXM4-40GB' or 'H100 3g.40gb'."""
        short = self.model.removeprefix("NVIDIA ").strip()
        return f"{short} {self.profile}" if self.kind is UnitKind.MIG and self.profile else short


def unit_name(
    gpu_index: int,
    kind: UnitKind | str,
    gpu_instance_id: int | None = None,
    compute_instance_id: int | None = None,
) -> str:
    """A unit's one human name: the GPU index for a whole GPU ('3'); for a MIG device the GPU
    index, then its GPU-instance and compute-instance ids as `nvidia-smi mig -lgi/-lci` show
    them ('7/1.0'). The ids stay the same while the instance exists, where the driver's MIG
    device index can renumber when another instance goes; an id a source does not report is
    '?' ('7/?.?'). Names are for people: units are keyed by UUID (BRIEF §4)."""
    if str(kind) != UnitKind.MIG.value:
        return str(gpu_index)
    gi = "?" if gpu_instance_id is None else gpu_instance_id
    ci = "?" if compute_instance_id is None else compute_instance_id
    return f"{gpu_index}/{gi}.{ci}"


@dataclass(frozen=True)
class MachineSample:
    """One snapshot of the machine, taken once and read many times."""

    gpus: tuple[Gpu, ...]
    processes: tuple[GpuProcess, ...] = ()
    source: str = ""
    taken_at: datetime | None = None
    driver_version: str | None = None
    warnings: tuple[str, ...] = field(default=())

    def units(self) -> list[Unit]:
        """Leaf devices: GPUs with MIG off, or the MIG devices of GPUs with MIG on.

        A GPU with MIG enabled but no MIG devices yields no unit: nothing on it can be used.
        MIG devices whose gpueq is unknown are left out (they cannot be accounted for).
        """
        out: list[Unit] = []
        for g in self.gpus:
            if g.mig_enabled:
                for m in g.mig_devices:
                    if m.gpueq is None:
                        continue
                    out.append(
                        Unit(
                            uuid=m.uuid,
                            kind=UnitKind.MIG,
                            gpu_uuid=g.uuid,
                            gpu_index=g.index,
                            model=g.name,
                            memory_total_mib=m.memory_total_mib,
                            gpueq=m.gpueq,
                            profile=m.profile,
                            gpu_instance_id=m.gpu_instance_id,
                            compute_instance_id=m.compute_instance_id,
                            numa_node=g.numa_node,
                            nvlink_group=g.nvlink_group,
                        )
                    )
            else:
                out.append(
                    Unit(
                        uuid=g.uuid,
                        kind=UnitKind.GPU,
                        gpu_uuid=g.uuid,
                        gpu_index=g.index,
                        model=g.name,
                        memory_total_mib=g.memory_total_mib,
                        gpueq=GpuEq(1),
                        numa_node=g.numa_node,
                        nvlink_group=g.nvlink_group,
                    )
                )
        return out

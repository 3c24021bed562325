"""What an nvidia-smi capture says, before it becomes a MachineSample.

Owns the parsed-capture types (SmiCapture and its GPUs, MIG devices and processes) and the one
conversion to ds01's model, SmiCapture.to_sample(). It must not parse text; the format modules do.

Why an intermediate type: no single nvidia-smi output carries everything ds01 keys on.

    format        GPU UUID   MIG UUID   MIG profile   GI/CI ids   processes
    -q -x         yes        no (1)     no            yes         yes (with GI/CI)
    -q (text)     yes        no         no            yes         yes (with GI/CI)
    -L            yes        yes        yes           legacy only no
    --query-gpu   column     no         no            no          no
    compute-apps  column     no         no            no          yes (parent GPU only)
    table         no         no         no            yes         yes (with GI/CI)

    (1) read when a <mig_device> has a <uuid>; none of the real logs in tests/fixtures has one.

So every field here may be None, and to_sample() decides what a MachineSample may claim:

* a GPU needs index, UUID and name, or the capture is refused with a one-line CaptureError that
  says which capture to take instead (plain tables never print UUIDs);
* a MIG device needs a UUID to become a unit; MIG devices without one (from -q -x, -q or a
  table) are kept as UnkeyedMigDevice (GI/CI ids and memory, `uuid: null` in JSON), a type that
  can never become a unit, and a warning says which capture names them, so a MIG GPU from such a
  capture offers no units instead of invented ones; merging with an `nvidia-smi -L` capture
  (merge.py) fills the UUIDs in;
* processes keep only compute work (type C, C+G, M...): pure graphics clients (type G, e.g. Xorg)
  are not what ds01 allocates or idles, and NVML's compute-process list leaves them out too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from ds01.errors import CaptureError
from ds01.model.inventory import Gpu, GpuProcess, MachineSample, MigDevice, UnkeyedMigDevice
from ds01.model.profile import mig_gpueq


class CaptureFormat(StrEnum):
    """The nvidia-smi outputs ds01 reads; the value is the command that produces each."""

    XML = "nvidia-smi -q -x"
    QUERY_TEXT = "nvidia-smi -q"
    LIST = "nvidia-smi -L"
    QUERY_GPU = "nvidia-smi --query-gpu=... --format=csv"
    COMPUTE_APPS = "nvidia-smi --query-compute-apps=... --format=csv"
    TABLE = "nvidia-smi"
    MIG_LGIP = "nvidia-smi mig -lgip"
    MIG_LCI = "nvidia-smi mig -lci"


# What each format cannot say, for the error that refuses a GPU without a UUID.
_NO_UUID_WHY: dict[CaptureFormat, str] = {
    CaptureFormat.TABLE: "plain nvidia-smi tables carry no GPU UUIDs",
    CaptureFormat.QUERY_GPU: "this --query-gpu capture has no uuid column",
    CaptureFormat.QUERY_TEXT: "this -q log has no 'GPU UUID' line (taken with -d?)",
}
INVENTORY_FIX = (
    "Capture 'nvidia-smi -L' on the machine (it names every GPU and MIG device by UUID), "
    "and 'nvidia-smi -q -x' for memory and processes."
)


@dataclass(frozen=True)
class SmiMigDevice:
    """One MIG device as a capture shows it. index is the driver's MIG device index on its GPU
    ('Device N' in -L, <index> in -q -x, 'MIG Dev' in the table); it is how captures are joined.

    sm_count is kept for display only: -q -x gives no total SM count for the parent GPU, so ds01
    does not turn SMs into slices (a 3g instance on an H100 has 60 SMs, not 3 x 16).
    """

    index: int | None
    uuid: str | None = None
    profile: str | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None
    sm_count: int | None = None


@dataclass(frozen=True)
class SmiGpu:
    """One GPU as a capture shows it. index is nvidia-smi's index (its print order)."""

    index: int | None
    uuid: str | None = None
    name: str | None = None
    pci_bus_id: str | None = None
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None
    mig_enabled: bool | None = None
    mig_devices: tuple[SmiMigDevice, ...] = ()
    # False when the format cannot list MIG devices at all (--query-gpu): an empty tuple then
    # means "not shown", not "none exist".
    lists_mig_devices: bool = True
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    # True when the index is only the GPU's position in a log that holds some of the GPUs
    # (-q -x -i N): merging then takes the index from a capture that knows it.
    index_from_position: bool = False


@dataclass(frozen=True)
class SmiProcess:
    """A process on a GPU. The GPU is named by whatever the capture gives: UUID, index, bus id.

    type is nvidia-smi's 'C', 'G', 'C+G', 'M', 'M+C'...; None when the format does not say.
    """

    pid: int
    gpu_uuid: str | None = None
    gpu_index: int | None = None
    gpu_pci_bus_id: str | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    used_memory_mib: int | None = None
    name: str | None = None
    type: str | None = None

    @property
    def is_compute(self) -> bool:
        """Anything but a pure graphics client; unknown type counts as compute (conservative)."""
        return self.type is None or any(kind in self.type for kind in ("C", "M"))


@dataclass(frozen=True)
class SmiCapture:
    """One parsed capture, or several merged (formats then lists each, sources joined by ' + ')."""

    formats: tuple[CaptureFormat, ...]
    source: str
    gpus: tuple[SmiGpu, ...] = ()
    processes: tuple[SmiProcess, ...] = ()
    driver_version: str | None = None
    # nvidia-smi prints local time without a zone, so it stays text rather than a datetime that
    # would pretend to know the zone.
    timestamp: str | None = None
    warnings: tuple[str, ...] = field(default=())

    def to_sample(self) -> MachineSample:
        """The MachineSample this capture supports; see the module docstring for the rules.

        Raises CaptureError (one line, naming the source) when a GPU lacks its index, UUID or
        name, or a process names a GPU the capture does not list.
        """
        warnings = list(self.warnings)
        gpus = tuple(self._gpu(g, warnings) for g in self.gpus)
        self._check_unique(gpus)
        processes = tuple(self._process(p, gpus) for p in self.processes if p.is_compute)
        return MachineSample(
            gpus=gpus,
            processes=processes,
            source=self.source,
            taken_at=None,
            driver_version=self.driver_version,
            warnings=tuple(warnings),
        )

    def _check_unique(self, gpus: tuple[Gpu, ...]) -> None:
        """Units are keyed by UUID and shown by index: a repeat means a garbled capture."""
        seen: set[object] = set()
        keys = [("GPU index", g.index) for g in gpus] + [("UUID", g.uuid) for g in gpus]
        keys += [("UUID", m.uuid) for g in gpus for m in g.mig_devices]
        for what, key in keys:
            if (what, key) in seen:
                raise CaptureError(f"{self.source}: {what} {key} appears twice")
            seen.add((what, key))

    def _gpu(self, g: SmiGpu, warnings: list[str]) -> Gpu:
        label = f"GPU {g.index}" if g.index is not None else f"GPU {g.uuid or g.pci_bus_id}"
        if g.uuid is None:
            why = _NO_UUID_WHY.get(self.formats[0], "it has no UUID in this capture")
            if len(self.formats) > 1:
                why = "no capture given names it by UUID"
            raise CaptureError(f"{self.source}: {label} cannot be keyed: {why}", fix=INVENTORY_FIX)
        if g.index is None or g.name is None:
            missing = "index" if g.index is None else "name"
            raise CaptureError(
                f"{self.source}: {label} has no {missing} in this capture", fix=INVENTORY_FIX
            )
        migs: list[MigDevice] = []
        unkeyed: list[UnkeyedMigDevice] = []
        for m in g.mig_devices:
            if m.uuid is None:
                unkeyed.append(
                    UnkeyedMigDevice(
                        index=m.index,
                        gpu_instance_id=m.gpu_instance_id,
                        compute_instance_id=m.compute_instance_id,
                        memory_total_mib=m.memory_total_mib,
                        memory_used_mib=m.memory_used_mib,
                        profile=m.profile,
                    )
                )
                continue
            gpueq = mig_gpueq(m.profile, g.name) if m.profile else None
            if gpueq is None and g.mig_enabled:
                what = f"profile {m.profile} on a {g.name}" if m.profile else "an unknown profile"
                warnings.append(
                    f"{label}: MIG device {m.uuid} offers no unit: ds01 cannot weigh {what}"
                )
            migs.append(
                MigDevice(
                    uuid=m.uuid,
                    profile=m.profile,
                    gpu_instance_id=m.gpu_instance_id,
                    compute_instance_id=m.compute_instance_id,
                    memory_total_mib=m.memory_total_mib,
                    gpueq=gpueq,
                    index=m.index,
                    memory_used_mib=m.memory_used_mib,
                )
            )
        if unkeyed:
            warnings.append(self._unkeyed_warning(label, unkeyed))
        elif g.mig_enabled and not g.lists_mig_devices:
            warnings.append(
                f"{label}: MIG is enabled but this capture cannot list MIG devices; "
                "add an 'nvidia-smi -L' capture"
            )
        return Gpu(
            index=g.index,
            uuid=g.uuid,
            name=g.name,
            memory_total_mib=g.memory_total_mib,
            mig_enabled=g.mig_enabled,
            mig_devices=tuple(migs),
            memory_used_mib=g.memory_used_mib,
            utilization_pct=g.utilization_pct,
            temperature_c=g.temperature_c,
            power_w=g.power_w,
            pci_bus_id=g.pci_bus_id,
            unkeyed_mig_devices=tuple(unkeyed),
        )

    def _unkeyed_warning(self, label: str, unkeyed: list[UnkeyedMigDevice]) -> str:
        """Which devices lack a UUID, that they are not allocatable, which capture names them."""

        def ids(m: UnkeyedMigDevice) -> str:
            gi = "?" if m.gpu_instance_id is None else m.gpu_instance_id
            ci = "?" if m.compute_instance_id is None else m.compute_instance_id
            return f"{gi}/{ci}"

        where = "this capture" if len(self.formats) == 1 else "these captures"
        return (
            f"{label}: {len(unkeyed)} MIG device(s) without a UUID in {where} "
            f"(GI/CI {', '.join(ids(m) for m in unkeyed)}): listed with uuid null and not "
            "allocatable; 'nvidia-smi -L' names them: capture it at the same moment and pass it "
            "with another --from"
        )

    def _process(self, p: SmiProcess, gpus: tuple[Gpu, ...]) -> GpuProcess:
        gpu = _find_gpu(gpus, p)
        if gpu is None and p.gpu_uuid is None:
            raise CaptureError(
                f"{self.source}: process {p.pid} is on a GPU this capture does not list "
                f"(index {p.gpu_index}, bus id {p.gpu_pci_bus_id})"
            )
        gpu_uuid = gpu.uuid if gpu is not None else p.gpu_uuid
        assert gpu_uuid is not None
        return GpuProcess(
            pid=p.pid,
            gpu_uuid=gpu_uuid,
            used_memory_mib=p.used_memory_mib,
            name=p.name,
            unit_uuid=_unit_of(gpu, p),
        )


def _find_gpu(gpus: tuple[Gpu, ...], p: SmiProcess) -> Gpu | None:
    for g in gpus:
        if p.gpu_uuid is not None:
            if g.uuid == p.gpu_uuid:
                return g
        elif p.gpu_pci_bus_id is not None:
            if g.pci_bus_id is not None and g.pci_bus_id.lower() == p.gpu_pci_bus_id.lower():
                return g
        elif p.gpu_index is not None and g.index == p.gpu_index:
            return g
    return None


def _unit_of(gpu: Gpu | None, p: SmiProcess) -> str | None:
    """The unit a process runs on: the GPU itself, its MIG device, or None when unknown."""
    if gpu is None:
        return None  # a compute-apps-only capture: whether the GPU is in MIG mode is unknown
    if not gpu.mig_enabled:
        return gpu.uuid
    for m in gpu.mig_devices:
        if (
            p.gpu_instance_id is not None
            and m.gpu_instance_id == p.gpu_instance_id
            and m.compute_instance_id == p.compute_instance_id
        ):
            return m.uuid
    return None


def positional_if_partial(
    gpus: list[SmiGpu], attached: int | None
) -> tuple[list[SmiGpu], list[str]]:
    """A `-q`/`-q -x` log holding fewer GPUs than it says are attached (taken with -i, or cut
    short) numbers them by position in the file, and says so."""
    if attached is None or attached == len(gpus):
        return gpus, []
    warning = (
        f"the log holds {len(gpus)} of {attached} attached GPUs (taken with -i, or cut "
        "short); GPU indices are positions in the file"
    )
    return [replace(g, index_from_position=True) for g in gpus], [warning]

"""The NVML backend: the only module in ds01 that imports pynvml (nvidia-ml-py), STYLE 1.

Owns one long-lived NVML session (nvmlInit once, lazily, under a lock; nvmlShutdown when the
last backend closes or at exit), the reads that turn NVML into one frozen MachineSample, the
mapping of NVML errors to InventoryError (keeping the cause), and the nvidia-smi-compatible
MIG profile names ('3g.40gb', '1c.3g.71gb').

Each reading function names the matching `nvidia-smi --query-gpu=` field in its docstring, so
tests can compare the nvidia-smi parsers with this backend (STYLE 4).

Semantics that callers rely on:
- unknown is None, never 0: NVML "not supported" / "no permission" for a value gives None;
- utilization is per GPU only: a GPU with MIG enabled and every MIG device report None;
- mig_enabled is None when the GPU does not support MIG (NVML says NotSupported, nvidia-smi
  prints [N/A]); such a GPU is one whole unit, like a GPU with MIG off;
- a failure that is not "this value is unavailable" (GPU lost, driver gone) fails the whole
  sample with InventoryError: a partial machine is never reported as the machine.

Must not: be imported at CLI start (select.py imports it inside a function), hold NVML calls
in a request path (callers sample once and read many times), or fall back to a simulation.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from fractions import Fraction
from math import ceil, floor
from pathlib import Path
from typing import Any, TypeVar

import pynvml

from ds01.errors import InventoryError
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Gpu, GpuProcess, MachineSample, MigDevice
from ds01.model.profile import MigProfile, Variant, total_slices

MIB = 1024 * 1024
GIB = 1024 * 1024 * 1024

_T = TypeVar("_T")
Handle = Any  # an opaque nvmlDevice_t from pynvml

_SIM_HINT = "or use --sim FILE for a simulated machine (e.g. --sim 4xA100-40GB)"


# ---------------------------------------------------------------------------------------------
# MIG profile names, as nvidia-smi and NVIDIA's k8s tooling print them. Pure functions.


def mig_memory_gb(memory_size_mib: int, device_memory_bytes: int) -> int:
    """The 'NN' of a profile's 'NNgb' label, from its memory and the whole GPU's memory.

    NVIDIA's rule (go-nvlib getMigMemorySizeGB, used by the k8s device plugin and matching
    nvidia-smi): take the profile's share of the GPU's memory, round it UP to eighths (memory
    comes in 8 slices), multiply by the GPU's memory in whole GiB (rounded up), and round to
    the nearest integer, halves away from zero. So 3g.40gb on an H100 is 40448 MiB of
    81559 MiB → 4/8 × 80 = 40, and 2g.35gb on an H200 is 33280 of 143771 → 2/8 × 141 = 35.25
    → 35. Exact fractions here, where Go uses floats, so a share that is exactly k/8 is not
    nudged up by rounding error.
    """
    share = Fraction(memory_size_mib * MIB, device_memory_bytes)
    eighths = Fraction(ceil(share * 8), 8)
    total_gb = -(-device_memory_bytes // GIB)
    return floor(eighths * total_gb + Fraction(1, 2))


def mig_profile_name(
    gi_slices: int,
    ci_slices: int,
    memory_size_mib: int,
    device_memory_bytes: int,
    suffix: Variant = Variant.PLAIN,
) -> str:
    """'3g.40gb', or '1c.3g.71gb' for a compute instance smaller than its GPU instance, spelled
    by model/profile.py like every other profile name.

    The memory is the GPU instance's (compute instances share it); suffix is the variant the
    GPU-instance profile enum gives (see profile_suffix).
    """
    gb = mig_memory_gb(memory_size_mib, device_memory_bytes)
    return MigProfile(ci_slices, gi_slices, gb, suffix).name


# The GPU-instance profile enum (NVML_GPU_INSTANCE_PROFILE_*) → the name's suffix, as go-nvlib
# names them. Looked up by name: older nvidia-ml-py releases lack some constants.
_SUFFIX_BY_PROFILE_CONSTANT = {
    "NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1": Variant.ME,
    "NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1": Variant.ME,
    "NVML_GPU_INSTANCE_PROFILE_1_SLICE_ALL_ME": Variant.ME_ALL,
    "NVML_GPU_INSTANCE_PROFILE_2_SLICE_ALL_ME": Variant.ME_ALL,
    "NVML_GPU_INSTANCE_PROFILE_1_SLICE_GFX": Variant.GFX,
    "NVML_GPU_INSTANCE_PROFILE_2_SLICE_GFX": Variant.GFX,
    "NVML_GPU_INSTANCE_PROFILE_4_SLICE_GFX": Variant.GFX,
    "NVML_GPU_INSTANCE_PROFILE_1_SLICE_NO_ME": Variant.NO_ME,
    "NVML_GPU_INSTANCE_PROFILE_2_SLICE_NO_ME": Variant.NO_ME,
}


def profile_suffix(gi_profile_enum: int) -> Variant:
    """'+me' for NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1 (1g.10gb+me), '' for plain profiles."""
    for constant, suffix in _SUFFIX_BY_PROFILE_CONSTANT.items():
        if getattr(pynvml, constant, None) == gi_profile_enum:
            return suffix
    return Variant.PLAIN


# ---------------------------------------------------------------------------------------------
# Errors at the boundary (STYLE 6).


def _start_error(err: Exception) -> InventoryError:
    """NVML failed to start: say exactly what is missing and what to do."""
    if isinstance(err, pynvml.NVMLError_LibraryNotFound):
        return InventoryError(
            "NVML is not available: libnvidia-ml.so.1 not found",
            "The NVIDIA driver is not installed on this machine "
            "(or its library is not on the loader path).",
            f"Install the NVIDIA driver (nvidia-smi should then work), {_SIM_HINT}.",
        )
    if isinstance(err, pynvml.NVMLError_DriverNotLoaded):
        return InventoryError(
            "NVML could not start: the NVIDIA kernel driver is not loaded",
            "libnvidia-ml.so.1 is installed, but the nvidia kernel module is not running "
            "(no GPU in this machine, or the module failed to load: see dmesg).",
            f"Load the driver (modprobe nvidia; nvidia-smi shows why it fails), {_SIM_HINT}.",
        )
    if isinstance(err, pynvml.NVMLError_NoPermission):
        return InventoryError(
            "NVML could not start: permission denied on the NVIDIA device files",
            "/dev/nvidiactl or /dev/nvidia* is not readable by this user; "
            "GPU queries must stay open to every GPU user.",
            "Make /dev/nvidia* readable by GPU users (mode 0666, or a group every ds01 user "
            "is in); 'ds01 doctor' checks this.",
        )
    if isinstance(err, pynvml.NVMLError_LibRmVersionMismatch):
        return InventoryError(
            "NVML could not start: the NVIDIA library and kernel driver versions differ",
            "The driver was upgraded but the old kernel module is still loaded.",
            "Reboot, or reload the nvidia kernel modules.",
        )
    return InventoryError(
        f"NVML could not start: {err}",
        None,
        f"Run nvidia-smi to see the driver's own message, {_SIM_HINT}.",
    )


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    """Any NVML error inside → InventoryError naming what was being read, cause kept."""
    try:
        yield
    except pynvml.NVMLError as err:
        raise InventoryError(
            f"NVML failed while reading {what}: {err}",
            "The GPU or its driver is in a bad state, so this sample is refused as a whole.",
            "Run nvidia-smi on the host; a lost GPU needs an administrator.",
        ) from err


def _unavailable() -> tuple[type[Exception], ...]:
    # The answers that mean "this value is not available here", not "something broke".
    names = (
        "NVMLError_NotSupported",
        "NVMLError_NoPermission",
        "NVMLError_NotFound",
        "NVMLError_FunctionNotFound",
        "NVMLError_NoData",
        "NVMLError_InvalidArgument",
    )
    return tuple(getattr(pynvml, n) for n in names if hasattr(pynvml, n))


def _optional(read: Callable[..., _T], *args: Any) -> _T | None:
    """read(*args), or None when NVML says the value is not available here."""
    try:
        return read(*args)
    except _unavailable():
        return None


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------------------------
# The session: one nvmlInit for the process, shut down when the last user closes or at exit.


class _Session:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._at_exit = False

    def acquire(self) -> None:
        with self._lock:
            if self._users == 0:
                try:
                    pynvml.nvmlInit()
                except pynvml.NVMLError as err:
                    raise _start_error(err) from err
                if not self._at_exit:
                    atexit.register(self.shutdown)
                    self._at_exit = True
            self._users += 1

    def release(self) -> None:
        with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users == 0:
                self._shutdown_locked()

    def shutdown(self) -> None:
        with self._lock:
            if self._users:
                self._users = 0
                self._shutdown_locked()

    @staticmethod
    def _shutdown_locked() -> None:
        # At shutdown there is nobody left to tell about a failure.
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


_SESSION = _Session()


# ---------------------------------------------------------------------------------------------
# Reads, one NVML call each (plus fallbacks). Docstrings name the nvidia-smi field.


def read_name(h: Handle) -> str:
    """nvidia-smi --query-gpu=name"""
    return _text(pynvml.nvmlDeviceGetName(h))


def read_uuid(h: Handle) -> str:
    """nvidia-smi --query-gpu=uuid (GPU-…); for a MIG device handle, its MIG-… UUID."""
    return _text(pynvml.nvmlDeviceGetUUID(h))


def read_memory(h: Handle) -> tuple[int | None, int | None, int | None]:
    """nvidia-smi --query-gpu=memory.total,memory.used (MiB). Also returns total bytes,
    which MIG profile names are computed from. (None, None, None) when not supported."""
    info = _optional(pynvml.nvmlDeviceGetMemoryInfo, h)
    if info is None:
        return None, None, None
    total = int(info.total)
    return total // MIB, int(info.used) // MIB, total


def read_mig_enabled(h: Handle) -> bool | None:
    """nvidia-smi --query-gpu=mig.mode.current. None: the GPU does not support MIG ([N/A])."""
    mode = _optional(pynvml.nvmlDeviceGetMigMode, h)
    if mode is None:
        return None
    return int(mode[0]) == int(pynvml.NVML_DEVICE_MIG_ENABLE)


def read_utilization_pct(h: Handle) -> float | None:
    """nvidia-smi --query-gpu=utilization.gpu. None where NVML does not report it, which
    includes every GPU with MIG enabled ([N/A] in nvidia-smi)."""
    rates = _optional(pynvml.nvmlDeviceGetUtilizationRates, h)
    return None if rates is None else float(rates.gpu)


def read_temperature_c(h: Handle) -> float | None:
    """nvidia-smi --query-gpu=temperature.gpu"""
    value = _optional(pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU)
    return None if value is None else float(value)


def read_power_w(h: Handle) -> float | None:
    """nvidia-smi --query-gpu=power.draw (NVML gives milliwatts)."""
    value = _optional(pynvml.nvmlDeviceGetPowerUsage, h)
    return None if value is None else int(value) / 1000


def read_energy_mj(h: Handle) -> int | None:
    """nvidia-smi: no --query-gpu field. Millijoules used since the driver loaded
    (nvmlDeviceGetTotalEnergyConsumption; Volta and newer)."""
    value = _optional(pynvml.nvmlDeviceGetTotalEnergyConsumption, h)
    return None if value is None else int(value)


def read_pci_bus_id(h: Handle) -> str | None:
    """nvidia-smi --query-gpu=pci.bus_id ('00000000:1B:00.0')."""
    info = _optional(pynvml.nvmlDeviceGetPciInfo, h)
    return None if info is None else _text(info.busId)


def read_numa_node(h: Handle, pci_bus_id: str | None) -> int | None:
    """nvidia-smi: no --query-gpu field (`nvidia-smi topo -m` shows it as NUMA Affinity).
    nvmlDeviceGetNumaNodeId on newer drivers, else the PCI device's node in sysfs."""
    if hasattr(pynvml, "nvmlDeviceGetNumaNodeId"):
        node = _optional(pynvml.nvmlDeviceGetNumaNodeId, h)
        if node is not None and int(node) >= 0:
            return int(node)
    if not pci_bus_id:
        return None
    # NVML writes an 8-digit PCI domain, sysfs a 4-digit lower-case one.
    sysfs = Path("/sys/bus/pci/devices") / pci_bus_id[-12:].lower() / "numa_node"
    try:
        node = int(sysfs.read_text().strip())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


def read_processes(h: Handle) -> list[tuple[int, int | None, int | None, int | None]]:
    """nvidia-smi --query-compute-apps=pid,used_gpu_memory: (pid, used MiB, GI id, CI id).

    Used memory is None where the driver does not know it (it may hide it from non-root)."""
    out: list[tuple[int, int | None, int | None, int | None]] = []
    for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
        used = getattr(p, "usedGpuMemory", None)
        gi = getattr(p, "gpuInstanceId", None)
        ci = getattr(p, "computeInstanceId", None)
        out.append(
            (
                int(p.pid),
                None if used is None else int(used) // MIB,
                None if gi is None or gi == 0xFFFFFFFF else int(gi),
                None if ci is None or ci == 0xFFFFFFFF else int(ci),
            )
        )
    return out


def read_process_name(pid: int) -> str | None:
    """nvidia-smi --query-compute-apps=process_name. None when NVML cannot say."""
    name = _optional(pynvml.nvmlSystemGetProcessName, pid)
    return None if name is None else _text(name) or None


# (GPU model, GPU-instance profile id) → NVML_GPU_INSTANCE_PROFILE_* value. Static per model,
# and finding it takes up to one NVML call per profile enum, so it is looked up once.
_GI_PROFILE_ENUMS: dict[tuple[str, int], int] = {}


def _gi_profile_enum(parent: Handle, gpu_name: str, gi_id: int) -> int | None:
    """The NVML_GPU_INSTANCE_PROFILE_* value of a GPU instance (as go-nvlib finds it), or None
    where NVML refuses (reading GPU instances needs root)."""
    gi = _optional(pynvml.nvmlDeviceGetGpuInstanceById, parent, gi_id)
    if gi is None:
        return None
    info = _optional(pynvml.nvmlGpuInstanceGetInfo, gi)
    if info is None:
        return None
    key = (gpu_name, int(info.profileId))
    if key not in _GI_PROFILE_ENUMS:
        for enum in range(int(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT)):
            profile = _optional(pynvml.nvmlDeviceGetGpuInstanceProfileInfo, parent, enum)
            if profile is not None and int(profile.id) == key[1]:
                _GI_PROFILE_ENUMS[key] = enum
                break
    return _GI_PROFILE_ENUMS.get(key)


_NO_ATTRIBUTES = "MIG profile attributes such as +me need root to read; profile names may lack them"


def read_mig_devices(
    parent: Handle, gpu_name: str, device_memory_bytes: int | None, warnings: list[str]
) -> list[tuple[MigDevice, Handle]]:
    """The MIG devices of a MIG-enabled GPU (nvidia-smi -L's 'MIG 3g.40gb Device N' lines),
    with each device's handle for per-device process queries."""
    out: list[tuple[MigDevice, Handle]] = []
    for slot in range(int(pynvml.nvmlDeviceGetMaxMigDeviceCount(parent))):
        handle = _optional(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, parent, slot)
        if handle is None:
            continue  # an empty slot
        uuid = read_uuid(handle)
        gi = _int(_optional(pynvml.nvmlDeviceGetGpuInstanceId, handle))
        ci = _int(_optional(pynvml.nvmlDeviceGetComputeInstanceId, handle))
        attrs = _optional(pynvml.nvmlDeviceGetAttributes, handle)
        total_mib, used_mib, _ = read_memory(handle)
        profile: str | None = None
        gpueq: GpuEq | None = None
        if attrs is not None:
            gi_slices = int(attrs.gpuInstanceSliceCount)
            ci_slices = int(attrs.computeInstanceSliceCount)
            # gpueq = compute slices / the GPU's slices (BRIEF §4), straight from NVML's slice
            # count: it needs neither the profile name nor the GPU's memory.
            slices = total_slices(gpu_name)
            if slices and 0 < ci_slices <= slices:
                gpueq = GpuEq.of(ci_slices, slices)
            if device_memory_bytes:
                suffix = Variant.PLAIN
                enum = _gi_profile_enum(parent, gpu_name, gi) if gi is not None else None
                if enum is None:
                    if _NO_ATTRIBUTES not in warnings:  # once per sample, not once per device
                        warnings.append(_NO_ATTRIBUTES)
                else:
                    suffix = profile_suffix(enum)
                mem = int(attrs.memorySizeMB)
                try:
                    profile = mig_profile_name(
                        gi_slices, ci_slices, mem, device_memory_bytes, suffix
                    )
                except ValueError:  # slice counts or memory no profile has: left unnamed
                    profile = None
        if gpueq is None:
            warnings.append(
                f"{uuid}: gpueq unknown (profile {profile or '?'} on '{gpu_name}', "
                f"{total_slices(gpu_name) or '?'} slices); the device is not offered as a unit"
            )
        device = MigDevice(
            uuid=uuid,
            profile=profile,
            gpu_instance_id=gi,
            compute_instance_id=ci,
            memory_total_mib=total_mib,
            gpueq=gpueq,
            index=slot,
            memory_used_mib=used_mib,
        )
        out.append((device, handle))
    return out


def _mig_processes(
    parent: Handle, gpu_uuid: str, migs: list[tuple[MigDevice, Handle]], warnings: list[str]
) -> list[GpuProcess]:
    """Processes of a MIG GPU, each attributed to its MIG device.

    Asked per MIG device handle first (works unprivileged; the parent's aggregate list needs
    root); where that is refused, the parent's list is matched by GPU/compute instance id.
    If both are refused the device's processes are unknown: a warning says so, because an
    empty list would read as "idle".
    """
    out: list[GpuProcess] = []
    parent_rows: list[tuple[int, int | None, int | None, int | None]] | None = None
    asked_parent = False
    for mig, mh in migs:
        rows = _optional(read_processes, mh)
        if rows is None:
            if not asked_parent:
                parent_rows, asked_parent = _optional(read_processes, parent), True
            if parent_rows is None:
                warnings.append(f"{mig.uuid}: NVML refused its process list; processes unknown")
                continue
            ids = (mig.gpu_instance_id, mig.compute_instance_id)
            rows = [r for r in parent_rows if (r[2], r[3]) == ids]
        for pid, used, _, _ in rows:
            out.append(GpuProcess(pid, gpu_uuid, used, read_process_name(pid), mig.uuid))
    return out


def _read_gpu(index: int, warnings: list[str]) -> tuple[Gpu, list[GpuProcess]]:
    h = pynvml.nvmlDeviceGetHandleByIndex(index)
    name = read_name(h)
    uuid = read_uuid(h)
    total_mib, used_mib, total_bytes = read_memory(h)
    mig_enabled = read_mig_enabled(h)
    bus_id = read_pci_bus_id(h)
    migs = read_mig_devices(h, name, total_bytes, warnings) if mig_enabled else []
    procs: list[GpuProcess] = []
    if migs:
        procs = _mig_processes(h, uuid, migs, warnings)
    elif not mig_enabled:
        for pid, used, _, _ in read_processes(h):
            procs.append(GpuProcess(pid, uuid, used, read_process_name(pid), uuid))
    gpu = Gpu(
        index=index,
        uuid=uuid,
        name=name,
        memory_total_mib=total_mib,
        mig_enabled=mig_enabled,
        mig_devices=tuple(m for m, _ in migs),
        memory_used_mib=used_mib,
        utilization_pct=None if mig_enabled else read_utilization_pct(h),
        temperature_c=read_temperature_c(h),
        power_w=read_power_w(h),
        energy_mj=read_energy_mj(h),
        numa_node=read_numa_node(h, bus_id),
        pci_bus_id=bus_id,
    )
    return gpu, procs


class NvmlBackend:
    """The real machine, through NVML. NVML starts on the first sample(), not here."""

    name = "nvml"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = False

    def _start(self) -> None:
        with self._lock:
            if not self._started:
                _SESSION.acquire()  # raises InventoryError with what/why/fix
                self._started = True

    def sample(self) -> MachineSample:
        self._start()
        warnings: list[str] = []
        with _mapped("the driver version and GPU count"):
            driver = _text(pynvml.nvmlSystemGetDriverVersion())
            count = int(pynvml.nvmlDeviceGetCount())
        gpus: list[Gpu] = []
        procs: list[GpuProcess] = []
        for index in range(count):
            with _mapped(f"GPU {index}"):
                gpu, gpu_procs = _read_gpu(index, warnings)
            gpus.append(gpu)
            procs.extend(gpu_procs)
        return MachineSample(
            gpus=tuple(gpus),
            processes=tuple(procs),
            source="nvml",
            taken_at=datetime.now(UTC),
            driver_version=driver,
            warnings=tuple(warnings),
        )

    def close(self) -> None:
        with self._lock:
            if self._started:
                self._started = False
                _SESSION.release()


# ---------------------------------------------------------------------------------------------
# Raw values for scripts/nvml-probe.py: what NVML itself answered, to keep as a fixture.


def _plain(value: object) -> object:
    """An NVML answer as JSON-friendly data: structs as dicts, bytes as text."""
    if isinstance(value, bytes):
        return _text(value)
    fields = getattr(value, "_fields_", None)
    if fields is not None:
        return {f[0]: _plain(getattr(value, f[0])) for f in fields}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "__dict__") and not isinstance(value, int | float | str):
        return {k: _plain(v) for k, v in vars(value).items()}
    return value


def _raw(call: Callable[..., object], *args: Any) -> object:
    try:
        return _plain(call(*args))
    except pynvml.NVMLError as err:
        return {"error": type(err).__name__, "message": str(err)}


def _raw_busid(h: Handle) -> object:
    return pynvml.nvmlDeviceGetPciInfo(h).busId


def _raw_temperature(h: Handle) -> object:
    return pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)


_RAW_GPU_CALLS = (
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetMigMode",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetNumaNodeId",
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetMaxMigDeviceCount",
)
_RAW_MIG_CALLS = (
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetGpuInstanceId",
    "nvmlDeviceGetComputeInstanceId",
    "nvmlDeviceGetAttributes",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetComputeRunningProcesses",
)


def _raw_calls(names: tuple[str, ...], h: Handle) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in names:
        fn = getattr(pynvml, name, None)
        out[name] = _raw(fn, h) if fn is not None else {"error": "missing in nvidia-ml-py"}
    return out


def raw_probe() -> dict[str, object]:
    """Every NVML value this backend reads, unconverted, with errors by name."""
    _SESSION.acquire()
    try:
        out: dict[str, object] = {
            "driver_version": _raw(pynvml.nvmlSystemGetDriverVersion),
            "nvml_version": _raw(pynvml.nvmlSystemGetNVMLVersion),
            "cuda_driver_version": _raw(pynvml.nvmlSystemGetCudaDriverVersion),
        }
        devices: list[dict[str, object]] = []
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            d: dict[str, object] = {"index": i, **_raw_calls(_RAW_GPU_CALLS, h)}
            d["nvmlDeviceGetPciInfo.busId"] = _raw(_raw_busid, h)
            d["nvmlDeviceGetTemperature(GPU)"] = _raw(_raw_temperature, h)
            migs: list[dict[str, object]] = []
            slots = _int(_optional(pynvml.nvmlDeviceGetMaxMigDeviceCount, h)) or 0
            for slot in range(slots):
                mh = _optional(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, h, slot)
                if mh is None:
                    continue
                m: dict[str, object] = {"slot": slot, **_raw_calls(_RAW_MIG_CALLS, mh)}
                gi = _int(_optional(pynvml.nvmlDeviceGetGpuInstanceId, mh))
                name = _text(pynvml.nvmlDeviceGetName(h))
                enum = _gi_profile_enum(h, name, gi) if gi is not None else None
                m["gpu_instance_profile_enum"] = enum
                migs.append(m)
            d["mig_devices"] = migs
            devices.append(d)
        out["devices"] = devices
        return out
    finally:
        _SESSION.release()

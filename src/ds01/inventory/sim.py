"""The simulated inventory backend: a machine described in a YAML file (BRIEF §5).

Owns the machine-file format (validated with pydantic, unknown keys refused), the deterministic
UUIDs of simulated GPUs and MIG devices, the shipped example machines, and the `sim set`
edits that drive a running simulation (utilization, processes) by rewriting the file.

A SimBackend re-reads its file whenever the file changes (inode, size or mtime), so a test or a
demo can change what the next `sample()` reports from another process. Edits are written to a
temporary file and renamed over the original, so a reader never sees half a file.

Must not: fall back to anything (it is chosen explicitly, never instead of NVML), import NVML,
or invent values the file does not give — what the file leaves out is None ("unknown").
The file format is documented in docs/inventory.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ds01.errors import MachineFileError, MigProfileError
from ds01.files import write_atomic
from ds01.model.inventory import Gpu, GpuProcess, MachineSample, MigDevice
from ds01.model.profile import MigProfile, parse_profile, total_slices

# Seeds every generated UUID. Changing it (or the names hashed below) would give every
# simulated unit a new UUID, orphaning allocations made against it: never change it.
SIM_UUID_NAMESPACE = uuid.UUID("6f0b3c2e-5d1a-4e8b-9a27-d501d501d501")

_FIX = "Fix the machine file (format: docs/inventory.md), then try again."
_UNIT_INDEX = re.compile(r"^(?P<gpu>\d+)(?:/(?P<mig>\d+))?$")


# ---------------------------------------------------------------------------------------------
# The file format (pydantic): structure only. Cross-field rules live in _build().


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MigDeviceSpec(_Strict):
    """One MIG device: a compute instance inside a GPU instance."""

    profile: str
    gpu_instance_id: int | None = Field(default=None, ge=0)
    compute_instance_id: int = Field(default=0, ge=0)
    memory_mib: int | None = Field(default=None, gt=0)  # default: the profile's NN gb × 1024
    uuid: str | None = None


class GpuSpec(_Strict):
    name: str = Field(min_length=1)
    memory_mib: int = Field(gt=0)
    index: int | None = Field(default=None, ge=0)
    uuid: str | None = None
    memory_used_mib: int | None = Field(default=None, ge=0)
    mig_enabled: bool = False
    mig_slices: int | None = Field(default=None, ge=1, le=8)
    mig_devices: list[MigDeviceSpec] = Field(default_factory=list)
    numa_node: int | None = Field(default=None, ge=0)
    nvlink_group: str | None = None
    pci_bus_id: str | None = None
    utilization_pct: float | None = Field(default=None, ge=0, le=100)
    temperature_c: float | None = None
    power_w: float | None = Field(default=None, ge=0)
    energy_mj: int | None = Field(default=None, ge=0)


def _index_as_text(value: object) -> object:
    # `unit: 3` (a GPU index) is natural to write unquoted; YAML reads it as an int.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ProcessSpec(_Strict):
    pid: int = Field(gt=0)
    # a GPU-/MIG- UUID, a GPU index '3', or '5/0' (the first MIG device of GPU 5)
    unit: Annotated[str, BeforeValidator(_index_as_text), Field(min_length=1)]
    used_memory_mib: int | None = Field(default=None, ge=0)
    name: str | None = None


class MachineSpec(_Strict):
    machine: str = Field(min_length=1)  # seeds the generated UUIDs: keep it stable
    description: str | None = None
    driver_version: str | None = None
    gpus: list[GpuSpec] = Field(min_length=1)
    processes: list[ProcessSpec] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Locating problems: key path → line, from PyYAML's node tree.

Loc = tuple[str | int, ...]


class _Problem(Exception):
    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def _key_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _line_of(text: str, loc: Loc) -> int | None:
    """1-based line of the value (or, for a missing/unknown key, its parent) at loc."""
    try:
        node: Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        nxt: Node | None = None
        if isinstance(node, MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.value == part:
                    nxt, line = value, key.start_mark.line + 1
                    break
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
            line = nxt.start_mark.line + 1
        if nxt is None:
            break
        node = nxt
    return line


def _error(path: Path, text: str, loc: Loc, message: str, more: int = 0) -> MachineFileError:
    line = _line_of(text, loc)
    where = f"{path}:{line}" if line is not None else str(path)
    key = f" {_key_path(loc)}:" if loc else ""
    extra = f" (and {more} more)" if more else ""
    return MachineFileError(f"{where}:{key} {message}{extra}", fix=_FIX)


def _pydantic_problem(err: ValidationError) -> tuple[Loc, str, int]:
    errors = err.errors()
    first = errors[0]
    loc: Loc = tuple(first["loc"])
    if first["type"] == "extra_forbidden":
        message = f"unknown key '{loc[-1]}'"
    elif first["type"] == "missing":
        message = f"missing key '{loc[-1]}'"
    else:
        message = first["msg"]
    return loc, message, len(errors) - 1


# ---------------------------------------------------------------------------------------------
# Building a MachineSample from a validated spec.


def gpu_uuid_for(machine: str, index: int) -> str:
    """The generated UUID of GPU `index` of a simulated machine (stable across restarts)."""
    return f"GPU-{uuid.uuid5(SIM_UUID_NAMESPACE, f'{machine}/gpu/{index}')}"


def mig_uuid_for(machine: str, index: int, gpu_instance_id: int, compute_instance_id: int) -> str:
    """The generated UUID of a MIG device, keyed by its GPU/compute instance (not position),
    so that adding or removing another MIG device keeps this one's UUID."""
    name = f"{machine}/gpu/{index}/gi/{gpu_instance_id}/ci/{compute_instance_id}"
    return f"MIG-{uuid.uuid5(SIM_UUID_NAMESPACE, name)}"


@dataclass(frozen=True)
class _UnitRef:
    gpu_pos: int  # position in `gpus`
    mig_pos: int | None  # position in that GPU's `mig_devices`


def _build_mig(spec: MachineSpec, gpu_pos: int, index: int) -> tuple[MigDevice, ...]:
    g = spec.gpus[gpu_pos]
    base: Loc = ("gpus", gpu_pos)
    if g.mig_devices and not g.mig_enabled:
        raise _Problem((*base, "mig_devices"), "MIG devices listed but mig_enabled is not true")
    if not g.mig_enabled:
        return ()
    slices = g.mig_slices or total_slices(g.name)
    if slices is None:
        raise _Problem(
            (*base, "name"),
            f"ds01 does not know how many MIG slices a '{g.name}' has: add mig_slices (7 or 4)",
        )
    # Each GPU instance counts once, however many compute instances share it.
    gi_of: dict[int, MigProfile] = {}  # GPU instance id → its GI profile ('3g.71gb')
    ci_used: dict[int, int] = {}  # compute slices used inside each GPU instance
    seen: set[tuple[int, int]] = set()
    next_gi = 1
    out: list[MigDevice] = []
    for pos, m in enumerate(g.mig_devices):
        loc: Loc = (*base, "mig_devices", pos)
        try:
            p = parse_profile(m.profile)
        except MigProfileError as err:
            raise _Problem((*loc, "profile"), f"{err.what}: {err.why}") from None
        profile = p.name
        if m.gpu_instance_id is None:
            if p.is_compute_instance:
                raise _Problem(
                    loc,
                    f"'{profile}' is a compute instance: give gpu_instance_id to say which "
                    "GPU instance it shares",
                )
            while next_gi in gi_of:
                next_gi += 1
            gi = next_gi
        else:
            gi = m.gpu_instance_id
        ci = m.compute_instance_id
        if (gi, ci) in seen:
            raise _Problem(loc, f"GPU instance {gi}, compute instance {ci} is listed twice")
        seen.add((gi, ci))
        known = gi_of.setdefault(gi, p.gpu_instance)
        if known != p.gpu_instance:
            raise _Problem(
                (*loc, "profile"), f"GPU instance {gi} is a {known}; '{profile}' is not part of it"
            )
        gpueq = p.gpueq(slices)
        if gpueq is None:
            raise _Problem((*loc, "profile"), f"'{profile}' does not fit a {slices}-slice GPU")
        ci_used[gi] = ci_used.get(gi, 0) + p.compute_slices
        if ci_used[gi] > p.gpu_slices:
            raise _Problem(
                loc, f"GPU instance {gi} ({known}) has only {p.gpu_slices} compute slices"
            )
        # Placement rules (which offsets a profile may start at) are not checked; the slice
        # count is, so a file cannot describe more GPU than there is.
        used = sum(k.gpu_slices for k in gi_of.values())
        if used > slices:
            raise _Problem(loc, f"the MIG devices use {used} slices; a '{g.name}' has {slices}")
        uid = m.uuid or mig_uuid_for(spec.machine, index, gi, ci)
        if not uid.startswith("MIG-"):
            raise _Problem((*loc, "uuid"), "a MIG device UUID starts with 'MIG-'")
        out.append(
            MigDevice(
                uuid=uid,
                profile=profile,
                gpu_instance_id=gi,
                compute_instance_id=ci,
                # nvidia-smi's NNgb label is rounded up; the real size is a little less
                # (3g.40gb on an H100 is 40448 MiB), so shipped machines give memory_mib.
                memory_total_mib=m.memory_mib or p.memory_gb * 1024,
                gpueq=gpueq,
                index=pos,
            )
        )
    return tuple(out)


def _build(spec: MachineSpec, source: str) -> MachineSample:
    """Cross-field rules and the frozen sample. Raises _Problem naming the offending key."""
    gpus: list[Gpu] = []
    indices: dict[int, int] = {}
    uuids: dict[str, Loc] = {}
    for pos, g in enumerate(spec.gpus):
        index = g.index if g.index is not None else pos
        if index in indices:
            raise _Problem(("gpus", pos, "index"), f"GPU index {index} is used twice")
        indices[index] = pos
        uid = g.uuid or gpu_uuid_for(spec.machine, index)
        if not uid.startswith("GPU-"):
            raise _Problem(("gpus", pos, "uuid"), "a GPU UUID starts with 'GPU-'")
        if g.mig_enabled and g.utilization_pct is not None:
            raise _Problem(
                ("gpus", pos, "utilization_pct"),
                "NVML reports no utilization for a GPU with MIG enabled: leave it out "
                "(drive MIG devices with processes)",
            )
        if g.memory_used_mib is not None and g.memory_used_mib > g.memory_mib:
            raise _Problem(("gpus", pos, "memory_used_mib"), "more than memory_mib")
        migs = _build_mig(spec, pos, index)
        for loc, u in [(("gpus", pos, "uuid"), uid)] + [
            (("gpus", pos, "mig_devices", i, "uuid"), m.uuid) for i, m in enumerate(migs)
        ]:
            if u in uuids:
                raise _Problem(loc, f"UUID {u} is used twice")
            uuids[u] = loc
        gpus.append(
            Gpu(
                index=index,
                uuid=uid,
                name=g.name,
                memory_total_mib=g.memory_mib,
                mig_enabled=g.mig_enabled,
                mig_devices=migs,
                memory_used_mib=g.memory_used_mib,
                utilization_pct=g.utilization_pct,
                temperature_c=g.temperature_c,
                power_w=g.power_w,
                energy_mj=g.energy_mj,
                numa_node=g.numa_node,
                nvlink_group=g.nvlink_group,
                pci_bus_id=g.pci_bus_id,
            )
        )

    procs: list[GpuProcess] = []
    seen: set[tuple[int, str]] = set()
    for pos, p in enumerate(spec.processes):
        ref = _resolve_ref(spec, gpus, p.unit, ("processes", pos, "unit"))
        gpu = gpus[ref.gpu_pos]
        if gpu.mig_enabled and ref.mig_pos is None:
            raise _Problem(
                ("processes", pos, "unit"),
                f"GPU {gpu.index} has MIG enabled: a process runs in one of its MIG devices "
                f"('{gpu.index}/0' or a MIG- UUID)",
            )
        unit_uuid = gpu.uuid if ref.mig_pos is None else gpu.mig_devices[ref.mig_pos].uuid
        if (p.pid, unit_uuid) in seen:
            raise _Problem(("processes", pos), f"process {p.pid} is listed twice on {unit_uuid}")
        seen.add((p.pid, unit_uuid))
        procs.append(GpuProcess(p.pid, gpu.uuid, p.used_memory_mib, p.name, unit_uuid=unit_uuid))

    return MachineSample(
        gpus=tuple(_with_memory_used(g, procs) for g in gpus),
        processes=tuple(procs),
        source=source,
        driver_version=spec.driver_version,
    )


def _with_memory_used(gpu: Gpu, procs: list[GpuProcess]) -> Gpu:
    """Memory used = what the processes use, unless the file says otherwise (as the driver,
    which also counts its own overhead). A process of unknown memory makes the sum unknown."""

    def total(selected: list[GpuProcess]) -> int | None:
        used = [p.used_memory_mib for p in selected]
        return None if None in used else sum(u for u in used if u is not None)

    migs = tuple(
        replace(m, memory_used_mib=total([p for p in procs if p.unit_uuid == m.uuid]))
        for m in gpu.mig_devices
    )
    used = gpu.memory_used_mib
    if used is None:
        used = total([p for p in procs if p.gpu_uuid == gpu.uuid])
    return replace(gpu, mig_devices=migs, memory_used_mib=used)


def _resolve_ref(spec: MachineSpec, gpus: list[Gpu], ref: str, loc: Loc) -> _UnitRef:
    """A unit reference: a GPU-/MIG- UUID, a GPU index ('3') or a MIG device ('5/0')."""
    ref = ref.strip()
    m = _UNIT_INDEX.match(ref)
    for gpos, g in enumerate(gpus):
        if m and int(m["gpu"]) == g.index:
            if m["mig"] is None:
                return _UnitRef(gpos, None)
            mpos = int(m["mig"])
            if mpos < len(g.mig_devices):
                return _UnitRef(gpos, mpos)
            raise _Problem(loc, f"GPU {g.index} has no MIG device {mpos}")
        if g.uuid == ref:
            return _UnitRef(gpos, None)
        for mpos, mig in enumerate(g.mig_devices):
            if mig.uuid == ref:
                return _UnitRef(gpos, mpos)
    raise _Problem(loc, f"no GPU or MIG device '{ref}' on machine '{spec.machine}'")


# ---------------------------------------------------------------------------------------------
# Reading files.


def _parse(path: Path, text: str) -> tuple[dict[str, Any], MachineSpec]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or "invalid YAML"
        context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and start is not None:
            problem += f" ({context} that starts on line {start.line + 1})"
        raise MachineFileError(f"{where}: {problem}", fix=_FIX) from err
    if not isinstance(raw, dict):
        raise MachineFileError(
            f"{path}: a machine file is a mapping with 'machine' and 'gpus'", fix=_FIX
        )
    try:
        spec = MachineSpec.model_validate(raw)
    except ValidationError as err:
        loc, message, more = _pydantic_problem(err)
        raise _error(path, text, loc, message, more) from err
    return raw, spec


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise MachineFileError(
            f"machine file {path} does not exist",
            fix="Pass a machine YAML file or a shipped machine name ('ds01 gpu sim list').",
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise MachineFileError(f"cannot read machine file {path}: {err}", fix=_FIX) from err


def load_machine(path: Path) -> MachineSample:
    """Read and validate a machine file. Raises MachineFileError naming file:line and key."""
    text = _read_text(path)
    _, spec = _parse(path, text)
    try:
        return _build(spec, f"sim:{path}")
    except _Problem as p:
        raise _error(path, text, p.loc, p.message) from None


def shipped_machines() -> dict[str, Path]:
    """The example machines installed with ds01 (package data), by name."""
    root = resources.files("ds01") / "machines"
    out: dict[str, Path] = {}
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.endswith(".yaml"):
                out[entry.name.removesuffix(".yaml")] = Path(str(entry))
    return dict(sorted(out.items()))


def resolve_machine(ref: str | Path, base_dir: Path | None = None) -> Path:
    """A machine reference → its file: a path (relative to base_dir when given), or the bare
    name of a shipped machine ('4xA100-40GB'). Raises MachineFileError when neither exists."""
    text = str(ref)
    path = Path(text).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    looks_like_path = "/" in text or text.endswith((".yaml", ".yml"))
    if looks_like_path or path.exists():
        if not path.is_file():
            raise MachineFileError(
                f"machine file {path} does not exist",
                fix="Pass a machine YAML file or a shipped machine name ('ds01 gpu sim list').",
            )
        return path
    shipped = shipped_machines()
    if text in shipped:
        return shipped[text]
    raise MachineFileError(
        f"no machine file or shipped machine named '{text}'",
        fix=f"Shipped machines: {', '.join(shipped) or 'none'}; or pass a path to a YAML file.",
    )


class SimBackend:
    """A simulated machine read from a YAML file; re-read whenever the file changes.

    Validates the file at construction (MachineFileError, exit 2). If the file later changes
    into something invalid, sample() raises MachineFileError too: the sample is refused
    rather than guessed, and the next valid write is picked up.
    """

    name = "sim"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._sample = self._reload()

    def _file_stamp(self) -> tuple[int, int, int]:
        try:
            st = self.path.stat()
        except OSError as err:
            raise MachineFileError(
                f"machine file {self.path} cannot be read: {err.strerror}", fix=_FIX
            ) from err
        # The inode changes on every atomic rewrite, so even two edits within one mtime tick
        # that leave the size unchanged are seen.
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _reload(self) -> MachineSample:
        stamp = self._file_stamp()
        sample = load_machine(self.path)
        self._stamp = stamp
        return sample

    def sample(self) -> MachineSample:
        with self._lock:
            if self._file_stamp() != self._stamp:
                self._sample = self._reload()
            return replace(self._sample, taken_at=datetime.now(UTC))

    def close(self) -> None:
        """Nothing to release: the file is read, not held open."""


# ---------------------------------------------------------------------------------------------
# Driving a simulation: `ds01 gpu sim set` edits, written atomically.


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Serialises concurrent editors (read-modify-write); readers need no lock because the
    # file is replaced by rename. The lock file sits beside the machine file.
    lock_path = path.with_name(f".{path.name}.lock")
    with open(lock_path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_HEADER = "# Simulated machine for ds01 (docs/inventory.md). Rewritten by 'ds01 gpu sim set'.\n"

# One edit of a machine file: changes the raw YAML data in place and says what it did. It is
# given the file's validated spec and sample as they are before this edit.
Change = Callable[[dict[str, Any], MachineSpec, MachineSample], str]


def _validated(path: Path, text: str) -> tuple[dict[str, Any], MachineSpec, MachineSample]:
    raw, spec = _parse(path, text)
    try:
        return raw, spec, _build(spec, f"sim:{path}")
    except _Problem as p:
        raise _error(path, text, p.loc, p.message) from None


def edit_machine(path: Path, changes: Sequence[Change]) -> list[str]:
    """Apply changes in order and write the file once, atomically (temp file + rename).

    Editors are serialised by a lock file beside the machine file; readers need no lock.
    The result is validated before it is written, so the file stays valid. The file is
    rewritten from its data: comments in it are not kept.
    """
    shipped_dir = Path(str(resources.files("ds01") / "machines")).resolve()
    if path.resolve().is_relative_to(shipped_dir):
        raise MachineFileError(
            f"{path} is a machine shipped with ds01 and is not edited in place",
            fix=f"Copy it first: ds01 gpu sim copy {path.stem} ./{path.name}",
        )
    with _locked(path):
        text = _read_text(path)
        raw, spec, sample = _validated(path, text)
        done: list[str] = []
        for change in changes:
            done.append(change(raw, spec, sample))
            text = _HEADER + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
            try:
                raw, spec, sample = _validated(path, text)
            except MachineFileError as err:
                raise MachineFileError(f"the change is invalid: {err.what}", fix=_FIX) from None
        write_atomic(path, text)
        return done


def _ref(spec: MachineSpec, sample: MachineSample, unit: str) -> _UnitRef:
    try:
        return _resolve_ref(spec, list(sample.gpus), unit, ())
    except _Problem as p:
        raise MachineFileError(
            p.message, fix="Name a unit by UUID, GPU index ('3') or MIG device ('5/0')."
        ) from None


def utilization_change(unit: str, pct: float | None) -> Change:
    """Set (or with None, forget) a whole GPU's utilization. MIG devices report none."""
    if pct is not None and not 0 <= pct <= 100:
        raise MachineFileError(f"utilization {pct} is not between 0 and 100", fix="Use 0 to 100.")

    def change(raw: dict[str, Any], spec: MachineSpec, sample: MachineSample) -> str:
        ref = _ref(spec, sample, unit)
        gpu = sample.gpus[ref.gpu_pos]
        if ref.mig_pos is not None or gpu.mig_enabled:
            raise MachineFileError(
                f"{unit} is a MIG device or on a MIG GPU: NVML reports no utilization there",
                fix="Drive MIG devices with --add-process / --clear-processes.",
            )
        entry = raw["gpus"][ref.gpu_pos]
        if pct is None:
            entry.pop("utilization_pct", None)
        else:
            entry["utilization_pct"] = pct
        return f"GPU {gpu.index} ({gpu.uuid}): utilization {'unknown' if pct is None else pct}"

    return change


def add_process_change(
    pid: int, unit: str, used_memory_mib: int | None, name: str | None
) -> Change:
    """Add a compute process on a unit (a whole GPU or a MIG device)."""

    def change(raw: dict[str, Any], spec: MachineSpec, sample: MachineSample) -> str:
        _ref(spec, sample, unit)  # a clear message before the generic validation
        entry: dict[str, Any] = {"pid": pid, "unit": unit}
        if used_memory_mib is not None:
            entry["used_memory_mib"] = used_memory_mib
        if name is not None:
            entry["name"] = name
        if not raw.get("processes"):
            raw["processes"] = []
        raw["processes"].append(entry)
        return f"process {pid} added on {unit}"

    return change


def clear_processes_change(unit: str | None = None) -> Change:
    """Remove every process, or only those on one unit (a GPU includes its MIG devices)."""

    def change(raw: dict[str, Any], spec: MachineSpec, sample: MachineSample) -> str:
        procs = raw.get("processes") or []
        if unit is None:
            raw["processes"] = []
            return f"{len(procs)} process(es) removed"
        ref = _ref(spec, sample, unit)
        gpu = sample.gpus[ref.gpu_pos]
        target = gpu.uuid if ref.mig_pos is None else gpu.mig_devices[ref.mig_pos].uuid
        # raw processes and sample.processes are in the same order (one built from the other)
        keep = [
            entry
            for entry, p in zip(procs, sample.processes, strict=True)
            if target not in (p.unit_uuid, p.gpu_uuid)
        ]
        raw["processes"] = keep
        return f"{len(procs) - len(keep)} process(es) removed from {unit}"

    return change


def set_utilization(path: Path, unit: str, pct: float | None) -> str:
    return edit_machine(path, [utilization_change(unit, pct)])[0]


def add_process(
    path: Path, pid: int, unit: str, used_memory_mib: int | None = None, name: str | None = None
) -> str:
    return edit_machine(path, [add_process_change(pid, unit, used_memory_mib, name)])[0]


def clear_processes(path: Path, unit: str | None = None) -> str:
    return edit_machine(path, [clear_processes_change(unit)])[0]


def parse_process_arg(text: str) -> tuple[int, str, int | None, str | None]:
    """'PID:UNIT:MiB:name' (MiB and name may be empty or left out) → its parts."""
    parts = text.split(":", 3)
    fix = "Write PID:UNIT[:MiB[:name]], e.g. 4242:GPU-…:2048:python or 4242:5/0:1024"
    pid = parts[0].strip()
    # ASCII digits ('²'.isdigit() is true too), and no more than Linux's largest pid_max (2**22).
    if len(parts) < 2 or not _digits(pid) or int(pid) > 2**22 or not parts[1].strip():
        raise MachineFileError(f"--add-process '{text}' is not PID:UNIT[:MiB[:name]]", fix=fix)
    mib_text = parts[2].strip() if len(parts) > 2 else ""
    if mib_text and not _digits(mib_text):
        raise MachineFileError(f"--add-process '{text}': MiB '{mib_text}' is not a number", fix=fix)
    name = parts[3] if len(parts) > 3 and parts[3] else None
    return int(pid), parts[1].strip(), int(mib_text) if mib_text else None, name


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()

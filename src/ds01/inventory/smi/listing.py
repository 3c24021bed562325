"""Parser for `nvidia-smi -L`: GPUs and MIG devices with their UUIDs and profiles.

Owns reading the listing into an SmiCapture. The listing is the one capture that names MIG devices
by UUID, so merge.py uses it to complete -q -x logs and tables.

What the listing can and cannot say:

* A GPU is MIG-enabled iff MIG lines follow it. A GPU without MIG lines gets mig_enabled=None,
  not False: the listing looks the same for MIG off and for MIG on with no instances created.
* Memory is unknown (None). Profile names carry a memory figure ('1g.10gb') but it is a rounded
  label, not the device's memory, and GPU names ('A100-SXM4-80GB') are not measurements either.
* Legacy MIG UUIDs (drivers before 470) look like 'MIG-GPU-<gpu uuid>/<gi>/<ci>' and give the
  GPU-instance and compute-instance ids; modern 'MIG-<uuid>' ones give neither.
* Compute-instance profiles ('MIG 1c.3g.71gb') are kept as printed; gpueq counts their compute
  slices (1 of 7), not their GPU instance's. Profile names of a shape ds01 does not know are kept
  too; such a device gets no gpueq and so offers no unit (with a warning).
"""

from __future__ import annotations

import re

from ds01.inventory.smi._values import MIG_UUID, fail, gpu_uuid, show, split_lines
from ds01.inventory.smi.capture import CaptureFormat, SmiCapture, SmiGpu, SmiMigDevice
from ds01.model.profile import canonical_or_printed

# 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-b4895dbf-...)'
_GPU_LINE = re.compile(
    r"^GPU\s+(?P<index>[0-9]{1,4}):\s+(?P<name>.+?)\s+\(UUID:\s*(?P<uuid>[^()\s]+)\)$", re.ASCII
)
# '  MIG 3g.40gb     Device  0: (UUID: MIG-7089...)'
# '  MIG 1g.5gb Device 0: (UUID: MIG-GPU-.../7/0)' (drivers before 470)
_MIG_LINE = re.compile(
    r"^\s+MIG\s+(?P<profile>\S+)\s+Device\s+(?P<index>[0-9]{1,4}):\s+\(UUID:\s*(?P<uuid>[^()\s]+)\)$",
    re.ASCII,
)


class _OpenGpu:
    """A GPU line seen, collecting the MIG lines under it."""

    def __init__(self, index: int, name: str, uuid: str) -> None:
        self.index = index
        self.name = name
        self.uuid = uuid
        self.migs: list[SmiMigDevice] = []

    def close(self) -> SmiGpu:
        return SmiGpu(
            index=self.index,
            uuid=self.uuid,
            name=self.name,
            mig_enabled=True if self.migs else None,
            mig_devices=tuple(self.migs),
        )


def parse_list(text: str, source: str) -> SmiCapture:
    """Parse `nvidia-smi -L`. Any line that is neither a GPU nor a MIG line is a CaptureError."""
    gpus: list[SmiGpu] = []
    current: _OpenGpu | None = None
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        if m := _GPU_LINE.match(line):
            if current is not None:
                gpus.append(current.close())
            uuid = gpu_uuid(m.group("uuid"), source, f"line {number}")
            current = _OpenGpu(int(m.group("index")), m.group("name"), uuid)
        elif m := _MIG_LINE.match(line):
            if current is None:
                fail(source, f"line {number}: MIG device before any GPU line")
            current.migs.append(_mig(m, current, source, number))
        else:
            fail(source, f"line {number}: not an nvidia-smi -L line: {show(line.strip())}")
    if current is not None:
        gpus.append(current.close())
    if not gpus:
        fail(source, "the listing names no GPUs")
    seen: set[int] = set()
    for g in gpus:
        assert g.index is not None
        if g.index in seen:
            fail(source, f"GPU {g.index} is listed twice")
        seen.add(g.index)
    return SmiCapture(formats=(CaptureFormat.LIST,), source=source, gpus=tuple(gpus))


def _mig(m: re.Match[str], gpu: _OpenGpu, source: str, number: int) -> SmiMigDevice:
    uuid = m.group("uuid")
    parsed = MIG_UUID.match(uuid)
    if not parsed:
        fail(source, f"line {number}: not a MIG UUID: {show(uuid)}")
    gi = ci = None
    if parsed.group("legacy_gpu") is not None:
        if parsed.group("legacy_gpu").lower() != gpu.uuid.lower():
            fail(
                source,
                f"line {number}: MIG UUID {show(uuid)} names another GPU than GPU {gpu.index}",
            )
        gi, ci = int(parsed.group("gi")), int(parsed.group("ci"))
    # A profile name ds01 does not know the shape of is kept as printed: to_sample() then
    # leaves that device out with a warning, rather than refusing the whole listing.
    profile = canonical_or_printed(m.group("profile"))
    index = int(m.group("index"))
    if any(other.index == index for other in gpu.migs):
        fail(source, f"line {number}: MIG device {index} of GPU {gpu.index} is listed twice")
    return SmiMigDevice(
        index=index, uuid=uuid, profile=profile, gpu_instance_id=gi, compute_instance_id=ci
    )

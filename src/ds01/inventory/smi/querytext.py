"""Parser for the text form of `nvidia-smi -q` (the "NVSMI LOG").

Owns reading the text log into an SmiCapture: per GPU its name, UUID, bus id, memory, MIG mode,
MIG devices (GI/CI ids, memory), utilization, temperature, power, and its processes. Everything
else in the log (clocks, ECC, PCIe...) is ignored. It must not guess what the log does not say.

The layout, as real logs show it (drivers 460 to 610):

    ==============NVSMI LOG==============
    Timestamp                                 : Fri Dec  4 16:59:14 2026
    Driver Version                            : 580.159.04
    Attached GPUs                             : 1
    GPU 00000000:00:06.0
        Product Name                          : NVIDIA H200
        MIG Mode
            Current                           : Disabled
        MIG Device                            (one block per MIG device, MIG on only)
            Index                             : 0
            GPU Instance ID                   : 2
            Compute Instance ID               : 0
            Shared FB Memory Usage            ("FB Memory Usage" before driver 610)
                Total                         : 71424 MiB
        GPU UUID                              : GPU-a8c6ca6e-…
        FB Memory Usage
            Total                             : 143771 MiB
        Processes                             : None
    or  Processes
            GPU instance ID                   : N/A      (driver 450+)
            Compute instance ID               : N/A
            Process ID                        : 1624
                Type                          : C
                Name                          : python
                Used GPU Memory               : 630 MiB

Each line is `Key<padding>: value` or a section title; nesting is by indentation. A key ends at
the first ':' (keys hold none), so values with colons (Windows paths, process names) are kept
whole. Decisions:

* GPU index: as in -q -x, the log has none; GPUs are printed in index order, so the index is the
  position, with a warning when 'Attached GPUs' differs from the GPUs in the log (-i N).
* Driver 610 appends '[Deprecated; …]' to 'Driver Version'; only the version is kept.
* MIG devices carry no UUID and no profile here: they are listed without UUID and are never
  units (capture.py); join with an `nvidia-smi -L` capture to name them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ds01.inventory.smi._values import (
    PCI_BUS_ID,
    enabled,
    fail,
    gpu_uuid,
    integer,
    is_unknown,
    number,
    show,
    split_lines,
    text_or_none,
)
from ds01.inventory.smi.capture import (
    CaptureFormat,
    SmiCapture,
    SmiGpu,
    SmiMigDevice,
    SmiProcess,
    positional_if_partial,
)

BANNER = "==============NVSMI LOG=============="
_GPU_HEADER = re.compile(r"^GPU (?P<bus>[0-9A-Fa-f:.]+)$", re.ASCII)  # bus id checked later
_ENTRY = re.compile(r"^(?P<key>[^:]+?)\s*:\s?(?P<value>.*)$")


@dataclass
class _Node:
    """One line of the log: a key with its value (None for a section title) and what is nested
    under it."""

    key: str
    value: str | None
    line: int
    children: list[_Node] = field(default_factory=list)

    def child(self, *path: str) -> _Node | None:
        """The first node along `path` (keys compared case-insensitively), or None."""
        node: _Node | None = self
        for key in path:
            if node is None:
                return None
            node = next((c for c in node.children if c.key.lower() == key.lower()), None)
        return node

    def text(self, *path: str) -> str | None:
        node = self.child(*path)
        return None if node is None else node.value


def parse_query_text(text: str, source: str) -> SmiCapture:
    """Parse the text of `nvidia-smi -q`. Raises CaptureError (one line) when it is not one."""
    root = _tree(text, source)
    gpu_nodes = [n for n in root.children if n.key == "GPU"]
    if not gpu_nodes:
        fail(source, "the 'nvidia-smi -q' log lists no GPUs")
    gpus: list[SmiGpu] = []
    processes: list[SmiProcess] = []
    for position, node in enumerate(gpu_nodes):
        gpu = _gpu(node, position, source)
        gpus.append(gpu)
        processes.extend(_processes(node, gpu, source))
    gpus, warnings = positional_if_partial(
        gpus, integer(root.text("Attached GPUs"), "", source, "Attached GPUs")
    )
    driver = text_or_none(root.text("KMD Version")) or text_or_none(root.text("Driver Version"))
    return SmiCapture(
        formats=(CaptureFormat.QUERY_TEXT,),
        source=source,
        gpus=tuple(gpus),
        processes=tuple(processes),
        driver_version=driver.split()[0] if driver else None,
        timestamp=text_or_none(root.text("Timestamp")),
        warnings=tuple(warnings),
    )


def _tree(text: str, source: str) -> _Node:
    """The log's lines after the banner, nested by indentation."""
    lines = split_lines(text)
    start = next((i for i, line in enumerate(lines) if line.strip() == BANNER), None)
    if start is None:
        fail(source, f"no '{BANNER}' line: not an 'nvidia-smi -q' log")
    root = _Node("", None, 0)
    stack: list[tuple[int, _Node]] = [(-1, root)]
    for line_no, line in enumerate(lines[start + 1 :], start=start + 2):
        content = line.strip()
        if not content:
            continue
        indent = len(line) - len(line.lstrip(" \t"))
        header = _GPU_HEADER.match(content) if indent == 0 else None
        if header is not None:
            node = _Node("GPU", header.group("bus"), line_no)
        else:
            entry = _ENTRY.match(content)
            if entry is None:
                node = _Node(content, None, line_no)  # a section title
            else:
                node = _Node(entry.group("key").strip(), entry.group("value").strip(), line_no)
        while stack[-1][0] >= indent:
            stack.pop()
        stack[-1][1].children.append(node)
        stack.append((indent, node))
    return root


def _gpu(node: _Node, position: int, source: str) -> SmiGpu:
    where = f"GPU {node.value}"
    raw_uuid = node.text("GPU UUID")
    uuid = None if is_unknown(raw_uuid) else gpu_uuid(raw_uuid or "", source, f"{where} GPU UUID")
    bus_id = text_or_none(node.text("PCI", "Bus Id")) or node.value
    if bus_id is not None and not PCI_BUS_ID.match(bus_id):
        fail(source, f"{where}: not a PCI bus id: {show(bus_id)}")
    return SmiGpu(
        index=position,
        uuid=uuid,
        name=text_or_none(node.text("Product Name")),
        pci_bus_id=bus_id,
        memory_total_mib=integer(
            node.text("FB Memory Usage", "Total"), "MiB", source, f"{where} FB Memory Total"
        ),
        memory_used_mib=integer(
            node.text("FB Memory Usage", "Used"), "MiB", source, f"{where} FB Memory Used"
        ),
        mig_enabled=enabled(node.text("MIG Mode", "Current"), source, f"{where} MIG Mode"),
        mig_devices=_mig_devices(node, source, where),
        utilization_pct=number(node.text("Utilization", "GPU"), "%", source, f"{where} util"),
        temperature_c=number(
            node.text("Temperature", "GPU Current Temp"), "C", source, f"{where} temperature"
        ),
        power_w=_power(node, source, where),
    )


def _power(node: _Node, source: str, where: str) -> float | None:
    """'Power Draw' (older drivers), else the average (580+), else the instantaneous reading."""
    for section in ("GPU Power Readings", "Power Readings"):
        for key in ("Power Draw", "Average Power Draw", "Instantaneous Power Draw"):
            value = number(node.text(section, key), "W", source, f"{where} {section}/{key}")
            if value is not None:
                return value
    return None


def _mig_device_nodes(node: _Node) -> list[_Node]:
    """'MIG Device' blocks, directly under the GPU or under a 'MIG Devices' title."""
    out: list[_Node] = []
    for c in node.children:
        if c.key.lower() == "mig device":
            out.append(c)
        elif c.key.lower() == "mig devices":
            out.extend(_mig_device_nodes(c))
    return out


def _mig_devices(node: _Node, source: str, where: str) -> tuple[SmiMigDevice, ...]:
    out: list[SmiMigDevice] = []
    for i, m in enumerate(_mig_device_nodes(node)):
        at = f"{where} MIG Device #{i + 1} (line {m.line})"
        memory = m.child("Shared FB Memory Usage") or m.child("FB Memory Usage")
        out.append(
            SmiMigDevice(
                index=integer(m.text("Index"), "", source, f"{at} Index"),
                gpu_instance_id=integer(
                    m.text("GPU Instance ID"), "", source, f"{at} GPU Instance ID"
                ),
                compute_instance_id=integer(
                    m.text("Compute Instance ID"), "", source, f"{at} Compute Instance ID"
                ),
                memory_total_mib=None
                if memory is None
                else integer(memory.text("Total"), "MiB", source, f"{at} memory Total"),
                memory_used_mib=None
                if memory is None
                else integer(memory.text("Used"), "MiB", source, f"{at} memory Used"),
                sm_count=integer(
                    m.text("Device Attributes", "Shared", "Multiprocessor count"),
                    "",
                    source,
                    f"{at} Multiprocessor count",
                ),
            )
        )
    return tuple(out)


def _processes(node: _Node, gpu: SmiGpu, source: str) -> list[SmiProcess]:
    """The 'Processes' section: GI/CI lines come before the 'Process ID' they belong to; Type,
    Name and Used GPU Memory follow it (nested under it, or beside it in some drivers)."""
    section = node.child("Processes")
    if section is None:
        return []
    flat: list[_Node] = []
    for c in section.children:
        flat.append(c)
        flat.extend(c.children)
    out: list[SmiProcess] = []
    pending: dict[str, int | None] = {}
    current: SmiProcess | None = None
    for c in flat:
        key = c.key.lower()
        at = f"GPU {gpu.index} process line {c.line}"
        if key in ("gpu instance id", "compute instance id"):
            pending[key] = integer(c.value, "", source, f"{at} {c.key}")
        elif key == "process id":
            pid = integer(c.value, "", source, f"{at} Process ID")
            if pid is None:
                fail(source, f"{at}: a process without a pid")
            current = SmiProcess(
                pid=pid,
                gpu_uuid=gpu.uuid,
                gpu_index=gpu.index,
                gpu_pci_bus_id=gpu.pci_bus_id,
                gpu_instance_id=pending.pop("gpu instance id", None),
                compute_instance_id=pending.pop("compute instance id", None),
            )
            out.append(current)
        elif current is not None and key in ("type", "name", "process name", "used gpu memory"):
            if key == "type":
                current = replace(current, type=text_or_none(c.value))
            elif key == "used gpu memory":
                memory = integer(c.value, "MiB", source, f"{at} Used GPU Memory")
                current = replace(current, used_memory_mib=memory)
            else:
                current = replace(current, name=text_or_none(c.value))
            out[-1] = current
    return out

"""Parser for the plain `nvidia-smi` table: the wide layout (drivers 5xx+) and the old 79-column.

Owns reading the three sections (GPUs, 'MIG devices', 'Processes') into an SmiCapture. The table is
meant for people: it prints no GPU UUIDs, no MIG UUIDs and no MIG profile names, and cuts long GPU
and process names with '...'. So a table alone never becomes a MachineSample: to_sample() refuses
it with a one-line error naming the captures to take instead, and merge.py can join it with an
`nvidia-smi -L` capture (by GPU index and MIG device index) to make a complete one.

Layout facts relied on (both layouts): every section starts after a '|===...|' line and ends at a
blank line; rows are '|'-separated cells; a GPU is 2 lines (3 when the header has 'MIG M.'); a MIG
device is 2 lines (memory, then BAR1); a process is 1 line with GI/CI columns only when the header
names them.
"""

from __future__ import annotations

import re
from dataclasses import replace

from ds01.inventory.smi._values import (
    PCI_BUS_ID,
    enabled,
    fail,
    integer,
    is_unknown,
    show,
    split_lines,
)
from ds01.inventory.smi.capture import CaptureFormat, SmiCapture, SmiGpu, SmiMigDevice, SmiProcess

_DRIVER = re.compile(r"Driver Version:\s*(?P<version>[0-9][0-9.]*)", re.ASCII)
_TEMP = re.compile(r"(?<![0-9])(?P<v>-?[0-9]{1,4})C\b", re.ASCII)
_POWER = re.compile(r"(?P<v>[0-9]{1,6}(?:\.[0-9]{1,3})?)W\s*/", re.ASCII)
_UTIL = re.compile(r"^(?P<v>[0-9]{1,3})\s*%", re.ASCII)
_MEMORY = re.compile(r"^(?P<used>\S+)\s*/\s*(?P<total>\S+)$")
_PROCESS_TYPE = re.compile(r"^[CGM](?:\+[CGM])*$", re.ASCII)


class _Lines:
    """The capture's lines with 1-based numbers, for messages that point at the bad line."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = split_lines(text)
        self.source = source

    def find(self, needle: str, start: int = 0) -> int | None:
        for i in range(start, len(self.lines)):
            if needle in self.lines[i]:
                return i
        return None

    def section(self, title: str) -> tuple[list[str], list[tuple[int, list[str]]]] | None:
        """(header lines, [(line number, cells)] of the body) of the section containing `title`."""
        at = self.find(title)
        if at is None:
            return None
        rule = self.find("|===", at)
        if rule is None:
            fail(self.source, f"line {at + 1}: section {title!r} has no '|===' rule (truncated?)")
        header = self.lines[at:rule]
        body: list[tuple[int, list[str]]] = []
        last = ""
        for i in range(rule + 1, len(self.lines)):
            line = self.lines[i].strip()
            if not line:
                break
            last = line
            if line.startswith(("+", "|-")):
                continue
            if not (line.startswith("|") and line.endswith("|") and len(line) >= 2):
                fail(self.source, f"line {i + 1}: not a table row: {show(line)}")
            body.append((i + 1, [c.strip() for c in line[1:-1].split("|")]))
        # Every section ends with a '+---+' rule; a capture cut at a line end would otherwise
        # pass for a shorter, valid table.
        if not last.startswith("+"):
            fail(
                self.source, f"truncated table: section {title!r} does not end with a '+---+' rule"
            )
        return header, body


def parse_table(text: str, source: str) -> SmiCapture:
    """Parse the plain `nvidia-smi` output. The result has no UUIDs (see the module docstring)."""
    lines = _Lines(text, source)
    head = lines.find("NVIDIA-SMI")
    if head is None:
        fail(source, "no 'NVIDIA-SMI' banner: not a plain nvidia-smi table")
    driver = _DRIVER.search(lines.lines[head])
    gpu_section = lines.section("Persistence-M")
    if gpu_section is None:
        fail(source, "the table has no GPU section (truncated?)")
    gpus = _gpus(gpu_section[0], gpu_section[1], source)
    mig_section = lines.section("MIG devices:")
    if mig_section is not None:
        gpus = _attach_migs(gpus, _migs(mig_section[1], source), source)
    else:
        # No section (MIG-unaware driver, or the capture was cut): MIG devices are not shown.
        gpus = [replace(g, lists_mig_devices=False) for g in gpus]
    process_section = lines.section("Processes:")
    processes = _processes(*process_section, source) if process_section is not None else []
    first = lines.lines[0].strip()
    return SmiCapture(
        formats=(CaptureFormat.TABLE,),
        source=source,
        gpus=tuple(gpus),
        processes=tuple(processes),
        driver_version=driver.group("version") if driver else None,
        # The wide layout starts with the local time ('Tue Jul 14 09:00:43 2026').
        timestamp=first if first and not first.startswith(("+", "|")) else None,
    )


def _gpus(header: list[str], body: list[tuple[int, list[str]]], source: str) -> list[SmiGpu]:
    has_mig_line = any("MIG M." in line for line in header)
    blocks: list[list[tuple[int, list[str]]]] = []
    for number, cells in body:
        if len(cells) != 3:
            fail(source, f"line {number}: a GPU row has {len(cells)} cells, expected 3")
        if PCI_BUS_ID.match(cells[1].split(" ")[0]):
            blocks.append([(number, cells)])
        elif not blocks:
            fail(source, f"line {number}: GPU row before the first GPU's bus id")
        else:
            blocks[-1].append((number, cells))
    if not blocks:
        fail(source, "the table lists no GPUs")
    return [_gpu(block, has_mig_line, source) for block in blocks]


def _gpu(block: list[tuple[int, list[str]]], has_mig_line: bool, source: str) -> SmiGpu:
    number, first = block[0]
    expected = 3 if has_mig_line else 2
    if len(block) != expected:
        fail(source, f"line {number}: a GPU takes {expected} lines here, found {len(block)}")
    tokens = first[0].split()
    if len(tokens) < 3:
        fail(source, f"line {number}: cannot read GPU index and name from {show(first[0])}")
    index = integer(tokens[0], "", source, f"line {number} GPU index")
    # The last token is Persistence-M ('On', 'Off') or, on Windows, the driver model ('WDDM').
    name = " ".join(tokens[1:-1])
    second = block[1][1]
    used, total = _memory(second[1], source, block[1][0])
    mig = enabled(block[2][1][2], source, f"line {block[2][0]} MIG M.") if has_mig_line else None
    return SmiGpu(
        index=index,
        name=None if is_unknown(name) else name,
        pci_bus_id=first[1].split(" ")[0],
        memory_total_mib=total,
        memory_used_mib=used,
        mig_enabled=mig,
        utilization_pct=_match_number(_UTIL, second[2]),
        temperature_c=_match_number(_TEMP, second[0]),
        power_w=_match_number(_POWER, second[0]),
    )


def _match_number(pattern: re.Pattern[str], text: str) -> float | None:
    m = pattern.search(text)
    return float(m.group("v")) if m else None


def _memory(text: str, source: str, number: int) -> tuple[int | None, int | None]:
    """'11125MiB /  81559MiB' → (11125, 81559); 'N/A' → (None, None)."""
    if is_unknown(text):
        return None, None
    m = _MEMORY.match(text)
    if not m:
        fail(source, f"line {number}: expected 'used / total' memory, got {show(text)}")
    where = f"line {number} memory"
    return integer(m.group("used"), "MiB", source, where), integer(
        m.group("total"), "MiB", source, where
    )


def _migs(body: list[tuple[int, list[str]]], source: str) -> list[tuple[int, SmiMigDevice]]:
    """(GPU index, device) for each MIG device row; the BAR1 line under each is skipped."""
    out: list[tuple[int, SmiMigDevice]] = []
    for number, cells in body:
        if len(cells) == 1 and "No MIG devices found" in cells[0]:
            continue
        if len(cells) != 4:
            fail(source, f"line {number}: a MIG device row has {len(cells)} cells, expected 4")
        if not cells[0]:
            continue  # the BAR1 line of the device above
        ids = cells[0].split()
        if len(ids) != 4:
            fail(source, f"line {number}: expected GPU, GI, CI and MIG Dev, got {show(cells[0])}")
        gpu, gi, ci, dev = (integer(v, "", source, f"line {number} MIG ids") for v in ids)
        if gpu is None:
            fail(source, f"line {number}: MIG device row without a GPU index")
        used, total = _memory(cells[1], source, number)
        sm = cells[2].split()
        out.append(
            (
                gpu,
                SmiMigDevice(
                    index=dev,
                    gpu_instance_id=gi,
                    compute_instance_id=ci,
                    memory_total_mib=total,
                    memory_used_mib=used,
                    sm_count=integer(sm[0], "", source, f"line {number} SM") if sm else None,
                ),
            )
        )
    return out


def _attach_migs(
    gpus: list[SmiGpu], migs: list[tuple[int, SmiMigDevice]], source: str
) -> list[SmiGpu]:
    by_index = {g.index: g for g in gpus}
    for gpu_index, _ in migs:
        if gpu_index not in by_index:
            fail(source, f"a MIG device is on GPU {gpu_index}, which the table does not list")
    return [replace(g, mig_devices=tuple(m for i, m in migs if i == g.index)) for g in gpus]


def _processes(
    header: list[str], body: list[tuple[int, list[str]]], source: str
) -> list[SmiProcess]:
    has_ids = any(re.search(r"\bGI\b", line) for line in header)
    out: list[SmiProcess] = []
    for number, cells in body:
        if len(cells) != 1:
            fail(source, f"line {number}: a process row has {len(cells)} cells, expected 1")
        if "No running processes found" in cells[0]:
            continue
        tokens = cells[0].split()
        fixed = 5 if has_ids else 3  # GPU [GI CI] PID Type, then the name, then the memory
        if len(tokens) < fixed + 1:
            fail(source, f"line {number}: cannot read the process row {show(cells[0])}")
        where = f"line {number}"
        gpu = integer(tokens[0], "", source, f"{where} GPU")
        gi = integer(tokens[1], "", source, f"{where} GI") if has_ids else None
        ci = integer(tokens[2], "", source, f"{where} CI") if has_ids else None
        pid = integer(tokens[fixed - 2], "", source, f"{where} PID")
        kind = tokens[fixed - 1]
        if pid is None or gpu is None or not _PROCESS_TYPE.match(kind):
            fail(source, f"{where}: cannot read the process row {show(cells[0])}")
        name = " ".join(tokens[fixed:-1])
        out.append(
            SmiProcess(
                pid=pid,
                gpu_index=gpu,
                gpu_instance_id=gi,
                compute_instance_id=ci,
                used_memory_mib=integer(tokens[-1], "MiB", source, f"{where} memory"),
                name=name or None,
                type=kind,
            )
        )
    return out

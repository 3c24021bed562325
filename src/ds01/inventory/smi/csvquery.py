"""Parsers for the CSV captures: `--query-gpu=... --format=csv` and `--query-compute-apps=...`.

Owns reading the CSV captures into an SmiCapture. Columns are found by their header name, never by
position, so any field selection and order works; a capture without a header (`csv,noheader`)
cannot be read and is refused with a message saying so.

* `nounits` drops the ' [MiB]' from header names and the ' MiB' from values; both forms are read,
  and a value whose unit differs from its column's is a CaptureError.
* '[N/A]', '[Not Supported]', '[Requested functionality has been deprecated]', any other
  bracketed text and empty cells are unknown (None).
* power.draw is read from 'power.draw', else 'power.draw.average', else 'power.draw.instant'
  (newer drivers print all three; power.draw equals the average there).
* nvidia-smi has no query field for total energy, so energy is never read from CSV.
* --query-gpu cannot list MIG devices: a GPU with mig.mode.current=Enabled comes with a warning
  (in to_sample) that an `nvidia-smi -L` capture is needed to see its units.
* Compute-apps rows name the parent GPU even for processes in MIG devices.
* A --query-gpu capture without an `index` column is read in row order: nvidia-smi prints GPUs in
  index order, so row N is taken as GPU N, marked as a position (merging prefers a capture that
  knows the index) and the capture carries a warning saying the indices are assumed.

nvidia-smi does not quote CSV cells, so cells are split on every comma; a process name containing a
comma makes the row's cell count wrong, which is reported rather than guessed around.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
from ds01.inventory.smi.capture import CaptureFormat, SmiCapture, SmiGpu, SmiProcess

_HEADER_CELL = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)(?:\s*\[(?P<unit>[^\]]*)\])?$", re.ASCII)

# Header name (either spelling nvidia-smi accepts) → the one name the parser uses.
QUERY_GPU_FIELDS: dict[str, str] = {
    "index": "index",
    "uuid": "uuid",
    "gpu_uuid": "uuid",
    "name": "name",
    "gpu_name": "name",
    "pci.bus_id": "pci.bus_id",
    "gpu_bus_id": "pci.bus_id",
    "memory.total": "memory.total",
    "memory.used": "memory.used",
    "utilization.gpu": "utilization.gpu",
    "temperature.gpu": "temperature.gpu",
    "power.draw": "power.draw",
    "power.draw.average": "power.draw.average",
    "power.draw.instant": "power.draw.instant",
    "mig.mode.current": "mig.mode.current",
    "driver_version": "driver_version",
    "timestamp": "timestamp",
}
COMPUTE_APPS_FIELDS: dict[str, str] = {
    "pid": "pid",
    "gpu_uuid": "gpu_uuid",
    "gpu_bus_id": "gpu_bus_id",
    "process_name": "process_name",
    "name": "process_name",
    "used_gpu_memory": "used_memory",
    "used_memory": "used_memory",
    "timestamp": "timestamp",
}

_POWER_FIELDS = ("power.draw", "power.draw.average", "power.draw.instant")


@dataclass(frozen=True)
class CsvHeader:
    """The header line: each column's name as printed, and where the known ones are."""

    names: tuple[str, ...]
    columns: dict[str, int]  # canonical field name → column number


def read_header(line: str, fields: dict[str, str]) -> CsvHeader | None:
    """The header if `line` is one naming at least one of `fields`; None otherwise."""
    cells = [c.strip() for c in line.split(",")]
    names: list[str] = []
    columns: dict[str, int] = {}
    for i, cell in enumerate(cells):
        m = _HEADER_CELL.match(cell)
        if not m:
            return None
        names.append(m.group("name"))
        canonical = fields.get(m.group("name"))
        if canonical is not None and canonical not in columns:
            columns[canonical] = i
    return CsvHeader(tuple(names), columns) if columns else None


def _rows(text: str, source: str, fields: dict[str, str]) -> tuple[CsvHeader, list[list[str]]]:
    lines = [(n, line) for n, line in enumerate(split_lines(text), start=1) if line.strip()]
    if not lines:
        fail(source, "empty CSV capture")
    header = read_header(lines[0][1], fields)
    if header is None:
        fail(
            source,
            "CSV without a recognised header line (--format=csv,noheader?): columns cannot be "
            "identified",
            fix="Capture again with --format=csv (the header names each column).",
        )
    rows: list[list[str]] = []
    for line_no, line in lines[1:]:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(header.names):
            fail(source, f"line {line_no}: {len(cells)} cells, the header has {len(header.names)}")
        rows.append(cells)
    return header, rows


def _cell(header: CsvHeader, row: list[str], field: str) -> str | None:
    column = header.columns.get(field)
    return None if column is None else row[column]


def parse_query_gpu(text: str, source: str) -> SmiCapture:
    """Parse `nvidia-smi --query-gpu=... --format=csv[,nounits]` (with its header line)."""
    header, rows = _rows(text, source, QUERY_GPU_FIELDS)
    if not rows:
        fail(source, "the --query-gpu capture lists no GPUs (header only)")
    gpus: list[SmiGpu] = []
    driver: str | None = None
    timestamp: str | None = None
    by_row_order = "index" not in header.columns
    for position, (line_no, row) in enumerate(enumerate(rows, start=2)):
        where = f"row {line_no}"

        def cell(field: str, row: list[str] = row) -> str | None:
            return _cell(header, row, field)

        raw_uuid = cell("uuid")
        bus_id = text_or_none(cell("pci.bus_id"))
        if bus_id is not None and not PCI_BUS_ID.match(bus_id):
            fail(source, f"{where}: not a PCI bus id: {show(bus_id)}")
        power = None
        for power_field in _POWER_FIELDS:
            power = number(cell(power_field), "W", source, f"{where} {power_field}")
            if power is not None:
                break
        gpus.append(
            SmiGpu(
                index=position
                if by_row_order
                else integer(cell("index"), "", source, f"{where} index"),
                index_from_position=by_row_order,
                uuid=None if is_unknown(raw_uuid) else gpu_uuid(raw_uuid or "", source, where),
                name=text_or_none(cell("name")),
                pci_bus_id=bus_id,
                memory_total_mib=integer(cell("memory.total"), "MiB", source, f"{where} memory"),
                memory_used_mib=integer(cell("memory.used"), "MiB", source, f"{where} memory"),
                mig_enabled=enabled(cell("mig.mode.current"), source, f"{where} mig.mode"),
                lists_mig_devices=False,
                utilization_pct=number(cell("utilization.gpu"), "%", source, f"{where} util"),
                temperature_c=number(cell("temperature.gpu"), "C", source, f"{where} temp"),
                power_w=power,
            )
        )
        driver = driver or text_or_none(cell("driver_version"))
        timestamp = timestamp or text_or_none(cell("timestamp"))
    indices = [g.index for g in gpus if g.index is not None]
    if len(indices) != len(set(indices)):
        fail(source, "a GPU index appears twice")
    warnings: tuple[str, ...] = ()
    if by_row_order:
        warnings = (
            "this --query-gpu capture has no index column: GPU indices are assumed from row "
            "order (nvidia-smi prints GPUs in index order); add 'index' to --query-gpu to be sure",
        )
    return SmiCapture(
        formats=(CaptureFormat.QUERY_GPU,),
        source=source,
        gpus=tuple(gpus),
        driver_version=driver,
        timestamp=timestamp,
        warnings=warnings,
    )


def parse_compute_apps(text: str, source: str) -> SmiCapture:
    """Parse `nvidia-smi --query-compute-apps=... --format=csv[,nounits]`; no rows = no processes.

    The capture lists no GPUs, so its sample has gpus=() unless merged with a GPU capture.
    """
    header, rows = _rows(text, source, COMPUTE_APPS_FIELDS)
    if "pid" not in header.columns:
        fail(source, "the --query-compute-apps capture has no pid column")
    processes: list[SmiProcess] = []
    timestamp: str | None = None
    for line_no, row in enumerate(rows, start=2):
        where = f"row {line_no}"
        pid = integer(row[header.columns["pid"]], "", source, f"{where} pid")
        if pid is None:
            fail(source, f"{where}: no pid")
        raw_uuid = _cell(header, row, "gpu_uuid")
        bus_id = text_or_none(_cell(header, row, "gpu_bus_id"))
        if bus_id is not None and not PCI_BUS_ID.match(bus_id):
            fail(source, f"{where}: not a PCI bus id: {show(bus_id)}")
        processes.append(
            SmiProcess(
                pid=pid,
                gpu_uuid=None if is_unknown(raw_uuid) else gpu_uuid(raw_uuid or "", source, where),
                gpu_pci_bus_id=bus_id,
                used_memory_mib=integer(
                    _cell(header, row, "used_memory"), "MiB", source, f"{where} used memory"
                ),
                name=text_or_none(_cell(header, row, "process_name")),
                type="C",  # the command lists compute processes only
            )
        )
        timestamp = timestamp or text_or_none(_cell(header, row, "timestamp"))
    return SmiCapture(
        formats=(CaptureFormat.COMPUTE_APPS,),
        source=source,
        processes=tuple(processes),
        timestamp=timestamp,
    )

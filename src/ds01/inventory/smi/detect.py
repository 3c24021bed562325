"""Telling nvidia-smi captures apart by their content, and loading them from files.

Owns the entry points used by `ds01 gpu inventory --from PATH` and the capture backend:
detect_format(), parse_capture(), load_capture() and load_captures(). The file name never decides
the format; the text does.

Formats that are not an inventory: `mig -lgip` and `mig -lci` outputs are recognised and refused
with a message naming what the file is and which capture to take instead (their typed parsers live
in mig.py); so are `mig -lgi`, `mig -lcip`, `mig` on a machine without MIG ("No MIG-enabled devices
found."), `topo -m` and JSON (e.g. ds01's NVML probe). A compute-apps CSV is accepted: it yields
processes and no GPUs. nvidia-smi's own error messages and anything unknown are refused. Every
refusal is a CaptureError whose message is one line naming the file.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from pathlib import Path

from ds01.inventory.smi._values import fail, show, split_lines
from ds01.inventory.smi.capture import INVENTORY_FIX, CaptureFormat, SmiCapture
from ds01.inventory.smi.csvquery import (
    COMPUTE_APPS_FIELDS,
    QUERY_GPU_FIELDS,
    parse_compute_apps,
    parse_query_gpu,
    read_header,
)
from ds01.inventory.smi.listing import parse_list
from ds01.inventory.smi.merge import merge_captures
from ds01.inventory.smi.querytext import BANNER, parse_query_text
from ds01.inventory.smi.table import parse_table
from ds01.inventory.smi.xmllog import parse_xml
from ds01.model.inventory import MachineSample

_LIST_START = re.compile(r"^GPU\s+[0-9]+:\s", re.ASCII)

# Outputs of nvidia-smi that are recognisably not a capture of GPUs.
_NOT_A_CAPTURE: tuple[tuple[str, str], ...] = (
    ("NVIDIA-SMI has failed", "the capture holds nvidia-smi's failure message, not GPU data"),
    ("No devices were found", "nvidia-smi found no GPUs when this was captured"),
    ("GPU instances:", "this is 'nvidia-smi mig -lgi' output (GPU instances, no UUIDs)"),
    ("Compute instance profiles:", "this is 'nvidia-smi mig -lcip' output (profiles, no UUIDs)"),
    (
        "No MIG-enabled devices found",
        "this is 'nvidia-smi mig' output saying no GPU has MIG enabled: it lists no GPUs",
    ),
    ("X    = Self", "this is 'nvidia-smi topo -m' output (GPU topology, no UUIDs)"),
)


def detect_format(text: str, source: str) -> CaptureFormat:
    """Which nvidia-smi output `text` is. Raises CaptureError for empty, unknown or refused text."""
    stripped = text.lstrip("\ufeff").strip()
    if not stripped:
        fail(source, "empty capture")
    if stripped.startswith("<"):
        return CaptureFormat.XML
    if stripped.startswith("{"):
        fail(
            source,
            "this is JSON, not nvidia-smi output (ds01's NVML probe JSON is not a capture)",
            fix=INVENTORY_FIX,
        )
    lines = [line for line in split_lines(stripped) if line.strip()]
    if _LIST_START.match(lines[0]):
        return CaptureFormat.LIST
    for marker, problem in _NOT_A_CAPTURE:
        if marker in stripped:
            fail(source, problem, fix=INVENTORY_FIX)
    if BANNER in stripped:
        return CaptureFormat.QUERY_TEXT
    if "GPU instance profiles:" in stripped:
        return CaptureFormat.MIG_LGIP
    if "Compute instances:" in stripped:
        return CaptureFormat.MIG_LCI
    if "NVIDIA-SMI" in stripped and ("|" in stripped):
        return CaptureFormat.TABLE
    first = lines[0]
    apps = read_header(first, COMPUTE_APPS_FIELDS)
    if apps is not None and "pid" in apps.columns:
        return CaptureFormat.COMPUTE_APPS
    if read_header(first, QUERY_GPU_FIELDS) is not None:
        return CaptureFormat.QUERY_GPU
    if "," in first:
        fail(
            source,
            "CSV without a recognised header line (--format=csv,noheader?): columns cannot be "
            "identified",
            fix="Capture again with --format=csv (the header names each column).",
        )
    fail(
        source, f"not a known nvidia-smi capture (first line {show(first.strip())})", INVENTORY_FIX
    )


def parse_capture(text: str, source: str) -> SmiCapture:
    """Detect the format of `text` and parse it. `source` names it in messages (a file name).

    lgip/lci outputs are refused here: they describe MIG configuration, not the GPUs to allocate.
    """
    fmt = detect_format(text, source)
    text = text.lstrip("\ufeff")
    if fmt is CaptureFormat.XML:
        return parse_xml(text, source)
    if fmt is CaptureFormat.QUERY_TEXT:
        return parse_query_text(text, source)
    if fmt is CaptureFormat.LIST:
        return parse_list(text, source)
    if fmt is CaptureFormat.QUERY_GPU:
        return parse_query_gpu(text, source)
    if fmt is CaptureFormat.COMPUTE_APPS:
        return parse_compute_apps(text, source)
    if fmt is CaptureFormat.TABLE:
        return parse_table(text, source)
    fail(
        source,
        f"this is '{fmt.value}' output (MIG configuration, no UUIDs), not a GPU inventory",
        fix=INVENTORY_FIX,
    )


def read_capture_text(path: Path) -> str:
    """The text of a capture file: UTF-8, or UTF-16 with a BOM (PowerShell's '>' writes that)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        fail(str(path), f"cannot read: {exc.strerror or exc}")
    encoding = "utf-8"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        fail(str(path), f"not {encoding.upper()} text (bad byte at offset {exc.start})")


def load_captures(paths: Sequence[Path]) -> MachineSample:
    """Read, parse and merge captures of one machine into a MachineSample (see merge.py).

    Raises CaptureError (one line, naming the file or files) for anything unreadable, and when
    the captures together still cannot name every GPU by UUID.
    """
    captures = [parse_capture(read_capture_text(p), str(p)) for p in paths]
    return merge_captures(captures).to_sample()


def load_capture(path: Path) -> MachineSample:
    """`ds01 gpu inventory --from PATH`: one capture file as a MachineSample."""
    return load_captures([path])

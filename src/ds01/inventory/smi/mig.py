"""Parsers for `nvidia-smi mig -lgip` (GPU instance profiles) and `nvidia-smi mig -lci` (compute
instances).

Owns these two tables and their small frozen types. They describe MIG configuration, not an
inventory: they carry no UUIDs, so parse_capture() refuses them with a message that names the
capture to take instead, and callers that want them call parse_lgip()/parse_lci() directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from ds01.inventory.smi._values import fail, integer, number, show, split_lines
from ds01.model.profile import canonical_or_printed


@dataclass(frozen=True)
class GpuInstanceProfile:
    """One row of `nvidia-smi mig -lgip`: a GPU-instance profile and how many are free.

    Each row spans two lines: SM, DEC, ENC on the first, CE, JPEG, OFA on the second.
    p2p is None when the table prints neither Yes nor No.
    """

    gpu_index: int
    name: str  # '1g.10gb', '1g.10gb+me'
    profile_id: int
    instances_free: int
    instances_total: int
    memory_gib: float
    p2p: bool | None
    sm_count: int
    decoders: int
    encoders: int
    copy_engines: int
    jpeg_decoders: int
    ofa: int


@dataclass(frozen=True)
class ComputeInstance:
    """One row of `nvidia-smi mig -lci`: a compute instance inside a GPU instance."""

    gpu_index: int
    gpu_instance_id: int
    name: str  # the profile as printed, e.g. '4g.40gb' or '1c.4g.40gb'
    profile_id: int
    compute_instance_id: int
    placement_start: int
    placement_size: int


def _body(text: str, source: str, title: str) -> list[tuple[int, list[str]]]:
    """(line number, tokens) of each row after the '|===' rule; rules and blank lines skipped."""
    lines = split_lines(text)
    if not any(title in line for line in lines):
        fail(source, f"no {title!r} heading")
    rule = next((i for i, line in enumerate(lines) if line.strip().startswith("|===")), None)
    if rule is None:
        fail(source, f"the {title!r} table has no '|===' rule (truncated?)")
    out: list[tuple[int, list[str]]] = []
    last = ""
    for i in range(rule + 1, len(lines)):
        line = lines[i].strip()
        if not line:
            continue
        last = line
        if line.startswith("+"):
            continue
        if not (line.startswith("|") and line.endswith("|") and len(line) >= 2):
            fail(source, f"line {i + 1}: not a table row: {show(line)}")
        out.append((i + 1, line[1:-1].split()))
    if not last.startswith("+"):
        fail(source, f"truncated table: {title!r} does not end with a '+---+' rule")
    return out


def _int(token: str, source: str, where: str) -> int:
    value = integer(token, "", source, where)
    if value is None:
        fail(source, f"{where}: no value")
    return value


def _profile(tokens: list[str], source: str, where: str) -> str:
    """The profile after 'MIG', normalised when ds01 knows its shape, else as printed."""
    if tokens[0] != "MIG":
        fail(source, f"{where}: expected 'MIG <profile>', got {show(' '.join(tokens[:2]))}")
    return canonical_or_printed(tokens[1])


def parse_lgip(text: str, source: str) -> tuple[GpuInstanceProfile, ...]:
    """Parse `nvidia-smi mig -lgip`. 'No GPU instance profiles found' gives ()."""
    rows = [(n, t) for n, t in _body(text, source, "GPU instance profiles:") if t]
    if len(rows) == 1 and rows[0][1][:1] == ["No"]:
        return ()
    if len(rows) % 2:
        fail(source, "a GPU instance profile row is missing its second line")
    out: list[GpuInstanceProfile] = []
    for (n1, first), (n2, second) in zip(rows[::2], rows[1::2], strict=True):
        if len(first) != 10 or len(second) != 3:
            fail(source, f"line {n1}: expected a two-line profile row, got {show(' '.join(first))}")
        where = f"line {n1}"
        free, slash, total = first[4].partition("/")
        if not slash:
            fail(source, f"{where}: expected Free/Total instances, got {show(first[4])}")
        memory = number(first[5], "", source, f"{where} memory")
        if memory is None:
            fail(source, f"{where}: no memory size")
        p2p = {"yes": True, "no": False}.get(first[6].lower())
        out.append(
            GpuInstanceProfile(
                gpu_index=_int(first[0], source, where),
                name=_profile(first[1:3], source, where),
                profile_id=_int(first[3], source, where),
                instances_free=_int(free, source, where),
                instances_total=_int(total, source, where),
                memory_gib=memory,
                p2p=p2p,
                sm_count=_int(first[7], source, where),
                decoders=_int(first[8], source, where),
                encoders=_int(first[9], source, where),
                copy_engines=_int(second[0], source, f"line {n2}"),
                jpeg_decoders=_int(second[1], source, f"line {n2}"),
                ofa=_int(second[2], source, f"line {n2}"),
            )
        )
    return tuple(out)


def parse_lci(text: str, source: str) -> tuple[ComputeInstance, ...]:
    """Parse `nvidia-smi mig -lci`. 'No compute instances found' gives ()."""
    rows = [(n, t) for n, t in _body(text, source, "Compute instances:") if t]
    if len(rows) == 1 and rows[0][1][:1] == ["No"]:
        return ()
    out: list[ComputeInstance] = []
    for n, tokens in rows:
        where = f"line {n}"
        if len(tokens) != 7:
            fail(source, f"{where}: expected a compute instance row, got {show(' '.join(tokens))}")
        start, colon, size = tokens[6].partition(":")
        if not colon:
            fail(source, f"{where}: expected a Start:Size placement, got {show(tokens[6])}")
        out.append(
            ComputeInstance(
                gpu_index=_int(tokens[0], source, where),
                gpu_instance_id=_int(tokens[1], source, where),
                name=_profile(tokens[2:4], source, where),
                profile_id=_int(tokens[4], source, where),
                compute_instance_id=_int(tokens[5], source, where),
                placement_start=_int(start, source, where),
                placement_size=_int(size, source, where),
            )
        )
    return tuple(out)

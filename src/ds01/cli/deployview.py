"""What `ds01 container deploy` prints: its progress lines and the container it made — for the
quick path (cli/quick.py) and the full command line alike. Kept apart from readviews.py, whose
tables need more imports than a deploy's three lines (the quick deploy pays for every one)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ds01.cli.text import short_model, short_uuid, shown

Json = Mapping[str, Any]


def gpu_lines(c: Json) -> list[str]:
    """One line per unit, by its one name and short model ('4/7.0 H100 1g.10gb'); the IDs a
    container is configured with when it has no live allocation."""
    if c.get("gpus"):
        return [f"{u['name']} {short_model(str(u['model']), u.get('profile'))}" for u in c["gpus"]]
    if c.get("gpu_device_ids"):
        return [*(short_uuid(str(i)) for i in c["gpu_device_ids"]), "(no live allocation)"]
    return ["none (CPU only)"]


def progress_line(text: str) -> str:
    """A step of a deploy as ds01d reports it, for stderr: '… allocating GPUs'."""
    return f"… {shown(text)}\n"


def deployed(c: Json, shell_hint: bool) -> tuple[str, str]:
    """What `ds01 container deploy` prints once the container runs (ContainerOut): the line
    for stdout, ds01d's warnings for stderr; with shell_hint, how to open a shell."""
    out = f"✓ {shown(c['name'])} is {shown(c['state'])}: {shown(', '.join(gpu_lines(c)))}\n"
    if c.get("note"):
        out += f"{shown(c['note'])}\n"
    if shell_hint:
        out += f"Open a shell with: ds01 container shell {shown(c['name'])}\n"
    return out, "".join(f"warning: {shown(w)}\n" for w in c.get("warnings") or [])

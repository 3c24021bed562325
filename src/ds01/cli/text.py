"""Text as every ds01 view shows it: user-supplied text made safe for a terminal, and the
short forms of GPU UUIDs and models. Standard library only and nothing else imported: the
quick path's deploy output (cli/deployview.py) pays for every import."""

from __future__ import annotations

import re

# Control characters (C0, DEL, C1): an ESC sequence in a container name, a release reason or a
# refused request's text would otherwise drive another user's terminal, and a newline would forge
# a table row. Shown as \xNN instead.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(value: object) -> str:
    """Text from users (names, reasons, messages) made safe for a terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def short_uuid(uuid: str) -> str:
    """The first 8 hex digits after the prefix: 'GPU-0c3ad857-…' → '0c3ad857' (the Unit
    column says whether it is a GPU or a MIG device); a legacy 'MIG-GPU-<uuid>/gi/ci' keeps
    its ids ('0c3ad857/1/0'). Tables show this; --wide and --json the whole UUID."""
    if uuid.startswith("MIG-GPU-"):
        head, _, ids = uuid.partition("/")
        return f"{head[8:16]}/{ids}"
    _, sep, rest = uuid.partition("-")
    return rest[:8] if sep and rest else uuid[:8]


def short_model(model: str, profile: str | None = None) -> str:
    """'NVIDIA H100 80GB HBM3' + '1g.10gb' → 'H100 1g.10gb'; 'NVIDIA A100-SXM4-40GB' → 'A100';
    'NVIDIA GeForce RTX 4090' → 'RTX 4090'. The Memory column says the size; --wide shows the
    whole name."""
    words = [w for w in model.split() if w not in ("NVIDIA", "Tesla", "GeForce", "Quadro")]
    first = words[0].split("-")[0] if words else model
    if len(first) <= 3 and len(words) > 1:  # 'RTX 4090', 'RTX A6000'
        first = f"{first} {words[1].split('-')[0]}"
    return f"{first} {profile}" if profile else first

"""Value readers shared by the nvidia-smi parsers: "unknown" markers, numbers with units, UUIDs.

Owns the rules for turning one nvidia-smi cell or element text into a Python value. It must not
know any capture layout; the format modules do that. Every reader either returns a value, returns
None for nvidia-smi's own "unknown" markers, or raises CaptureError naming the capture.
"""

from __future__ import annotations

import re
from typing import NoReturn

from ds01.errors import CaptureError

# What nvidia-smi prints instead of a value it cannot read. Matched case-insensitively after
# stripping; any text in square brackets ("[N/A]", "[Not Supported]", "[Unknown Error]") is the
# CSV form of the same thing and is handled separately.
_NOT_AVAILABLE = frozenset(
    s.lower()
    for s in (
        "",
        "N/A",
        "Not Supported",
        "Not Available",
        "Not Found",
        "Unknown",
        "Unknown Error",
        "Insufficient Permissions",
        "Requested functionality has been deprecated",
        "GPU is lost",
        "ERR!",
    )
)

# ASCII digits only: Python's \d also accepts other scripts' digits, and a bounded length keeps
# int() away from its 4300-digit limit (which raises ValueError) on garbled input.
_NUMBER = re.compile(r"^(?P<num>-?[0-9]{1,15}(?:\.[0-9]{1,6})?)\s*(?P<unit>[A-Za-z%/]*)$", re.ASCII)

_HEX_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
GPU_UUID = re.compile(rf"^GPU-{_HEX_UUID}$", re.ASCII | re.I)
# MIG-<uuid> (driver >= 470) or the legacy MIG-GPU-<gpu uuid>/<gi>/<ci> (drivers 450-460).
MIG_UUID = re.compile(
    rf"""^MIG-(?:
            {_HEX_UUID}
          | (?P<legacy_gpu>GPU-{_HEX_UUID})/(?P<gi>[0-9]{{1,4}})/(?P<ci>[0-9]{{1,4}})
        )$""",
    re.ASCII | re.I | re.X,
)
PCI_BUS_ID = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]$", re.ASCII | re.I)


def fail(source: str, problem: str, fix: str | None = None) -> NoReturn:
    """Raise the one-line CaptureError every parser uses: '<source>: <problem>'."""
    raise CaptureError(f"{source}: {problem}", fix=fix)


def show(text: str, limit: int = 60) -> str:
    """A piece of the capture, quoted and cut short, safe to put in a one-line message."""
    cut = text if len(text) <= limit else text[:limit] + "…"
    return repr(cut)


def is_unknown(text: str | None) -> bool:
    """True for a missing value or one of nvidia-smi's 'cannot tell' markers."""
    if text is None:
        return True
    t = text.strip()
    return t.lower() in _NOT_AVAILABLE or (t.startswith("[") and t.endswith("]"))


def number(text: str | None, unit: str, source: str, what: str) -> float | None:
    """'19968 MiB' → 19968.0 for unit 'MiB'; the unit may be absent (csv,nounits); N/A → None.

    A value with another unit, or one that is not a number, makes the capture garbled.
    """
    if is_unknown(text):
        return None
    assert text is not None
    m = _NUMBER.match(text.strip())
    if not m:
        fail(source, f"{what}: expected a number, got {show(text)}")
    got = m.group("unit")
    if got and got.lower() != unit.lower():
        fail(source, f"{what}: expected {unit}, got {show(text)}")
    return float(m.group("num"))


def integer(text: str | None, unit: str, source: str, what: str) -> int | None:
    """Like number(), for values nvidia-smi prints as whole numbers (MiB, ids, pids)."""
    value = number(text, unit, source, what)
    if value is None:
        return None
    if not value.is_integer():
        fail(source, f"{what}: expected a whole number, got {show(text or '')}")
    return int(value)


def enabled(text: str | None, source: str, what: str) -> bool | None:
    """'Enabled' → True, 'Disabled' → False, N/A → None (e.g. MIG on a GPU without MIG)."""
    if is_unknown(text):
        return None
    assert text is not None
    t = text.strip().lower()
    if t == "enabled":
        return True
    if t == "disabled":
        return False
    fail(source, f"{what}: expected Enabled or Disabled, got {show(text)}")


def gpu_uuid(text: str, source: str, what: str) -> str:
    """A checked GPU UUID; anything else means the capture is garbled."""
    t = text.strip()
    if not GPU_UUID.match(t):
        fail(source, f"{what}: not a GPU UUID: {show(t)}")
    return t


def text_or_none(text: str | None) -> str | None:
    """Element or cell text, stripped; None for nvidia-smi's unknown markers."""
    return None if is_unknown(text) else (text or "").strip()


def split_lines(text: str) -> list[str]:
    """Lines of a capture whatever its line ends (CRLF from Windows or a kubectl tty, LF, CR)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")

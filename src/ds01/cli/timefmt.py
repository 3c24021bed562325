"""Times and durations for people, and `--since` parsing."""

from __future__ import annotations

import re
import time
from datetime import datetime

from ds01.errors import UsageError

_SINCE = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """'1h', '30m', '2d' ago, or an ISO date/time, as a unix timestamp."""
    m = _SINCE.match(text.strip())
    if m:
        return time.time() - int(m.group(1)) * _UNIT[m.group(2)]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UsageError(
            f"--since: expected an age like 30m, 1h, 2d or a date like 2026-11-28T14:00,"
            f" got {text!r}"
        ) from None


def local_time(iso: str | None) -> str:
    """'14:05' today, '28 Nov 14:05' otherwise; '–' for none."""
    if not iso:
        return "–"
    t = datetime.fromisoformat(iso).astimezone()
    now = datetime.now().astimezone()
    return t.strftime("%H:%M") if t.date() == now.date() else t.strftime("%d %b %H:%M")


def age(iso: str | None) -> str:
    if not iso:
        return "–"
    secs = max(0, int(time.time() - datetime.fromisoformat(iso).timestamp()))
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m"
    if secs < 172800:
        return f"{secs // 3600}h{(secs % 3600) // 60:02d}m"
    return f"{secs // 86400}d"

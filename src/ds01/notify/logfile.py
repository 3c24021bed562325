"""The file channel: every notification appended as one JSON line to
<state-dir>/notifications.log, so admins (and tests) can read what each user was told.

Owns the line format: {"ts", "user", "topic", "message", "terminals"}. Must not rotate or
truncate the file (logrotate's job, with copytruncate); one write per line, in append mode.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_lock = threading.Lock()


def append(
    path: Path, *, user: str, topic: str, message: str, terminals: list[str], ts: float
) -> None:
    """Append one notification; OSError when the file cannot be written."""
    line = json.dumps(
        {
            "ts": datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds"),
            "user": user,
            "topic": topic,
            "message": message,
            "terminals": terminals,
        },
        ensure_ascii=False,
    )
    data = (line + "\n").encode()
    with _lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def read(path: Path) -> list[dict[str, Any]]:
    """Every notification in the file, oldest first (an absent file has none)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    out: list[dict[str, Any]] = []
    for raw in text.splitlines():
        try:
            item = json.loads(raw)
        except ValueError:
            continue  # a line cut short by a crash mid-write
        if isinstance(item, dict):
            out.append(item)
    return out

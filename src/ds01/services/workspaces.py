"""Where a container's workspace lives on the host: the source of its writable bind mount at
/workspace (what `ds01 container deploy --workspace` makes, and what the gate lets a user bind
there), for the notifier's workspace channel.

Must not trust the path any further than that: it names a directory the user controls, and the
channel (notify/workspace.py) opens it without following a final symlink and writes only if the
user owns it. Asks the engine (docker inspect), so it runs on the notifier's worker thread,
never on an enforcing one.
"""

from __future__ import annotations

from pathlib import Path

from ds01.runtime.engine import Engine, container_info
from ds01.services.containers import WORKSPACE_TARGET


def workspace_dir(engine: Engine, container_id: str) -> Path | None:
    """The host directory mounted read-write at /workspace, or None when there is none."""
    info = container_info(engine.inspect(container_id))
    for m in info.mounts:
        if m.target == WORKSPACE_TARGET and m.type == "bind" and not m.read_only and m.source:
            return Path(m.source)
    return None

"""Wiring ds01d's state into the web status page (ds01/web/): which of the daemon's objects the
page reads. Kept out of service.py so the daemon's start stays one line."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ds01.daemon.service import Daemon
    from ds01.web.server import WebServer

log = logging.getLogger("ds01d.web")


async def start_web(d: Daemon) -> WebServer | None:
    """The status page's listener on web.listen, or None when it is off or cannot start. A
    port already taken is logged, not fatal: GPUs matter more than the page."""
    address = d.config.web.listen
    if address is None:
        return None
    from ds01.web.server import WebServer
    from ds01.web.snapshot import Sources

    server = WebServer(
        Sources(
            allocations=d.allocations,
            queue=d.queue,
            sample=lambda: d.sample,
            history=d.unit_history,
            backend_name=d.backend.name,
            config=lambda: d.config,
            now=d.clock.now,
        )
    )
    try:
        await server.start(address)
    except OSError as err:
        log.error(
            "web: cannot listen on %s (%s); the status page is off until ds01d restarts."
            " Free the port or choose another with web.listen in ds01.yaml.",
            address,
            err.strerror or err,
        )
        return None
    return server

"""Wiring ds01d's state into the metrics endpoint (ds01/metrics/): which of the daemon's
objects each metric reads. Kept out of service.py so the daemon's start stays one line."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ds01.daemon.service import Daemon
    from ds01.metrics.server import MetricsServer

import logging

log = logging.getLogger("ds01d.metrics")


async def start_metrics(d: Daemon) -> MetricsServer | None:
    """The /metrics listener on metrics.listen, or None when it is off or cannot start."""
    settings = d.config.metrics
    if settings.listen is None:
        return None
    from ds01.metrics.collector import LoopState, Sources
    from ds01.metrics.server import MetricsServer, read_token, registry_for
    from ds01.store import usage

    token: str | None = None
    if settings.token_file is not None:
        try:
            token = read_token(settings.token_file)
        except (OSError, ValueError) as err:
            log.error(
                "metrics: cannot read metrics.token_file (%s); the endpoint stays off until"
                " the file holds the token and ds01d restarts",
                err,
            )
            return None

    def loops() -> dict[str, LoopState]:
        # Copies first: the event loop's thread updates these dicts while a scrape's reads them.
        h = d.health
        last_ok, failing, since = h.last_ok.copy(), h.failing.copy(), h.since.copy()
        return {
            n: LoopState(last_ok=last_ok.get(n), failing=n in failing)
            for n in {*last_ok, *failing, *since}
        }

    sources = Sources(
        db=d.db,
        live=d.allocations.live,
        sample=lambda: d.sample,
        sample_interval=d._sample_interval,
        host_process_statuses=lambda: [p.status.value for p in d.hostproc.current()],
        docker_state=lambda: d.docker_state,
        loops=loops,
        invariant_problems=lambda: len(d.state_problems),
        # The endpoint is readable by every local user unless it asks for a token.
        hide_users=lambda: d.config.privacy == "hide_others" and token is None,
        clock=d.clock.now,
        backend=d.backend.name,
        usage=usage.totals_by_user,  # the usage ledger's (services/usage.py keeps it)
    )
    server = MetricsServer(registry_for(sources), token)
    return server if await server.start(settings.listen.host, settings.listen.port) else None

"""The /metrics endpoint: its own TCP listener (metrics.listen, 127.0.0.1:9101 by default), on
ds01d's event loop with aiohttp like api.sock, never on api.sock itself (Prometheus speaks TCP,
and api.sock's identity rule is not this one's).

A scrape builds the families in a worker thread (asyncio.to_thread): its SQLite reads wait for
the connection's lock like any other reader and never hold up the event loop, so the API and
the gate keep answering during a scrape. With metrics.token_file set, a request must carry
`Authorization: Bearer <the file's content>` (Prometheus: authorization.credentials_file).
A listener that cannot bind (the port taken) is logged and left off: ds01d shares GPUs with or
without its metrics.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client.exposition import generate_latest

from ds01.metrics.collector import Ds01Collector, Sources

log = logging.getLogger("ds01d.metrics")

INDEX = b"ds01d metrics: GET /metrics (Prometheus text format). See docs/metrics.md.\n"


def registry_for(sources: Sources) -> CollectorRegistry:
    """ds01's families plus process_* (ds01d's own CPU, memory, open files, from /proc/self)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Ds01Collector(sources))
    ProcessCollector(registry=registry)
    return registry


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, token: str | None = None) -> None:
        self.registry = registry
        self._token = token
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        return app

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=INDEX, content_type="text/plain")

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
                return web.Response(
                    status=401,
                    text="metrics.token_file is set: send Authorization: Bearer <token>\n",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        body = await asyncio.to_thread(generate_latest, self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self, host: str, port: int) -> bool:
        """Listen on host:port; False (logged) when the address cannot be bound."""
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as err:
            await runner.cleanup()
            log.error(
                "metrics: cannot listen on %s: %s; ds01d runs on without its metrics endpoint."
                " Free the port or set metrics.listen to another address, then restart ds01d.",
                listen,
                err.strerror or err,
            )
            return False
        self._runner = runner
        log.info("metrics: http://%s/metrics", listen)
        return True

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def read_token(path: Path) -> str:
    """The bearer token in metrics.token_file (surrounding whitespace ignored); OSError or
    ValueError (empty) when it cannot serve as one."""
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"{path} is empty")
    return token

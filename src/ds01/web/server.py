"""The web status page's HTTP listener: ds01d's own TCP socket (`web.listen`, 127.0.0.1:9102 by
default), separate from api.sock, serving three things and nothing else:

    GET /               the page (page.html: inline CSS and JS, nothing fetched from elsewhere)
    GET /snapshot.json  the current snapshot (web/snapshot.py)
    GET /events         the same snapshot as a Server-Sent Events stream, a new one on each change

Read-only: any method but GET and HEAD is answered 405. A request whose Host header does not
name this machine (localhost, 127.0.0.1, [::1], the listen address or one of `web.hosts`) is
refused 403 — a web page elsewhere that points its own DNS name at 127.0.0.1 (DNS rebinding)
cannot read the page through a visitor's browser. Every answer carries a Content-Security-Policy
that allows only the page's own inline script and style (by hash) and connections back to this
origin, and the page writes every name with textContent, never as HTML.

Cost is bounded whatever the number of viewers: one snapshot is built at a time, only when its
change key moved (a sample, an event, a reload) and at most once per MIN_CHECK_S, and every
request and stream shares it; live streams are capped at `web.max_clients` (the next one gets
503, and the page falls back to polling /snapshot.json); a stream always gets the newest
snapshot only, so a slow reader skips versions instead of queueing them, and one that takes
longer than WRITE_TIMEOUT_S to take a write is closed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

from ds01.api.site import HttpLog
from ds01.config import Config
from ds01.config.listen import ListenAddress
from ds01.listener import RateLimitedLog
from ds01.web.snapshot import Sources, build, change_key

log = logging.getLogger("ds01d.web")
_failed = RateLimitedLog(log)

MIN_CHECK_S = 0.5  # the change key is read at most this often, however many ask
HEARTBEAT_S = 15.0  # an SSE comment on a quiet stream: keeps tunnels open, finds dead readers
WRITE_TIMEOUT_S = 10.0
RETRY_MS = 3000  # what the page's EventSource waits before reconnecting
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

PAGE = resources.files("ds01.web").joinpath("page.html").read_text(encoding="utf-8")


def _hashes(tag: str) -> str:
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", PAGE, flags=re.DOTALL)
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in found
    )


CSP = (
    "default-src 'none'; "
    f"script-src {_hashes('script')}; "
    f"style-src {_hashes('style')}; "
    "connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def host_name(header: str) -> str | None:
    """The host part of a Host header, lowercased: 'localhost:9102' → 'localhost',
    '[::1]:8080' → '::1'; None when it is not one."""
    text = header.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not re.fullmatch(r":\d{1,5}", text[end + 1 :])):
            return None
        return text[1:end]
    name, sep, port = text.partition(":")
    if sep and not re.fullmatch(r"\d{1,5}", port):
        return None
    return name or None


class Unavailable(Exception):
    """No snapshot can be made just now."""


class Feed:
    """The newest snapshot, built when its change key moves, shared by every request and
    stream; waiters are woken when a new version is made."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.version = 0
        self.body = b""
        self._key: tuple[object, ...] | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()
        self._new = asyncio.Event()
        self.streams = 0
        self.closing = False  # ds01d stops: every stream ends now
        self._pump: asyncio.Task[None] | None = None

    async def latest(self) -> tuple[int, bytes]:
        """The newest version and its JSON; Unavailable when it cannot be made now (the
        database locked past its timeout, say): logged at a bounded rate."""
        try:
            return await self._latest()
        except Exception as err:
            _failed.log(
                logging.ERROR, "snapshot", "web: making the status snapshot failed", exc_info=True
            )
            raise Unavailable from err

    async def _latest(self) -> tuple[int, bytes]:
        async with self._lock:
            now = time.monotonic()
            if self.version and now - self._checked < MIN_CHECK_S:
                return self.version, self.body
            self._checked = now
            key = await asyncio.to_thread(change_key, self.sources)
            if key != self._key or not self.version:
                doc = await asyncio.to_thread(build, self.sources)
                self._key = key
                self.body = json.dumps(doc, separators=(",", ":")).encode()
                self.version += 1
                old, self._new = self._new, asyncio.Event()
                old.set()
            return self.version, self.body

    def waiter(self) -> asyncio.Event:
        return self._new

    def stream_opened(self) -> None:
        self.streams += 1
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run(), name="web-feed")

    def stream_closed(self) -> None:
        self.streams -= 1

    async def _run(self) -> None:
        """While a stream is open: look for changes every MIN_CHECK_S (one pump for all)."""
        while self.streams > 0:
            with contextlib.suppress(Unavailable):
                await self.latest()
            await asyncio.sleep(MIN_CHECK_S)

    async def close(self) -> None:
        self.closing = True
        self._new.set()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FEED = web.AppKey("feed", Feed)
CONFIG = web.AppKey[Callable[[], Config]]("config")


def _refusal(status: int, what: str, fix: str) -> web.Response:
    return web.json_response(
        {"error": {"kind": "usage", "what": what, "why": None, "fix": fix, "reason": None}},
        status=status,
    )


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        resp = _refusal(
            405,
            f"{request.method} is not served here: the status page is read-only",
            "Change things with the ds01 command on the server.",
        )
        resp.headers["Allow"] = "GET, HEAD"
        return resp
    config = request.app[CONFIG]()
    allowed = LOCAL_HOSTS | {h.lower() for h in config.web.hosts}
    if config.web.listen is not None:
        allowed |= {config.web.listen.host}
    name = host_name(request.headers.get("Host", ""))
    if name is None or name not in allowed:
        return _refusal(
            403,
            "this Host header does not name the ds01 server",
            "Open http://localhost:PORT/ (through an SSH tunnel: docs/web.md), or add the name"
            " you use to web.hosts in ds01.yaml.",
        )
    return await handler(request)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(HEADERS)


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", charset="utf-8")


async def snapshot(request: web.Request) -> web.Response:
    try:
        _, body = await request.app[FEED].latest()
    except Unavailable:
        return _unavailable()
    return web.Response(body=body, content_type="application/json")


def _unavailable() -> web.Response:
    resp = _refusal(
        503,
        "ds01d could not read its state just now",
        "The page tries again by itself; if this lasts, an admin finds why in ds01d's log.",
    )
    resp.headers["Retry-After"] = "5"
    return resp


async def stream(request: web.Request) -> web.StreamResponse:
    if request.method == "HEAD":  # no stream (and no place taken) for a HEAD
        return web.Response(content_type="text/event-stream")
    feed = request.app[FEED]
    limit = request.app[CONFIG]().web.max_clients
    if feed.streams >= limit:
        busy = _refusal(
            503,
            f"{limit} live views are open already (web.max_clients)",
            "Close a tab that shows this page; this one refreshes by itself every few seconds.",
        )
        busy.headers["Retry-After"] = "30"
        return busy
    try:
        await feed.latest()  # then the pump (Feed._run) makes the new ones
    except Unavailable:
        return _unavailable()
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
    )
    feed.stream_opened()
    try:
        await resp.prepare(request)
        await _write(resp, f"retry: {RETRY_MS}\n\n".encode())
        sent = 0
        while not feed.closing:
            new = feed.waiter()
            if feed.version != sent:
                sent = feed.version
                await _write(resp, b"data: " + feed.body + b"\n\n")
                continue
            try:
                await asyncio.wait_for(new.wait(), HEARTBEAT_S)
            except TimeoutError:
                await _write(resp, b": still here\n\n")
    except (ConnectionError, TimeoutError):
        pass  # the viewer left, or reads too slowly: its tab reconnects if it is still open
    finally:
        feed.stream_closed()
    return resp


async def _write(resp: web.StreamResponse, data: bytes) -> None:
    await asyncio.wait_for(resp.write(data), WRITE_TIMEOUT_S)


async def not_found(request: web.Request) -> web.Response:
    return _refusal(404, f"nothing at {request.path[:100]}", "The status page is at /.")


def build_app(sources: Sources) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=1024)
    app[FEED] = Feed(sources)
    app[CONFIG] = sources.config
    app.on_response_prepare.append(_headers)
    app.router.add_get("/", page)
    app.router.add_get("/snapshot.json", snapshot)
    app.router.add_get("/events", stream)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


class WebServer:
    """The listener's life: started by ds01d when `web.listen` is set, stopped with it."""

    def __init__(self, sources: Sources) -> None:
        self.app = build_app(sources)
        self._runner: web.AppRunner | None = None

    async def start(self, address: ListenAddress) -> None:
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=15,
            logger=HttpLog(log, "web"),  # a malformed request is one line, not a traceback
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, address.host, address.port, backlog=64, shutdown_timeout=2.0)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("web status page on http://%s/", address)

    async def stop(self) -> None:
        await self.app[FEED].close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

"""api.sock's connections: aiohttp behind the shared listener (ds01.listener), with the same
limits the Docker gate has (issue 10, D9).

    per uid / in all   ds01.listener admits or refuses each connection (503 JSON, closed)
    idle               a connection with no request in progress is closed after idle_timeout_s
    head               a request's head must be complete head_timeout_s after its first byte
                       (408, closed): a trickled head cannot hold a connection
    body               parse_body reads a body within body_timeout_s (408, server.py)

aiohttp is wrapped, not changed: each connection's protocol sits inside a _Guard that sees its
bytes and times them, and a middleware tells the guard when a request starts and ends.
aiohttp's own log of malformed requests (a traceback per garbage request line) goes through
_HttpLog: one line at INFO, at a bounded rate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from enum import Enum
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ds01.listener import ConnectionLimits, Peer, RateLimitedLog, UnixListener

log = logging.getLogger("ds01d.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_bytes(status: int, reason: str, kind: str, what: str, fix: str | None = None) -> bytes:
    """A complete HTTP/1.1 response with a ds01 error body, for answers given outside aiohttp
    (refused connections, timed-out heads); the client reads it like any other error."""
    body = json.dumps(
        {"error": {"kind": kind, "what": what, "why": None, "fix": fix, "reason": None}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


BUSY = error_bytes(
    503,
    "Service Unavailable",
    "busy",
    "too many connections to ds01d from your user",
    "Close ds01 commands or scripts you left running (each holds a connection), then try again.",
)
HEAD_TIMEOUT = error_bytes(408, "Request Timeout", "usage", "the request head came too slowly")


class _State(Enum):
    IDLE = "idle"  # no request in progress: idle_timeout_s
    HEAD = "head"  # a request's first bytes arrived, its handler has not started: head_timeout_s
    BUSY = "busy"  # a handler runs (a deploy, `logs -f`, a shell): no timeout of ours


class _Guard(asyncio.Protocol):
    """One connection: forwards every callback to aiohttp's protocol and keeps the timers."""

    def __init__(
        self,
        inner: asyncio.Protocol,
        limits: ConnectionLimits,
        guards: dict[asyncio.BaseTransport, _Guard],
        closed: asyncio.Future[None],
    ) -> None:
        self._inner = inner
        self._limits = limits
        self._guards = guards
        self._closed = closed
        self._transport: asyncio.Transport | None = None
        self._state = _State.IDLE
        self._pending = False  # bytes of a next request arrived while busy
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # loop time the current state's limit ends

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (connect_accepted_socket); uvloop's do not subclass asyncio's.
        self._transport = cast(asyncio.Transport, transport)
        self._guards[transport] = self
        self._inner.connection_made(transport)
        self._wait(_State.IDLE)

    def data_received(self, data: bytes) -> None:
        if self._state is _State.IDLE:
            self._wait(_State.HEAD)
        elif self._state is _State.BUSY:
            self._pending = True
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._transport is not None:
            self._guards.pop(self._transport, None)
        try:
            self._inner.connection_lost(exc)
        finally:
            if not self._closed.done():
                self._closed.set_result(None)

    # ---- request boundaries (from the middleware) ----------------------------------------

    def request_started(self) -> None:
        self._state = _State.BUSY
        self._pending = False
        self._deadline = None

    def request_done(self) -> None:
        self._wait(_State.HEAD if self._pending else _State.IDLE)

    # ---- timers -------------------------------------------------------------------------
    # One timer per connection, not one per state change: it is always due within the shorter
    # limit, so it comes no later than any deadline a state change can set, and when it comes
    # it closes the connection or is set again (arming and cancelling two timers per request
    # was a tenth of ds01d's work for a small request).

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wait(self, state: _State) -> None:
        self._state = state
        limit = self._limits.idle_timeout_s if state is _State.IDLE else self._limits.head_timeout_s
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + limit
        if self._timer is None:
            self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        at = loop.time() + min(self._limits.idle_timeout_s, self._limits.head_timeout_s)
        if self._deadline is not None:
            at = min(at, self._deadline)
        self._timer = loop.call_at(at, self._due)

    def _due(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        # (The loop may run a timer up to its clock's resolution early: a millisecond's slack
        # keeps that from re-arming it for the same instant again and again.)
        if self._deadline is None or self._deadline - loop.time() > 0.001:
            self._arm(loop)
            return
        if self._state is _State.HEAD:
            transport.write(HEAD_TIMEOUT)
        transport.close()


class Guards:
    """The guard of each open connection, by transport, and the middleware that tells a
    connection's guard when a request's handler starts and ends (add it before any other)."""

    def __init__(self) -> None:
        self.by_transport: dict[asyncio.BaseTransport, _Guard] = {}

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        guard = self.by_transport.get(transport) if transport is not None else None
        if guard is not None:
            guard.request_started()
        try:
            return await handler(request)
        finally:
            if guard is not None:
                guard.request_done()


class GuardedSite(web.BaseSite):
    """An aiohttp site on a bound, listening Unix socket, accepting through UnixListener."""

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        limits: ConnectionLimits,
        guards: Guards,
    ) -> None:
        super().__init__(runner)
        self._sock = sock
        self._limits = limits
        self._name = f"http://unix:{sock.getsockname()}:"
        self._guards = guards.by_transport
        self.listener = UnixListener("api", limits, self._serve, BUSY, log)

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        await self.listener.start(self._sock)

    async def stop(self) -> None:
        # Accepting stops here; the runner's cleanup then ends the open connections gracefully.
        await self.listener.stop(cancel=False)
        await super().stop()

    async def _serve(self, conn: socket.socket, peer: Peer) -> None:
        server = self._runner.server
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        if server is None:
            conn.close()
            return
        limits, guards = self._limits, self._guards
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: _Guard(server(), limits, guards, closed), sock=conn
            )
        except OSError:
            conn.close()
            return
        try:
            await closed
        finally:
            transport.close()


class HttpLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger aiohttp's server protocol is given. A malformed request (garbage request
    line, bad headers, bad chunked encoding — answered 400 by aiohttp) is one INFO line, not an
    ERROR traceback; any other error is logged with its traceback, at a bounded rate. `where`
    names the listener in the line (api, web)."""

    def __init__(self, logger: logging.Logger, where: str = "api") -> None:
        super().__init__(logger, {})
        self._where = where
        self._limited = RateLimitedLog(logger, burst=10)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level < logging.WARNING:
            if self.isEnabledFor(level):
                self.logger.log(level, msg, *args, **kwargs)
            return
        exc = kwargs.get("exc_info")
        if exc is True:
            exc = sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            lines = str(exc.message or "").strip().splitlines() or [""]
            first = lines[0].strip().rstrip(":")
            self._limited.log(
                logging.INFO,
                "malformed",
                "%s: malformed HTTP request answered %d: %s",
                self._where,
                exc.code or 400,
                _printable(first)[:200],
            )
            return
        if isinstance(exc, ConnectionError):
            return  # the client went away mid-request: nothing to fix
        self._limited.log(
            level,
            "error",
            str(msg),
            *args,
            exc_info=exc if isinstance(exc, BaseException) else None,
        )

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)

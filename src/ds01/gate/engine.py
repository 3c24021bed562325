"""The gate's connections to the real engine (root's socket, config docker.host): opening a
stream for forwarding, and a small keep-alive pool for the gate's own JSON queries (inspect a
container, list containers, look up a volume) made while checking a request.

Plain HTTP on the socket rather than the Docker SDK: the gate is asyncio and needs raw streams
for forwarding anyway. Owns no policy. Errors become LocalReply 502 ("engine not reachable").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from ds01.engineaddr import EngineAddress
from ds01.gate.httpio import (
    HttpError,
    PeerClosed,
    Reader,
    ResponseHead,
    open_tcp,
    open_unix,
    parse_response_head,
    read_body,
)
from ds01.gate.refusal import LocalReply, engine_down

MAX_IDLE = 32


async def open_engine(address: EngineAddress) -> tuple[Reader, asyncio.StreamWriter]:
    """A connection to the engine at a unix or tcp address (ssh is not for the gate)."""
    if address.scheme == "unix" and address.path is not None:
        return await open_unix(address.path, limit=2**20)
    if address.scheme == "tcp" and address.host is not None and address.port is not None:
        return await open_tcp(address.host, address.port, limit=2**20)
    raise LocalReply(502, f"ds01: the gate cannot reach a Docker engine over {address.scheme}")


class EngineConn:
    """One connection to the engine; `usable` is False once it must not carry another request."""

    def __init__(self, reader: Reader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.usable = True

    @property
    def reusable(self) -> bool:
        return (
            self.usable
            and not self.reader.buf
            and not self.reader.peer_closed()
            and not self.writer.is_closing()
        )

    def close(self) -> None:
        self.usable = False
        with contextlib.suppress(Exception):
            self.writer.close()


class EngineClient:
    """JSON requests to the engine on the gate's own behalf (never with a user's headers)."""

    def __init__(
        self, docker_host: Callable[[], str], *, timeout_s: float, max_reply_bytes: int
    ) -> None:
        self._docker_host = docker_host
        self.timeout_s = timeout_s
        self.max_reply_bytes = max_reply_bytes
        self._idle: list[tuple[str, EngineConn]] = []

    def address(self) -> EngineAddress:
        text = self._docker_host()
        try:
            return EngineAddress.parse(text)
        except ValueError:
            raise LocalReply(
                502, f"ds01: the gate cannot reach a Docker engine at {text!r}"
            ) from None

    async def open_stream(self) -> tuple[Reader, asyncio.StreamWriter]:
        try:
            return await asyncio.wait_for(open_engine(self.address()), self.timeout_s)
        except (OSError, TimeoutError) as exc:
            raise engine_down(f"{type(exc).__name__}: {exc}") from exc

    async def acquire(self) -> EngineConn:
        """An idle kept-alive connection to the current engine, or a new one."""
        host = self._docker_host()
        while self._idle:
            key, conn = self._idle.pop()
            if key == host and conn.reusable:
                return conn
            conn.close()
        reader, writer = await self.open_stream()
        return EngineConn(reader, writer)

    def release(self, conn: EngineConn) -> None:
        """Give a connection back after a complete, kept-alive exchange (else close it)."""
        if len(self._idle) < MAX_IDLE and conn.reusable:
            self._idle.append((self._docker_host(), conn))
        else:
            conn.close()

    async def request(self, method: str, path: str, body: object | None = None) -> tuple[int, Any]:
        """(status, decoded JSON or None). `path` is already URL-encoded, with any query."""
        rhead, data = await self.exchange(method, path, body)
        try:
            decoded = json.loads(data) if data.strip() else None
        except ValueError:
            decoded = None
        return rhead.status, decoded

    async def exchange(
        self, method: str, path: str, body: object | None = None
    ) -> tuple[ResponseHead, bytes]:
        """The engine's response head and whole body (capped) for a request of the gate's own:
        no header but Host (and the body's), whatever any client sent."""
        payload = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: docker\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        raw = head.encode("latin-1") + b"\r\n" + payload
        for attempt in (1, 2):
            conn = await self.acquire()
            try:
                async with asyncio.timeout(self.timeout_s):
                    conn.writer.write(raw)
                    await conn.writer.drain()
                    rhead_raw = await conn.reader.read_head(256 * 1024)
                    if rhead_raw is None:
                        raise PeerClosed("engine closed the connection")
                    rhead = parse_response_head(rhead_raw)
                    framing, length = rhead.framing(method)
                    data = await read_body(conn.reader, framing, length, self.max_reply_bytes)
            except (OSError, PeerClosed, HttpError, TimeoutError) as exc:
                conn.close()
                # A pooled connection the engine had closed: one retry on a fresh one.
                if attempt == 1 and isinstance(exc, PeerClosed | ConnectionError):
                    continue
                raise engine_down(f"{type(exc).__name__}: {exc}") from exc
            if framing != "close" and rhead.keep_alive:
                self.release(conn)
            else:
                conn.close()
            return rhead, data
        raise engine_down("no answer")  # pragma: no cover - the loop returns or raises

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.request("GET", path)

    def close(self) -> None:
        for _, conn in self._idle:
            conn.close()
        self._idle.clear()


def seg(value: str) -> str:
    """One path segment, URL-encoded (names and IDs from users go through this)."""
    return quote(value, safe="")


def query_json(value: object) -> str:
    return quote(json.dumps(value, separators=(",", ":")), safe="")

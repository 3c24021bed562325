"""HTTP/1.1 on raw asyncio streams: a buffered reader, strict request-head parsing, response-head
parsing, and body copying (Content-Length, chunked, until-close) that moves bytes as they come.

A hand parser rather than a library: the gate must forward bodies and hijacked streams byte for
byte and start streaming as soon as data arrives, and it must refuse every request whose framing
the engine (Go's net/http) could read differently from the gate — both Content-Length and
Transfer-Encoding, repeated framing headers, obs-fold, bare CR/LF, control characters. Request
heads are re-serialised from what was parsed, so the engine sees exactly what the gate checked.

Owns no policy and no sockets; server.py drives it.
"""

from __future__ import annotations

import asyncio
import re
import socket
from asyncio.streams import FlowControlMixin
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import cast

CRLF = b"\r\n"
READ_CHUNK = 256 * 1024
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 16 * 1024

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE = re.compile(rb"([A-Z]{1,16}) (\S{1,65536}) HTTP/1\.([01])")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: (.*))?")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")
# Headers that must appear at most once: the engine and the gate must agree on framing,
# routing and content type.
_SINGLE = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "upgrade",
        "expect",
        "content-type",
        "content-encoding",
    }
)


class HttpError(Exception):
    """A request the gate cannot read; answered with `status` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class PeerClosed(Exception):
    """The other side closed the connection in the middle of a message."""


class Reader(FlowControlMixin, asyncio.Protocol):
    """One connection's protocol and what it received, with bounded line/head reads.

    What the peer sends goes straight into `buf`: no asyncio StreamReader in between, whose
    buffering, copying and waking were a tenth of ds01d's instructions per container list
    relayed (callgrind, bench/RESULTS.md). Reading from the socket pauses while more than
    `limit` bytes wait unread, and resumes when a reader asks for more. At most one coroutine
    waits for data at a time (as with a StreamReader). Writing goes through an
    asyncio.StreamWriter on the same protocol (open_unix, open_tcp), whose drain() waits while
    the transport's write buffer is full (FlowControlMixin)."""

    def __init__(self, limit: int = READ_CHUNK * 4) -> None:
        super().__init__()
        self.buf = bytearray()
        self.eof = False  # the peer's end is closed (what is in buf can still be read)
        self._limit = limit
        self._error: BaseException | None = None
        self._transport: asyncio.Transport | None = None
        self._paused_reading = False
        self._waiter: asyncio.Future[None] | None = None

    # ---- the protocol: called by the event loop ---------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()
        if len(self.buf) > self._limit and not self._paused_reading and self._transport:
            self._paused_reading = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return True  # keep our writing side open: a half-closed hijacked stream goes on

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.eof = True
        self._error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---- reading ----------------------------------------------------------------------

    async def fill(self) -> bool:
        """Wait for more bytes than are buffered now; False at end of stream. A connection
        that broke raises its error (ConnectionResetError, …) once nothing new is left."""
        have = len(self.buf)
        while len(self.buf) == have:
            if self._error is not None:
                raise self._error
            if self.eof:
                return False
            if self._waiter is not None:
                raise RuntimeError("two coroutines read one connection at once")
            if self._paused_reading and self._transport is not None:
                self._paused_reading = False
                self._transport.resume_reading()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return True

    async def wait_data(self) -> bool:
        """Wait until at least one byte is buffered; False at end of stream."""
        while not self.buf:
            if not await self.fill():
                return False
        return True

    async def read_head(self, max_bytes: int) -> bytes | None:
        """Bytes up to and including the blank line ending a head; None at a clean end of stream
        (nothing buffered). HttpError 431 beyond max_bytes, 400 on a truncated head."""
        scanned = 0
        while True:
            i = self.buf.find(b"\r\n\r\n", max(0, scanned - 3))
            if i >= 0:
                if i + 4 > max_bytes:
                    raise HttpError(431, "request header fields too large")
                head = bytes(self.buf[: i + 4])
                del self.buf[: i + 4]
                return head
            scanned = len(self.buf)
            if scanned > max_bytes:
                raise HttpError(431, "request header fields too large")
            if not await self.fill():
                if self.buf:
                    raise PeerClosed("connection closed inside a message head")
                return None

    def head_buffered(self) -> bool:
        """Whether a whole head (up to its blank line) is already in the buffer."""
        return self.buf.find(b"\r\n\r\n") >= 0

    async def read_line(self, max_bytes: int) -> bytes:
        """One CRLF-terminated line, CRLF included."""
        scanned = 0
        while True:
            i = self.buf.find(CRLF, max(0, scanned - 1))
            if i >= 0:
                line = bytes(self.buf[: i + 2])
                del self.buf[: i + 2]
                return line
            scanned = len(self.buf)
            if scanned > max_bytes:
                raise HttpError(400, "line too long in chunked body")
            if not await self.fill():
                raise PeerClosed("connection closed inside a chunked body")

    async def read_some(self, limit: int) -> bytes:
        """Up to `limit` bytes (at least one); b"" at end of stream."""
        if not self.buf and not await self.fill():
            return b""
        n = min(limit, len(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self.fill():
                raise PeerClosed("connection closed inside a message body")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def peer_closed(self) -> bool:
        """End of stream seen (the event loop saw it, also on an idle connection)."""
        return self.eof

    def take_buffered(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


async def open_unix(
    path: str | None = None, *, sock: socket.socket | None = None, limit: int = READ_CHUNK * 4
) -> tuple[Reader, asyncio.StreamWriter]:
    """A Unix-socket connection (to `path`, or an accepted `sock`) as a Reader and a writer."""
    loop = asyncio.get_running_loop()
    transport, reader = await loop.create_unix_connection(lambda: Reader(limit), path, sock=sock)
    return reader, asyncio.StreamWriter(transport, reader, None, loop)


async def open_tcp(host: str, port: int, *, limit: int) -> tuple[Reader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    transport, reader = await loop.create_connection(lambda: Reader(limit), host, port)
    return reader, asyncio.StreamWriter(transport, reader, None, loop)


@dataclass
class Headers:
    """Header lines in order, names as sent; lookups are case-insensitive."""

    items: list[tuple[str, str]] = field(default_factory=list)
    _index: dict[str, str] | None = field(default=None, repr=False, compare=False)

    def get(self, name: str) -> str | None:
        if self._index is None:
            index: dict[str, str] = {}
            for k, v in self.items:
                index.setdefault(k.lower(), v)
            self._index = index
        return self._index.get(name.lower())

    def remove(self, *names: str) -> None:
        lows = {n.lower() for n in names}
        self.items = [(k, v) for k, v in self.items if k.lower() not in lows]
        self._index = None

    def put(self, name: str, value: str) -> None:
        self.remove(name)
        self.items.append((name, value))
        self._index = None

    def tokens(self, name: str) -> frozenset[str]:
        """A comma-separated header as a set of lower-case tokens ('Connection')."""
        value = self.get(name) or ""
        return frozenset(t.strip().lower() for t in value.split(",") if t.strip())

    def encode(self) -> bytes:
        return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in self.items)


@dataclass
class RequestHead:
    method: str
    target: str
    minor: int  # HTTP/1.<minor>
    headers: Headers
    content_length: int | None  # None: no Content-Length
    chunked: bool

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @cached_property
    def keep_alive(self) -> bool:
        """Kept once read: a parsed head's headers are never changed (forwarding changes a
        copy), and a client in a loop sends the same head again and again (KnownHeads)."""
        conn = self.headers.tokens("Connection")
        if self.minor == 0:
            return "keep-alive" in conn
        return "close" not in conn

    @property
    def upgrade(self) -> str | None:
        if "upgrade" not in self.headers.tokens("Connection"):
            return None
        return self.headers.get("Upgrade")

    def encode(self, target: str, headers: Headers | None = None) -> bytes:
        h = headers if headers is not None else self.headers
        line = f"{self.method} {target} HTTP/1.{self.minor}\r\n".encode("latin-1")
        return line + h.encode() + CRLF


def _header_lines(lines: list[bytes], *, strict: bool) -> Headers:
    items: list[tuple[str, str]] = []
    index: dict[str, str] = {}  # the lookup table Headers.get would build: made here, once
    for line in lines:
        if not line or line[:1] in (b" ", b"\t"):
            raise HttpError(400, "folded or empty header line")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HttpError(400, "malformed header line")
        value = value.strip(b" \t")
        if strict and _CTL.search(value):
            raise HttpError(400, "control character in a header value")
        key = name.decode("ascii")
        low = key.lower()
        text = value.decode("latin-1")
        if low in index:
            if strict and low in _SINGLE:
                raise HttpError(400, f"header {key} sent twice")
        else:
            index[low] = text
        items.append((key, text))
    return Headers(items, index)


def parse_request_head(raw: bytes) -> RequestHead:
    """A request head (bytes up to the blank line). HttpError 400 on anything ambiguous."""
    lines = raw[:-4].split(CRLF)
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        raise HttpError(400, "malformed request line")
    method = m.group(1).decode("ascii")
    target = m.group(2).decode("latin-1")
    if not target.startswith("/") or _CTL.search(m.group(2)):
        raise HttpError(400, "the request target must be a path")
    headers = _header_lines(lines[1:], strict=True)
    te = headers.get("Transfer-Encoding")
    cl = headers.get("Content-Length")
    chunked = False
    length: int | None = None
    if te is not None:
        if te.strip().lower() != "chunked":
            raise HttpError(501, f"transfer coding {te!r} is not supported")
        if cl is not None:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        if m.group(3) == b"0":
            raise HttpError(400, "chunked body in an HTTP/1.0 request")
        chunked = True
    elif cl is not None:
        if not cl.isdigit() or len(cl) > 18:
            raise HttpError(400, "invalid Content-Length")
        length = int(cl)
    return RequestHead(method, target, int(m.group(3)), headers, length, chunked)


@dataclass
class ResponseHead:
    raw: bytes
    status: int
    minor: int
    headers: Headers

    def framing(self, request_method: str) -> tuple[str, int]:
        """("none", 0) | ("length", n) | ("chunked", 0) | ("close", 0)."""
        if request_method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200:
            return "none", 0
        te = self.headers.get("Transfer-Encoding")
        if te is not None and "chunked" in te.lower():
            return "chunked", 0
        cl = self.headers.get("Content-Length")
        if cl is not None and cl.strip().isdigit():
            return "length", int(cl.strip())
        return "close", 0

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.tokens("Connection")
        if self.minor == 0:
            return "keep-alive" in conn
        return "close" not in conn


def parse_response_head(raw: bytes) -> ResponseHead:
    lines = raw[:-4].split(CRLF)
    m = _STATUS_LINE.fullmatch(lines[0])
    if m is None:
        raise HttpError(502, "the engine sent a malformed status line")
    headers = _header_lines(lines[1:], strict=False)
    return ResponseHead(raw, int(m.group(2)), int(m.group(1)), headers)


def chunk_size(line: bytes) -> int:
    m = _CHUNK_SIZE.fullmatch(line)
    if m is None:
        raise HttpError(400, "malformed chunk size line")
    return int(m.group(1), 16)


async def read_chunked(reader: Reader, limit: int) -> bytes:
    """A whole chunked body, decoded; HttpError 413 beyond `limit` bytes."""
    out = bytearray()
    async for data in body_pieces(reader, chunked=True):
        out += data
        if len(out) > limit:
            raise HttpError(413, "body too large")
    return bytes(out)


async def body_pieces(
    reader: Reader, *, chunked: bool, length: int | None = None
) -> AsyncIterator[bytes]:
    """A message body's bytes as they arrive, chunked framing removed (trailers skipped)."""
    if not chunked:
        left = length or 0
        while left > 0:
            data = await reader.read_some(min(left, READ_CHUNK))
            if not data:
                raise PeerClosed("connection closed inside a message body")
            left -= len(data)
            yield data
        return
    while True:
        size = chunk_size(await reader.read_line(MAX_CHUNK_LINE))
        if size == 0:
            await skip_trailers(reader)
            return
        while size > 0:
            data = await reader.read_some(min(size, READ_CHUNK))
            if not data:
                raise PeerClosed("connection closed inside a chunk")
            size -= len(data)
            yield data
        if await reader.read_exact(2) != CRLF:
            raise HttpError(400, "chunk not followed by CRLF")


async def skip_trailers(reader: Reader) -> bytes:
    """Trailer lines after the last chunk, through the final CRLF (returned raw)."""
    raw = bytearray()
    while True:
        line = await reader.read_line(MAX_CHUNK_LINE)
        raw += line
        if line == CRLF:
            return bytes(raw)
        if len(raw) > MAX_TRAILERS:
            raise HttpError(400, "trailers too large")


async def read_body(reader: Reader, framing: str, length: int, limit: int) -> bytes:
    """A whole body by its framing; HttpError 413 beyond `limit`."""
    if framing == "none":
        return b""
    if framing == "length":
        if length > limit:
            raise HttpError(413, "body too large")
        return await reader.read_exact(length)
    if framing == "chunked":
        return await read_chunked(reader, limit)
    out = bytearray()
    while chunk := await reader.read_some(READ_CHUNK):
        out += chunk
        if len(out) > limit:
            raise HttpError(413, "body too large")
    return bytes(out)


async def copy_length(reader: Reader, writer: asyncio.StreamWriter, n: int) -> None:
    while n > 0:
        data = await reader.read_some(min(n, READ_CHUNK))
        if not data:
            raise PeerClosed("connection closed inside a message body")
        writer.write(data)
        n -= len(data)
        await writer.drain()


async def copy_chunked(
    reader: Reader,
    writer: asyncio.StreamWriter,
    *,
    canonical: bool,
    before_end: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Copy a chunked body chunk by chunk as it arrives. canonical=True (requests) re-encodes the
    size lines and drops trailers, so the engine sees plain chunks; the payload bytes are the
    client's. canonical=False (responses) forwards every byte as received. before_end runs
    before the last chunk is written."""
    while True:
        line = await reader.read_line(MAX_CHUNK_LINE)
        size = chunk_size(line)
        size_line = b"%x\r\n" % size if canonical else line
        if size == 0:
            trailers = await skip_trailers(reader)
            if before_end is not None:
                await before_end()
            writer.write(size_line + (CRLF if canonical else trailers))
            await writer.drain()
            return
        if len(reader.buf) >= size + 2:
            # The whole chunk is here (the usual case for events, logs, small replies): one write.
            data = await reader.read_exact(size + 2)
            if data[-2:] != CRLF:
                raise HttpError(400, "chunk not followed by CRLF")
            writer.write(size_line + data)
        else:
            writer.write(size_line)
            await copy_length(reader, writer, size)
            if await reader.read_exact(2) != CRLF:
                raise HttpError(400, "chunk not followed by CRLF")
            writer.write(CRLF)
        await writer.drain()


async def copy_until_eof(reader: Reader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read_some(READ_CHUNK):
        writer.write(data)
        await writer.drain()

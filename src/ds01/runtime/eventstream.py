"""Docker's event stream (GET /events) read straight off a connection to the engine: lines of
JSON in a chunked answer, decoded one event at a time.

ds01d's reconciler reads every start, die, stop and destroy of every container ds01 manages.
Through the Docker SDK (requests, urllib3, http.client's chunked reader, the SDK's JSON
splitter) that cost ds01d ~0.7 ms of CPU per `docker run --rm`, a twentieth of all it spends
on one through the gate (bench/gate.py); this reader does the same in a few readline() calls.

Must not interpret events: Engine.events (engine.py) builds the request, checks the answer's
status and maps errors; this module only frames and decodes.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections import deque
from typing import Any

MAX_LINE = 1024 * 1024  # an event is a few KB; a longer line is not one
_MAX_HEAD = 64 * 1024


class Garbled(ConnectionError):
    """The engine's answer is not what GET /events answers: like a cut connection, the caller
    subscribes again (an OSError, so Engine maps it as the engine being unreachable)."""


def _number(text: bytes, base: int) -> int:
    try:
        value = int(text.strip(), base)
    except ValueError:
        raise Garbled(f"not a length: {text[:40]!r}") from None
    if value < 0:
        raise Garbled(f"not a length: {text[:40]!r}")
    return value


class RawEvents:
    """One GET /events on its own connection. After the head: `status`; iterate for the events
    (dicts) of a 200 answer, or read `error_body()` of another. close() may be called from any
    thread: a blocked read then ends as the end of the stream."""

    def __init__(self, sock: socket.socket, target: str, head_timeout: float) -> None:
        self._sock = sock
        self._closed = False
        self._head_timeout = head_timeout
        sock.settimeout(head_timeout)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: docker\r\n\r\n".encode("ascii"))
        self._file = sock.makefile("rb")
        status = self._file.readline(_MAX_HEAD)
        parts = status.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise Garbled(f"not an HTTP answer: {status[:80]!r}")
        self.status = int(parts[1])
        self._chunked = False
        self._length: int | None = None
        while (line := self._file.readline(_MAX_HEAD)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding":
                self._chunked = value.strip().lower() == b"chunked"
            elif name == b"content-length":
                self._length = _number(value, 10)
        sock.settimeout(None)  # events come when they come: the stream waits for the next one
        self._buffer = b""
        self._lines: deque[bytes] = deque()

    def error_body(self) -> bytes:
        """The body of an answer that is not the stream (a few hundred bytes of JSON)."""
        self._sock.settimeout(self._head_timeout)
        if self._chunked:
            return self._read_piece() or b""
        return self._file.read(
            min(MAX_LINE, self._length if self._length is not None else MAX_LINE)
        )

    def __iter__(self) -> RawEvents:
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            while self._lines:
                line = self._lines.popleft().strip()
                if line:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        raise Garbled(f"not an event: {line[:80]!r}") from None
                    if not isinstance(event, dict):
                        raise Garbled(f"not an event: {line[:80]!r}")
                    return event
            try:
                piece = self._read_piece()
            except OSError:
                if self._closed:
                    raise StopIteration from None
                raise
            if not piece:
                raise StopIteration  # the engine ended the stream (until, or it went away)
            *complete, self._buffer = (self._buffer + piece).split(b"\n")
            if len(self._buffer) > MAX_LINE:
                raise Garbled(f"an event line of more than {MAX_LINE} bytes")
            self._lines.extend(complete)

    def _read_piece(self, size: int = 65536) -> bytes | None:
        """The next bytes of the body; None at its end."""
        if self._closed:
            return None
        if not self._chunked:
            return self._file.read1(size) or None
        size_line = self._file.readline(_MAX_HEAD)
        if not size_line:
            return None
        length = _number(size_line.split(b";", 1)[0], 16)
        if length == 0:
            return None  # the last chunk (a trailer, if any, is not read: the stream is over)
        if length > MAX_LINE:
            raise Garbled(f"a chunk of {length} bytes")
        data = self._file.read(length)
        self._file.readline(_MAX_HEAD)  # the CRLF after the chunk
        return data if len(data) == length else None

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv()
        with contextlib.suppress(OSError):
            self._file.close()
        self._sock.close()

"""Requests to ds01d over its Unix socket, for the command line's quick path (cli/quick.py) and
the typed client (client.py, through Pool: kept-alive connections); ds01d itself uses Pool for
its one light read of the Docker engine's socket (runtime/engine.py Engine.running).

Written on a bare socket because every library costs too much to import for what it does
here: http.client pulls in the email parser and ssl (34 ms measured on a 2-core VM, three times
the interpreter's own start-up), httpx twice that. get_json() takes only the plainest answer —
HTTP/1.1 200, a Content-Length body, the connection closed after it — and returns None for
anything else, so the caller asks again through the full client (client.py), which handles
and explains every other case. post() reads an answer as it comes (Content-Length, chunked or
until closed), for the deploy's progress lines. Pool keeps connections open between requests
and reads every kind of answer ds01d sends; for the typed client it is CPU per request that
counts, not import time (Pool's docstring).
"""

from __future__ import annotations

import json
import select
import socket
import threading
from collections.abc import Iterator
from io import BufferedReader
from typing import Any, NamedTuple

# notices.py's HEADER, spelled here so that an answer without notices costs no import (a test
# keeps the two the same).
HEADER = "X-Ds01-Notices"
_NOTICES = b"x-ds01-notices"
MAX_BODY = 64 * 1024 * 1024  # more than any read answer; a larger one goes the long way
# Query values sent as they are (no percent-encoding library to import): anything else in one
# goes the long way.
PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def get_json(
    socket_path: str,
    path: str,
    params: dict[str, str] | None = None,
    timeout: float = 30.0,
    notices: list[dict[str, Any]] | None = None,
) -> Any | None:
    """The JSON body of GET `path`?`params` answered 200, or None. With `notices` (a list),
    the caller's banner notices are asked for and added to it, whatever the answer (they are
    handed out once: the caller must print them even when it goes the long way)."""
    items = (params or {}).items()
    if not all(k and v and PLAIN.issuperset(k) and PLAIN.issuperset(v) for k, v in items):
        return None
    query = "&".join(f"{k}={v}" for k, v in items)
    target = f"{path}?{query}" if query else path
    request = _request("GET", target, None, notices is not None, close=True)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(request)
            raw = _read_all(sock)
    except OSError:
        return None
    return _body_of(raw, notices) if raw is not None else None


def _request(
    method: str, target: str, body: bytes | None, ask_notices: bool, *, close: bool
) -> bytes:
    """One request's bytes: a JSON body when given, the notices asked for, and the connection
    closed after the answer or kept."""
    head = f"{method} {target} HTTP/1.1\r\nHost: ds01d\r\nAccept: application/json\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    elif method != "GET":
        head += "Content-Length: 0\r\n"
    if ask_notices:
        head += f"{HEADER}: 1\r\n"
    if close:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode("ascii") + (body or b"")


def _read_all(sock: socket.socket) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while chunk := sock.recv(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            return None
    return b"".join(chunks)


def _body_of(raw: bytes, notices: list[dict[str, Any]] | None = None) -> Any | None:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    status, *header_lines = head.split(b"\r\n")
    length = None
    plain = True
    for line in header_lines:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == _NOTICES and notices is not None:
            notices.extend(_decode(value))
        elif name == b"transfer-encoding":
            plain = False  # chunked: the long way reads it
        elif name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                plain = False
    if not plain or (not status.startswith(b"HTTP/1.1 200 ") and status != b"HTTP/1.1 200"):
        return None
    if length is None or len(body) != length:
        return None  # cut short, or not the plain answer this reader takes
    try:
        return json.loads(body)
    except ValueError:
        return None


def _decode(value: bytes) -> list[dict[str, Any]]:
    from ds01.notices import decode

    return decode(value.strip().decode("ascii", "replace"))


class Answer:
    """An answer to a POST whose body is read line by line as it comes (ds01d's deploy sends
    its progress and its result as lines of JSON). `notices`: the caller's banner notices in
    its head, when they were asked for."""

    def __init__(self, sock: socket.socket, file: BufferedReader | None = None) -> None:
        self._sock = sock
        self._file = sock.makefile("rb") if file is None else file
        status = self._file.readline(65537)
        if not status:
            raise ConnectionResetError("the server closed the connection before it answered")
        parts = status.split(b" ", 2)
        if len(parts) < 2 or parts[0] != b"HTTP/1.1" or not parts[1].isdigit():
            raise ValueError("not an HTTP/1.1 answer")
        self.status = int(parts[1])
        self._chunked = False
        self._length: int | None = None
        self.closes = False  # the server ends the connection after this answer
        self.notices: list[dict[str, Any]] = []
        while (line := self._file.readline(65537)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == _NOTICES:
                self.notices = _decode(value)
            elif name == b"transfer-encoding":
                self._chunked = value.strip().lower() == b"chunked"
            elif name == b"content-length":
                self._length = int(value.strip())
            elif name == b"connection":
                self.closes = value.strip().lower() == b"close"
        if self.status in (204, 304) or self.status < 200:
            self._length = 0  # no body, whatever the head says
        if not self._chunked and self._length is None:
            self.closes = True  # the body ends when the connection does

    def body(self) -> bytes:
        return b"".join(self._pieces())

    def lines(self) -> Iterator[bytes]:
        """The body's lines, each as soon as it is whole. Raises OSError or ValueError when the
        answer is cut short or garbled."""
        pending = b""
        for piece in self._pieces():
            pending += piece
            *whole, pending = pending.split(b"\n")
            yield from whole
        if pending:
            yield pending

    def _pieces(self) -> Iterator[bytes]:
        if self._chunked:
            while True:
                size = int(self._file.readline(1026).split(b";")[0].strip() or b"x", 16)
                if size == 0:
                    # The trailer section, up to its empty line: the next answer on a kept-alive
                    # connection starts after it.
                    while self._file.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                data = self._file.read(size)
                if len(data) != size or self._file.read(2) != b"\r\n":
                    raise ValueError("a chunk was cut short")
                yield data
        elif self._length is not None:
            data = self._file.read(self._length)
            if len(data) != self._length:
                raise ValueError("the body was cut short")
            yield data
        else:
            while piece := self._file.read1(65536):
                yield piece

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def post(
    socket_path: str,
    path: str,
    body: Any,
    timeout: float | None = None,
    ask_notices: bool = False,
) -> Answer | None:
    """POST `body` as JSON and return the answer as it starts, or None when ds01d could not be
    reached (nothing was sent). Errors after the request went out raise OSError or ValueError:
    the caller must not send it again."""
    request = _request("POST", path, json.dumps(body).encode(), ask_notices, close=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(socket_path)
    except OSError:
        sock.close()
        return None
    try:
        sock.sendall(request)
        return Answer(sock)
    except BaseException:
        sock.close()
        raise


class ConnectFailed(OSError):
    """ds01d's socket could not be connected to: nothing was sent."""


class Reply(NamedTuple):
    status: int
    body: bytes
    notices: list[dict[str, Any]]


class Pool:
    """Kept-alive connections to ds01d for the typed client's requests that answer with one
    body (client.py), and to the Docker engine for Engine.running. A request takes an idle
    connection, or opens one when none is idle (so threads sharing a client never share a
    connection), and gives it back once its answer is read whole. On a 2-core VM an
    allocate+release cycle costs the client ~0.1 ms of CPU so, against ~0.9 ms through httpx,
    whose URL, header and h11 checks are written for any server: with 8 clients on the same
    cores that CPU is taken from ds01d.

    Errors: ConnectFailed when nothing was sent; TimeoutError when ds01d did not answer in
    time; another OSError or ValueError when the answer was cut short or garbled (the request
    may have taken effect: the caller must not send it again)."""

    def __init__(self, socket_path: str, timeout: float | None) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._idle: list[tuple[socket.socket, BufferedReader]] = []
        self._lock = threading.Lock()

    def request(
        self, method: str, target: str, body: bytes | None = None, ask_notices: bool = False
    ) -> Reply:
        data = _request(method, target, body, ask_notices, close=False)
        sock, file = self._take()
        kept = False
        try:
            sock.sendall(data)
            answer = Answer(sock, file)
            reply = Reply(answer.status, answer.body(), answer.notices)
            kept = not answer.closes
            return reply
        finally:
            if kept:
                with self._lock:
                    self._idle.append((sock, file))
            else:
                file.close()
                sock.close()

    def _take(self) -> tuple[socket.socket, BufferedReader]:
        while True:
            with self._lock:
                if not self._idle:
                    break
                sock, file = self._idle.pop()
            if _still_open(sock):
                return sock, file
            file.close()
            sock.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except OSError as e:
            sock.close()
            raise ConnectFailed(e.errno, f"cannot connect to {self.socket_path}: {e}") from e
        return sock, sock.makefile("rb")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for sock, file in idle:
            file.close()
            sock.close()


def _still_open(sock: socket.socket) -> bool:
    """An idle kept-alive connection ds01d has not closed (it closes idle ones after a while):
    nothing to read on it, not even its end. A request is sent only on such a connection."""
    poller = select.poll()  # not select(): a process may hold more than 1024 descriptors
    poller.register(sock, select.POLLIN)
    try:
        return not poller.poll(0)
    except OSError:
        return False

"""One GET to ds01d over its Unix socket, for the command line's quick path (cli/quick.py).

Written on a bare socket because every library costs too much to import for what it does
here: http.client pulls in the email parser and ssl (34 ms measured on a 2-core VM, three times
the interpreter's own start-up), httpx twice that. This reader takes only the plainest answer
— HTTP/1.1 200, a Content-Length body, the connection closed after it — and returns None for
anything else, so the caller asks again through the full client (client.py), which handles
and explains every other case.
"""

from __future__ import annotations

import json
import socket
from typing import Any

MAX_BODY = 64 * 1024 * 1024  # more than any read answer; a larger one goes the long way
# Query values sent as they are (no percent-encoding library to import): anything else in one
# goes the long way.
PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def get_json(
    socket_path: str, path: str, params: dict[str, str] | None = None, timeout: float = 30.0
) -> Any | None:
    """The JSON body of GET `path`?`params` answered 200, or None."""
    items = (params or {}).items()
    if not all(k and v and PLAIN.issuperset(k) and PLAIN.issuperset(v) for k, v in items):
        return None
    query = "&".join(f"{k}={v}" for k, v in items)
    target = f"{path}?{query}" if query else path
    request = (
        f"GET {target} HTTP/1.1\r\nHost: ds01d\r\nAccept: application/json\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(request)
            raw = _read_all(sock)
    except OSError:
        return None
    return _body_of(raw) if raw is not None else None


def _read_all(sock: socket.socket) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while chunk := sock.recv(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            return None
    return b"".join(chunks)


def _body_of(raw: bytes) -> Any | None:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    status, *header_lines = head.split(b"\r\n")
    if not status.startswith(b"HTTP/1.1 200 ") and status != b"HTTP/1.1 200":
        return None
    length = None
    for line in header_lines:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return None  # chunked: the long way reads it
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return None
    if length is None or len(body) != length:
        return None  # cut short, or not the plain answer this reader takes
    try:
        return json.loads(body)
    except ValueError:
        return None

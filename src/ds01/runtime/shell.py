"""An exec session in a container: a raw, bidirectional socket to a shell on a tty, or to a
command on plain pipes (then the engine multiplexes stdout and stderr: see ``demux``).

Owns the HTTP upgrade of ``POST /exec/{id}/start`` on a connection of its own. The Docker SDK
can hand back the socket of its upgraded response, but http.client has by then read the
response headers through a buffered reader that may already hold the first bytes of the shell's
output (the prompt); reading the socket after that loses them. Here the headers are read one
byte at a time, so the socket starts exactly at the first byte of the session.

Must not decide who may open a shell, or as which uid: the caller passes ``user``
(services/containers.py decides). Errors are ds01 errors (engine.py maps the SDK calls; the
socket part maps its own).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable

from ds01.engineaddr import EngineAddress
from ds01.errors import RuntimeUnavailable
from ds01.runtime.down import engine_unreachable

_MAX_HEADER_BYTES = 64 * 1024
_CONNECT_TIMEOUT_S = 30.0


class ShellSession:
    """A started exec. With a tty, ``sock`` carries the terminal both ways (raw bytes, no
    framing); without one, input is raw and output comes in the engine's frames (``Demux``).
    exit_code() is known once the command has ended.

    resize / exit_code call the engine (blocking); use them from a worker thread in async code.
    """

    def __init__(
        self,
        exec_id: str,
        sock: socket.socket,
        inspect: Callable[[str], dict[str, object]],
        resize: Callable[[str, int, int], None],
        *,
        tty: bool = True,
    ) -> None:
        self.exec_id = exec_id
        self.tty = tty
        self.sock = sock
        self._inspect = inspect
        self._resize = resize

    def resize(self, rows: int, cols: int) -> None:
        self._resize(self.exec_id, rows, cols)

    def close_input(self) -> None:
        """End of input for the shell (as Ctrl-D at an empty prompt would); output still flows."""
        with contextlib.suppress(OSError):  # already closed: nothing left to signal
            self.sock.shutdown(socket.SHUT_WR)

    def exit_code(self, wait_s: float = 5.0) -> int | None:
        """The shell's exit status; None if it is still running after wait_s. The engine records
        the status a moment after the socket closes, hence the short wait."""
        deadline = time.monotonic() + wait_s
        while True:
            data = self._inspect(self.exec_id)
            code = data.get("ExitCode")
            if not data.get("Running") and isinstance(code, int):
                return code
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> ShellSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_engine_socket(host: str, action: str = "open a shell") -> socket.socket:
    """A fresh connection to the engine at ``unix:///path`` or ``tcp://host:port``; failures
    name `action` (what the connection is for)."""
    try:
        address: EngineAddress | None = EngineAddress.parse(host)
    except ValueError:
        address = None
    try:
        if address is not None and address.scheme == "unix" and address.path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(_CONNECT_TIMEOUT_S)
            sock.connect(address.path)
        elif address is not None and address.scheme == "tcp" and address.host and address.port:
            sock = socket.create_connection(
                (address.host, address.port), timeout=_CONNECT_TIMEOUT_S
            )
        else:
            raise RuntimeUnavailable(
                f"cannot {action}: engine address {host!r} is not supported for this",
                why="It needs a plain unix:// or tcp:// engine socket (ssh:// is not one).",
                fix="Point ds01d at the engine's Unix socket (docker.host in ds01.yaml).",
            )
    except OSError as exc:
        raise engine_unreachable(action, host, exc) from exc
    return sock


def start_exec_upgraded(
    sock: socket.socket, api_version: str, exec_id: str, *, tty: bool = True
) -> tuple[int, str, bytes]:
    """Send ``POST /v{api}/exec/{id}/start`` asking to upgrade the connection to a raw stream.

    Returns (HTTP status, reason, body if not upgraded). On 101/200 the socket is left right
    after the headers, in blocking mode.
    """
    body = json.dumps({"Detach": False, "Tty": tty}).encode()
    request = (
        f"POST /v{api_version}/exec/{exec_id}/start HTTP/1.1\r\n"
        "Host: docker\r\n"
        "Content-Type: application/json\r\n"
        "Connection: Upgrade\r\n"
        "Upgrade: tcp\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    ).encode() + body
    sock.sendall(request)
    header = bytearray()
    while not header.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)  # one at a time: not a byte of the session may be consumed here
        if not byte or len(header) > _MAX_HEADER_BYTES:
            raise OSError("the engine closed the connection before answering the exec start")
        header += byte
    lines = header.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    reason = parts[2] if len(parts) > 2 else ""
    if status in (101, 200):
        sock.settimeout(None)
        return status, reason, b""
    # An error answer: read its (small) body for the message.
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    rest = bytearray()
    while len(rest) < min(length, _MAX_HEADER_BYTES):
        chunk = sock.recv(length - len(rest))
        if not chunk:
            break
        rest += chunk
    return status, reason, bytes(rest)


class Demux:
    """The engine's framing of a tty-less exec's output: per frame 8 header bytes (stream: 1
    stdout, 2 stderr; 3 zero bytes; the payload length, big-endian) and the payload. Feed it the
    bytes as they come; it returns whole (stream, payload) pieces, payloads split as they arrive
    so output streams without waiting for a frame's end."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._stream = 0
        self._left = 0  # payload bytes still due in the current frame

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while self._buf:
            if self._left == 0:
                if len(self._buf) < 8:
                    break
                self._stream = self._buf[0]
                self._left = int.from_bytes(self._buf[4:8], "big")
                del self._buf[:8]
                continue
            piece = bytes(self._buf[: self._left])
            del self._buf[: len(piece)]
            self._left -= len(piece)
            out.append((self._stream, piece))
        return out

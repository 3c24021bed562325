"""Servers a test starts: for the notifier's channels, an incoming-webhook receiver (stdlib
http.server), a dead webhook (accepts, never answers), an SMTP server (aiosmtpd); and a
Unix-socket HTTP server with scripted answers that plays ds01d or the Docker engine."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from support import short_tmp


class Hook:
    """A webhook receiver: records each POST's JSON body and answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[Any] = []
        self.paths: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                hook.bodies.append(json.loads(self.rfile.read(length)))
                hook.paths.append(self.path)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/SECRET-TOKEN"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DeadHook:
    """Accepts connections and never answers: a hung webhook."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.accepted = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


class Inbox:
    """aiosmtpd's handler: every mail the SMTP server took."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    """An SMTP server on 127.0.0.1: its inbox and port."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


# What a scripted server does after writing an answer: keep the connection for the next
# request, close it, or send nothing more until the server is closed.
KEEP, CLOSE, HANG = "keep", "close", "hang"
# script(n, request) -> (the answer: bytes, or pieces written 20 ms apart, so that a reader sees
# them arrive separately; then KEEP, CLOSE or HANG). n counts requests over all connections.
Script = Callable[[int, bytes], tuple["bytes | list[bytes]", str]]


class ScriptedUnixServer:
    """A Unix-socket HTTP/1.1 server answering by `script`. Records each connection's requests
    (head and body) in `connections`."""

    def __init__(self, script: Script, name: str = "api.sock") -> None:
        self.path = str(short_tmp() / name)
        self.script = script
        self.connections: list[list[bytes]] = []
        self.count = 0
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        got: list[bytes] = []
        with self.lock:
            self.connections.append(got)
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    more = conn.recv(65536)
                    if not more:
                        return
                    buf += more
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                request, buf = head + b"\r\n\r\n" + buf[:length], buf[length:]
                with self.lock:
                    n = self.count
                    self.count += 1
                got.append(request)
                reply, then = self.script(n, request)
                for piece in [reply] if isinstance(reply, bytes) else reply:
                    conn.sendall(piece)
                    if not isinstance(reply, bytes):
                        time.sleep(0.02)
                if then == CLOSE:
                    return
                if then == HANG:
                    self.released.wait(60)
                    return

    def close(self) -> None:
        self.released.set()
        self.sock.close()

"""The gate under malformed and hostile HTTP: garbage, oversized heads, slowloris heads that
never finish, bodies cut off, request smuggling (Content-Length with chunked), bare LFs and NULs,
and streams dropped mid-way — from many concurrent connections of a real user, for a bounded
time, while other users go on working.

Proven: ds01d stays up and logs no traceback; the well-behaved clients are served throughout;
and nothing from a malformed or unfinished request reaches the engine — the engine sits behind a
recording relay here, and the marker every bad request carries never appears in what it got.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from gate_support import (
    BIN,
    TEST_IMAGE,
    gate_world,
    run_as,
    short_tmp,
)

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]

MARK = "BADMARK7f3a"
FLOOD_SECONDS = 6
CONNECTIONS = 48


class RecordingRelay:
    """A Unix socket that forwards to the engine and keeps every byte sent to the engine."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self.target = target.removeprefix("unix://")
        self.sent = bytearray()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(self.path))
        s.listen(256)
        self._listener = s
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                up.connect(self.target)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()


FLOOD = r"""
import os, random, socket, sys, threading, time
path, mark, seconds, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
deadline = time.monotonic() + seconds
counts = {}
lock = threading.Lock()
hold = []

def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    return s

def garbage():
    s = conn(); s.sendall(os.urandom(512) + mark.encode() + b"\r\n\r\n"); s.close()

def oversized():
    s = conn()
    s.sendall(f"GET /containers/json?m={mark} HTTP/1.1\r\nHost: x\r\nX-Big: ".encode()
              + b"a" * 200_000 + b"\r\n\r\n")
    try: s.recv(4096)
    except OSError: pass
    s.close()

def slowloris():
    s = conn()
    for b in f"GET /containers/json?m={mark} HTTP/1.1\r\nHost: x\r\n".encode()[:40]:
        s.sendall(bytes([b])); time.sleep(0.05)
    hold.append(s)  # never finished, never closed until the end

def cut_body():
    s = conn()
    s.sendall(f"POST /v1.41/containers/create?name={mark} HTTP/1.1\r\nHost: x\r\n"
              "Content-Type: application/json\r\nContent-Length: 900\r\n\r\n"
              f'{{"Image": "{mark}", "Cmd": ["'.encode())
    s.close()

def smuggle():
    s = conn()
    s.sendall(f"POST /v1.41/containers/create?name={mark} HTTP/1.1\r\nHost: x\r\n"
              "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
              f"GET /containers/json?m={mark} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try: s.recv(4096)
    except OSError: pass
    s.close()

def bare_lf():
    s = conn()
    s.sendall(f"GET /containers/json?m={mark} HTTP/1.1\nHost: x\n\n".encode()
              + f"GET /_ping?m={mark} HTTP/1.1\r\nX: a\x00b\r\n\r\n".encode())
    try: s.recv(4096)
    except OSError: pass
    s.close()

def pipelined():
    s = conn()
    s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n"
              + f"GET /containers/json?m={mark} HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".encode())
    try: s.recv(4096)
    except OSError: pass
    s.close()

def bad_chunks():
    s = conn()
    s.sendall(f"POST /v1.41/containers/create?name={mark} HTTP/1.1\r\nHost: x\r\n"
              "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
              f"5\r\n{{\"Im\r\nzz\r\n{mark}\r\n".encode())
    try: s.recv(4096)
    except OSError: pass
    s.close()

def dropped_stream():
    s = conn()
    s.sendall(b"GET /v1.41/events HTTP/1.1\r\nHost: x\r\n\r\n")
    try: s.recv(100)
    except OSError: pass
    s.close()

kinds = [garbage, oversized, slowloris, cut_body, smuggle, bare_lf, pipelined, bad_chunks,
         dropped_stream]

def worker(i):
    rnd = random.Random(i)
    while time.monotonic() < deadline:
        k = rnd.choice(kinds)
        try:
            k()
            r = k.__name__
        except OSError as e:
            r = k.__name__ + ":" + type(e).__name__
        with lock:
            counts[r] = counts.get(r, 0) + 1

threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
for s in hold: s.close()
print(sorted(counts.items()))
"""


@pytest.fixture(scope="module")
def relay(docker_host: str, docker_client: docker.DockerClient) -> Iterator[RecordingRelay]:
    d = short_tmp("ds01-relay-")
    r = RecordingRelay(d / "engine.sock", docker_host)
    r.start()
    yield r
    r.stop()


def test_hostile_http_never_reaches_the_engine_nor_stops_others(relay: RecordingRelay) -> None:
    with gate_world(f"unix://{relay.path}") as w:
        mallory, alice = w.user("mallory"), w.user("alice")
        flood_out: list[str] = []

        def flood() -> None:
            r = run_as(
                mallory,
                [
                    str(BIN / "python"),
                    "-c",
                    FLOOD,
                    w.gate,
                    MARK,
                    str(FLOOD_SECONDS),
                    str(CONNECTIONS),
                ],
                timeout=120,
            )
            flood_out.append(r.stdout + r.stderr)

        t = threading.Thread(target=flood)
        t.start()
        served: list[float] = []
        with w.agent(alice) as agent:
            started = time.monotonic()
            while t.is_alive() or time.monotonic() - started < 2:
                t0 = time.monotonic()
                reply = agent.request("GET", "/v1.41/_ping")
                assert reply.status == 200 and reply.body == b"OK"
                r = w.docker(alice, "ps", "--format", "{{.ID}}", timeout=60)
                assert r.returncode == 0, r.stderr
                served.append(time.monotonic() - t0)
        t.join()
        assert flood_out and "garbage" in flood_out[0], flood_out
        assert len(served) >= 3
        # still working, and still checking
        r = w.docker(alice, "run", "--rm", TEST_IMAGE, "echo", "still here")
        assert r.stdout == "still here\n", r.stderr
        r = w.docker(alice, "run", "--rm", "--privileged", TEST_IMAGE, "true")
        assert "ds01: --privileged was refused" in r.stderr
        assert w.d.proc is not None and w.d.proc.poll() is None
        assert "Traceback" not in w.d.log()
        assert MARK.encode() not in bytes(relay.sent)
        assert b"zz\r\n" not in bytes(relay.sent)

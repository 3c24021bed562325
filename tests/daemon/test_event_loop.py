"""ds01d's one event loop serves api.sock and the Docker gate, so nothing a request waits for may
stall it (issue 11, item 3): service calls and user lookups run in threads.

An admin's `sqlite3` holds the state database's write lock. A `POST /v1/allocations` then waits
for the lock (ds01d's busy timeout is 10 s); while it waits, requests that need no database —
`/v1/health` as root, `/v1/whoami` as a user ds01d has not seen yet (an NSS lookup), and a
`docker` `_ping` through the gate — are answered. Once the lock goes, the allocation is made.
Each probe has a generous deadline (5 s; they take milliseconds); no time is measured. When the
loop is blocked, they are not answered until the lock goes.
"""

from __future__ import annotations

import json
import pwd
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from ds01.api.schemas import AllocateIn, AllocationOut
from support import BIN, Daemon, Users

DEADLINE_S = 5.0  # per probe; the lock is held far shorter than ds01d's 10 s busy timeout
PROBING_S = 2.0

CONFIG = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 2
  max_units_per_container: 2
  max_containers: 3
  allow_full_gpu: true
allocation:
  reservation_timeout: 2m
"""

# A raw GET on a Unix socket: no client library, and the answer's first line and body.
ASK = r"""
import socket, sys
path, target, deadline = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(deadline)
s.connect(path)
s.sendall(f"GET {target} HTTP/1.1\r\nHost: ds01\r\nConnection: close\r\n\r\n".encode())
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.buffer.write(data)
"""


def ask(path: Path, target: str) -> tuple[str, str]:
    """(status line, body) of GET `target` on the socket at `path`, as root, within DEADLINE_S
    (TimeoutError otherwise)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(DEADLINE_S)
    try:
        s.connect(str(path))
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: ds01\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    finally:
        s.close()
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return head.splitlines()[0], body


def ask_as(user: str, path: Path, target: str) -> tuple[str, str]:
    """The same, from a process of `user` (SO_PEERCRED names them)."""
    pw = pwd.getpwnam(user)
    r = subprocess.run(
        [
            "setpriv",
            f"--reuid={pw.pw_uid}",
            f"--regid={pw.pw_gid}",
            "--init-groups",
            str(BIN / "python"),
            "-c",
            ASK,
            str(path),
            target,
            str(DEADLINE_S),
        ],
        capture_output=True,
        timeout=DEADLINE_S + 10,  # + the interpreter's start
    )
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    head, _, body = r.stdout.decode(errors="replace").partition("\r\n\r\n")
    return head.splitlines()[0], body


def test_requests_that_need_no_database_are_answered_while_one_waits_for_its_lock(
    daemon_factory: Any, docker_host: str, users: Users
) -> None:
    d: Daemon = daemon_factory(config=CONFIG, docker_host=docker_host)
    newcomer = users.add()
    gate = d.run_dir / "docker.sock"
    assert ask(gate, "/_ping") == ("HTTP/1.1 200 OK", "OK")  # the engine answers the gate

    waiting: dict[str, Any] = {}

    def allocate() -> None:
        try:
            with d.client() as c:
                waiting["row"] = c.allocate(AllocateIn(gpus=1, container="waits"))
        except Exception as e:
            waiting["error"] = e

    lock = sqlite3.connect(d.state_dir / "ds01.db", timeout=1, isolation_level=None)
    waiter = threading.Thread(target=allocate)
    try:
        lock.execute("BEGIN IMMEDIATE")
        waiter.start()
        answered: list[str] = []
        until = time.monotonic() + PROBING_S
        while time.monotonic() < until:
            status, body = ask(d.socket, "/v1/health")
            assert status == "HTTP/1.1 200 OK", body
            assert json.loads(body)["status"] == "ok"
            assert ask(gate, "/_ping") == ("HTTP/1.1 200 OK", "OK")
            answered.append("health+ping")
        status, body = ask_as(newcomer, d.socket, "/v1/whoami")
        assert status == "HTTP/1.1 200 OK", body
        assert json.loads(body)["user"] == newcomer
        # The allocation still waits for the lock: the probes were answered meanwhile.
        assert waiter.is_alive(), waiting
        assert answered
    finally:
        lock.execute("ROLLBACK")
        lock.close()
        waiter.join(timeout=60)
    assert "error" not in waiting, waiting
    row = waiting["row"]
    assert isinstance(row, AllocationOut)
    assert (row.state, row.container, len(row.units)) == ("reserved", "waits", 1)

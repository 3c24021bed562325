"""Helpers for the container tests: a module-scoped real ds01d, real users, checks behind ds01's
back (Docker SDK, the SQLite database), a pseudo-terminal for shells, and a relay socket that
lets a test take "the Docker engine" away and give it back.

Built on tests/support.py (real ds01d processes, real Unix users), like the shared fixtures.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker

import support
from support import BIN, MACHINES, TEST_IMAGE, Daemon, Users, as_user, need, short_tmp

__all__ = ["BIN", "MACHINES", "TEST_IMAGE", "Daemon", "Users", "as_user", "need", "short_tmp"]

MIXED = MACHINES / "8xH100-mig-mixed.yaml"

# A container command that ends at once on SIGTERM (an interactive sh as PID 1 ignores it, so
# `docker stop` would wait its full 10 s), and that proves who it runs as by writing a file.
STOPPABLE = ("sh", "-c", 'trap "exit 0" TERM; while :; do sleep 1; done')


# ---- daemon and users ----------------------------------------------------------------------


@contextlib.contextmanager
def running_daemon(config: str, docker_host: str | None, machine: Path = MIXED) -> Iterator[Daemon]:
    """A real ds01d for a whole test module (the daemon_factory fixture is per test)."""
    d = Daemon(short_tmp(), config, machine, docker_host)
    d.start()
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


def unique_user(prefix: str = "ds01c") -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def add_user(users: Users, name: str, *, badname: bool = False) -> bool:
    """useradd NAME; False if useradd refuses. badname: let through names such as 'x@y.lan'
    (shadow 4.13 calls the flag --badname, some older releases --badnames)."""
    cmd = ["useradd", "--create-home", "--shell", "/bin/sh"]
    for extra in (["--badname"], ["--badnames"]) if badname else ([],):
        r = subprocess.run([*cmd, *extra, name], capture_output=True, text=True)
        if r.returncode == 0:
            users.created.append(name)
            return True
    return False


def uid_of(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def gid_of(user: str) -> int:
    return pwd.getpwnam(user).pw_gid


def home_of(user: str) -> str:
    return pwd.getpwnam(user).pw_dir


def user_dir(user: str, name: str) -> str:
    """A directory the user made in their home (mkdir as the user)."""
    path = os.path.join(home_of(user), name)
    r = as_user(user, ["mkdir", "-p", path])
    assert r.returncode == 0, r.stderr
    return path


# ---- ds01 as a user ------------------------------------------------------------------------

_DEPLOY_SNIPPET = """
import json, sys
from ds01.api.schemas import DeployIn
from ds01.client import Client
from ds01.errors import Ds01Error, Refusal
body = DeployIn.model_validate(json.loads(sys.argv[2]))
try:
    with Client(sys.argv[1]) as c:
        out = c.deploy(body)
except Ds01Error as e:
    err = {"kind": e.kind, "what": e.what, "why": e.why,
           "reason": e.reason.value if isinstance(e, Refusal) else None}
    print(json.dumps({"error": err}))
else:
    print(json.dumps({"container": out.model_dump(mode="json")}))
"""


def api_deploy(d: Any, user: str, **body: Any) -> dict[str, Any]:
    """POST /v1/containers through ds01.client, run as the real user: {"container": …} or
    {"error": {"kind", "what", "why", "reason"}} — for asserting a refusal's reason, which the
    CLI shows only as text."""
    body.setdefault("image", TEST_IMAGE)
    args = [str(BIN / "python"), "-c", _DEPLOY_SNIPPET, str(d.socket), json.dumps(body)]
    r = as_user(user, args)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def cli_json(d: Any, *args: str, user: str | None = None) -> Any:
    r = d.cli(*args, "--json", user=user)
    assert r.returncode == 0, f"ds01 {' '.join(args)}: rc {r.returncode}\n{r.stdout}{r.stderr}"
    return json.loads(r.stdout)


def deploy(
    d: Any,
    user: str,
    name: str,
    *options: str,
    command: tuple[str, ...] = STOPPABLE,
) -> dict[str, Any]:
    """`ds01 container deploy NAME --image … --detach --json OPTIONS -- COMMAND` as the user."""
    r = d.cli(
        "container",
        "deploy",
        name,
        "--image",
        TEST_IMAGE,
        "--detach",
        "--json",
        *options,
        *(["--", *command] if command else []),
        user=user,
    )
    assert r.returncode == 0, f"deploy {name}: rc {r.returncode}\n{r.stdout}{r.stderr}"
    out: dict[str, Any] = json.loads(r.stdout)
    return out


# ---- checks behind ds01's back --------------------------------------------------------------


def live_allocations(d: Any) -> list[dict[str, Any]]:
    """`ds01 admin alloc list --json` (root): every live allocation."""
    out = cli_json(d, "admin", "alloc", "list")
    assert isinstance(out, list)
    return out


def db_rows(d: Any, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Read ds01d's database directly (read-only), to check what the API might not show."""
    con = sqlite3.connect(f"file:{d.state_dir / 'ds01.db'}?mode=ro", uri=True, timeout=10)
    try:
        return list(con.execute(sql, params))
    finally:
        con.close()


def db_live(d: Any) -> list[tuple[int, str]]:
    """(id, state) of every allocation the database holds as not released."""
    return [
        (r[0], r[1])
        for r in db_rows(
            d, "SELECT id, state FROM allocations WHERE state != 'released' ORDER BY id"
        )
    ]


def db_live_units(d: Any) -> list[str]:
    return [r[0] for r in db_rows(d, "SELECT unit_uuid FROM allocation_units WHERE live = 1")]


def db_allocation(d: Any, alloc_id: int) -> tuple[str, str | None]:
    """(state, release_reason) of one allocation."""
    rows = db_rows(d, "SELECT state, release_reason FROM allocations WHERE id = ?", alloc_id)
    assert rows, f"no allocation {alloc_id}"
    return rows[0][0], rows[0][1]


def db_events(d: Any, alloc_id: int) -> list[tuple[str, str]]:
    """(action, reason) of an allocation's events, oldest first."""
    rows = db_rows(
        d, "SELECT action, reason FROM events WHERE allocation_id = ? ORDER BY id", alloc_id
    )
    return [(r[0], r[1]) for r in rows]


def containers_of(client: docker.DockerClient, owner: str) -> list[Any]:
    """Every container (any state) carrying ds01's owner label for this user."""
    return list(client.containers.list(all=True, filters={"label": f"ds01.owner={owner}"}))


def process_env(client: docker.DockerClient, container: str) -> dict[str, str]:
    """The environment of the container's PID 1 — where Docker's nvidia driver puts
    NVIDIA_VISIBLE_DEVICES (an exec'd process does not inherit it)."""
    c = client.containers.get(container)
    code, out = c.exec_run(["cat", "/proc/1/environ"])
    assert code == 0, out
    pairs = (item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    return dict(pairs)


def exec_in(client: docker.DockerClient, container: str, *cmd: str) -> str:
    """Run a command in the container as its own user; its output (must succeed)."""
    code, out = client.containers.get(container).exec_run(list(cmd))
    text = out.decode(errors="replace")
    assert code == 0, f"{cmd}: exit {code}: {text}"
    return str(text)


def remove_quietly(client: docker.DockerClient, *names: str) -> None:
    for name in names:
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(name).remove(force=True)


def remove_owned(client: docker.DockerClient, owners: list[str]) -> None:
    """Remove whatever containers these users still have (test cleanup)."""
    for owner in owners:
        for c in containers_of(client, owner):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)


# ---- a terminal ----------------------------------------------------------------------------


def run_in_pty(
    user: str,
    argv: list[str],
    env: dict[str, str],
    *,
    type_after: bytes,
    keys: bytes,
    timeout: float = 60.0,
) -> tuple[int, str]:
    """Run argv as the real user on a pty; once the output holds `type_after` (the shell's
    prompt), type `keys`. Returns (exit status, everything the terminal showed)."""
    return support.run_in_pty(user, argv, env, steps=[(type_after, keys)], timeout=timeout)


# ---- an engine that can go away -------------------------------------------------------------


class SocketRelay:
    """A Unix socket at `path` that forwards every connection to the engine at `target`.

    ds01d pointed here sees the engine go down when stop() closes the listener *and* every open
    connection (the event stream, pooled keep-alive connections), and come back on start():
    Docker down and back, without stopping the shared test engine.
    """

    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self.target = target.removeprefix("unix://")
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the accept() blocked in the other thread; close() alone may not.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

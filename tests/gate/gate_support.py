"""Helpers for the Docker gate tests: a module-scoped real ds01d whose gate socket the test users
can reach (they are in the gate group), the docker CLI run as a real user through the gate, a
small "agent" process running as a user that sends raw HTTP to the gate (so SO_PEERCRED names
that user), and a pseudo-terminal runner.

The shared fixtures live in tests/conftest.py; this module loads that file by path (see
tests/containers/containers_support.py for why `from conftest import …` is not used).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"


def _load_root_conftest() -> Any:
    spec = importlib.util.spec_from_file_location("ds01_gate_tests_root_conftest", _ROOT_CONFTEST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


root = _load_root_conftest()
Daemon = root.Daemon
Users = root.Users
as_user = root.as_user
need = root.need
short_tmp = root.short_tmp
BIN: Path = root.BIN
MACHINES: Path = root.MACHINES
TEST_IMAGE: str = root.TEST_IMAGE
MIXED = MACHINES / "8xH100-mig-mixed.yaml"
# The docker CLI users run: /usr/local/bin/docker where installed (newer), else Debian's.
DOCKER_CLI = shutil.which("docker", path="/usr/local/bin:/usr/bin") or "/usr/bin/docker"
# A container command that ends at once on SIGTERM.
STOPPABLE = ("sh", "-c", 'trap "exit 0" TERM; while :; do sleep 1; done')

CONFIG = """\
admin_group: {admins}
defaults:
  max_gpueq: 2
  max_units_per_container: 2
  max_containers: {max_containers}
  allow_full_gpu: true
  gpu_hold_after_stop: 0s
  cpus: 1
  memory: 512m
  shm: 64m
  pids: 500
allocation:
  reservation_timeout: 2m
host:
  gate_group: {group}
"""


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


@dataclass
class GateWorld:
    d: Any
    users: Any
    group: str
    names: list[str] = field(default_factory=list)

    @property
    def gate(self) -> str:
        return str(self.d.run_dir / "docker.sock")

    @property
    def docker_host(self) -> str:
        return f"unix://{self.gate}"

    def user(self, prefix: str) -> str:
        name = unique(prefix)
        self.users.add(name, groups=(self.group,))
        self.names.append(name)
        return name

    def docker(
        self,
        user: str,
        *args: str,
        stdin: str | None = None,
        timeout: float = 120,
        cli: str = DOCKER_CLI,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """The real docker CLI as `user`, with DOCKER_HOST pointing at the gate."""
        return run_as(
            user,
            [cli, *args],
            env={"DOCKER_HOST": self.docker_host, **(env or {})},
            stdin=stdin,
            timeout=timeout,
            cwd=cwd,
        )

    def container_events(self, user: str, since: str, until: str) -> list[tuple[str, str]]:
        """(container name, action) of the container events `user` sees through the gate."""
        r = self.docker(
            user,
            "events",
            "--since",
            since,
            "--until",
            until,
            "--filter",
            "type=container",
            "--format",
            "{{.Actor.Attributes.name}} {{.Action}}",
        )
        assert r.returncode == 0, r.stderr
        return [(line.split()[0], line.split()[1]) for line in r.stdout.splitlines()]

    def agent(self, user: str) -> Agent:
        return Agent(user, self.gate)


def run_as(
    user: str,
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 120,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Like conftest.as_user, with a timeout and stdin of the caller's choosing."""
    pw = pwd.getpwnam(user)
    full_env = {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": pw.pw_dir,
        "USER": user,
        "LOGNAME": user,
        "LANG": "C.UTF-8",
        **(env or {}),
    }
    cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", *args]
    return subprocess.run(
        cmd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        cwd=cwd or pw.pw_dir,
    )


@contextlib.contextmanager
def gate_world(
    docker_host: str, *, max_containers: int = 20, machine: Path = MIXED, extra_config: str = ""
) -> Iterator[GateWorld]:
    """A real ds01d (sim machine, the private engine) and a gate group for test users;
    `extra_config`: YAML sections added to the config."""
    need(os.geteuid() == 0, "creating Unix users needs root")
    users = Users()
    group = users.group(unique("ds01tg"))
    admins = unique("ds01ta")
    config = CONFIG.format(group=group, admins=admins, max_containers=max_containers)
    config += extra_config
    d = Daemon(short_tmp(), config, machine, docker_host)
    world = GateWorld(d, users, group)
    try:
        d.start()
        yield world
    finally:
        d.stop()
        remove_containers_of(docker_host, world.names)
        users.cleanup()
        shutil.rmtree(d.base, ignore_errors=True)


def remove_containers_of(docker_host: str, owners: list[str]) -> None:
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=60)
    try:
        for owner in owners:
            for c in client.containers.list(all=True, filters={"label": f"ds01.owner={owner}"}):
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    c.remove(force=True)
            for v in client.volumes.list(filters={"label": f"ds01.owner={owner}"}):
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    v.remove(force=True)
            for n in client.networks.list(filters={"label": f"ds01.owner={owner}"}):
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    n.remove()
    finally:
        client.close()


# ---- raw HTTP as a user ------------------------------------------------------------------

_AGENT = r"""
import base64, json, socket, sys, time

def more(s, deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        return None
    s.settimeout(left)
    try:
        data = s.recv(65536)
    except OSError:
        return None
    return data or None

def read_response(s, deadline):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = more(s, deadline)
        if d is None:
            return buf
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lower = head.lower()
    status = head.split(b" ", 2)[1:2]
    if status in ([b"204"], [b"304"]):
        done = lambda r: True  # no body by definition
    elif b"content-length:" in lower:
        n = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        done = lambda r: len(r) >= n
    elif b"transfer-encoding: chunked" in lower:
        done = lambda r: r.endswith(b"0\r\n\r\n")
    else:
        done = lambda r: False
    while not done(rest):
        d = more(s, deadline)
        if d is None:
            break
        rest += d
    return head + b"\r\n\r\n" + rest

path = sys.argv[1]
for line in sys.stdin:
    cmd = json.loads(line)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    out = {"data": "", "error": None}
    try:
        s.connect(path)
        s.sendall(base64.b64decode(cmd["data"]))
        if cmd.get("shut_wr"):
            s.shutdown(socket.SHUT_WR)
        got = read_response(s, time.monotonic() + cmd.get("timeout", 10))
        out["data"] = base64.b64encode(got).decode()
    except OSError as e:
        out["error"] = repr(e)
    finally:
        s.close()
    print(json.dumps(out), flush=True)
"""


@dataclass
class Reply:
    status: int
    headers: str
    body: bytes

    @property
    def message(self) -> str:
        try:
            return str(json.loads(self.body).get("message", ""))
        except (ValueError, AttributeError):
            return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


def parse_reply(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    if "transfer-encoding: chunked" in head.decode("latin-1").lower():
        out = b""
        rest = body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line.split(b";")[0] or b"0", 16)
            if n == 0:
                break
            out += rest[:n]
            rest = rest[n + 2 :]
        body = out
    return Reply(status, "\r\n".join(lines[1:]), body)


class Agent:
    """A process running as `user` that sends raw bytes to the gate, one connection each."""

    def __init__(self, user: str, socket_path: str) -> None:
        pw = pwd.getpwnam(user)
        self.proc = subprocess.Popen(
            [
                "setpriv",
                f"--reuid={pw.pw_uid}",
                f"--regid={pw.pw_gid}",
                "--init-groups",
                str(BIN / "python"),
                "-c",
                _AGENT,
                socket_path,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={"PATH": "/usr/bin:/bin", "HOME": pw.pw_dir},
        )

    def raw(self, data: bytes, *, timeout: float = 10, shut_wr: bool = False) -> bytes:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        cmd = {"data": base64.b64encode(data).decode(), "timeout": timeout, "shut_wr": shut_wr}
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        out = json.loads(self.proc.stdout.readline())
        return base64.b64decode(out["data"])

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw_body: bytes | None = None,
        timeout: float = 10,
    ) -> Reply:
        payload = (
            raw_body
            if raw_body is not None
            else (json.dumps(body).encode() if body is not None else b"")
        )
        h = {"Host": "docker", **(headers or {})}
        if body is not None and "Content-Type" not in h:
            h["Content-Type"] = "application/json"
        if "Transfer-Encoding" not in h:
            h["Content-Length"] = str(len(payload))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
        return parse_reply(self.raw(head.encode() + b"\r\n" + payload, timeout=timeout))

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chunked(data: bytes, size: int = 7) -> bytes:
    out = b""
    for i in range(0, len(data), size):
        part = data[i : i + size]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


# ---- a terminal --------------------------------------------------------------------------


def user_dir(user: str, name: str) -> str:
    path = os.path.join(pwd.getpwnam(user).pw_dir, name)
    r = as_user(user, ["mkdir", "-p", path])
    assert r.returncode == 0, r.stderr
    return path

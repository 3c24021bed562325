"""Helpers shared by the tests: real ds01d processes, real Unix users, the private Docker engine.

Fixtures that use them live in conftest.py; tests import the helpers with `from support import …`
(never `from conftest import …`: several conftest.py files exist and share that module name).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import pwd
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from ds01.client import Client
from ds01.errors import DaemonUnavailable

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MACHINES = ROOT / "examples" / "machines"
ENV_DOCKER_HOST = "DS01_TEST_DOCKER_HOST"
TEST_IMAGE = "ds01-test/busybox:latest"
START_HINT = (
    'start the private engine: eval "$(scripts/test-docker.sh start /tmp/ds01-dockerd)" '
    "(stop it with: scripts/test-docker.sh stop /tmp/ds01-dockerd)"
)
_SCRUB = ("DS01_CONFIG", "DS01_STATE_DIR", "DS01_RUN_DIR", "DOCKER_HOST")


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def need(condition: bool, why: str) -> None:
    """Skip locally, fail in CI: CI is root with Docker, so nothing may be skipped there."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{why} — this test must run in CI")
    pytest.skip(why)


# ---- waiting -----------------------------------------------------------------------------

T = TypeVar("T")


def wait_for(
    check: Callable[[], T],
    what: str,
    timeout: float = 30.0,
    *,
    interval: float = 0.1,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll check() until it returns something truthy, and return that value.

    The one way tests wait for something to happen (never a fixed sleep). The timeout only
    turns a hang into a failure, nothing is timed: at it, an AssertionError says what was
    awaited, for how long, what check() returned last, and detail() (a daemon's log, say)
    when given. check() may raise to fail at once (a process that exited, say).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            last = repr(value)
            if len(last) > 500:
                last = last[:500] + "…"
            message = f"timed out after {timeout:g}s waiting for {what} (last check: {last})"
            if detail is not None:
                message += "\n" + detail()
            raise AssertionError(message)
        time.sleep(interval)


# ---- Docker ------------------------------------------------------------------------------


# ---- Unix users --------------------------------------------------------------------------


class Users:
    """Creates real Unix users (useradd) for one test and removes them afterwards."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.groups: list[str] = []

    def group(self, name: str) -> str:
        subprocess.run(["groupadd", "-f", name], check=True)
        self.groups.append(name)
        return name

    def add(self, name: str | None = None, groups: tuple[str, ...] = ()) -> str:
        name = name or f"ds01t{uuid.uuid4().hex[:8]}"
        cmd = ["useradd", "--create-home", "--shell", "/bin/bash"]
        if groups:
            cmd += ["--groups", ",".join(groups)]
        subprocess.run([*cmd, name], check=True, capture_output=True)
        self.created.append(name)
        return name

    def cleanup(self) -> None:
        for name in reversed(self.created):
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
            subprocess.run(["userdel", "--remove", name], capture_output=True)
        for g in self.groups:
            subprocess.run(["groupdel", g], capture_output=True)


def as_user(user: str, args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a command as a real user (setpriv with the user's groups), without a login shell."""
    pw = pwd.getpwnam(user)
    env = {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": pw.pw_dir,
        "USER": user,
        "LOGNAME": user,
        "LANG": "C.UTF-8",
    }
    extra_env = kw.pop("env", None)
    if isinstance(extra_env, dict):
        env.update(extra_env)
    cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", *args]
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        cmd, env=env, capture_output=True, text=True, timeout=120, **kw
    )


# ---- ds01d -------------------------------------------------------------------------------


def short_tmp(prefix: str = "ds01-") -> Path:
    """A temp dir with a short path (Unix socket paths are limited to 107 bytes), traversable by
    the test users."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    d.chmod(0o755)
    return d


class Daemon:
    """One real ds01d process. Its state survives stop()/kill9() and start() again."""

    def __init__(self, base: Path, config: str, machine: Path, docker_host: str | None) -> None:
        self.base = base
        self.config_path = base / "ds01.yaml"
        self.state_dir = base / "state"
        self.run_dir = base / "run"
        self.machine = machine
        self.docker_host = docker_host
        self.log_path = base / "ds01d.log"
        self.extra_args: list[str] = []
        self.extra_env: dict[str, str] = {}  # added to ds01d's environment (e.g. LD_PRELOAD)
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config(config)

    def write_config(self, config: str) -> None:
        text = config
        if self.docker_host and "docker:" not in text:
            text += f"\ndocker:\n  host: {self.docker_host}\n"
        self.config_path.write_text(text)

    @property
    def socket(self) -> Path:
        return self.run_dir / "api.sock"

    @property
    def env(self) -> dict[str, str]:
        """Environment for CLI calls that should reach this daemon."""
        return {
            "DS01_RUN_DIR": str(self.run_dir),
            "DS01_STATE_DIR": str(self.state_dir),
            "DS01_CONFIG": str(self.config_path),
        }

    def argv(self) -> list[str]:
        return [
            str(BIN / "ds01d"),
            "--config",
            str(self.config_path),
            "--sim",
            str(self.machine),
            "--state-dir",
            str(self.state_dir),
            "--run-dir",
            str(self.run_dir),
            # Never the real /dev: with compute_gate uvm ds01d keeps device nodes, and on a GPU
            # host a test daemon must not change them (a test that wants a tree passes its own).
            "--host-root",
            str(self.base / "host"),
            *self.extra_args,
        ]

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, **self.extra_env} if self.extra_env else None
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, env=env)
        log.close()
        proc = self.proc

        def answering() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"ds01d exited {proc.returncode}:\n{self.log()}")
            if not self.socket.exists():
                return False
            with contextlib.suppress(DaemonUnavailable), Client(self.socket) as c:
                c.health()
                return True
            return False

        wait_for(answering, "ds01d to answer", timeout, interval=0.05, detail=self.log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        return rc

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def client(self) -> Client:
        return Client(self.socket)

    def cli(
        self, *args: str, user: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real `ds01` command against this daemon, as root or as a real user; `env`
        adds to its environment (COLUMNS for a table's width)."""
        if user is not None:
            return as_user(user, [str(BIN / "ds01"), *args], env={**self.env, **(env or {})})
        env = {**os.environ, **self.env, **(env or {})}
        return subprocess.run(
            [str(BIN / "ds01"), *args], env=env, capture_output=True, text=True, timeout=120
        )


def loop_passes(d: Daemon, loop: str, passes: int = 2, timeout: float = 60.0) -> None:
    """Wait until ds01d's `loop` ("reconcile", "host-access", …) has made `passes` whole,
    successful passes that began after this call.

    For a test that checks something did NOT happen: the daemon must have looked, which a
    fixed sleep does not prove. A pass that ends after now may have begun before it, so
    passes + 1 ends are awaited, each after the one before."""

    def ended_after(t: float) -> float | None:
        with d.client() as c:
            state = c.health().loops.get(loop)
        last_ok = None if state is None else state.last_ok
        return last_ok if last_ok is not None and last_ok > t else None

    last = time.time()
    for n in range(passes + 1):
        last = wait_for(
            functools.partial(ended_after, last),
            f"pass {n + 1} of {passes + 1} of ds01d's {loop} loop",
            timeout,
            detail=lambda: d.log()[-3000:],
        )


BASIC_CONFIG = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 2
  max_units_per_container: 2
  max_containers: 3
  allow_full_gpu: true
  gpu_hold_after_stop: 0s
allocation:
  reservation_timeout: 2m
"""


def run_in_pty(
    user: str,
    argv: list[str],
    env: dict[str, str],
    *,
    steps: list[tuple[bytes, bytes | Callable[[], bytes]]],
    timeout: float = 60.0,
    size: tuple[int, int] = (24, 100),
) -> tuple[int, str]:
    """Run argv as `user` on a new pseudo-terminal; for each (text, keys) step, once the
    output holds text and the terminal is in raw mode, type keys (a callable: do what it does
    — stop a daemon… — and type what it returns). Returns (exit status,
    everything the terminal showed). `size`: the terminal's (rows, columns).

    Raw mode is the readiness signal: the program (ds01's shell, docker -it) switches the
    terminal to raw mode when it starts passing keys through, and that switch discards what
    was typed before it."""
    pw = pwd.getpwnam(user)
    full_env = {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": pw.pw_dir,
        "USER": user,
        "LOGNAME": user,
        "LANG": "C.UTF-8",
        "TERM": "xterm",
        **env,
    }
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", *argv]
    proc = subprocess.Popen(
        cmd, stdin=slave, stdout=slave, stderr=slave, env=full_env, start_new_session=True
    )
    os.close(slave)
    out = bytearray()
    todo = list(steps)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                out += data
            if todo and todo[0][0] in out and _raw(master):
                keys = todo.pop(0)[1]
                os.write(master, keys() if callable(keys) else keys)
            if not ready and proc.poll() is not None:
                break
        else:
            waiting = f" (to type after {todo[0][0]!r}; raw: {_raw(master)})" if todo else ""
            raise AssertionError(
                f"{argv} did not finish within {timeout:.0f}s{waiting}:\n{out.decode()}"
            )
        rc = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
    return rc, out.decode(errors="replace")


def _raw(fd: int) -> bool:
    """Whether the terminal is in raw mode (no line editing, no echo). Asked on the master
    side: on Linux it answers with the terminal side's modes."""
    try:
        lflag = termios.tcgetattr(fd)[3]
    except termios.error:  # the terminal side is closed: nobody will read keys
        return False
    return not lflag & (termios.ICANON | termios.ECHO)


class ServiceWorld:
    """An AllocationService on a real state database and the simulated 4×A100, no daemon, with a
    clock the test moves (`now`): root may hold up to 8 whole GPUs, no hold after a stop,
    reservations expire after 2 min."""

    T0 = 1_800_000_000.0

    def __init__(self, tmp: Path) -> None:
        from ds01.config import parse_config_text
        from ds01.inventory.select import open_backend, resolve_sim
        from ds01.services.allocation import AllocationService
        from ds01.store.db import Database

        self.now = self.T0
        self.db = Database(tmp / "ds01.db")
        config = parse_config_text(
            "defaults:\n  max_gpueq: 8\n  max_containers: 8\n  allow_full_gpu: true\n"
            "  gpu_hold_after_stop: 0s\nallocation:\n  reservation_timeout: 2m\n",
            "test.yaml",
        )
        self.svc = AllocationService(self.db, lambda: config, clock=lambda: self.now)
        backend = open_backend("sim", resolve_sim("4xA100-40GB"))
        self.svc.sync_units(backend.sample())
        backend.close()

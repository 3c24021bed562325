"""The vocabulary of `ds01 doctor`: a check's result, its optional repair, and the context.

A check is a small function `(Context) -> Result`: it looks, it never changes anything. When a
safe automatic repair exists it returns it as `Result.repair` (a callable that makes the change
and returns one line per action); the runner calls it only under `--fix`. With a root other than
"/" the checks that need the live host report SKIP. Must not print.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ds01.config import Config
from ds01.host.apply import is_live, under
from ds01.paths import Paths


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


Repair = Callable[[], list[str]]


@dataclass
class Result:
    id: str
    status: Status
    summary: str
    evidence: list[str] = field(default_factory=list)
    fix: str | None = None  # what to do (for an admin), when not PASS
    repair: Repair | None = None  # what --fix may do by itself

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "status": self.status.value,
            "summary": self.summary,
            "evidence": self.evidence,
            "fix": self.fix,
        }


# Paths an ordinary user's login shell searches (Debian's /etc/profile for uid != 0), plus the
# sbin directories, so every nvidia-smi a user could reach is inspected.
USER_PATH = (
    "/usr/local/bin",
    "/usr/bin",
    "/bin",
    "/usr/local/games",
    "/usr/games",
    "/usr/local/sbin",
    "/usr/sbin",
    "/sbin",
)


@dataclass(frozen=True)
class LoopState:
    """One background loop of ds01d as /v1/health reports it (epoch seconds)."""

    last_ok: float | None
    failing: str | None
    interval_s: float | None  # None: driven by events, not by a timer
    running_since: float | None


@dataclass(frozen=True)
class DaemonHealth:
    """What ds01d's /v1/health said: a one-line summary, its loops by name and the state
    invariants its last check found broken."""

    summary: str
    loops: dict[str, LoopState] = field(default_factory=dict)
    invariants: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)


@dataclass
class Context:
    root: Path
    paths: Paths
    config: Config | None
    config_error: list[str] | None = None
    health: Callable[[Path], DaemonHealth] | None = None  # api.sock → health; raises if down
    user_path: tuple[str, ...] = USER_PATH
    now: float = field(default_factory=time.time)
    _shells: dict[str, tuple[str, str] | str] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return is_live(self.root)

    def at(self, live_path: str | Path) -> Path:
        """A host path inside the root being checked."""
        return under(self.root, live_path)

    def shown(self, path: Path) -> str:
        """The host path of a file inside the root (for messages)."""
        try:
            return "/" + str(path.relative_to(self.root)).lstrip("/")
        except ValueError:
            return str(path)

    def forget_shells(self) -> None:
        """Drop cached login-shell results (after a repair changed the profile)."""
        self._shells.clear()

    def login_env(self, user: str) -> tuple[str, str] | str:
        """(CUDA_VISIBLE_DEVICES, DOCKER_HOST) seen by a real login shell of `user`, each
        'unset' when absent — or a string saying why no shell could be started. Cached."""
        if user not in self._shells:
            self._shells[user] = _login_env(user)
        return self._shells[user]


_PROBE = 'printf "\\n[ds01:%s][ds01:%s]\\n" "${CUDA_VISIBLE_DEVICES-unset}" "${DOCKER_HOST-unset}"'


def _login_env(user: str) -> tuple[str, str] | str:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "TERM": "dumb"}
    try:
        done = subprocess.run(
            ["su", "-", user, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"su - {user} failed: {err}"
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("[ds01:") and line.endswith("]") and "][ds01:" in line:
            cuda, docker = line[len("[ds01:") : -1].split("][ds01:", 1)
            return cuda, docker
    why = (done.stderr or done.stdout).strip().splitlines()
    return f"su - {user} exited {done.returncode}: {why[-1] if why else 'no output'}"


def octal(mode: int) -> str:
    return f"{mode:04o}"


def is_root() -> bool:
    return os.geteuid() == 0

"""Where ds01 keeps its config, state and sockets: flag > environment > default (BRIEF §7).

resolved() is the one resolver, in plain strings; Paths wraps its answer in pathlib's Paths.
The quick path of `ds01` (cli/quick.py) calls resolved() at every run and never imports
pathlib: with the urllib.parse and ipaddress it pulls in, that is ~3.4 ms of a read command's
~35 ms on a 2-core VM.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pathlib import Path

DEFAULT_CONFIG = "/etc/ds01/ds01.yaml"
DEFAULT_STATE_DIR = "/var/lib/ds01"
DEFAULT_RUN_DIR = "/run/ds01"

ENV_CONFIG = "DS01_CONFIG"
ENV_STATE_DIR = "DS01_STATE_DIR"
ENV_RUN_DIR = "DS01_RUN_DIR"

API_SOCKET = "api.sock"  # in the run directory


def _pick(flag: str | os.PathLike[str] | None, env: str, default: str) -> str:
    if flag:
        return os.fspath(flag)
    return os.environ.get(env) or default


def resolved(
    config: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
) -> tuple[str, str, str]:
    """The config file, state directory and run directory: each the flag's value when given,
    else its environment variable's when set and not empty, else the default."""
    return (
        _pick(config, ENV_CONFIG, DEFAULT_CONFIG),
        _pick(state_dir, ENV_STATE_DIR, DEFAULT_STATE_DIR),
        _pick(run_dir, ENV_RUN_DIR, DEFAULT_RUN_DIR),
    )


class Paths(NamedTuple):
    """A NamedTuple, not a dataclass: dataclasses costs ~8 ms to import (it loads inspect)."""

    config: Path
    state_dir: Path
    run_dir: Path

    @classmethod
    def resolve(
        cls,
        config: str | os.PathLike[str] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        run_dir: str | os.PathLike[str] | None = None,
    ) -> Paths:
        from pathlib import Path

        c, s, r = resolved(config, state_dir, run_dir)
        return cls(config=Path(c), state_dir=Path(s), run_dir=Path(r))

    @property
    def db(self) -> Path:
        return self.state_dir / "ds01.db"

    @property
    def api_socket(self) -> Path:
        return self.run_dir / API_SOCKET

    @property
    def gate_socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "ds01d.lock"

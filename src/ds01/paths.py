"""Where ds01 keeps its config, state and sockets: flag > environment > default (BRIEF §7)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

DEFAULT_CONFIG = Path("/etc/ds01/ds01.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/ds01")
DEFAULT_RUN_DIR = Path("/run/ds01")

ENV_CONFIG = "DS01_CONFIG"
ENV_STATE_DIR = "DS01_STATE_DIR"
ENV_RUN_DIR = "DS01_RUN_DIR"


def _pick(flag: str | Path | None, env: str, default: Path) -> Path:
    if flag:
        return Path(flag)
    value = os.environ.get(env)
    return Path(value) if value else default


class Paths(NamedTuple):
    """A NamedTuple, not a dataclass: the quick path of `ds01` (cli/quick.py) resolves these at
    every run, and dataclasses costs ~8 ms to import (it loads inspect)."""

    config: Path
    state_dir: Path
    run_dir: Path

    @classmethod
    def resolve(
        cls,
        config: str | Path | None = None,
        state_dir: str | Path | None = None,
        run_dir: str | Path | None = None,
    ) -> Paths:
        return cls(
            config=_pick(config, ENV_CONFIG, DEFAULT_CONFIG),
            state_dir=_pick(state_dir, ENV_STATE_DIR, DEFAULT_STATE_DIR),
            run_dir=_pick(run_dir, ENV_RUN_DIR, DEFAULT_RUN_DIR),
        )

    @property
    def db(self) -> Path:
        return self.state_dir / "ds01.db"

    @property
    def api_socket(self) -> Path:
        return self.run_dir / "api.sock"

    @property
    def gate_socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "ds01d.lock"

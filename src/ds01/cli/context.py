"""Options shared by every command (paths), kept on Typer's context object."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from ds01.client import Client

from ds01.paths import Paths


@dataclass
class Globals:
    config: str | None = None
    state_dir: str | None = None
    run_dir: str | None = None

    def paths(self) -> Paths:
        return Paths.resolve(self.config, self.state_dir, self.run_dir)


def globals_of(ctx: typer.Context) -> Globals:
    root = ctx.find_root()
    obj = root.obj
    if not isinstance(obj, Globals):
        obj = Globals()
        root.obj = obj
    return obj


def client_of(ctx: typer.Context) -> Client:
    """A client for the daemon named by --run-dir / DS01_RUN_DIR; the user's banner notices
    that come with its answers are printed on stderr (never stdout: --json stays JSON)."""
    from ds01.client import Client

    return Client.from_paths(globals_of(ctx).paths(), notices=print_notices)


def print_notices(notices: list[dict[str, Any]]) -> None:
    from ds01.notices import render

    sys.stderr.write(render(notices))
    sys.stderr.flush()

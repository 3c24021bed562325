"""Options shared by every command (paths), kept on Typer's context object."""

from __future__ import annotations

from dataclasses import dataclass

import typer

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

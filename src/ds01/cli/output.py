"""Rendering helpers: JSON for machines, Rich for people, one format for errors."""

from __future__ import annotations

import json
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

from ds01.errors import Ds01Error

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


@cache
def console() -> Console:
    """Standard output for people. Made on first use: importing Rich's console costs time
    that `ds01 --help` and --json output should not pay."""
    from rich.console import Console

    return Console(highlight=False)


@cache
def err_console() -> Console:
    """Standard error for notes, progress and errors."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def print_error(err: Ds01Error) -> None:
    """What failed / why / what to do — one line each, no traceback."""
    lines = err.lines()
    err_console().print(f"[bold red]error:[/] {lines[0]}", markup=True, soft_wrap=True)
    for line in lines[1:]:
        err_console().print(f"  {line}", markup=False, soft_wrap=True)


def new_table(*args: Any, **kwargs: Any) -> Table:
    """A Rich table; rich.table is imported here, only by commands that draw one."""
    from rich.table import Table

    return Table(*args, **kwargs)

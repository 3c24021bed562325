"""Rendering helpers: JSON for machines, Rich for people, one format for errors."""

from __future__ import annotations

import json
import re
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

from ds01.errors import Ds01Error

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


# Control characters (C0, DEL, C1): an ESC sequence in a container name, a release reason or a
# refused request's text would otherwise drive another user's terminal, and a newline would forge
# a table row. Shown as \xNN instead.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(value: object) -> str:
    """Text from users (names, reasons, messages) made safe for a terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def escaped(value: object) -> str:
    """shown(value), escaped for a line printed with markup=True."""
    from rich.markup import escape

    return escape(shown(value))


@cache
def console() -> Console:
    """Standard output for people. Made on first use: importing Rich's console costs time
    that `ds01 --help` and --json output should not pay. markup=False: text from users may hold
    '[…]'; the few styled lines ask for markup themselves."""
    from rich.console import Console

    return Console(highlight=False, markup=False)


@cache
def err_console() -> Console:
    """Standard error for notes, progress and errors."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, markup=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def print_error(err: Ds01Error) -> None:
    """What failed / why / what to do — one line each, no traceback."""
    lines = [shown(line) for line in err.lines()]
    err_console().print(f"[bold red]error:[/] {escaped(lines[0])}", markup=True, soft_wrap=True)
    for line in lines[1:]:
        err_console().print(f"  {line}", markup=False, soft_wrap=True)


def new_table(*args: Any, **kwargs: Any) -> Table:
    """A Rich table whose text cells are shown() (rich.table is imported here, only by
    commands that draw one)."""
    from rich.table import Table

    class SafeTable(Table):
        def add_row(self, *cells: Any, **kw: Any) -> None:
            super().add_row(*(shown(c) if isinstance(c, str) else c for c in cells), **kw)

    return SafeTable(*args, **kwargs)

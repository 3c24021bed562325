"""Rendering helpers: JSON for machines, Rich for people, one format for errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

from ds01.cli.text import shown
from ds01.errors import Ds01Error

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text


@cache
def console() -> Console:
    """Standard output for people. Made on first use: importing Rich's console costs time
    that `ds01 --help` and --json output should not pay. Nothing printed is read as Rich markup
    or emoji codes: text from users and from ds01d may hold '[…]' or ':name:'; the few styled
    lines are built by styled()."""
    from rich.console import Console

    return Console(highlight=False, markup=False, emoji=False)


@cache
def err_console() -> Console:
    """Standard error for notes, progress and errors (no markup, no emoji codes, as console())."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, markup=False, emoji=False)


def human(kind: str | None, value: object) -> str:
    """A limit's value as `ds01 config show` and `ds01 quota` both print it: 'unlimited', 'yes',
    '32g', '1h', '3/7 (0.43)'. kind is the config kind (config/schema.py LIMIT_KINDS); a gpueq
    may come as a GpuEq or as its JSON text ('3/7')."""
    from ds01.model.gpueq import GpuEq
    from ds01.units import format_duration, format_size

    if value is None:
        return "unlimited"
    if kind == "gpueq" and isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            value = GpuEq.parse(str(value))
        except (ValueError, ZeroDivisionError):
            return str(value)
    if isinstance(value, GpuEq):
        exact = value.as_text()
        display = value.display()
        return exact if exact == display else f"{exact} ({display})"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "size" and isinstance(value, int):
        return format_size(value)
    if kind == "duration" and isinstance(value, int):
        return format_duration(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def styled(*parts: str | tuple[str, str]) -> Text:
    """One line from plain parts and (text, style) parts, e.g. styled(("✓", "green"), " done").
    Every part is shown() and taken literally: this is how a line gets colour without markup."""
    from rich.text import Text

    return Text.assemble(*(shown(p) if isinstance(p, str) else (shown(p[0]), p[1]) for p in parts))


def print_error(err: Ds01Error) -> None:
    """What failed / why / what to do — one line each, no traceback, nothing read as markup."""
    lines = err.lines()
    err_console().print(styled(("error:", "bold red"), " ", lines[0]), soft_wrap=True)
    for line in lines[1:]:
        err_console().print(styled("  ", line), soft_wrap=True)


def lines(texts: Iterable[str]) -> Text:
    """A table cell of several lines, each shown(): ds01's own line breaks stay line breaks,
    while a newline inside one text (a user's) is shown as \\x0a like any control character."""
    from rich.text import Text

    return Text("\n".join(shown(t) for t in texts))


def new_table(*args: Any, **kwargs: Any) -> Table:
    """A Rich table whose text cells are shown(); lines() makes a cell of several lines
    (rich.table is imported here, only by commands that draw one)."""
    from rich.table import Table

    class SafeTable(Table):
        def add_row(self, *cells: Any, **kw: Any) -> None:
            super().add_row(*(shown(c) if isinstance(c, str) else c for c in cells), **kw)

    return SafeTable(*args, **kwargs)

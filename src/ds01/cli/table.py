"""Plain-text tables for the views people run in loops (`watch -n1 ds01 gpu status`), drawn
with the standard library so that the quick path (cli/quick.py) can print them without
loading Rich (about 35 ms to import on a 2-core VM, three times the interpreter's start-up).

A table fits the width it is given: columns marked `shrink` give way first, widest first, and
a cell too long for its column is cut with '…', never wrapped, so one row stays one line. The
title and caption are wrapped to the width. Every cell is shown() (control characters
escaped); a cell may hold several lines (lines separated by '\\n' by ds01, not by users).
"""

from __future__ import annotations

import os
import sys
import textwrap
from typing import NamedTuple, TextIO

from ds01.cli.output import shown

NOT_A_TERMINAL_WIDTH = 80
RULE = "─"
ELLIPSIS = "…"


class Column(NamedTuple):
    header: str
    right: bool = False  # right-justified (numbers)
    shrink: bool = False  # gives way when the table is too wide; cut with '…'


def output_width(stream: TextIO | None = None) -> int:
    """The width to fit: $COLUMNS when set, the terminal's width on a terminal, else 80 (as
    Rich decides, so that both kinds of table agree)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    out = stream if stream is not None else sys.stdout
    try:
        if out.isatty():
            return os.get_terminal_size(out.fileno()).columns
    except (OSError, ValueError):
        pass
    return NOT_A_TERMINAL_WIDTH


class Table:
    """Header, a rule, rows; one space between columns, none at the edges."""

    def __init__(self, columns: list[Column], title: str | None = None) -> None:
        self.columns = columns
        self.title = title
        self.caption: str | None = None
        self.rows: list[list[list[str]]] = []

    def add_row(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([[shown(line) for line in cell.split("\n")] for cell in cells])

    def widths(self, width: int | None) -> list[int]:
        """Each column's width: its widest line, then, while the table is wider than `width`,
        the widest shrinkable column one narrower (never below its header or 1)."""
        natural = [
            max([len(col.header), *(len(line) for row in self.rows for line in row[i])])
            for i, col in enumerate(self.columns)
        ]
        if width is None:
            return natural
        out = list(natural)
        floor = [max(1, min(len(c.header), n)) for c, n in zip(self.columns, natural, strict=True)]
        excess = sum(out) + len(out) - 1 - width
        while excess > 0:
            candidates = [i for i, c in enumerate(self.columns) if c.shrink and out[i] > floor[i]]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: out[i])
            out[widest] -= 1
            excess -= 1
        return out

    def render(self, width: int | None) -> str:
        """The table as text, fitted to `width` (None: as wide as it needs)."""
        widths = self.widths(width)
        table_width = sum(widths) + len(widths) - 1
        text_width = max(width or table_width, table_width)
        lines: list[str] = []
        if self.title:
            lines += _wrap(shown(self.title), text_width)
        lines.append(self._line([c.header for c in self.columns], widths))
        lines.append(RULE * table_width)
        for row in self.rows:
            for k in range(max(len(cell) for cell in row)):
                lines.append(self._line([cell[k] if k < len(cell) else "" for cell in row], widths))
        if self.caption:
            for part in self.caption.split("\n"):
                lines += _wrap(shown(part), text_width)
        return "\n".join(lines) + "\n"

    def _line(self, texts: list[str], widths: list[int]) -> str:
        cells = []
        for text, col, w in zip(texts, self.columns, widths, strict=True):
            fitted = text if len(text) <= w else text[: w - 1] + ELLIPSIS
            cells.append(fitted.rjust(w) if col.right else fitted.ljust(w))
        return " ".join(cells).rstrip()


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]

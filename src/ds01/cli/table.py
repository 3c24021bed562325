"""Plain-text tables for the views people run in loops (`watch -n1 ds01 gpu status`), drawn
with the standard library so that the quick path (cli/quick.py) can print them without
loading Rich (about 35 ms to import on a 2-core VM, three times the interpreter's start-up).

Two looks: `plain` (header, a rule, one space between columns: `gpu status`, so that nine
columns fit 80) and `boxed` (lines around every cell, as Rich draws its default table). A table
fits the width it is given: columns marked `shrink` give way, the widest first; a cell too long
for its column is wrapped at spaces when its column `wrap`s, else cut with '…', so that one row
stays one line. The title and caption are wrapped to the width. Every cell is shown() (control
characters escaped); a cell of several lines is given as a list of them.
"""

from __future__ import annotations

import os
import sys
import textwrap
from typing import NamedTuple, TextIO

from ds01.cli.text import shown

NOT_A_TERMINAL_WIDTH = 80
RULE = "─"
ELLIPSIS = "…"


class Column(NamedTuple):
    header: str
    right: bool = False  # right-justified (numbers)
    shrink: bool = False  # gives way when the table is too wide
    wrap: bool = False  # a cell wider than the column goes on to more lines (else: cut)


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
    """Header and rows, `plain` or `boxed` (module docstring)."""

    def __init__(
        self, columns: list[Column], title: str | None = None, boxed: bool = False
    ) -> None:
        self.columns = columns
        self.title = title
        self.boxed = boxed
        self.caption: str | None = None
        self.rows: list[list[list[str]]] = []

    def add_row(self, *cells: str | list[str]) -> None:
        """A row; a cell is one line of text (a newline in it is shown as \\x0a, as any
        control character from users), or a list of lines (ds01's own multi-line cells)."""
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(
            [[shown(cell)] if isinstance(cell, str) else [shown(x) for x in cell] for cell in cells]
        )

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
        excess = sum(out) + self._frame(len(out)) - width
        while excess > 0:
            candidates = [i for i, c in enumerate(self.columns) if c.shrink and out[i] > floor[i]]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: out[i])
            out[widest] -= 1
            excess -= 1
        return out

    def _frame(self, n: int) -> int:
        """Columns of a row that are not cell text: separators (and padding, when boxed)."""
        return 3 * n + 1 if self.boxed else n - 1

    def render(self, width: int | None) -> str:
        """The table as text, fitted to `width` (None: as wide as it needs)."""
        widths = self.widths(width)
        table_width = sum(widths) + self._frame(len(widths))
        text_width = max(width or table_width, table_width)
        lines: list[str] = []
        if self.title:
            lines += _wrap(shown(self.title), text_width)
        header = [[c.header] for c in self.columns]
        if self.boxed:
            lines.append(_rule("┏━┳┓", widths))
            lines += self._lines(header, widths, "┃")
            lines.append(_rule("┡━╇┩", widths))
        else:
            lines += self._lines(header, widths, "")
            lines.append(RULE * table_width)
        for row in self.rows:
            lines += self._lines(row, widths, "│" if self.boxed else "")
        if self.boxed:
            lines.append(_rule("└─┴┘", widths))
        if self.caption:
            for part in self.caption.split("\n"):
                lines += _wrap(shown(part), text_width)
        return "\n".join(lines) + "\n"

    def _lines(self, row: list[list[str]], widths: list[int], bar: str) -> list[str]:
        """The text lines of one row: each cell fitted to its column (wrapped or cut)."""
        cells = [
            _fit(cell, w, col.wrap) for cell, col, w in zip(row, self.columns, widths, strict=True)
        ]
        out = []
        for k in range(max(len(cell) for cell in cells)):
            texts = []
            for cell, col, w in zip(cells, self.columns, widths, strict=True):
                text = cell[k] if k < len(cell) else ""
                texts.append(text.rjust(w) if col.right else text.ljust(w))
            if bar:
                out.append(f"{bar} " + f" {bar} ".join(texts) + f" {bar}")
            else:
                out.append(" ".join(texts).rstrip())
        return out


def _fit(lines: list[str], width: int, wrap: bool) -> list[str]:
    out: list[str] = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
        elif wrap:
            out += textwrap.wrap(line, width, break_on_hyphens=False) or [""]
        else:
            out.append(line[: width - 1] + ELLIPSIS)
    return out


def _rule(chars: str, widths: list[int]) -> str:
    """A box line: chars are (left, fill, between, right), e.g. '┏━┳┓'."""
    return chars[0] + chars[2].join(chars[1] * (w + 2) for w in widths) + chars[3]


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]

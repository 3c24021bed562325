"""Rendering helpers: JSON for machines, Rich for people, one format for errors."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from ds01.errors import Ds01Error

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def print_error(err: Ds01Error) -> None:
    """What failed / why / what to do — one line each, no traceback."""
    lines = err.lines()
    err_console.print(f"[bold red]error:[/] {lines[0]}", markup=True, soft_wrap=True)
    for line in lines[1:]:
        err_console.print(f"  {line}", markup=False, soft_wrap=True)

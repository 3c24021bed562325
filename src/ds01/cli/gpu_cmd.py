"""`ds01 gpu` commands (placeholder until implemented)."""

from __future__ import annotations

import typer

app = typer.Typer(help="gpu commands", no_args_is_help=True)

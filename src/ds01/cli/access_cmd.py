"""`ds01 access`: may I compute on the bare host, until when, and how do I get GPU work done."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ds01.cli import readviews
from ds01.cli.context import client_of
from ds01.cli.output import print_json


def access(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show whether you may run GPU jobs on the host itself (exempt, granted) or in containers."""
    with client_of(ctx) as c:
        a = c.access()
    if as_json:
        print_json(a.model_dump(mode="json"))
        return
    sys.stdout.write(readviews.access(a.model_dump(mode="json")))

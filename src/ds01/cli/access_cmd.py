"""`ds01 access`: may I compute on the bare host, until when, and how do I get GPU work done."""

from __future__ import annotations

from typing import Annotated

import typer

from ds01.cli.context import client_of
from ds01.cli.output import console, escaped, print_json
from ds01.cli.timefmt import local_time


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
    if a.state == "exempt":
        head = "exempt: you may run GPU jobs on the host"
    elif a.state == "granted":
        span = f"until {local_time(a.until)}" if a.until else "with no end"
        head = f"granted {span} (reason: {a.reason})"
    else:
        head = "containers only: use `ds01 container deploy …`"
    console().print(f"[bold]{escaped(a.user)}[/]: {escaped(head)}", markup=True, soft_wrap=True)
    console().print(a.how, markup=False, soft_wrap=True)

"""`ds01 access`: may I compute on the bare host, until when, and how do I get GPU work done."""

from __future__ import annotations

from typing import Annotated

import typer

from ds01.cli.context import client_of
from ds01.cli.output import console, print_json, styled
from ds01.timetext import clock


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
        span = f"until {clock(a.until)}" if a.until else "with no end"
        head = f"granted {span} (reason: {a.reason})"
    else:
        head = "containers only: use `ds01 container deploy …`"
    console().print(styled((a.user, "bold"), f": {head}"), soft_wrap=True)
    console().print(styled(a.how), soft_wrap=True)

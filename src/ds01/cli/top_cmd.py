"""`ds01 top`: the server at a glance, live (cli/top.py draws it; the quick path usually
answers before this module loads, and this one answers when it cannot: a flag to check, no
daemon, a refusal to explain)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from ds01.cli import top as topmod
from ds01.cli import topview
from ds01.cli.context import client_of
from ds01.errors import Ds01Error

if TYPE_CHECKING:
    from ds01.client import Client


def gather(c: Client) -> dict[str, Any]:
    """What `ds01 top` shows, asked through the full client (errors raised as ds01 errors);
    the same GET /v1/top as cli/top.py gather() sends on the quick path."""
    return topview.from_top(c.top(topview.EVENTS))


def top(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Print one screen and exit.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable output (one snapshot).")
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            help="Seconds between refreshes.",
            min=topmod.MIN_INTERVAL_S,
            max=topmod.MAX_INTERVAL_S,
        ),
    ] = topmod.DEFAULT_INTERVAL_S,
) -> None:
    """Live dashboard: units with holders, states and deadlines, the queue, recent events
    (admins: users and alerts). j/k scroll the units; q or Ctrl-C quits."""
    c = client_of(ctx)
    with c:
        first = gather(c)

        def fetch() -> dict[str, Any] | None:
            try:
                return gather(c)
            except Ds01Error:
                return None  # the live view says ds01d did not answer, and tries again

        code = topmod.show(first, fetch, topmod.Args(once, as_json, interval))
    raise typer.Exit(code)

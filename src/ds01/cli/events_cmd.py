"""`ds01 events`: read the audit log (your own events; admins see everyone's)."""

from __future__ import annotations

from typing import Annotated

import typer

from ds01.cli.context import client_of
from ds01.cli.output import console, new_table, print_json
from ds01.cli.timefmt import local_time, parse_since


def events(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user (admins).")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Age (30m, 1h, 2d) or ISO time.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", help="alloc, unit, admin, container, gate…")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the audit log: who did what, when, and why."""
    since_ts = parse_since(since) if since else None
    with client_of(ctx) as c:
        evs = c.events(user=user, since=since_ts, kind=kind, limit=limit)
    if as_json:
        print_json([e.model_dump(mode="json") for e in evs])
        return
    if not evs:
        console().print("No events.")
        return
    t = new_table()
    for col in ("Time", "Kind", "Action", "User", "Alloc", "Reason", "Message"):
        t.add_column(col)
    for e in evs:
        t.add_row(
            local_time(e.ts),
            e.kind,
            e.action,
            e.user or "–",
            str(e.allocation_id or "–"),
            e.reason,
            e.message,
        )
    console().print(t)

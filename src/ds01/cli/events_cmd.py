"""`ds01 events`: read the audit log (your own events; admins see everyone's)."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Annotated

import typer

from ds01.cli import readviews
from ds01.cli.context import client_of
from ds01.cli.output import print_json
from ds01.cli.table import output_width
from ds01.errors import UsageError
from ds01.model.events import EventKind


def parse_since(text: str) -> float:
    """An age as config durations are written (90, 30m, 1h30m, 2d, 1w) or an ISO date/time, as a
    unix timestamp."""
    from ds01.units import parse_duration  # the one duration grammar (config's too)

    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither an age nor a date",
            fix="Give an age like 90s, 30m, 1h30m, 2d or 1w, or a date like 2026-11-28T14:00.",
        ) from None


def events(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user (admins).")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Age (90s, 30m, 1h30m, 2d, 1w) or ISO time.")
    ] = None,
    kind: Annotated[
        EventKind | None, typer.Option("--kind", help="Only events of this kind.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the audit log: who did what, when, and why."""
    since_ts = None if since is None else parse_since(since)
    with client_of(ctx) as c:
        evs = c.events(user=user, since=since_ts, kind=kind and kind.value, limit=limit)
    if as_json:
        print_json([e.model_dump(mode="json") for e in evs])
        return
    sys.stdout.write(readviews.events([e.model_dump(mode="json") for e in evs], output_width()))

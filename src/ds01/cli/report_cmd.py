"""`ds01 report usage`: GPU hours, idle share, energy and CO₂ over a time range, per user or
group (issue 17 item 4; docs/reports.md). Yours; admins see everyone's."""

from __future__ import annotations

import enum
import os
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from ds01.cli import reportview
from ds01.cli.context import client_of
from ds01.cli.output import print_json
from ds01.cli.table import output_width
from ds01.errors import UsageError

app = typer.Typer(help="Reports from ds01's records: GPU usage, energy and CO₂.")


class Format(enum.StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"
    MD = "md"


class By(enum.StrEnum):
    USER = "user"
    GROUP = "group"


_FIX = "Give a date (2026-11-01), a date and time (2026-11-01 14:00), 'now', or an age (30d)."


def parse_when(text: str, option: str, now: float, *, end_of_day: bool = False) -> float:
    """A report's bound, in the forms `ds01 events --since` reads: an age as config durations
    are written (30d: that long ago), an ISO date or date and time (local time unless it names
    an offset), or 'now'. A bare date in --to means the end of that day, so that
    `--from 2026-11-01 --to 2026-11-30` covers all of November."""
    from ds01.units import parse_duration

    text = text.strip()
    if text.lower() == "now":
        return now
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} {text!r} is neither a date nor an age", fix=_FIX) from None
    if end_of_day and len(text) == 10:  # YYYY-MM-DD: the next local midnight (naive: DST-aware)
        at = datetime.combine(at.date() + timedelta(days=1), datetime.min.time())
    return at.timestamp()


def _month_start(now: float) -> float:
    t = datetime.fromtimestamp(now)  # naive local time: the month's first midnight, DST-aware
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def _chart_path(text: str) -> Path:
    """Checked before asking ds01d: a wrong suffix or a directory that cannot be written."""
    from ds01.cli.reportchart import FORMATS

    path = Path(text)
    if path.suffix.lower() not in FORMATS:
        raise UsageError(
            f"--chart {text!r}: the file must end in .png or .svg",
            fix="For example: --chart usage.png",
        )
    where = path.parent
    if not os.path.isdir(where):
        raise UsageError(f"--chart {text!r}: the directory {where} does not exist")
    blocked = where if not os.access(where, os.W_OK | os.X_OK) else None
    if blocked is None and os.path.lexists(path) and not os.access(path, os.W_OK):
        blocked = path
    if blocked is not None:
        raise UsageError(
            f"--chart {text!r}: you cannot write there",
            why=f"{blocked} is not writable for you.",
            fix="Give a path in a directory you can write to, e.g. your home directory.",
        )
    return path


@app.command("usage")
def usage(
    ctx: typer.Context,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Start: a date (2026-11-01), date and time, or age (30d). Default: the first"
            " of this month.",
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            "--to", help="End: a date (the whole day counts), date and time, 'now'. Default: now."
        ),
    ] = None,
    by: Annotated[By, typer.Option("--by", help="One row per user or per group.")] = By.USER,
    user: Annotated[str | None, typer.Option("--user", help="Only this user (admins).")] = None,
    fmt: Annotated[
        Format, typer.Option("--format", help="table, csv, json or md (Markdown).")
    ] = Format.TABLE,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    chart: Annotated[
        str | None,
        typer.Option(
            "--chart",
            help="Also draw GPU hours per user over time into FILE.png or FILE.svg"
            " (needs matplotlib).",
            metavar="FILE",
        ),
    ] = None,
) -> None:
    """GPU hours, activity, idle share, energy (kWh) and CO₂ per user or group over a range
    (yours; admins: everyone's)."""
    now = time.time()
    t0 = parse_when(start, "--from", now) if start is not None else _month_start(now)
    t1 = parse_when(end, "--to", now, end_of_day=True) if end is not None else now
    if not t0 < t1:
        raise UsageError(
            "--from is not before --to",
            why=f"The range {datetime.fromtimestamp(t0):%Y-%m-%d %H:%M} – "
            f"{datetime.fromtimestamp(t1):%Y-%m-%d %H:%M} is empty.",
            fix="Give a --from earlier than --to.",
        )
    chart_path = _chart_path(chart) if chart is not None else None
    with client_of(ctx) as c:
        report = c.usage_report(t0, t1, by.value, user, series=chart_path is not None)
    r = report.model_dump(mode="json")
    if chart_path is not None:
        from ds01.cli import reportchart

        reportchart.draw(r, chart_path, reportview.title(r))
    if as_json or fmt is Format.JSON:
        print_json(r)
    elif fmt is Format.CSV:
        sys.stdout.write(reportview.as_csv(r))
    elif fmt is Format.MD:
        sys.stdout.write(reportview.as_markdown(r))
    else:
        sys.stdout.write(reportview.table(r, output_width()))
    if chart_path is not None:
        sys.stderr.write(f"Chart written to {chart_path}.\n")

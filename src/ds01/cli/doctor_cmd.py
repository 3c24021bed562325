"""`ds01 doctor`: check every host invariant (BRIEF §2) and say PASS/WARN/FAIL, evidence, fix.

Thin: builds the doctor Context (config, paths, root, and the daemon health probe, which is the
one place the client is used, so that ds01.host never imports it), runs ds01.host.doctor and
renders the report as text or JSON (`{"checks": [{id, status, summary, evidence, fix}], "fixed",
"left_to_admin"}`). Exit 0 all pass, 1 warnings, 2 failures.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ds01.cli.context import globals_of
from ds01.errors import UsageError

if TYPE_CHECKING:
    from ds01.host.doctor import DoctorReport
    from ds01.host.doctor.base import DaemonHealth

_LABEL = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


def _health(socket: Path) -> DaemonHealth:
    from ds01.client import Client
    from ds01.host.doctor.base import DaemonHealth, LoopState

    with Client(socket, timeout=5.0) as client:
        h = client.health()
    return DaemonHealth(
        f"status {h.status}, version {h.version}, backend {h.backend}, docker {h.docker}",
        {
            name: LoopState(loop.last_ok, loop.failing, loop.interval_s, loop.running_since)
            for name, loop in h.loops.items()
        },
        list(h.invariants),
        list(h.restart_needed),
    )


def doctor(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (fields: docs/host-access.md).")
    ] = False,
    fix: Annotated[
        bool, typer.Option("--fix", help="Apply the repairs that are safe to do automatically.")
    ] = False,
    root: Annotated[
        Path,
        typer.Option("--root", help="Check files under this directory; live-only checks skip."),
    ] = Path("/"),
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only", metavar="CHECK", help="Only these check ids or areas (e.g. devices, profile)."
        ),
    ] = None,
) -> None:
    """Check the host: queries open to all, compute hidden outside containers and grants,
    Docker reached only through the gate, ds01d healthy. Exit 0 pass, 1 warn, 2 fail."""
    from ds01.config import load_config
    from ds01.errors import ConfigError
    from ds01.host.doctor import CHECK_IDS, Context, run_doctor

    if not root.is_dir():
        raise UsageError(f"--root {root} is not a directory", fix="Pass an existing directory.")
    wanted = tuple(only or ())
    areas = {rid.split(".")[0] for rid in CHECK_IDS}
    unknown = [w for w in wanted if w not in CHECK_IDS and w not in areas]
    if unknown:
        raise UsageError(
            f"unknown check {unknown[0]!r}",
            fix="Use a check id or area from docs/host-access.md, e.g. --only devices.",
        )
    paths = globals_of(ctx).paths()
    try:
        config, problems = load_config(paths.config), None
    except ConfigError as err:
        config, problems = None, err.lines()
    context = Context(root, paths, config, problems, health=_health)
    report = run_doctor(context, fix=fix, only=wanted)
    if as_json:
        from ds01.cli.output import print_json

        print_json(report.to_json())
    else:
        _print(report, fix)
    raise typer.Exit(report.exit_code)


def _print(report: DoctorReport, fix: bool) -> None:
    from ds01.cli.text import shown

    def echo(line: str) -> None:
        typer.echo(shown(line))  # evidence quotes the host: process names, file contents

    counts: dict[str, int] = {}
    for r in report.results:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
        echo(f"{_LABEL[r.status.value]}  {r.id}: {r.summary}")
        for line in r.evidence:
            echo(f"      {line}")
        if r.fix and r.status.value in ("warn", "fail"):
            echo(f"      fix: {r.fix}")
    if fix:
        for line in report.fixed:
            echo(f"fixed: {line}")
        for line in report.left:
            echo(f"left to the admin: {line}")
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("pass", "warn", "fail", "skip"))
    echo(f"doctor: {summary}")

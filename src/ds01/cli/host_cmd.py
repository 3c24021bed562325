"""`ds01 host apply`: render the host files from the config and install them under a root.

Thin: reads flags, loads the config, calls ds01.host.apply, prints its report. The rendering,
diffs, backups and account changes are host/apply.py's. Exit 0 when everything is in place,
1 when a file had to be left alone or a command failed, 2 for usage errors (bad config, flags).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ds01.cli.context import globals_of
from ds01.errors import PermissionDenied, UsageError

app = typer.Typer(
    help="Install ds01's host files (login profile, device permissions, Docker, systemd).",
    no_args_is_help=True,
)


@app.command("apply")
def apply(
    ctx: typer.Context,
    root: Annotated[
        Path, typer.Option("--root", help="Install under this directory instead of /.")
    ] = Path("/"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the unified diff; change nothing.")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only", metavar="AREA", help="Only this area: profile, devices, docker, systemd."
        ),
    ] = None,
    run_dir: Annotated[
        str | None,
        typer.Option(
            "--run-dir", help="ds01d's socket directory the files name [default: global]."
        ),
    ] = None,
) -> None:
    """Render host files from the config and install them (idempotent; replaced files are backed
    up as FILE.ds01-bak.<time>; accounts change only when --root is /)."""
    from ds01.config import load_config
    from ds01.host.apply import apply as run_apply
    from ds01.host.apply import is_live, settings_for
    from ds01.host.render import AREAS

    areas = list(only) if only else list(AREAS)
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        raise UsageError(
            f"unknown area {unknown[0]!r}",
            fix=f"Use --only with one of: {', '.join(AREAS)}.",
        )
    if not root.is_dir():
        raise UsageError(f"--root {root} is not a directory", fix="Pass an existing directory.")
    if run_dir is not None and not run_dir.strip():
        raise UsageError("--run-dir is empty", fix="Give a directory, e.g. /run/ds01.")
    if is_live(root) and not dry_run and os.geteuid() != 0:
        raise PermissionDenied(
            "ds01 host apply changes system files and accounts",
            why="Only root may write /etc and run groupadd/gpasswd.",
            fix="Run it with sudo, or try --dry-run first.",
        )
    paths = globals_of(ctx).paths()
    run = Path(run_dir) if run_dir else paths.run_dir
    config = load_config(paths.config)
    settings = settings_for(config, paths.config, paths.state_dir, run)
    report = run_apply(config, settings, root, only=areas, dry_run=dry_run)
    for line in report.lines:
        typer.echo(line)
    if report.failed or any(line.startswith("left ") for line in report.lines):
        raise typer.Exit(1)

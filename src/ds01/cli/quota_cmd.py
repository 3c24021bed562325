"""`ds01 quota`: my limits, what I hold, and what I could still get."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ds01.cli import readviews
from ds01.cli.context import client_of
from ds01.cli.output import print_json
from ds01.cli.table import output_width


def quota(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show your limits, what you hold, and what you could still get."""
    from ds01.cli import slurmjobs

    cluster = slurmjobs.slurm_config(ctx)
    if cluster is not None:
        slurmjobs.quota(cluster, as_json)
        return
    with client_of(ctx) as c:
        q = c.quota()
    if as_json:
        print_json(q.model_dump(mode="json"))
        return
    sys.stdout.write(readviews.quota(q.model_dump(mode="json"), output_width()))

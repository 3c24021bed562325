"""`ds01 queue`: deploys waiting for GPUs, their order, and cancelling one (issue 16)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from ds01.cli import queueview
from ds01.cli.context import client_of
from ds01.cli.output import print_json
from ds01.cli.table import output_width

if TYPE_CHECKING:
    from ds01.api.schemas import QueueEntryOut

app = typer.Typer(
    help="Deploys waiting for free GPUs (ds01 container deploy --queue): show, explain, cancel.",
    invoke_without_command=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.callback()
def show(
    ctx: typer.Context,
    all_users: Annotated[
        bool, typer.Option("--all", help="Everyone's entries (names as privacy allows).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show your queued deploys with their positions (--all: the whole queue)."""
    if ctx.invoked_subcommand is not None:
        return
    from ds01.cli import slurmjobs

    if slurmjobs.slurm_config(ctx) is not None:
        slurmjobs.queue(all_users, as_json)
        return
    with client_of(ctx) as c:
        q = c.queue(all_users)
    if as_json:
        print_json(q.model_dump(mode="json"))
        return
    sys.stdout.write(queueview.queue(q.model_dump(mode="json"), output_width(), all_users))


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    entry_id: Annotated[int, typer.Argument(help="The entry's ID (ds01 queue).", min=1)],
    as_json: JsonOpt = False,
) -> None:
    """Cancel one of your queued deploys (admins: anyone's)."""
    with client_of(ctx) as c:
        e = c.queue_cancel(entry_id)
    if as_json:
        print_json(e.model_dump(mode="json"))
        return
    sys.stdout.write(f"Cancelled queue entry {e.id} ({e.name}).\n")


@app.command("explain")
def explain(
    ctx: typer.Context,
    entry_id: Annotated[int, typer.Argument(help="The entry's ID (ds01 queue).", min=1)],
    as_json: JsonOpt = False,
) -> None:
    """Why an entry is where it is: each priority factor, its weight and the sum."""
    with client_of(ctx) as c:
        x = c.queue_explain(entry_id)
    if as_json:
        print_json(x.model_dump(mode="json"))
        return
    sys.stdout.write(queueview.explain(x.model_dump(mode="json")))


def print_queued(entry: QueueEntryOut, as_json: bool) -> None:
    """`ds01 container deploy --queue` when the request waits in the queue."""
    if as_json:
        print_json({"queued": entry.model_dump(mode="json")})
        return
    sys.stdout.write(queueview.queued(entry.model_dump(mode="json")))

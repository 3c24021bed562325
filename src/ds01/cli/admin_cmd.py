"""`ds01 admin …`: allocation overview and control for admins (root or admin_group)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ds01.cli.context import client_of
from ds01.cli.output import console, print_json
from ds01.cli.timefmt import age, local_time

app = typer.Typer(help="Admin commands (root or the admin group).", no_args_is_help=True)
alloc_app = typer.Typer(help="Inspect and release allocations.", no_args_is_help=True)
app.add_typer(alloc_app, name="alloc")


@alloc_app.command("list")
def alloc_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every live allocation on this machine."""
    with client_of(ctx) as c:
        rows = c.allocations(all_users=True)
    if as_json:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    if not rows:
        console.print("No live allocations.")
        return
    t = Table()
    for col in ("ID", "User", "Group", "Container", "State", "Units", "gpueq", "Age", "Until"):
        t.add_column(col)
    for a in rows:
        t.add_row(
            str(a.id),
            a.user,
            a.group or "–",
            a.container or "–",
            a.state,
            "\n".join(u.uuid for u in a.units) or "none",
            f"{a.gpueq:g}",
            age(a.created_at),
            local_time(a.hold_until or a.expires_at),
        )
    console.print(t)


@alloc_app.command("release")
def alloc_release(
    ctx: typer.Context,
    alloc_id: Annotated[int, typer.Argument(help="Allocation ID (ds01 admin alloc list).")],
    reason: Annotated[str, typer.Option("--reason", help="Why; goes to the audit log.")],
) -> None:
    """Release an allocation now (its container keeps running without GPUs being reserved)."""
    with client_of(ctx) as c:
        a = c.release(alloc_id, reason=reason)
    console.print(f"allocation {a.id} of {a.user}: {a.state}")


def _drain(ctx: typer.Context, target: str, reason: str, undrain: bool) -> None:
    with client_of(ctx) as c:
        res = c.drain(target, reason, undrain=undrain)
    word = "undrained" if undrain else "drained"
    console.print(f"{word} {len(res['units'])} unit(s): {', '.join(res['units'])}")


@app.command("drain")
def drain(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="Unit UUID, GPU UUID or GPU index.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; goes to the audit log.")],
) -> None:
    """Stop handing out a unit or a whole GPU; existing allocations stay."""
    _drain(ctx, target, reason, undrain=False)


@app.command("undrain")
def undrain(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="Unit UUID, GPU UUID or GPU index.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why; goes to the audit log.")
    ] = "undrain",
) -> None:
    """Hand out a drained unit or GPU again."""
    _drain(ctx, target, reason, undrain=True)

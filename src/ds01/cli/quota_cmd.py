"""`ds01 quota`: my limits, what I hold, and what I could still get."""

from __future__ import annotations

from typing import Annotated

import typer

from ds01.cli.context import client_of
from ds01.cli.output import console, new_table, print_json, styled
from ds01.timetext import clock


def quota(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show your limits, what you hold, and what you could still get."""
    with client_of(ctx) as c:
        q = c.quota()
    if as_json:
        print_json(q.model_dump(mode="json"))
        return
    group = f" (group {q.group})" if q.group else ""
    console().print(styled((q.user, "bold"), group))
    console().print(
        f"GPU quota: using {q.used_gpueq:g} of {q.max_gpueq:g} gpueq, "
        f"{q.remaining_gpueq:g} left; containers {q.containers} of {q.max_containers}"
    )
    if q.exempt:
        console().print("You are exempt: you may also use GPUs directly on the host.")
    if q.allocations:
        t = new_table(title="Holding", title_justify="left")
        for col in ("ID", "Container", "State", "Units", "gpueq", "Until"):
            t.add_column(col)
        for a in q.allocations:
            until = a.hold_until or a.expires_at
            t.add_row(
                str(a.id),
                a.container or "–",
                a.state,
                ", ".join(
                    f"{u.model.removeprefix('NVIDIA ')}{' ' + u.profile if u.profile else ''}"
                    for u in a.units
                )
                or "none",
                f"{a.gpueq:g}",
                clock(until),
            )
        console().print(t)
    t = new_table(title="Limits", title_justify="left")
    t.add_column("Limit")
    t.add_column("Value")
    t.add_column("From")
    for key, lv in q.limits.items():
        t.add_row(key, "unlimited" if lv.value is None else str(lv.value), lv.source)
    console().print(t)

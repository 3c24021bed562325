"""`ds01 quota`: my limits, what I hold, and what I could still get."""

from __future__ import annotations

from typing import Annotated

import typer

from ds01.cli.context import client_of
from ds01.cli.output import console, human, new_table, print_json, styled
from ds01.model.gpueq import GpuEq
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
    used = GpuEq.parse(q.used_gpueq_exact)
    limit = GpuEq.parse(q.limits["max_gpueq"].value) if "max_gpueq" in q.limits else None
    left = limit - used if limit is not None else GpuEq.parse(q.remaining_gpueq)
    most = limit.display() if limit is not None else f"{q.max_gpueq:g}"
    console().print(
        f"GPU quota: using {used.display()} of {most} gpueq, "
        f"{left.display()} left; containers {q.containers} of {q.max_containers}"
    )
    if q.can_get:
        offers = " or ".join(f"{o.count} × {o.profile or 'whole GPU'}" for o in q.can_get)
        console().print(styled(f"You can still get: {offers} now."), soft_wrap=True)
    else:
        console().print("You can still get: nothing right now (see 'ds01 gpu status').")
    if q.suggested:
        console().print(
            styled(f"To deploy one: ds01 container deploy NAME --image IMAGE {q.suggested}"),
            soft_wrap=True,
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
                GpuEq.parse(a.gpueq_exact).display(),
                clock(until),
            )
        console().print(t)
    t = new_table(title="Limits", title_justify="left")
    t.add_column("Limit")
    t.add_column("Value")
    t.add_column("From")
    for key, lv in q.limits.items():
        # The config file's key, as `ds01 config show` prints it (memory_bytes → memory).
        name = key.removesuffix("_bytes").removesuffix("_s") if lv.kind else key
        t.add_row(name, human(lv.kind, lv.value), lv.source)
    console().print(t)

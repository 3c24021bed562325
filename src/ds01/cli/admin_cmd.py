"""`ds01 admin …`: allocation overview and control for admins (root or admin_group)."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from ds01.cli.context import client_of
from ds01.cli.output import console, err_console, lines, new_table, print_json, styled
from ds01.timetext import clock, since

if TYPE_CHECKING:
    from ds01.api.schemas import ReservationOut

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
        console().print("No live allocations.")
        return
    t = new_table()
    for col in ("ID", "User", "Group", "Container", "State", "Units", "gpueq", "Age", "Until"):
        t.add_column(col)
    for a in rows:
        t.add_row(
            str(a.id),
            a.user,
            a.group or "–",
            a.container or "–",
            a.state,
            lines([u.uuid for u in a.units] or ["none"]),
            f"{a.gpueq:g}",
            since(a.created_at),
            clock(a.hold_until or a.expires_at),
        )
    console().print(t)


@alloc_app.command("release")
def alloc_release(
    ctx: typer.Context,
    alloc_id: Annotated[int, typer.Argument(help="Allocation ID (ds01 admin alloc list).")],
    reason: Annotated[str, typer.Option("--reason", help="Why; goes to the audit log.")],
) -> None:
    """Release an allocation now; a container still running on its units is stopped."""
    with client_of(ctx) as c:
        a = c.release(alloc_id, reason=reason)
    console().print(styled(f"allocation {a.id} of {a.user}: {a.state}"))


def _drain(ctx: typer.Context, target: str, reason: str, undrain: bool) -> None:
    with client_of(ctx) as c:
        res = c.drain(target, reason, undrain=undrain)
    word = "undrained" if undrain else "drained"
    console().print(styled(f"{word} {len(res['units'])} unit(s): {', '.join(res['units'])}"))


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


# ---- bare-metal grants and host GPU processes (docs/grants.md) ------------------------------


@app.command("grant")
def grant(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Who may compute on the bare host.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; goes to the audit log.")],
    for_: Annotated[str | None, typer.Option("--for", help="How long: 30m, 4h, 2d, 1h30m.")] = None,
    permanent: Annotated[bool, typer.Option("--permanent", help="No end (until revoked).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Let USER run GPU jobs on the host itself, for a while or until revoked."""
    from ds01.errors import UsageError

    if (for_ is None) == (not permanent):
        raise UsageError(
            "give exactly one of --for DURATION or --permanent",
            fix="For example: ds01 admin grant alice --for 4h --reason 'profiling run'.",
        )
    with client_of(ctx) as c:
        g = c.grant(user, reason, duration=for_, permanent=permanent)
    if as_json:
        print_json(g.model_dump(mode="json"))
        return
    span = f"until {clock(g.until)}" if g.until else "with no end (until revoked)"
    console().print(
        styled(f"granted {g.user} bare-metal GPU access {span} (grant {g.id})"), soft_wrap=True
    )


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Whose bare-metal grant to end.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why; goes to the audit log.")
    ] = "revoked",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """End USER's bare-metal grant now (their host GPU processes go by host.grant_expiry)."""
    with client_of(ctx) as c:
        g = c.revoke(user, reason)
    if as_json:
        print_json(g.model_dump(mode="json"))
        return
    console().print(styled(f"revoked grant {g.id} of {g.user}"), soft_wrap=True)


@app.command("grants")
def grants(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Who may compute on the bare host: exempt users and live grants."""
    with client_of(ctx) as c:
        rows = c.grants()
    if as_json:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    if not rows:
        console().print("Nobody may compute on the bare host (no exempt users, no grants).")
        return
    t = new_table()
    for col in ("User", "Access", "Until", "Reason", "By", "Since"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r.user,
            r.kind,
            clock(r.until) if r.until else "no end",
            r.reason or ("config exempt_users" if r.kind == "exempt" else "–"),
            r.granted_by or "–",
            clock(r.granted_at),
        )
    console().print(t)


# ---- exemptions from the idle and runtime limits (docs/containers.md) -----------------------


class Limit(StrEnum):
    IDLE = "idle"
    RUNTIME = "runtime"


@app.command("exempt")
def exempt(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Whose containers to spare.")],
    from_: Annotated[Limit, typer.Option("--from", help="The limit they are exempt from.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; goes to the audit log.")],
    until: Annotated[
        str | None, typer.Option("--until", help="A date or time: 2026-12-20, '2026-12-20 18:00'.")
    ] = None,
    for_: Annotated[str | None, typer.Option("--for", help="How long: 4h, 3d, 1w.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Keep USER's containers from being stopped for idleness (or for max_runtime) until then.

    It ends on its own; 'ds01 admin unexempt' ends it earlier. Both are audited.
    """
    with client_of(ctx) as c:
        e = c.exempt(user, from_.value, reason, until=until, duration=for_)
    if as_json:
        print_json(e.model_dump(mode="json"))
        return
    console().print(
        styled(f"{e.user} is exempt from the {e.countdown} limit until {clock(e.until)}"),
        soft_wrap=True,
    )


@app.command("unexempt")
def unexempt(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Whose exemption to end.")],
    from_: Annotated[Limit, typer.Option("--from", help="Which limit applies again.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; goes to the audit log.")] = "ended",
) -> None:
    """End USER's exemption now: the limit's countdown starts (with its warnings)."""
    with client_of(ctx) as c:
        e = c.unexempt(user, from_.value, reason)
    console().print(styled(f"{e.user} is no longer exempt from the {e.countdown} limit"))


@app.command("exemptions")
def exemptions(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Exemptions from the idle and runtime limits in force."""
    with client_of(ctx) as c:
        rows = c.exemptions()
    if as_json:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    if not rows:
        console().print("No exemptions: every limit applies to everyone.")
        return
    t = new_table()
    for col in ("User", "From", "Until", "Reason", "By", "Since"):
        t.add_column(col)
    for r in rows:
        t.add_row(r.user, r.countdown, clock(r.until), r.reason, r.created_by, clock(r.created_at))
    console().print(t)


@app.command("host-processes")
def host_processes(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """GPU processes and whose they are: containers, exempt or granted users, violations."""
    with client_of(ctx) as c:
        rows = c.host_processes()
    if as_json:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    if not rows:
        console().print("No GPU processes.")
        return
    t = new_table()
    for col in ("PID", "User", "Name", "GPUs", "Status", "Container", "Action", "Seen"):
        t.add_column(col)
    for r in rows:
        status = r.status + (f" ({r.cause}, {r.policy})" if r.status == "violation" else "")
        t.add_row(
            str(r.pid),
            r.user or f"uid {r.uid}",
            r.name,
            ", ".join(str(i) for i in r.gpu_indices) or ", ".join(r.gpu_uuids),
            status,
            (r.container_id or "")[:12] + (f" #{r.allocation_id}" if r.allocation_id else "")
            or "–",
            r.action or "–",
            since(r.first_seen),
        )
    console().print(t)


# ---- reservations of units (docs/queue.md, Reservations) ------------------------------------


def _reservation_line(r: ReservationOut) -> str:
    party = r.user or f"group {r.group}"
    return (
        f"reservation {r.id}: {', '.join(r.unit_names)} for {party} from {clock(r.start)}"
        f" to {clock(r.end)} ({r.status})"
    )


@app.command("reserve")
def reserve(
    ctx: typer.Context,
    units: Annotated[
        list[str],
        typer.Argument(
            help="GPU indices (0), MIG device names (7/1.0) or UUIDs as 'ds01 gpu status' "
            "shows them; several, or comma-separated."
        ),
    ],
    from_: Annotated[
        str,
        typer.Option(
            "--from",
            metavar="TIME",
            help="Start: now, 18:00, 2026-12-20, '2026-12-20 09:00', or 2h.",
        ),
    ],
    to: Annotated[
        str,
        typer.Option(
            "--to", metavar="TIME", help="End: a time as for --from, or a length after it: 4h."
        ),
    ],
    for_: Annotated[
        str,
        typer.Option("--for", metavar="USER|group:NAME", help="A user, or group:NAME for a group."),
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why; goes to the audit log.")],
    grace: Annotated[
        str | None,
        typer.Option(
            "--grace", help="Unused this long after the start, the units return (config default)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Keep UNITS free for a user or group from --from to --to.

    Others' requests that would overlap the window are refused or, when their max_runtime ends
    before it, get the units only until then. Unused for --grace after the start, the units
    return to the pool. Audited.
    """
    from ds01.errors import UsageError

    for option, value in (("--from", from_), ("--to", to), ("--for", for_)):
        if not value.strip():
            raise UsageError(f"{option} is empty", fix="See 'ds01 admin reserve --help'.")
    with client_of(ctx) as c:
        r = c.reserve(units, from_, to, for_, reason, grace=grace)
    if as_json:
        print_json(r.model_dump(mode="json"))
        return
    console().print(styled(_reservation_line(r)), soft_wrap=True)
    for w in r.warnings:
        err_console().print(styled(("warning:", "yellow"), f" {w}"), soft_wrap=True)


@app.command("reservations")
def reservations(
    ctx: typer.Context,
    all_: Annotated[
        bool, typer.Option("--all", help="Also those that ended in the last week.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Reservations of units: upcoming, waiting for their user, in use."""
    with client_of(ctx) as c:
        rows = c.reservations(ended=all_)
    if as_json:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    if not rows:
        console().print("No reservations.")
        return
    t = new_table()
    for col in ("ID", "Units", "For", "From", "To", "Status", "Reason", "By"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            str(r.id),
            lines(r.unit_names),
            r.user or f"group {r.group}",
            clock(r.start),
            clock(r.end),
            r.status,
            r.reason,
            r.created_by,
        )
    console().print(t)


@app.command("unreserve")
def unreserve(
    ctx: typer.Context,
    rid: Annotated[int, typer.Argument(help="Reservation ID (ds01 admin reservations).")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why; goes to the audit log.")
    ] = "cancelled",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """End a reservation now: its units return to the pool."""
    with client_of(ctx) as c:
        r = c.unreserve(rid, reason)
    if as_json:
        print_json(r.model_dump(mode="json"))
        return
    console().print(styled(_reservation_line(r)), soft_wrap=True)

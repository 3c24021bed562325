"""`ds01 gpu status` as a table: from ds01d's answer (its JSON, as the quick path and the full
command line both have it) or from the GPUs directly when there is no daemon. One table, the
daemon's with Holder and State. Short UUIDs and models, and cells cut with '…' rather than
wrapped, keep a row to one line of 80 columns; --wide shows everything.

Imports only the standard library and light ds01 modules at module level: the quick path
(cli/quick.py) draws this table without loading the full command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ds01.cli.table import Column, Table
from ds01.cli.text import short_model, short_uuid

if TYPE_CHECKING:
    from ds01.model.inventory import MachineSample


def dash(value: object, fmt: str = "{}") -> str:
    """Unknown is shown as '–', never as 0."""
    return "–" if value is None else fmt.format(value)


def memory_cell(used: int | None, total: int | None) -> str:
    """'30.0 / 40.0' GiB (one decimal keeps the column narrow); '–' for unknown."""

    def gib(mib: int | None) -> str:
        return dash(None if mib is None else mib / 1024, "{:.1f}")

    if used is None and total is None:
        return "–"
    return f"{gib(used)} / {gib(total)}"


def procs_cell(processes: Sequence[Mapping[str, Any]]) -> str:
    """'0'; '2' (a ds01 container's own); '1!' or '1! carol' when a process runs outside ds01,
    with its owner when known and shown ('+1' for more owners)."""
    n = str(len(processes))
    outside = [p for p in processes if p.get("foreign")]
    if not outside:
        return n
    owners = list(dict.fromkeys(str(p["owner"]) for p in outside if p.get("owner")))
    if not owners:
        return f"{n}!"
    more = f"+{len(owners) - 1}" if len(owners) > 1 else ""
    return f"{n}! {owners[0]}{more}"


def units_table(title: str, daemon: bool) -> Table:
    columns = [
        Column("Unit"),
        Column("UUID"),
        Column("Model", shrink=True),  # these give way first when the table is too wide
        Column("Memory GiB"),
        Column("Util", right=True),
        Column("gpueq", right=True),
        Column("Procs", shrink=True),
    ]
    if daemon:
        columns += [Column("Holder", shrink=True), Column("State")]
    return Table(columns, title)


def daemon_status(view: Mapping[str, Any], wide: bool, width: int | None) -> str:
    """`ds01 gpu status` from ds01d's answer (GET /v1/gpu/status, schema StatusOut)."""
    from ds01.model.gpueq import GpuEq
    from ds01.timetext import clock

    table = units_table(f"GPU units ({view['backend']})", daemon=True)
    units = view["units"]
    for u in units:
        model, profile = str(u["model"]), u.get("profile")
        if wide:
            model = model.removeprefix("NVIDIA ") + (f" {profile}" if profile else "")
        else:
            model = short_model(model, profile)
        if u.get("drained"):
            state = "drained"
        elif u.get("state") == "held":
            state = f"held → {clock(u.get('hold_until'))}"
        elif u.get("state"):
            state = str(u["state"])
        else:
            state = "busy" if u.get("busy") else "free"
        holder = str(u.get("user") or "–")
        if u.get("container") and u.get("user"):
            holder = f"{u['user']} ({u['container']})"
        table.add_row(
            str(u["name"]),
            str(u["uuid"]) if wide else short_uuid(str(u["uuid"])),
            model,
            memory_cell(u.get("memory_used_mib"), u.get("memory_total_mib")),
            dash(u.get("utilization_pct"), "{:.0f}%"),
            GpuEq(str(u["gpueq_exact"])).display(),
            procs_cell(u.get("processes") or []),
            holder,
            state,
        )
    free, total = float(view["free_gpueq"]), float(view["total_gpueq"])
    caption = f"{len(units)} units, {free:.2f} of {total:.2f} gpueq free"
    foreign = any(p.get("foreign") for u in units for p in u.get("processes") or [])
    if foreign or any(u.get("busy") for u in units):
        caption += "\n!: processes outside ds01; busy: free but in use outside ds01 (given last)"
    table.caption = caption
    return table.render(None if wide else width)


def daemon_status_output(view: Mapping[str, Any], wide: bool, width: int) -> tuple[str, str]:
    """What `ds01 gpu status` prints from ds01d's answer: the table (stdout), then ds01d's
    warnings (a GPU it could not read…) for stderr."""
    from ds01.cli.text import shown

    warnings = "".join(f"warning: {shown(w)}\n" for w in view.get("warnings") or [])
    return daemon_status(view, wide, width), warnings


def local_status(sample: MachineSample, wide: bool, width: int | None) -> str:
    """`ds01 gpu status` read from the GPUs directly (no daemon): no holders, this view does
    not know them, and every process counts (no process view says which are ds01's)."""
    from ds01.inventory.export import unit_memory_used, unit_processes, unit_utilization
    from ds01.model.gpueq import GpuEq

    units = sample.units()
    table = units_table(f"GPU units ({sample.source})", daemon=False)
    for u in units:
        table.add_row(
            u.name,
            u.uuid if wide else short_uuid(u.uuid),
            u.label if wide else short_model(u.model, u.profile),
            memory_cell(unit_memory_used(sample, u), u.memory_total_mib),
            dash(unit_utilization(sample, u), "{:.0f}%"),
            u.gpueq.display(),
            str(len(unit_processes(sample, u))),
        )
    total = GpuEq.total(u.gpueq for u in units)
    table.caption = f"{len(units)} units, {total.display()} gpueq ({total.as_text()})"
    return table.render(None if wide else width)

"""The read commands as people see them — `ds01 quota`, `access`, `container list`, `events` —
drawn from ds01d's JSON answer (the schemas in api/schemas.py, dumped), so that the quick path
(cli/quick.py) and the full command line print the same text from the same function.

Standard library and light ds01 modules only (no Rich, no pydantic): the quick path imports
this module. `gpu status` is in statusview.py (it also draws the GPUs read directly).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ds01.cli.deployview import gpu_lines
from ds01.cli.output import human
from ds01.cli.table import Column, Table
from ds01.cli.text import shown
from ds01.model.gpueq import GpuEq
from ds01.timetext import clock, since

Json = Mapping[str, Any]

NO_CONTAINERS = "No containers. Create one with: ds01 container deploy NAME --image IMAGE"
NO_EVENTS = "No events."


def quota(q: Json, width: int) -> str:
    """`ds01 quota` (QuotaOut): usage, what still fits, then what I hold and my limits."""
    group = f" (group {q['group']})" if q.get("group") else ""
    lines = [f"{q['user']}{group}"]
    used = GpuEq.parse(str(q["used_gpueq_exact"]))
    limits: Mapping[str, Json] = q.get("limits") or {}
    if "max_gpueq" in limits:
        limit: GpuEq | None = GpuEq.parse(str(limits["max_gpueq"]["value"]))
    else:
        limit = None
    left = limit - used if limit is not None else GpuEq.parse(str(q["remaining_gpueq"]))
    most = limit.display() if limit is not None else f"{float(q['max_gpueq']):g}"
    lines.append(
        f"GPU quota: using {used.display()} of {most} gpueq, {left.display()} left; "
        f"containers {q['containers']} of {q['max_containers']}"
    )
    if q.get("can_get"):
        offers = " or ".join(
            f"{o['count']} × {o.get('profile') or 'whole GPU'}" for o in q["can_get"]
        )
        lines.append(f"You can still get: {offers} now.")
    else:
        lines.append("You can still get: nothing right now (see 'ds01 gpu status').")
    if q.get("suggested"):
        lines.append(f"To deploy one: ds01 container deploy NAME --image IMAGE {q['suggested']}")
    if q.get("exempt"):
        lines.append("You are exempt: you may also use GPUs directly on the host.")
    out = "".join(f"{shown(line)}\n" for line in lines)
    if q.get("allocations"):
        t = Table(
            [
                Column("ID"),
                Column("Container", shrink=True),
                Column("State"),
                Column("Units", shrink=True, wrap=True),
                Column("gpueq"),
                Column("Until"),  # a hold's or reservation's end, or the countdowns
            ],
            title="Holding",
            boxed=True,
        )
        for a in q["allocations"]:
            units = ", ".join(
                f"{str(u['model']).removeprefix('NVIDIA ')}"
                + (f" {u['profile']}" if u.get("profile") else "")
                for u in a.get("units") or []
            )
            t.add_row(
                str(a["id"]),
                str(a.get("container") or "–"),
                str(a["state"]),
                units or "none",
                GpuEq.parse(str(a["gpueq_exact"])).display(),
                countdown_lines(a) or [clock(a.get("hold_until") or a.get("expires_at"))],
            )
        out += t.render(width)
    t = Table([Column("Limit"), Column("Value"), Column("From")], title="Limits", boxed=True)
    for key, lv in limits.items():
        # The config file's key, as `ds01 config show` prints it (memory_bytes → memory).
        name = key.removesuffix("_bytes").removesuffix("_s") if lv.get("kind") else key
        t.add_row(name, human(lv.get("kind"), lv.get("value")), str(lv.get("source")))
    return out + t.render(width)


def access(a: Json) -> str:
    """`ds01 access` (AccessOut): may I compute on the host, and how to get GPU work done."""
    if a["state"] == "exempt":
        head = "exempt: you may run GPU jobs on the host"
    elif a["state"] == "granted":
        span = f"until {clock(a.get('until'))}" if a.get("until") else "with no end"
        head = f"granted {span} (reason: {a.get('reason')})"
    else:
        head = "containers only: use `ds01 container deploy …`"
    return f"{shown(a['user'])}: {shown(head)}\n{shown(a['how'])}\n"


def allocation_text(c: Json) -> str:
    """The state of a container's allocation: 'active', 'held until 14:05', 'released', '–'."""
    a = c.get("allocation")
    if a is None:
        return "released" if c.get("gpu_device_ids") else "–"
    if a["state"] == "held":
        return f"held until {clock(a.get('hold_until'))}"
    return str(a["state"])


# What stops a container first, as its Allocation cell says it (api/schemas.py LifecycleOut).
_STOPPED_BY = {"idle_timeout": "idle", "max_runtime": "max runtime"}


def countdown_lines(c: Json) -> list[str]:
    """'kept alive until 13:00', 'idle 12 min' and 'stops 14:05 (idle)' for a container whose
    GPUs ds01d is counting down (docs/containers.md, 'Idle and runtime limits'); nothing
    otherwise."""
    life = c.get("lifecycle") or {}
    out = []
    if life.get("kept_until"):
        out.append(f"kept alive until {clock(life['kept_until'])}")
    if life.get("idle_since"):
        out.append(f"idle {since(life['idle_since'])}")
    if life.get("stop_at"):
        why = _STOPPED_BY.get(str(life.get("next_stop")), str(life.get("next_stop")))
        out.append(f"stops {clock(life['stop_at'])} ({why})")
    return out


def deadline(a: Json) -> str:
    """When an allocation's GPUs go back, in one short cell (`ds01 top`): '14:05 idle' (the
    next idle or max-runtime stop), '14:05 hold' (a stopped container's hold ends),
    '14:05 unused' (a reservation no container took expires); '–' when nothing is due."""
    life = a.get("lifecycle") or {}
    if a.get("state") == "held" and a.get("hold_until"):
        return f"{clock(a['hold_until'])} hold"
    if a.get("state") == "reserved" and a.get("expires_at"):
        return f"{clock(a['expires_at'])} unused"
    if life.get("stop_at"):
        why = _STOPPED_BY.get(str(life.get("next_stop")), str(life.get("next_stop")))
        return f"{clock(life['stop_at'])} {why}"
    return "–"


def container_list(rows: Sequence[Json], all_users: bool, width: int) -> str:
    """`ds01 container list [--all]` (a list of ContainerOut)."""
    if not rows:
        return NO_CONTAINERS + "\n"
    columns = [
        Column("Name"),
        Column("Image", shrink=True),
        Column("State"),
        Column("GPUs", shrink=True, wrap=True),
        Column("Allocation"),  # the countdown must read whole: the image gives way first
        Column("Uptime"),
    ]
    if all_users:
        columns.insert(0, Column("Owner"))
    t = Table(columns, boxed=True)
    for r in rows:
        cells: list[str | list[str]] = [
            str(r["name"]),
            str(r["image"]),
            str(r["state"]),
            gpu_lines(r),
            [allocation_text(r), *countdown_lines(r)],
            since(r.get("started_at")) if r["state"] == "running" else "–",
        ]
        if all_users:
            cells.insert(0, str(r.get("owner") or "?"))
        t.add_row(*cells)
    return t.render(width)


def events(evs: Sequence[Json], width: int) -> str:
    """`ds01 events` (a list of EventOut)."""
    if not evs:
        return NO_EVENTS + "\n"
    t = Table(
        [
            Column("Time"),
            Column("Kind"),
            Column("Action", shrink=True),
            Column("User", shrink=True),
            Column("Alloc"),
            Column("Reason", shrink=True, wrap=True),
            Column("Message", shrink=True, wrap=True),
        ],
        boxed=True,
    )
    for e in evs:
        t.add_row(
            clock(e["ts"]),
            str(e["kind"]),
            str(e["action"]),
            str(e.get("user") or "–"),
            str(e.get("allocation_id") or "–"),
            str(e.get("reason") or ""),
            str(e.get("message") or ""),
        )
    return t.render(width)

"""`ds01 queue` and `ds01 queue explain` as people see them, drawn from ds01d's JSON answer
(QueueOut, QueueExplainOut dumped). Standard library and light ds01 modules only (no Rich, no
pydantic), like readviews.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ds01.cli.table import Column, Table
from ds01.cli.text import shown
from ds01.timetext import clock, span

Json = Mapping[str, Any]

HIDDEN = "(hidden)"


def queue(q: Json, width: int, all_users: bool) -> str:
    entries = list(q.get("entries") or [])
    waiting = int(q.get("waiting") or 0)
    if not entries:
        head = "You have nothing in the queue." if not all_users else "The queue is empty."
        return f"{head} ({waiting} waiting in all)\n" if waiting and not all_users else head + "\n"
    t = Table(
        [
            Column("Pos", right=True),
            Column("ID", right=True),
            Column("User", shrink=True),
            Column("Container", shrink=True),
            Column("Wants"),
            Column("Waiting"),
            Column("Starts (est.)"),
            Column("State"),
            Column("Note", shrink=True, wrap=True),
        ],
        title=f"Queue ({waiting} waiting)",
        boxed=True,
    )
    for e in entries:
        t.add_row(
            str(e["position"]) if e.get("position") is not None else "–",
            str(e["id"]),
            shown(e["user"]) if e.get("user") is not None else HIDDEN,
            shown(_name(e)),
            shown(e.get("request") or f"{e['size']:g} unit(s)"),
            span(float(e.get("waited_s") or 0)),
            clock(e["estimated_start"]) if e.get("estimated_start") else "unknown",
            str(e["state"]),
            shown(e.get("note") or ""),
        )
    mine = [e for e in entries if e.get("mine") and e.get("position") is not None]
    tail = ""
    if mine:
        first = mine[0]
        tail = (
            f"Why this order: ds01 queue explain {first['id']}. "
            f"Cancel: ds01 queue cancel {first['id']}.\n"
        )
    return t.render(width) + tail


def _name(e: Json) -> str:
    """An entry's container name; a docker create the gate holds open is marked '(docker)'
    (an unnamed one is listed as '(docker run XXXXXX)' already)."""
    name = str(e.get("name") or "–")
    if e.get("origin") == "gate" and not name.startswith("(docker run "):
        name += " (docker)"
    return name


def queued(e: Json) -> str:
    """What `ds01 container deploy --queue` says when the request waits."""
    return (
        f"No GPU is free now: '{shown(e.get('name'))}' waits in the queue as entry {e['id']}, "
        f"position {e.get('position')}.\n"
        "ds01 starts it when GPUs free up and tells you (terminal, next ds01 command).\n"
        f"Watch: ds01 queue    Why this order: ds01 queue explain {e['id']}    "
        f"Cancel: ds01 queue cancel {e['id']}\n"
    )


def explain(x: Json) -> str:
    e = x["entry"]
    pos = e.get("position")
    lines = [
        f"Queue entry {e['id']} ({shown(e.get('name') or '–')}, {shown(e.get('request') or '')}):"
        f" {e['state']}" + (f", position {pos}" if pos is not None else "")
    ]
    if x.get("total") is None:
        lines.append("It is not waiting: it has no priority now.")
        return "".join(f"{line}\n" for line in lines)
    if e.get("estimated_start"):
        lines.append(
            f"Expected to start around {clock(e['estimated_start'])} (an estimate from the "
            "known ends of what runs now)"
        )
    elif pos is not None:
        lines.append("Expected start: unknown (what runs now has no time limit ds01 knows)")
    if x.get("usage_gpueq_s") is not None:
        lines.append(
            f"Your decayed GPU use: {float(x['usage_gpueq_s']) / 3600:.2f} GPU-hours "
            f"({float(x['usage_gpueq_s']):.0f} gpueq·s)"
        )
    t = Table(
        [
            Column("Factor"),
            Column("Value", right=True),
            Column("Weight", right=True),
            Column("Points", right=True),
        ],
        boxed=True,
    )
    for f in x.get("factors") or []:
        t.add_row(f["name"], f"{f['value']:.4f}", f"{f['weight']:g}", f"{f['points']:.3f}")
    t.add_row("priority", "", "", f"{x['total']:.3f}")
    return "".join(f"{line}\n" for line in lines) + t.render(None)

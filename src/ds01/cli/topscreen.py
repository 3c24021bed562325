"""`ds01 top`'s screen, drawn from what cli/topview.py put together: the tables every read
command uses (cli/table.py), each row one line cut to the width, and — for the live view — the
sections cut to the terminal's height, the units kept longest. Standard library and light ds01
modules only: the quick path imports it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from ds01.cli.readviews import deadline
from ds01.cli.statusview import dash, memory_cell, procs_cell
from ds01.cli.table import Column, Table
from ds01.cli.text import short_model, shown
from ds01.model.gpueq import GpuEq
from ds01.timetext import NONE, clock, span

Json = Mapping[str, Any]

QUEUE_ROWS_ONCE = 10  # --once: the queue's head (`ds01 queue --all` has all of it)


class Section(NamedTuple):
    """Lines of one part of the screen: its head (title, column names), one line per row, and
    what follows (a caption); `name` says what a cut row is ('units', 'events')."""

    name: str
    head: list[str]
    rows: list[str]
    tail: list[str]


def screen(
    top: Json,
    width: int,
    height: int | None,
    note: str = "",
    now: float | None = None,
    skip: int = 0,
) -> str:
    """The dashboard as text: every line at most `width` columns; with a `height` (the live
    view), at most that many lines, sections cut from the least important (events, users,
    queue, alerts, then units), each cut said in a '… N more' line. `note`: a line about the
    refresh (ds01d not answering), shown under the header. `skip`: units scrolled past (the
    live view's j/k), said in the units' title."""
    now = time.time() if now is None else now
    head = _header(top, width, note, now)
    units = _units(top, width)
    skip = max(0, min(skip, len(units.rows) - 1))
    if skip:
        first = str(top["status"]["units"][skip]["name"])
        title = f"{units.head[0]} from unit {first} (k or ↑: back)"
        units = units._replace(head=[cut(title, width), *units.head[1:]], rows=units.rows[skip:])
    sections = [units]
    if top.get("alerts") is not None:
        sections.append(_alerts(top["alerts"], width))
    if top.get("queue") is not None:
        sections.append(_queue(top["queue"], width, None if height else QUEUE_ROWS_ONCE))
    if top.get("users") is not None:
        sections.append(_users(top["users"], width))
    sections.append(_events(top.get("events") or [], width, bool(top.get("admin"))))
    sections = [s for s in sections if s.head or s.rows]
    if height is not None:
        sections = _fit(sections, height - len(head))
    lines = list(head)
    for s in sections:
        lines += s.head + s.rows + s.tail
    return "\n".join(line[:width] for line in lines) + "\n"


def _header(top: Json, width: int, note: str, now: float) -> list[str]:
    status = top["status"]
    who = f"{top['user']}{' (admin)' if top.get('admin') else ''}"
    sampled = status.get("sampled_at")
    age = f"sample {span(now - _epoch(sampled))} old" if sampled else "no GPU sample yet"
    first = f"ds01 top · {who} · {time.strftime('%H:%M:%S', time.localtime(now))} · {age}"
    units = status.get("units") or []
    states: dict[str, int] = {}
    for u in units:
        key = "drained" if u.get("drained") else str(u.get("state") or "free")
        states[key] = states.get(key, 0) + 1
    counts = ", ".join(f"{n} {k}" for k, n in sorted(states.items()))
    second = (
        f"{float(status['free_gpueq']):.2f} of {float(status['total_gpueq']):.2f} gpueq free"
        f" · {len(units)} units: {counts}"
    )
    q = top.get("queue")
    if q is not None:
        second += f" · {int(q.get('waiting') or 0)} queued"
    out = [shown(first), shown(second)]
    if note:
        out.append(shown(note))
    return [cut(line, width) for line in out]


def cut(line: str, width: int) -> str:
    """A line of at most `width` columns, '…' saying it was cut (as the tables cut cells)."""
    return line if len(line) <= width else line[: width - 1] + "…"


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def _split(rendered: str, head: int) -> Section:
    """A rendered plain table as a Section: `head` lines (title, column names, rule), then
    one line per row (its cells are cut, never wrapped), then the caption."""
    lines = rendered.rstrip("\n").split("\n")
    return Section("", lines[:head], lines[head:], [])


def _units(top: Json, width: int) -> Section:
    """The units, as `ds01 gpu status` shows them, with a deadline: when each goes back."""
    status = top["status"]
    mine = {a["id"]: a for a in top.get("allocations") or []}
    t = Table(
        [
            Column("Unit"),
            Column("Model", shrink=True),
            Column("Memory GiB"),
            Column("Util", right=True),
            Column("Procs", shrink=True),
            Column("Holder", shrink=True),
            Column("State"),
            Column("Until"),
        ],
        title=f"GPU units ({status.get('backend')})",
    )
    units = status.get("units") or []
    for u in units:
        a = mine.get(u.get("allocation_id"))
        if a is not None:
            until = deadline(a)
        elif u.get("state") == "held" and u.get("hold_until"):
            until = f"{clock(u['hold_until'])} hold"
        else:
            until = NONE
        state = "drained" if u.get("drained") else str(u.get("state") or "")
        if not state:
            state = "busy" if u.get("busy") else "free"
        holder = str(u.get("user") or NONE)
        if u.get("container") and u.get("user"):
            holder = f"{u['user']} ({u['container']})"
        t.add_row(
            str(u["name"]),
            short_model(str(u["model"]), u.get("profile")),
            memory_cell(u.get("memory_used_mib"), u.get("memory_total_mib")),
            dash(u.get("utilization_pct"), "{:.0f}%"),
            procs_cell(u.get("processes") or []),
            holder,
            state,
            until,
        )
    s = _split(t.render(width), 3)
    return s._replace(name="units")


def _alerts(alerts: Sequence[Json], width: int) -> Section:
    if not alerts:
        return Section("alerts", ["Alerts: none"], [], [])
    return Section(
        "alerts",
        [f"Alerts ({len(alerts)})"],
        [cut(f"! {shown(a['message'])}", width) for a in alerts],
        [],
    )


def _queue(q: Json, width: int, most: int | None) -> Section:
    entries = [e for e in q.get("entries") or [] if e.get("position") is not None]
    if not entries:
        return Section("queue", [], [], [])
    t = Table(
        [
            Column("Pos", right=True),
            Column("ID", right=True),
            Column("User", shrink=True),
            Column("Container", shrink=True),
            Column("Wants", shrink=True),
            Column("Waiting"),
            Column("Starts (est.)"),
        ],
        title=f"Queue ({int(q.get('waiting') or 0)} waiting)",
    )
    shown_entries = entries if most is None else entries[:most]
    for e in shown_entries:
        t.add_row(
            str(e["position"]),
            str(e["id"]),
            str(e["user"]) if e.get("user") is not None else "(hidden)",
            str(e.get("name") or NONE),
            str(e.get("request") or f"{e['size']:g} unit(s)"),
            span(float(e.get("waited_s") or 0)),
            clock(e["estimated_start"]) if e.get("estimated_start") else "unknown",
        )
    s = _split(t.render(width), 3)._replace(name="queue entries")
    if len(entries) > len(shown_entries):
        s.tail.append(f"… {len(entries) - len(shown_entries)} more: ds01 queue --all")
    return s


def _users(rows: Sequence[Json], width: int) -> Section:
    if not rows:
        return Section("users", [], [], [])
    t = Table(
        [
            Column("User", shrink=True),
            Column("gpueq", right=True),
            Column("Units", right=True),
            Column("Active", right=True),
            Column("Held", right=True),
            Column("Reserved", right=True),
            Column("Idle", right=True),
            Column("Queued", right=True),
        ],
        title="Users",
    )
    for r in rows:
        t.add_row(
            str(r["user"]),
            GpuEq.parse(str(r["gpueq_exact"])).display(),
            *(str(r[k]) for k in ("units", "active", "held", "reserved", "idle", "queued")),
        )
    return _split(t.render(width), 3)._replace(name="users")


def _events(evs: Sequence[Json], width: int, admin: bool) -> Section:
    title = "Recent events" if admin else "Your recent events"
    if not evs:
        return Section("events", [f"{title}: none"], [], [])
    t = Table(
        [
            Column("Time"),
            Column("Kind"),
            Column("Action", shrink=True),
            Column("User", shrink=True),
            Column("Message", shrink=True),
        ],
        title=title,
    )
    for e in reversed(evs):  # newest first
        t.add_row(
            clock(e["ts"]),
            str(e["kind"]),
            str(e["action"]),
            str(e.get("user") or NONE),
            str(e.get("message") or e.get("reason") or ""),
        )
    return _split(t.render(width), 3)._replace(name="events")


# Cut first when the screen is too short: the last named goes first.
_KEEP_ORDER = ("units", "alerts", "queue entries", "users", "events")


def _fit(sections: list[Section], room: int) -> list[Section]:
    """The sections cut to `room` lines: rows go from the least important section first, a
    '… N more' line saying what went; a section left without rows goes whole."""
    order = sorted(
        range(len(sections)),
        key=lambda i: (
            -_KEEP_ORDER.index(sections[i].name) if sections[i].name in _KEEP_ORDER else 0
        ),
    )
    kept = [list(s.rows) for s in sections]
    cut = [0] * len(sections)
    gone = [False] * len(sections)

    def used() -> int:
        total = 0
        for i, s in enumerate(sections):
            if gone[i]:
                continue
            total += len(s.head) + len(kept[i]) + len(s.tail) + (1 if cut[i] else 0)
        return total

    for i in order:
        while used() > room and kept[i]:
            kept[i].pop()
            cut[i] += 1
        if used() > room and not kept[i] and i != 0:
            gone[i] = True
        if used() <= room:
            break
    out = []
    for i, s in enumerate(sections):
        if gone[i]:
            continue
        hint = " (j or ↓: more)" if s.name == "units" else ""
        more = [f"… {cut[i]} more {s.name}{hint}"] if cut[i] else []
        out.append(Section(s.name, s.head, kept[i], [*more, *s.tail]))
    return out

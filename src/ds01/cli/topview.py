"""`ds01 top`: what it shows, from ds01d's answers (the API's JSON, as the quick path and the
full command line both have it). cli/topscreen.py draws it.

`snapshot()` puts the answers together into the one object `--json` prints: `status` is
exactly `ds01 gpu status --json`; `allocations` are those holding GPUs (yours; an admin's:
everyone's), CPU-only ones left out (ds01d's answer for 500 of them would cost more than all
the rest); `queue` (`ds01 queue --all --json`) and `events` are the API's answers as they
came; and for admins only `health`, `users` and `alerts` are worked out here from them.
Nothing is asked that the caller could not ask for themselves, so privacy (`privacy:
hide_others`) holds as it does in those commands: ds01d hid what it hides before the answer
left it.

Standard library and light ds01 modules only, and none of the drawing's (`top --json` pays
for every import): the quick path imports it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

Json = Mapping[str, Any]

EVENTS = 10  # recent events asked for: what the screen has room for


def from_top(got: Json) -> dict[str, Any]:
    """The snapshot of ds01d's GET /v1/top answer (api/top.py), as both ways of `ds01 top`
    ask for it."""
    parts = [got["whoami"], got["status"], got["allocations"], got["queue"], got["events"]]
    if got["admin_parts"]:
        parts += [got["health"], got["host_processes"], got["orphans"]]
    return snapshot(*parts)


def snapshot(
    who: Json,
    status: Json,
    allocations: Sequence[Json],
    queue: Json | None,
    events: Sequence[Json],
    health: Json | None = None,
    host_processes: Sequence[Json] | None = None,
    orphans: Sequence[Json] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """What `ds01 top --json` prints. `health`, `host_processes` and `orphans` are asked for
    admins only; users and alerts are for admins only (None otherwise)."""
    now = time.time() if now is None else now
    admin = bool(who.get("admin"))
    return {
        "user": who["user"],
        "admin": admin,
        "taken_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
        "status": status,
        "allocations": list(allocations),
        "queue": queue,
        "events": list(events),
        "health": health if admin else None,
        "users": users(status, allocations, queue) if admin else None,
        "alerts": alerts(status, allocations, health, host_processes or [], orphans or [], now)
        if admin
        else None,
    }


# ---- admin sections ---------------------------------------------------------------------------


def users(status: Json, allocations: Sequence[Json], queue: Json | None) -> list[dict[str, Any]]:
    """One row per user holding GPUs or waiting for them: gpueq and units held, allocations
    by state, how many of them are idle now, entries queued. Most gpueq first."""
    # Imported here: only admins see this, and fractions (GpuEq's) is 2 ms of `top --json`.
    from ds01.model.gpueq import GpuEq

    rows: dict[str, dict[str, Any]] = {}

    def row(user: str) -> dict[str, Any]:
        return rows.setdefault(
            user,
            {"user": user, "gpueq": GpuEq(0), "units": 0, "active": 0, "held": 0,
             "reserved": 0, "idle": 0, "queued": 0},
        )  # fmt: skip

    for a in allocations:
        r = row(str(a["user"]))
        r["gpueq"] += GpuEq.parse(str(a["gpueq_exact"]))
        r["units"] += len(a.get("units") or [])
        if a.get("state") in ("active", "held", "reserved"):
            r[str(a["state"])] += 1
        if (a.get("lifecycle") or {}).get("idle_since"):
            r["idle"] += 1
    for e in (queue or {}).get("entries") or []:
        if e.get("position") is not None and e.get("user") is not None:
            row(str(e["user"]))["queued"] += 1
    out = sorted(rows.values(), key=lambda r: (-float(r["gpueq"]), r["user"]))
    for r in out:
        r["gpueq_exact"] = r["gpueq"].as_text()
        r["gpueq"] = round(float(r["gpueq"]), 4)
    return out


def alerts(
    status: Json,
    allocations: Sequence[Json],
    health: Json | None,
    host_processes: Sequence[Json],
    orphans: Sequence[Json],
    now: float,
) -> list[dict[str, str]]:
    """What an admin should look at, most urgent first, each {kind, message}: ds01d's own
    trouble (Docker unreachable, a stale GPU sample, a failing loop, a broken invariant, a
    config change waiting for a restart), GPU processes on the host without a grant, containers
    running without a live allocation, processes outside ds01 on held units, drained units,
    idle allocated GPUs, and the sample's warnings."""
    out: list[dict[str, str]] = []

    def add(kind: str, message: str) -> None:
        out.append({"kind": kind, "message": message})

    h = health or {}
    if h.get("docker") == "down":
        add("docker", "Docker engine unreachable: containers cannot start or stop")
    loops: Mapping[str, Json] = h.get("loops") or {}
    sampler = loops.get("sampler") or {}
    interval = float(sampler.get("interval_s") or 0)
    last = sampler.get("last_ok")
    if health is not None and (last is None or now - float(last) > 3 * interval + 10):
        from ds01.timetext import ago

        age = "never" if last is None else ago(now - float(last))
        add("sampler_stale", f"GPU sample stale: last good sample {age}")
    for name, lp in sorted(loops.items()):
        if lp.get("failing"):
            add("loop_failing", f"loop {name} failing: {lp['failing']}")
    for problem in h.get("invariants") or []:
        add("invariant", f"invariant broken: {problem}")
    if h.get("restart_needed"):
        add("restart_needed", "restart ds01d to apply: " + ", ".join(h["restart_needed"]))
    for p in host_processes:
        if p.get("cause"):
            who = p.get("user") or f"uid {p.get('uid')}"
            where = ",".join(str(i) for i in p.get("gpu_indices") or []) or "?"
            why = "grant ended" if p["cause"] == "grant_ended" else "no grant"
            act = f", {p['action']}" if p.get("action") else ""
            add("host_process", f"GPU {where}: pid {p['pid']} {p.get('name')} ({who}), {why}{act}")
    for o in orphans:
        add(
            "orphan",
            f"container {o['docker_name']} ({o.get('owner') or 'owner unknown'}): {o['problem']}",
        )
    for u in status.get("units") or []:
        outside = [p for p in u.get("processes") or [] if p.get("foreign")]
        if outside and u.get("state"):
            owners = sorted({str(p.get("owner") or "?") for p in outside})
            add(
                "outside_process",
                f"unit {u['name']} held by {u.get('user') or '?'}: "
                f"{len(outside)} process(es) outside ds01 ({', '.join(owners)})",
            )
    for u in status.get("units") or []:
        if u.get("drained"):
            add("drained", f"unit {u['name']} drained: {u.get('drain_reason') or 'no reason'}")
    for a in allocations:
        life = a.get("lifecycle") or {}
        if life.get("idle_since"):
            # Imported here, not above: most snapshots have no alert with a time to write out
            # (datetime costs a tenth of what `top --json` may take over `gpu status --json`).
            from ds01.timetext import clock, since

            stop = f", stops {clock(life['stop_at'], now)}" if life.get("stop_at") else ""
            add(
                "idle",
                f"alloc {a['id']} {a['user']} ({a.get('container') or '–'}): "
                f"{len(a.get('units') or [])} unit(s) idle {since(life['idle_since'], now)}{stop}",
            )
    for w in status.get("warnings") or []:
        add("warning", str(w))
    return out

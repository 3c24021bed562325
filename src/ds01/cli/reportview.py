"""`ds01 report usage` as people and spreadsheets read it: a table, CSV or Markdown, drawn from
the daemon's JSON report (api/schemas.py UsageReportOut) with the standard library. The JSON
form is the API's own (cli/report_cmd.py prints it)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from ds01.cli.table import Column, Table

CSV_FIELDS = (
    "gpu_hours",
    "active_gpu_hours",
    "idle_gpu_hours",
    "unknown_gpu_hours",
    "idle_share",
    "energy_kwh",
    "co2_kg",
    "unmetered_gpu_hours",
    "allocations",
    "containers",
)


def _when(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")


def title(r: dict[str, Any]) -> str:
    span = f"{_when(r['start'])} – {_when(r['end'])}"
    if r["scope"] == "own":
        return f"Your GPU usage, {span}"
    return f"GPU usage by {r['by']}, {span}"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _n(value: float, places: int = 2) -> str:
    return f"{value:,.{places}f}"


def notes(r: dict[str, Any]) -> list[str]:
    out = [
        "GPU h: gpueq·hours held (a whole GPU for an hour is 1, an H100 3g.40gb slice 3/7)."
        " Idle: the share of them the units were idle. Energy: the GPUs' own, attributed by"
        f" held time and slice. CO₂ at {r['grid_intensity_g_per_kwh']:g} g/kWh"
        " (report.grid_intensity_g_per_kwh)."
    ]
    unmetered = r["total"]["unmetered_gpu_hours"]
    if unmetered > 0:
        out.append(
            f"No energy reading for {_n(unmetered)} GPU h (GPUs reporting neither energy nor"
            " power): their energy is not counted."
        )
    m = r.get("machine")
    if m is not None:
        out.append(
            f"Machine: {_n(m['sampled_hours'], 1)} h sampled (ds01d running), capacity"
            f" {_n(m['capacity_gpu_hours'])} GPU h; {_n(m['energy_kwh'])} kWh in all, of which"
            f" {_n(m['unallocated_energy_kwh'])} kWh unallocated (free GPUs and slices),"
            f" {_n(m['co2_kg'])} kg CO₂."
        )
    return out


def _cells(f: dict[str, Any]) -> list[str]:
    return [
        _n(f["gpu_hours"]),
        _n(f["active_gpu_hours"]),
        _share(f["idle_share"]),
        _n(f["energy_kwh"]),
        _n(f["co2_kg"]),
        str(f["containers"]),
    ]


HEADERS = ("GPU h", "Active h", "Idle", "kWh", "CO₂ kg", "Containers")


def _key(f: dict[str, Any], by: str) -> str:
    return f["key"] or ("(no group)" if by == "group" else "")


def table(r: dict[str, Any], width: int) -> str:
    t = Table(
        [Column(r["by"].capitalize(), shrink=True)] + [Column(h, right=True) for h in HEADERS],
        title=title(r),
        boxed=True,
    )
    for f in r["rows"]:
        t.add_row(_key(f, r["by"]), *_cells(f))
    if len(r["rows"]) > 1:
        t.add_row("total", *_cells(r["total"]))
    if not r["rows"]:
        t.add_row("(no usage)", *["" for _ in HEADERS])
    t.caption = "\n".join(notes(r))
    return t.render(width)


def as_csv(r: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([r["by"], *CSV_FIELDS])
    for f in r["rows"]:
        w.writerow(
            [
                f["key"],
                *(
                    ""
                    if f[k] is None
                    else f[k]
                    if isinstance(f[k], int)
                    else f"{f[k]:.6f}".rstrip("0").rstrip(".")
                    for k in CSV_FIELDS
                ),
            ]
        )
    return buf.getvalue()


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def as_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"## {_md(title(r))}",
        "",
        f"| {r['by'].capitalize()} | " + " | ".join(HEADERS) + " |",
        "|---|" + "---:|" * len(HEADERS),
    ]
    for f in r["rows"]:
        lines.append(f"| {_md(_key(f, r['by']))} | " + " | ".join(_cells(f)) + " |")
    lines.append("| **total** | " + " | ".join(f"**{c}**" for c in _cells(r["total"])) + " |")
    lines.append("")
    lines += [_md(n) + "\n" for n in notes(r)]
    return "\n".join(lines)

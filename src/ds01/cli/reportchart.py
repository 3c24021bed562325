"""`ds01 report usage --chart FILE.png|svg`: GPU hours per user (or group) over time, as
stacked bars per day (per hour for ranges up to two days), drawn with matplotlib.

matplotlib (with numpy, ~170 MB installed, ~0.5 s to import) is an optional extra
(`pip install 'ds01[chart]'`) and is imported only here, only when a chart is asked for:
`ds01 --help` and every other command never load it. Uses the object API (Figure +
FigureCanvasAgg), never pyplot: no GUI backend, no global state. SVG keeps its text as text
(svg.fonttype none), so names stay searchable.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ds01.errors import Ds01Error

FORMATS = (".png", ".svg")
HOURLY_UP_TO_S = 2 * 86400


def _label(name: str) -> str:
    # matplotlib hides legend labels starting with '_' and reads '$…$' as mathtext.
    text = name.replace("$", r"\$") or "(no group)"
    return " " + text if text.startswith("_") else text


def _slots(r: dict[str, Any]) -> tuple[list[datetime], dict[str, list[float]], bool]:
    """The time slots (local days, or hours) and each key's GPU hours per slot."""
    start = datetime.fromisoformat(r["start"]).astimezone()
    end = datetime.fromisoformat(r["end"]).astimezone()
    hourly = (end - start).total_seconds() <= HOURLY_UP_TO_S

    def slot(t: datetime) -> datetime:
        t = t.astimezone()
        return (
            t.replace(minute=0, second=0, microsecond=0)
            if hourly
            else datetime(t.year, t.month, t.day, tzinfo=t.tzinfo)
        )

    slots: list[datetime] = []
    t, step = slot(start), timedelta(hours=1) if hourly else timedelta(days=1)
    while t < end:
        slots.append(t)
        t = slot(t + step + timedelta(hours=2)) if not hourly else t + step  # DST-proof
    index = {s: i for i, s in enumerate(slots)}
    per: dict[str, list[float]] = {}
    for p in r["series"]:
        i = index.get(slot(datetime.fromisoformat(p["hour"])))
        if i is None:
            continue
        per.setdefault(p["key"], [0.0] * len(slots))[i] += p["gpu_hours"]
    return slots, per, hourly


def draw(r: dict[str, Any], path: Path, title: str) -> None:
    """Write the chart to path (.png or .svg). Ds01Error when matplotlib is missing or the
    file cannot be written."""
    try:
        import matplotlib
        from matplotlib import dates
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise Ds01Error(
            "cannot draw the chart: matplotlib is not installed",
            why="Charts are an optional part of ds01 (the 'chart' extra).",
            fix="Install it (pip install 'ds01[chart]', or apt install python3-matplotlib), "
            "or leave out --chart.",
        ) from None
    matplotlib.rcParams["svg.fonttype"] = "none"
    slots, per, hourly = _slots(r)
    fig = Figure(figsize=(10, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bottom = [0.0] * len(slots)
    x = [float(dates.date2num(s)) for s in slots]  # type: ignore[no-untyped-call]
    width = 0.8 / 24 if hourly else 0.8  # days, matplotlib's date unit
    for key in sorted(per, key=lambda k: -sum(per[k])):
        values = per[key]
        ax.bar(x, values, width=width, bottom=bottom, label=_label(key), align="edge")
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.xaxis_date(tz=slots[0].tzinfo if slots else None)
    ax.set_title(title)
    ax.set_ylabel("GPU hours (gpueq·h)")
    ax.set_xlabel("hour" if hourly else "day")
    if per:
        ax.legend(title=r["by"], loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.text(0.5, 0.5, "no usage in this range", ha="center", transform=ax.transAxes)
    fig.autofmt_xdate()
    try:
        fmt = path.suffix[1:].lower()
        fig.savefig(path, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
    except OSError as err:
        raise Ds01Error(
            f"cannot write the chart to {path}: {err.strerror or err}",
            fix="Give a path in a directory you can write to.",
        ) from None

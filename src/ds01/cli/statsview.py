"""`ds01 container stats [NAME] [--all] [--watch] [--json]`: the running containers' CPU, memory
and GPU use, as ds01d sampled it (GET /v1/container-stats; api/containerstats.py), drawn from
its JSON answer so that the quick path and the full command line print the same text.

`--watch` redraws in place every WATCH_S seconds with `ds01 top`'s plain ANSI live view
(cli/top.py: the alternate screen, q or Ctrl-C gives the terminal back). Standard library and
light ds01 modules only: the quick path (cli/quick.py) runs this module.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TextIO
from urllib.parse import quote

from ds01.cli.statusview import memory_cell
from ds01.cli.table import Column, Table, output_width
from ds01.cli.text import short_model

Json = Mapping[str, Any]

WATCH_S = 2.0  # between --watch frames (ds01d reads cgroups every gpu.sample_interval)
PATH = "/v1/container-stats"
NO_STATS = "No running containers. See all of yours with: ds01 container list"


def size(n: int | None) -> str:
    """Bytes in binary units with one decimal, as docker stats writes them ('20.4MiB')."""
    if n is None:
        return "–"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}%"


def _memory(s: Json) -> str:
    used, limit = s.get("memory_used_bytes"), s.get("memory_limit_bytes")
    return f"{size(used)} / {size(limit) if limit else 'no limit'}"


def _gpu_lines(s: Json) -> tuple[list[str], list[str], list[str]]:
    """Unit, GPU memory and GPU utilization, one line per allocated unit."""
    units, memory, util = [], [], []
    for g in s.get("gpus") or []:
        units.append(f"{g['name']} {short_model(str(g['model']), g.get('profile'))}")
        used, total = g.get("memory_used_mib"), g.get("memory_total_mib")
        memory.append(memory_cell(used, total))
        pct = g.get("utilization_pct")
        util.append("n/a (MIG)" if g.get("note") else "–" if pct is None else f"{pct:.0f}%")
    if not units:
        return ["none"], ["–"], ["–"]
    return units, memory, util


def table(rows: Sequence[Json], all_users: bool, width: int) -> str:
    """The stats of each running container (a list of ContainerStatsOut, dumped)."""
    if not rows:
        return NO_STATS + "\n"
    columns = [
        Column("Name"),
        Column("CPU %", right=True),  # of one core, as docker stats
        Column("Memory"),
        Column("Mem %", right=True),
        Column("GPU", shrink=True),  # gives way first: the numbers must read whole
        Column("GPU mem GiB"),
        Column("GPU util", right=True),
    ]
    if all_users:
        columns.insert(0, Column("Owner", shrink=True))
    t = Table(columns)  # plain, as gpu status: seven columns fit 80
    for s in rows:
        units, memory, util = _gpu_lines(s)
        cells: list[str | list[str]] = [
            str(s["name"]),
            _pct(s.get("cpu_pct")),
            _memory(s),
            _pct(s.get("memory_pct")),
            units,
            memory,
            util,
        ]
        if all_users:
            cells.insert(0, str(s["owner"]))
        t.add_row(*cells)
    if any(g.get("note") for s in rows for g in s.get("gpus") or []):
        t.caption = "MIG devices report no utilization (NVML): their memory in use shows activity."
    return t.render(width)


def as_json(data: object) -> str:
    """As print_json writes it (cli/output.py)."""
    return json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"


class Args(NamedTuple):
    name: str | None
    all_users: bool
    watch: bool
    as_json: bool


def parse(args: list[str]) -> Args | None:
    """The quick path's reading of the arguments, or None unless each is known, given once,
    and they go together (the long way says what is wrong with anything else)."""
    name: str | None = None
    seen: set[str] = set()
    for arg in args:
        if arg in seen:
            return None
        seen.add(arg)
        if arg.startswith("-"):
            if arg not in ("--all", "--watch", "--json"):
                return None
        elif name is None:
            name = arg
        else:
            return None
    a = Args(name, "--all" in seen, "--watch" in seen, "--json" in seen)
    return None if (a.name and a.all_users) or (a.watch and a.as_json) else a


def request(a: Args) -> tuple[str, dict[str, str]]:
    """The path and query the command asks for."""
    if a.name is not None:
        return f"{PATH}/{quote(a.name, safe='')}", {}
    return PATH, {"all": "1"} if a.all_users else {}


def rows_of(a: Args, body: Any) -> list[Json]:
    return [body] if a.name is not None else list(body)


def show(a: Args, first: Any, fetch: Callable[[], Any | None], out: TextIO | None = None) -> int:
    """Print the answer (JSON or table) once, or watch it live on a terminal."""
    out = sys.stdout if out is None else out
    if a.as_json:
        out.write(as_json(first))
        return 0
    if not a.watch or not _is_tty(out):
        out.write(table(rows_of(a, first), a.all_users, output_width(out)))
        return 0
    watch(a, first, fetch, out)
    return 0


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except ValueError:
        return False


def watch(a: Args, first: Any, fetch: Callable[[], Any | None], out: TextIO) -> None:
    """Redraw in place until q or Ctrl-C, as `ds01 top` does (cli/top.py's keys and wait). An
    answer that does not come keeps the last frame, with a line saying so."""
    import termios
    import tty

    from ds01.cli.top import QUIT, _wait

    keys = sys.stdin if _is_tty(sys.stdin) else None
    saved = termios.tcgetattr(keys.fileno()) if keys is not None else None
    body, note = first, ""
    try:
        out.write("\x1b[?1049h\x1b[?25l")  # the alternate screen, cursor hidden
        if keys is not None:
            tty.setcbreak(keys.fileno())
        while True:
            size_now = os.get_terminal_size(out.fileno())
            head = f"ds01 container stats  {time.strftime('%H:%M:%S')}  (q quits)"
            frame = "\n".join(
                [
                    head,
                    *([note] if note else []),
                    table(rows_of(a, body), a.all_users, size_now.columns),
                ]
            ).rstrip("\n")
            out.write("\x1b[H" + frame.replace("\n", "\x1b[K\n") + "\x1b[K\x1b[J")
            out.flush()
            if _wait(keys, WATCH_S, size_now, out) in QUIT:
                return
            got = fetch()
            if got is None:
                note = f"ds01d did not answer at {time.strftime('%H:%M:%S')}; trying again"
            else:
                body, note = got, ""
    except KeyboardInterrupt:
        return
    finally:
        if keys is not None and saved is not None:
            termios.tcsetattr(keys.fileno(), termios.TCSADRAIN, saved)
        out.write("\x1b[?25h\x1b[?1049l")
        out.flush()


def quick(socket: str, args: list[str]) -> int | None:
    """`ds01 container stats …` on the quick path: the exit status, or None when the long way
    must answer (a flag to check, no daemon, an error answer to explain)."""
    a = parse(args)
    if a is None:
        return None
    from ds01.unixhttp import get_json

    path, params = request(a)
    notices: list[dict[str, Any]] = []
    first = get_json(socket, path, params, notices=notices)
    if notices:
        from ds01.notices import render

        sys.stderr.write(render(notices))
    if first is None:
        return None
    try:
        return show(a, first, lambda: get_json(socket, path, params))
    except BrokenPipeError:  # `ds01 container stats --json | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0

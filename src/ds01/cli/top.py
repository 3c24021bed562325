"""`ds01 top`: asking ds01d for what the dashboard shows, and the live view in the terminal.

ds01d answers everything in one request (GET /v1/top, api/top.py): who am I, the units, the
allocations (an admin's: everyone's), the queue, recent events, and for an admin ds01d's
health, the host's GPU processes and containers running without an allocation.
cli/topview.py puts them together, cli/topscreen.py draws them.

The live view is plain ANSI on the terminal's alternate screen — cursor home, each line
cleared to its end, the rest of the screen cleared — redrawn every --interval seconds or at
any key; j/k (or ↓/↑) scroll the units when they do not all fit, g goes back to the first;
q or Ctrl-C leaves it and gives the terminal back as it was. Rich's live
display would cost about 46 ms of imports (rich.live, rich.table, rich.console; 4-5 times
the interpreter's own start-up on a 2-core VM) for what these escape codes do; the tables
are cli/table.py's, as in every read command.

Standard library and light ds01 modules only: the quick path (cli/quick.py) runs it.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TextIO

from ds01.cli import topview

MIN_INTERVAL_S, MAX_INTERVAL_S = 0.2, 3600.0
DEFAULT_INTERVAL_S = 2.0


def gather(socket: str, notices: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """What `ds01 top` shows (topview.snapshot), or None when the answer was not a plain 200
    (no daemon, a refusal): the caller asks again through the full client, which explains."""
    from ds01.unixhttp import get_json

    got = get_json(socket, "/v1/top", {"events": str(topview.EVENTS)}, notices=notices)
    return topview.from_top(got) if isinstance(got, dict) else None


def parse_interval(text: str) -> float | None:
    """--interval's value in seconds, or None unless it is a plain number in range."""
    try:
        value = float(text)
    except ValueError:
        return None
    ok = text.replace(".", "", 1).isdigit() and MIN_INTERVAL_S <= value <= MAX_INTERVAL_S
    return value if ok else None


class Args(NamedTuple):
    """`ds01 top`'s flags: --once, --json, --interval S."""

    once: bool
    as_json: bool
    interval: float


def parse(args: list[str]) -> Args | None:
    """The flags in `args`, or None unless each is known, given once, with a plain value (the
    long way reads anything else, and says what is wrong)."""
    once = as_json = False
    interval = DEFAULT_INTERVAL_S
    seen: set[str] = set()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in seen:
            return None
        seen.add(arg)
        if arg == "--once":
            once = True
        elif arg == "--json":
            as_json = True
        elif arg == "--interval" and i + 1 < len(args):
            value = parse_interval(args[i + 1])
            if value is None:
                return None
            interval = value
            i += 1
        else:
            return None
        i += 1
    return Args(once, as_json, interval)


def as_json(top: dict[str, Any]) -> str:
    """As print_json writes it (cli/output.py)."""
    import json

    return json.dumps(top, indent=2, sort_keys=False, default=str) + "\n"


def is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False


def show(
    first: dict[str, Any],
    fetch: Callable[[], dict[str, Any] | None],
    a: Args,
    out: TextIO | None = None,
) -> int:
    """Print `first` once (--json, --once, or output that is not a terminal), or run the live
    view from it, asking `fetch` for each later frame. The exit status."""
    out = sys.stdout if out is None else out
    if a.as_json:
        out.write(as_json(first))
        return 0
    if a.once or not is_tty(out):
        from ds01.cli.table import output_width
        from ds01.cli.topscreen import screen

        out.write(screen(first, output_width(out), None))
        return 0
    live(first, fetch, a.interval, out)
    return 0


def live(
    first: dict[str, Any],
    fetch: Callable[[], dict[str, Any] | None],
    interval: float,
    out: TextIO,
) -> None:
    """The live view until q or Ctrl-C (module docstring). A frame ds01d did not answer keeps
    the last one, with a line saying so: the view outlives a daemon restart."""
    import termios
    import tty

    from ds01.cli.topscreen import screen

    keys = sys.stdin if is_tty(sys.stdin) else None
    saved = termios.tcgetattr(keys.fileno()) if keys is not None else None
    top, note, skip = first, "", 0
    try:
        out.write("\x1b[?1049h\x1b[?25l")  # the alternate screen, cursor hidden
        if keys is not None:
            tty.setcbreak(keys.fileno())  # keys one by one, unechoed; Ctrl-C still interrupts
        while True:
            size = os.get_terminal_size(out.fileno())
            frame = screen(top, size.columns, size.lines, note, skip=skip).rstrip("\n")
            out.write("\x1b[H" + frame.replace("\n", "\x1b[K\n") + "\x1b[K\x1b[J")
            out.flush()
            key = _wait(keys, interval, size, out)
            if key in QUIT:
                return
            if key in SCROLL:
                last = len(top["status"].get("units") or []) - 1
                skip = max(0, min(last, skip + SCROLL[key]))
                continue  # redrawn at once from what it has
            got = fetch()
            if got is None:
                note = f"ds01d did not answer at {time.strftime('%H:%M:%S')}; trying again"
            else:
                top, note = got, ""
    except KeyboardInterrupt:
        return
    finally:
        if keys is not None and saved is not None:
            termios.tcsetattr(keys.fileno(), termios.TCSADRAIN, saved)
        out.write("\x1b[?25h\x1b[?1049l")
        out.flush()


# Keys of the live view (any other one redraws now). b"" is the end of input: quit.
QUIT = (b"q", b"Q", b"")
SCROLL = {b"j": 1, b"\x1b[B": 1, b"k": -1, b"\x1b[A": -1, b"g": -(10**9)}  # ↓ ↑, g: top


def _wait(
    keys: TextIO | None, interval: float, size: os.terminal_size, out: TextIO
) -> bytes | None:
    """Wait out the interval: the key pressed, or None when the time is up or the terminal
    changed size (both redraw)."""
    end = time.monotonic() + interval
    while (left := end - time.monotonic()) > 0:
        if keys is None:
            time.sleep(min(left, 0.25))
        else:
            ready, _, _ = select.select([keys.fileno()], [], [], min(left, 0.25))
            if ready:
                return os.read(keys.fileno(), 64)
        try:
            if os.get_terminal_size(out.fileno()) != size:
                return None
        except OSError:
            pass
    return None


def quick(socket: str, args: list[str]) -> int | None:
    """`ds01 top …` on the quick path: the exit status, or None when the long way must answer
    (a flag to check, no daemon, a refusal)."""
    a = parse(args)
    if a is None:
        return None
    notices: list[dict[str, Any]] = []
    first = gather(socket, notices)
    if notices:
        from ds01.notices import render

        sys.stderr.write(render(notices))
    if first is None:
        return None
    try:
        return show(first, lambda: gather(socket), a)
    except KeyboardInterrupt:  # before the live view took over the terminal (as the long way)
        return 130
    except BrokenPipeError:  # `ds01 top --json | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0

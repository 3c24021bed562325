"""The `ds01` entry point, with a quick path for the read commands people run in loops.

`watch -n1 ds01 gpu status`, shell prompts and admin scripts run these many times a minute;
loading the whole command line (Typer, pydantic, an HTTP client library, Rich) costs ten
times what the answer does. So the read commands below are answered here with the standard
library and ds01's light modules only: parse the few flags they take, GET the daemon's answer
over its socket, and print it as `--json` always prints (cli/output.py print_json) or as the
table the full command line draws from the same JSON with the same functions (readviews.py,
statusview.py).

Anything else — another command or flag, --help, a value to check, no daemon, an error
answer — goes the long way (cli/main.py), which asks again and explains what went wrong: this
path never prints an error of its own, so every message and exit code stays the one the full
command line gives. DS01_QUICK=0 turns the quick path off (the tests compare both ways).
"""

from __future__ import annotations

import json
import os
import sys
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

# What the long way's options take (cli/main.py main()); the quick path accepts the same.
_GLOBALS = {"--config": "config", "--state-dir": "state_dir", "--run-dir": "run_dir"}


_NONE: Mapping[str, str] = MappingProxyType({})


class Read(NamedTuple):
    """A read command: its API path, its switches (flag → the query parameter it sets to 1),
    its options taking a value (option → parameter), the query the long way always sends, and
    and whether its table form is drawn here too (every one is; `gpu status` takes --wide)."""

    path: str
    switches: Mapping[str, str] = _NONE
    values: Mapping[str, str] = _NONE
    fixed: Mapping[str, str] = _NONE
    table: bool = True
    wide: bool = False


def _event_kinds() -> frozenset[str]:
    from ds01.model.events import EventKind

    return frozenset(k.value for k in EventKind)


# The commands answered here, with what the long way sends for them (cli/*_cmd.py, client.py).
READS: dict[tuple[str, ...], Read] = {
    ("gpu", "status"): Read("/v1/gpu/status", wide=True),
    ("quota",): Read("/v1/quota"),
    ("access",): Read("/v1/access"),
    ("container", "list"): Read("/v1/containers", switches={"--all": "all"}),
    ("events",): Read(
        "/v1/events",
        values={"--user": "user", "--kind": "kind", "--limit": "limit"},
        fixed={"limit": "200"},
    ),
}


class Plan(NamedTuple):
    words: tuple[str, ...]
    socket: str
    path: str
    params: dict[str, str]
    as_json: bool
    wide: bool


def plan(argv: Sequence[str]) -> Plan | None:
    """What to GET for `argv`, or None when the long way must answer it."""
    args = list(argv)
    chosen: dict[str, str] = {}
    while args and args[0] in _GLOBALS:
        if len(args) < 2 or not args[1].strip():
            return None  # the long way says what is missing
        chosen[_GLOBALS[args[0]]] = args[1]
        del args[:2]
    for words, read in READS.items():
        if tuple(args[: len(words)]) == words:
            flags = _flags(args[len(words) :], read)
            break
    else:
        return None
    if flags is None:
        return None
    params, as_json, wide = flags
    if not (as_json or read.table) or (as_json and wide):
        return None  # a table drawn only the long way; --wide means nothing in JSON
    from ds01.paths import Paths

    paths = Paths.resolve(chosen.get("config"), chosen.get("state_dir"), chosen.get("run_dir"))
    return Plan(words, str(paths.api_socket), read.path, params, as_json, wide)


def _flags(rest: list[str], read: Read) -> tuple[dict[str, str], bool, bool] | None:
    """The query, --json and --wide for the flags in `rest`, or None unless this path knows
    every flag, each at most once, and need not check any value."""
    params = dict(read.fixed)
    seen: set[str] = set()
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg in seen:
            return None
        seen.add(arg)
        if arg == "--json" or (arg == "--wide" and read.wide):
            pass
        elif arg in read.switches:
            params[read.switches[arg]] = "1"
        elif arg in read.values and i + 1 < len(rest):
            value = rest[i + 1]
            if not _plain_value(arg, value):
                return None
            params[read.values[arg]] = str(int(value)) if arg == "--limit" else value
            i += 1
        else:
            return None
        i += 1
    return params, "--json" in seen, "--wide" in seen


def _plain_value(option: str, value: str) -> bool:
    """Whether the long way would send `value` as typed (else it refuses it, and says why)."""
    if option == "--limit":
        return value.isascii() and value.isdigit() and 1 <= int(value) <= 10000
    if option == "--kind":
        return value in _event_kinds()
    return bool(value) and not value.startswith("-")


def answer(argv: Sequence[str]) -> tuple[str, str] | None:
    """The quick path's output for `argv` (stdout, stderr), or None when the long way must
    answer."""
    if os.environ.get("DS01_QUICK") == "0":
        return None
    if list(argv) == ["--version"]:
        from ds01 import __version__

        return f"ds01 {__version__}\n", ""
    p = plan(argv)
    if p is None:
        return None
    from ds01.unixhttp import get_json

    body = get_json(p.socket, p.path, p.params)
    if body is None:
        return None
    if p.as_json:
        # As print_json writes it: the daemon's JSON is the schema's dump the long way re-dumps.
        return json.dumps(body, indent=2, sort_keys=False, default=str) + "\n", ""
    return _draw(p, body)


def _draw(p: Plan, body: Any) -> tuple[str, str]:
    """A read command's table form: the same functions the full command line calls."""
    from ds01.cli import readviews
    from ds01.cli.statusview import daemon_status_output
    from ds01.cli.table import output_width

    width = output_width()
    if p.words == ("gpu", "status"):
        return daemon_status_output(body, p.wide, width)
    if p.words == ("quota",):
        return readviews.quota(body, width), ""
    if p.words == ("access",):
        return readviews.access(body), ""
    if p.words == ("container", "list"):
        return readviews.container_list(body, "all" in p.params, width), ""
    return readviews.events(body, width), ""


def run() -> None:
    """Console-script entry point of `ds01`."""
    out = answer(sys.argv[1:])
    if out is None:
        from ds01.cli.main import run as long_way

        long_way()
        return
    try:
        sys.stdout.write(out[0])
        sys.stdout.flush()
        sys.stderr.write(out[1])
    except BrokenPipeError:  # `ds01 … --json | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

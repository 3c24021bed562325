"""The `ds01` entry point, with a quick path for the read commands people run in loops, and for
`container deploy --detach`.

`watch -n1 ds01 gpu status`, shell prompts and admin scripts run these many times a minute;
loading the whole command line (Typer, pydantic, an HTTP client library, Rich) costs ten
times what the answer does. So the read commands below are answered here with the standard
library and ds01's light modules only: parse the few flags they take, GET the daemon's answer
over its socket, and print it as `--json` always prints (cli/output.py print_json) or as the
table the full command line draws from the same JSON with the same functions (readviews.py,
statusview.py). A deploy that opens no shell is posted the same way, its progress and result
printed by the functions the full command line uses (deployview.py).

Anything else — another command or flag, --help, a value to check, no daemon, an error
answer, a config that runs containers through SLURM — goes the long way (cli/main.py), which
asks again and explains what went wrong: this path never prints an error of its own, so every
message and exit code stays the one the full command line gives. DS01_QUICK=0 turns the quick
path off (the tests compare both ways).
"""

from __future__ import annotations

import json
import os
import sys
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from typing import Any

    from ds01.errors import Ds01Error

# What the long way's options take (cli/main.py main()); the quick path accepts the same.
_GLOBALS = {"--config": "config", "--state-dir": "state_dir", "--run-dir": "run_dir"}


_NONE: Mapping[str, str] = MappingProxyType({})


class Read(NamedTuple):
    """A read command: its API path, its switches (flag → the query parameter it sets to 1),
    its options taking a value (option → parameter), the query the long way always sends, and
    whether it takes --wide (its table, drawn here as in the long way, has one)."""

    path: str
    switches: Mapping[str, str] = _NONE
    values: Mapping[str, str] = _NONE
    fixed: Mapping[str, str] = _NONE
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
    # `queue cancel ID` and `queue explain ID` take an argument: the long way.
    ("queue",): Read("/v1/queue", switches={"--all": "all"}),
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


def _globals(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """ds01d's socket as the global options (or the environment) name it, and the rest of
    argv; None when an option is missing its value (the long way says so), or when the config
    may run containers through SLURM (the long way decides, and asks SLURM)."""
    args = list(argv)
    chosen: dict[str, str] = {}
    while args and args[0] in _GLOBALS:
        if len(args) < 2 or not args[1].strip():
            return None
        chosen[_GLOBALS[args[0]]] = args[1]
        del args[:2]
    from ds01.paths import API_SOCKET, resolved
    from ds01.slurm.backend import may_name_slurm_backend

    config, _, run_dir = resolved(chosen.get("config"), None, chosen.get("run_dir"))
    if may_name_slurm_backend(config):
        return None  # containers, quota and queue are SLURM's: cli/slurmjobs.py answers
    return os.path.join(run_dir, API_SOCKET), args


def plan(argv: Sequence[str]) -> Plan | None:
    """What to GET for `argv`, or None when the long way must answer it."""
    split = _globals(argv)
    if split is None:
        return None
    socket, args = split
    for words, read in READS.items():
        if tuple(args[: len(words)]) == words:
            flags = _flags(args[len(words) :], read)
            break
    else:
        return None
    if flags is None:
        return None
    params, as_json, wide = flags
    if as_json and wide:
        return None  # --wide means nothing in JSON: the long way refuses it
    return Plan(words, socket, read.path, params, as_json, wide)


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

    notices: list[dict[str, Any]] = []
    body = get_json(p.socket, p.path, p.params, notices=notices)
    # Handed out once: shown now, before the answer (as the long way shows them), and also
    # when the long way is to answer after all.
    sys.stderr.write(_banner(notices))
    if body is None:
        return None
    if p.as_json:
        return _as_json(body), ""
    return _draw(p, body)


def _banner(notices: list[dict[str, Any]]) -> str:
    """The caller's banner notices as printed on stderr (never on stdout: --json stays JSON)."""
    if not notices:
        return ""
    from ds01.notices import render

    return render(notices)


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
    if p.words == ("queue",):
        from ds01.cli import queueview

        return queueview.queue(body, width, "all" in p.params), ""
    return readviews.events(body, width), ""


# ---- deploy ----------------------------------------------------------------------------------

# `container deploy`'s options (cli/container_cmd.py deploy()): taking a value, and switches.
_DEPLOY_VALUES = {
    "--image": "image",
    "-i": "image",
    "--gpus": "gpus",
    "--mig": "mig",
    "--gpueq": "gpueq",
    "--workspace": "workspace",
    "--data": "data",
    "--env": "env",
    "-e": "env",
}
_DEPLOY_SWITCHES = {
    "--cpu-only": "cpu_only",
    "--detach": "detach",
    "-d": "detach",
    "--json": "json",
}
_REPEATABLE = {"data", "env"}


class Deploy(NamedTuple):
    socket: str
    body: dict[str, object]
    as_json: bool


def deploy_plan(argv: Sequence[str], stdin_is_tty: bool) -> Deploy | None:
    """The request `ds01 container deploy …` sends (as the long way builds it: DeployIn dumped
    without its empty fields), or None unless every option is one this path knows, given
    once (--data, --env: any number of times), with a value the schema takes, and no shell is
    to open afterwards (--detach, or input that is not a terminal)."""
    split = _globals(argv)
    if split is None or split[1][:2] != ["container", "deploy"]:
        return None
    socket, args = split[0], split[1][2:]
    got: dict[str, list[str]] = {}
    switches: set[str] = set()
    name: str | None = None
    command: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            command = args[i + 1 :]
            break
        if arg in _DEPLOY_VALUES and i + 1 < len(args) and not args[i + 1].startswith("-"):
            key = _DEPLOY_VALUES[arg]
            if key in got and key not in _REPEATABLE:
                return None
            got.setdefault(key, []).append(args[i + 1])
            i += 2
            continue
        if arg in _DEPLOY_SWITCHES and _DEPLOY_SWITCHES[arg] not in switches:
            switches.add(_DEPLOY_SWITCHES[arg])
        elif arg.startswith("-") or name is not None:
            return None  # an option the long way reads (or refuses), or a command without --
        else:
            name = arg
        i += 1
    body = _deploy_body(name, got, "cpu_only" in switches, command)
    if body is None or ("detach" not in switches and stdin_is_tty):
        return None
    return Deploy(socket, body, "json" in switches)


def _deploy_body(
    name: str | None, got: dict[str, list[str]], cpu_only: bool, command: list[str]
) -> dict[str, object] | None:
    first = {k: v[0] for k, v in got.items() if k not in _REPEATABLE}
    image, gpus = first.get("image", ""), first.get("gpus")
    if not name or len(name) > 63 or not image or len(image) > 512:
        return None
    if gpus is not None and not (gpus.isascii() and gpus.isdigit() and 1 <= int(gpus) <= 64):
        return None
    env: dict[str, str] = {}
    for item in got.get("env", []):
        key, sep, value = item.partition("=")
        if not sep or not key:
            return None
        env[key] = value
    paths = [first.get("workspace"), *got.get("data", [])]
    if any(p is not None and not p.strip() for p in paths):
        return None
    body: dict[str, object] = {"name": name, "image": image}
    if gpus is not None:
        body["gpus"] = int(gpus)
    if "mig" in first:
        profiles = [p.strip() for p in first["mig"].split(",") if p.strip()]
        if not profiles:
            return None
        body["mig"] = profiles
    if "gpueq" in first:
        body["gpueq"] = first["gpueq"]
    body["cpu_only"] = cpu_only
    if "workspace" in first:
        body["workspace"] = first["workspace"]
    body["data"] = got.get("data", [])
    body["env"] = env
    if command:
        body["command"] = command
    body["interactive"] = not command  # no command: keep the image's shell alive (docker -dit)
    body["queue"] = False  # --queue (its answer may be a queue entry) goes the long way
    return body


def deploy(d: Deploy) -> int | None:
    """Deploy as the long way does, printing as it goes; the exit status, or None when ds01d
    answered before starting (no daemon, or a request it refused to read: nothing changed),
    so that the long way asks again and explains."""
    from ds01.unixhttp import post

    answer = post(d.socket, "/v1/containers", d.body, ask_notices=True)
    if answer is None:
        return None
    sys.stderr.write(_banner(answer.notices))
    try:
        if answer.status != 200:
            return None
        return _follow(d, answer.lines())
    except (OSError, ValueError):
        from ds01.errors import deploy_cut_short

        return _failed(deploy_cut_short())
    finally:
        answer.close()


def _follow(d: Deploy, lines: Iterator[bytes]) -> int:
    from ds01.cli import deployview

    for raw in lines:
        try:
            msg = json.loads(raw)
        except ValueError:
            continue  # not a line of ds01d's; the result or error line decides
        if not isinstance(msg, dict):
            continue
        if "progress" in msg and not d.as_json:
            sys.stderr.write(deployview.progress_line(str(msg["progress"])))
            sys.stderr.flush()
        elif "error" in msg:
            from ds01.errors import error_from_body

            return _failed(error_from_body(msg))
        elif "container" in msg:
            if d.as_json:
                sys.stdout.write(_as_json(msg["container"]))
            else:
                # No shell opens here (deploy_plan): say how to open one.
                out, warnings = deployview.deployed(msg["container"], shell_hint=True)
                sys.stdout.write(out)
                sys.stderr.write(warnings)
            return 0
    from ds01.errors import deploy_without_result

    return _failed(deploy_without_result())


def _failed(err: Ds01Error) -> int:
    from ds01.cli.output import print_error

    print_error(err)
    return err.exit_code


def _as_json(data: object) -> str:
    """As print_json writes it: the daemon's JSON is the schema's dump the long way re-dumps."""
    return json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"


def run() -> None:
    """Console-script entry point of `ds01`."""
    argv = sys.argv[1:]
    quick = os.environ.get("DS01_QUICK") != "0"
    d = deploy_plan(argv, _stdin_tty()) if quick and "deploy" in argv else None
    code = None if d is None else deploy(d)
    if code is None and quick and "top" in argv:
        split = _globals(argv)
        if split is not None and split[1][:1] == ["top"]:
            from ds01.cli.top import quick as top

            code = top(split[0], split[1][1:])  # cli/top.py: its own flags and live view
    if code is None and quick and "stats" in argv:
        split = _globals(argv)
        if split is not None and split[1][:2] == ["container", "stats"]:
            from ds01.cli.statsview import quick as stats

            code = stats(split[0], split[1][2:])  # cli/statsview.py: [NAME], --watch
    if code is not None:
        sys.exit(code)
    out = answer(argv)
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


def _stdin_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # closed
        return False

"""Every command answers an invalid value in words (BRIEF §7, issue 11 item 6).

The command tree is walked, and each parameter of each command is given values generated from
its type: words and fractions for integers, numbers just outside a declared range, huge
numbers, `--flag=value` for flags, missing files for paths, and for text the values that break
its grammar (durations, container names, MIG profiles, …). Each value is tried alone, on an
otherwise valid command line, with the real `ds01` against a real ds01d. The answer must be:

- exit 2 (a usage error) or 1 (a refusal), never 0 and never a traceback;
- nothing on stdout, and on stderr an error in words ("error: …" or Typer's "Error: …") that
  names the option, the argument or the value it is about (so it is the value that was refused,
  not something else that went wrong);
- no raw control character from the value on the terminal (ESC, CSI), shown as \\xNN instead.

(That markup and emoji codes in a message come back as typed is pinned word for word in
tests/daemon/test_cli_alloc.py, MISTAKES.)

Text that anyone may write (a reason, a filter) has no invalid value; it gets hostile values
(markup, escape sequences) that must not crash the command or reach the terminal raw.
Commands that change the host run under a temporary --root with --dry-run, so no case acts.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from ds01.cli.main import app
from support import BIN, TEST_IMAGE, Daemon

NOWHERE = "unix:///nonexistent/ds01-test-docker.sock"  # never the host's engine
CONFIG = f"""\
admin_group: ds01t-admins
defaults:
  max_gpueq: 2
  max_units_per_container: 2
  max_containers: 3
  allow_full_gpu: true
docker:
  host: {NOWHERE}
"""

MISSING = "/nonexistent/ds01-probe"


@dataclass(frozen=True)
class Kind:
    """What a parameter accepts: values it must refuse, and hostile ones it may accept."""

    bad: tuple[str, ...]
    hostile: tuple[str, ...] = ()


NOT_INT = ("x", "1.5", "", "[/]")
HUGE = "9" * 30

# A few values per kind, each breaking its grammar a different way: each one costs a run of ds01.
KINDS: dict[str, Kind] = {
    # A length of time: 90, 30m, 1h30m, 2d, 1w (units.py).
    "duration": Kind(("1x", "-5m", "", "٣h", "[/]", "9" * 30 + "w")),
    # A --since: a duration or an ISO date.
    "since": Kind(("1x", "", "2026-13-01", "\x1b[2J", "9" * 30 + "w")),
    # A container's short name (services/containers.py).
    "container": Kind(("", "a/../../quota", "\x1b[2J", "?x=1")),
    # A user name that must exist on this machine.
    "user": Kind(("", "../x", "nosuchuser-ds01", "\x1b[2J")),
    # A unit or GPU: UUID, GPU-UUID or index (ds01 gpu status).
    "unit": Kind(("", "99", "[/]", HUGE, "0/99")),
    # MIG profiles, comma-separated.
    "profiles": Kind(("", ",", "99g.1gb", "[/]")),
    # A gpueq amount: a positive number or fraction.
    "gpueq": Kind(("", "x", "-1", "0", "nan", "1/0", HUGE)),
    # A Docker image reference.
    "image": Kind(("", "[/]", "a b")),
    # A directory to mount.
    "mount": Kind(("", "relative/dir", MISSING)),
    # KEY=VALUE.
    "env": Kind(("", "NOEQUALS", "=value")),
    # One of a fixed list of names (doctor checks, host areas).
    "choice": Kind(("", "nonsuch", "[/]")),
    # A simulated machine: a shipped name or a YAML file.
    "machine": Kind(("", "nonsuch", "\x1b[2J", MISSING)),
    # A utilization percentage or 'unknown'.
    "percent": Kind(("x", "-5", "101", "nan")),
    # A number of seconds in a range (top --interval: 0.2 to 3600).
    "seconds": Kind(("x", "0", "-1", "nan", "inf", "")),
    # PID:UNIT[:MiB[:NAME]].
    "process": Kind(("x", "1:", "-1:0", "1:99", "1:0:x", f"{HUGE}:0")),
    # A file or directory that must exist.
    "existing": Kind((MISSING, "/tmp/\x1b[2J")),
    # A new file: its directory must exist, and it must not.
    "new file": Kind((f"{MISSING}/x.yaml", "/tmp")),
    # A directory ds01 writes into, made if missing: its parent must exist, no file in its place.
    "out dir": Kind(("", f"{MISSING}/x", "/etc/passwd")),
    # A directory for ds01d's files: relative ones are made absolute, but one must be given.
    "dir": Kind(("",)),
    # Where ds01d's sockets are: --run-dir of `ds01` itself.
    "socket dir": Kind(("", MISSING)),
    # The config file: --config of `ds01` itself.
    "config file": Kind(("", MISSING, "/tmp")),
    # A pip or apt package name (images/packages.py): a name and a version, nothing more (the
    # shell and Dockerfile cases are tests/images/test_dockerfile.py's).
    "package": Kind(("numpy;id", "\x1b[2J")),
    # Free text: a reason, a filter. Nothing is invalid; hostile text must be shown, not obeyed.
    "text": Kind((), ("[/]", "\x1b[2J", "a\x9bb\nc")),
}

# The kind of every text or path parameter, by command and parameter name. Integers and flags
# need no entry: their kind follows from their type.
PARAMS: dict[tuple[str, str], str] = {
    ("admin alloc release", "reason"): "text",
    ("admin drain", "target"): "unit",
    ("admin drain", "reason"): "text",
    ("admin undrain", "target"): "unit",
    ("admin undrain", "reason"): "text",
    ("admin grant", "user"): "user",
    ("admin grant", "reason"): "text",
    ("admin grant", "for_"): "duration",
    ("admin revoke", "user"): "user",
    ("admin exempt", "user"): "user",
    ("admin exempt", "from_"): "choice",
    ("admin unexempt", "from_"): "choice",
    ("admin exempt", "reason"): "text",
    ("admin exempt", "until"): "text",
    ("admin exempt", "for_"): "duration",
    ("admin unexempt", "user"): "user",
    ("admin unexempt", "reason"): "text",
    ("admin revoke", "reason"): "text",
    ("admin reserve", "units"): "unit",
    ("admin reserve", "from_"): "since",
    ("admin reserve", "to"): "since",
    ("admin reserve", "for_"): "user",
    ("admin reserve", "reason"): "text",
    ("admin reserve", "grace"): "duration",
    ("admin unreserve", "reason"): "text",
    ("container stats", "name"): "container",
    ("slurm export", "out_arg"): "out dir",
    ("config check", "path"): "existing",
    ("config show", "user"): "text",  # explains any name, known to NSS or not
    ("container deploy", "name"): "container",
    ("container deploy", "image"): "image",
    ("container deploy", "mig"): "profiles",
    ("container deploy", "gpueq"): "gpueq",
    ("container deploy", "workspace"): "mount",
    ("container deploy", "data"): "mount",
    ("container deploy", "env"): "env",
    ("container deploy", "command"): "text",
    ("container exec", "name"): "container",
    ("container exec", "command"): "text",
    ("container inspect", "name"): "container",
    ("container keep-alive", "name"): "container",
    ("container keep-alive", "for_"): "duration",
    ("container logs", "name"): "container",
    ("container restart", "name"): "container",
    ("container retire", "name"): "container",
    ("container shell", "name"): "container",
    ("container start", "name"): "container",
    ("container stop", "name"): "container",
    ("image build", "name"): "container",
    ("image build", "framework"): "choice",
    ("image build", "pip"): "package",
    ("image build", "apt"): "package",
    ("image build", "requirements"): "existing",
    ("image build", "from_image"): "image",
    ("image build", "dockerfile"): "existing",
    ("image add", "name"): "container",
    ("image add", "packages"): "package",
    ("image add", "apt"): "package",
    ("image rm", "name"): "container",
    ("project init", "name"): "container",
    ("project init", "framework"): "choice",
    ("project init", "pip"): "package",
    ("project init", "apt"): "package",
    ("project init", "requirements"): "existing",
    ("project launch", "name"): "container",
    ("doctor", "root"): "existing",
    ("doctor", "only"): "choice",
    ("events", "user"): "text",  # a filter: no such user, no events
    ("events", "since"): "since",
    ("events", "kind"): "text",
    ("gpu inventory", "from_"): "existing",
    ("gpu inventory", "sim"): "machine",
    ("gpu status", "sim"): "machine",
    ("gpu sim copy", "name"): "machine",
    ("gpu sim copy", "dest"): "new file",
    ("gpu sim set", "machine"): "machine",
    ("gpu sim set", "unit"): "unit",
    ("gpu sim set", "util"): "percent",
    ("gpu sim set", "add_process"): "process",
    ("host apply", "root"): "existing",
    ("host apply", "only"): "choice",
    ("host apply", "run_dir"): "dir",
    ("top", "interval"): "seconds",
    ("report usage", "start"): "since",
    ("report usage", "end"): "since",
    ("report usage", "by"): "choice",
    ("report usage", "fmt"): "choice",
    ("report usage", "user"): "text",  # a filter: no such user, no usage
    ("report usage", "chart"): "new file",
    # `ds01 --config … COMMAND` (command "" is `ds01` itself; see ROOT_THEN).
    ("", "config"): "config file",
    ("", "state_dir"): "dir",
    ("", "run_dir"): "socket dir",
}


def _walk(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    subs = getattr(cmd, "commands", None)
    if not subs:
        yield " ".join(path), cmd
    for name, sub in sorted((subs or {}).items()):
        yield from _walk(sub, (*path, name))


ROOT = typer.main.get_command(app)
LEAVES = dict(_walk(ROOT))
COMMANDS = {"": ROOT, **LEAVES}


def _is_argument(param: Any) -> bool:
    return not param.opts[0].startswith("-")


def _annotation(param: Any) -> Any:
    return param.type_descriptor.annotation


def _kind_of(command: str, param: Any) -> str:
    """'int', 'flag', or a key of KINDS."""
    annotation = _annotation(param)
    if annotation is bool:
        return "flag"
    if annotation is int:
        return "int"
    return PARAMS[(command, param.name)]


def test_every_text_and_path_parameter_has_a_kind() -> None:
    """A new parameter gets a row in PARAMS, so its invalid values are tried too."""
    missing = [
        f"{command}: {param.name}"
        for command, cmd in COMMANDS.items()
        for param in cmd.params
        if _annotation(param) not in (bool, int) and (command, param.name) not in PARAMS
    ]
    assert missing == []
    assert set(PARAMS.values()) <= set(KINDS)


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    value: str
    names: tuple[str, ...]  # an error about this value names one of these (or the value)
    invalid: bool  # False: a hostile but valid value, which may succeed


def _valid_values(tmp: Path, d: Daemon) -> dict[str, dict[str, list[str | None]]]:
    """A valid command line of each command that does not act (its name or id is of nothing),
    as parameter name → values."""
    machine = tmp / "machine.yaml"
    return {
        "admin alloc release": {"alloc_id": ["999"], "reason": ["probe"]},
        "admin drain": {"target": ["GPU-nonsuch"], "reason": ["probe"]},
        "admin undrain": {"target": ["GPU-nonsuch"]},
        "admin grant": {"user": ["nosuchuser-ds01"], "reason": ["probe"], "for_": ["1h"]},
        "admin revoke": {"user": ["nosuchuser-ds01"]},
        # For nobody: refused whatever else is right, so no case reserves anything.
        "admin reserve": {
            "units": ["0"],
            "from_": ["1h"],
            "to": ["2h"],
            "for_": ["nosuchuser-ds01"],
            "reason": ["probe"],
        },
        "admin unreserve": {"rid": ["999"]},
        "config check": {"path": [str(d.config_path)]},
        "config show": {},
        "container deploy": {"name": ["probe"], "image": [TEST_IMAGE]},
        "container exec": {"name": ["nonesuch"], "command": ["true"]},
        "doctor": {"root": [str(tmp)]},
        "gpu inventory": {"sim": [str(machine)]},
        "gpu status": {"sim": [str(machine)]},
        "gpu sim copy": {"name": ["4xA100-40GB"], "dest": [str(tmp / "copy.yaml")]},
        "gpu sim set": {"machine": [str(machine)], "unit": ["0"], "util": ["50"]},
        "host apply": {"root": [str(tmp)], "dry_run": [None]},
        # Names of nothing: each case is refused for its value before anything is written.
        "image build": {"name": ["probe"]},
        "image add": {"name": ["probe"], "packages": ["numpy"]},
        "image rm": {"name": ["nonesuch"]},
        "project init": {"name": ["probe"]},
        "project launch": {"name": ["nonesuch"]},
        **{
            f"container {op}": {"name": ["nonesuch"]}
            for op in ("inspect", "logs", "restart", "retire", "shell", "start", "stop")
        },
    }


def _argv(cmd: Any, values: dict[str, list[str | None]]) -> list[str]:
    """Options first as --opt=value (a value may start with '-'), then '--' and arguments;
    None is a flag."""
    options: list[str] = []
    arguments: list[str] = []
    for param in cmd.params:
        for value in values.get(param.name, []):
            if value is None:
                options.append(param.opts[0])
            elif _is_argument(param):
                arguments.append(value)
            else:
                options.append(f"{param.opts[0]}={value}")
    return [*options, "--", *arguments] if arguments else options


def _line(
    command: str, param: Any, values: dict[str, list[str | None]], then: dict[str, list[str]]
) -> tuple[str, ...]:
    """The command line: `ds01 COMMAND …`, or `ds01 --option … THEN` for `ds01`'s own options."""
    if command == "":
        return (*_argv(ROOT, values), *then[param.name])
    return (*command.split(), *_argv(COMMANDS[command], values))


def _cases(tmp: Path, d: Daemon, commands: list[str]) -> Iterator[Case]:
    valid = _valid_values(tmp, d)
    # The command each option of `ds01` itself is tried with: one that uses it.
    then = {
        "config": ["config", "show"],
        "state_dir": ["host", "apply", f"--root={tmp}", "--dry-run"],
        "run_dir": ["quota"],
        "version": ["quota"],
    }
    for command in commands:
        cmd = COMMANDS[command]
        base = valid.get(command, {})

        for param in cmd.params:
            kind = _kind_of(command, param)
            names = (*param.opts, param.name.upper(), param.name.rstrip("_"))
            if kind == "flag":
                if param is not next(p for p in cmd.params if _kind_of(command, p) == "flag"):
                    continue  # a flag given a value is Typer's to refuse: once per command
                values = {**base, param.name: ["yes"]}
                yield Case(_line(command, param, values, then), "yes", param.opts[:1], invalid=True)
                continue
            if kind == "int":
                bad = list(NOT_INT)
                if param.min is not None:
                    bad.append(str(param.min - 1))
                if param.max is not None:
                    bad.append(str(param.max + 1))
                # A huge number is invalid where there is a maximum (max + 1 covers it); where
                # there is none it may be a valid "no such id", but must not crash anything.
                tries = [(v, True) for v in bad] + [(HUGE, False)]
            else:
                tries = [(v, True) for v in KINDS[kind].bad]
                tries += [(v, False) for v in KINDS[kind].hostile]
            for value, invalid in tries:
                values = {**base, param.name: [value]}
                yield Case(_line(command, param, values, then), value, names, invalid)


def _shown(value: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: f"\\x{ord(m.group()):02x}", value)


def _judge(case: Case, r: subprocess.CompletedProcess[str]) -> str | None:
    """What is wrong with the answer, or None."""
    out = r.stdout + r.stderr
    if "Traceback" in out:
        return f"a traceback:\n{r.stderr[-1500:]}"
    for raw in ("\x1b", "\x9b"):
        if raw in out:
            return f"a raw control character reached the terminal: {out!r}"
    if r.returncode == 0:
        return None if not case.invalid else f"exit 0 for an invalid value: {out[-300:]!r}"
    if r.returncode not in (1, 2):
        return f"exit {r.returncode}: {out[-300:]!r}"
    if r.stdout:
        return f"output on stdout with the error: {r.stdout[-300:]!r}"
    said = [
        line.removeprefix("error: ").removeprefix("Error: ")
        for line in r.stderr.splitlines()
        if line.strip() and not line.startswith(("Usage: ", "Try '", "… "))
    ]
    if not said or len(said[0].split()) < 3:
        return f"no error in words: {r.stderr!r}"
    if not case.invalid:
        return None  # a valid value refused for another reason (no Docker here) is fine
    flat = " ".join(r.stderr.split())
    about = [n for n in case.names if n.lower() in flat.lower()]
    if case.value.strip() and " ".join(_shown(case.value).split()) in flat:
        about.append(case.value)
    # or a quoted part of it: "no GPU '99'" is about --add-process 1:99
    about += [p for p in re.split(r"[:,=]", case.value) if p and f"'{_shown(p)}'" in flat]
    if not about:
        return f"the error does not name {case.names[0]} or {case.value!r}: {r.stderr!r}"
    return None


def _run_all(d: Daemon, tmp: Path, commands: list[str]) -> None:
    """Every case of these commands, a few at a time; one assertion lists every bad answer."""
    copy = subprocess.run(
        [str(BIN / "ds01"), "gpu", "sim", "copy", "4xA100-40GB", str(tmp / "machine.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert copy.returncode == 0, copy.stderr
    env = {**os.environ, **d.env, "COLUMNS": "200"}
    cases = list(_cases(tmp, d, commands))

    def run(case: Case) -> str | None:
        r = subprocess.run(
            [str(BIN / "ds01"), *case.argv],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        problem = _judge(case, r)
        return None if problem is None else f"ds01 {' '.join(map(repr, case.argv))}: {problem}"

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        problems = [p for p in pool.map(run, cases) if p is not None]
    assert problems == [], f"{len(problems)} of {len(cases)} cases:\n" + "\n".join(problems)


# `container deploy` checks the Docker engine before it reads the request, so its values are
# tried against the private engine (below); every other command is tried without one.
NEED_DOCKER = ["container deploy"]


def test_every_command_answers_invalid_values_in_words(daemon_factory: Any, tmp_path: Path) -> None:
    d: Daemon = daemon_factory(config=CONFIG)
    _run_all(d, tmp_path, [c for c in COMMANDS if c not in NEED_DOCKER])


@pytest.mark.docker
def test_deploy_answers_invalid_values_in_words(
    daemon_factory: Any, docker_host: str, tmp_path: Path
) -> None:
    """On the test image, so that a value is refused for itself, not for a missing image; a
    value wrongly accepted deploys 'probe' (the test fails, and removes it)."""
    d: Daemon = daemon_factory(config=CONFIG.replace(NOWHERE, docker_host))
    try:
        _run_all(d, tmp_path, NEED_DOCKER)
    finally:
        d.cli("container", "retire", "probe")

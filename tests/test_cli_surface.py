"""The command tree stays documented and light: every command has help, appears in the docs,
and `ds01 --help` loads no heavy library."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from ds01 import __version__
from ds01.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
DS01 = Path(sys.executable).parent / "ds01"


def _walk(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


COMMANDS = [(p, c) for p, c in _walk(typer.main.get_command(app)) if p]


def _docs_text() -> str:
    parts = [(ROOT / "README.md").read_text()]
    parts += [p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(parts)


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help(path: tuple[str, ...], cmd: Any) -> None:
    assert (cmd.help or "").strip(), f"ds01 {' '.join(path)} has no help text"


LEAVES = [p for p, c in COMMANDS if not getattr(c, "commands", None)]


@pytest.mark.parametrize("path", LEAVES, ids=[" ".join(p) for p in LEAVES])
def test_every_command_is_documented(path: tuple[str, ...]) -> None:
    assert f"ds01 {' '.join(path)}" in _docs_text(), (
        f"'ds01 {' '.join(path)}' is not mentioned in README.md or docs/*.md"
    )


def test_the_cli_loads_no_heavy_library_for_help() -> None:
    probe = (
        "import sys, ds01.cli.main; "
        "print(','.join(m for m in ('pynvml', 'docker', 'aiohttp', 'httpx', 'pydantic', 'yaml',"
        " 'matplotlib', 'numpy')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_version_and_help_exit_0() -> None:
    v = subprocess.run([str(DS01), "--version"], capture_output=True, text=True, check=False)
    h = subprocess.run([str(DS01), "--help"], capture_output=True, text=True, check=False)
    assert (v.returncode, v.stdout) == (0, f"ds01 {__version__}\n")
    assert h.returncode == 0
    assert "container" in h.stdout and "gpu" in h.stdout


def test_a_usage_error_exits_2_without_a_traceback() -> None:
    r = subprocess.run(
        [str(DS01), "container", "deploy", "x"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 2
    assert "--image" in r.stderr
    assert "Traceback" not in r.stderr

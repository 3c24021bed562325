"""--help names each value (N, DIR, PROFILE…), not its Python type, and an option with a fixed
set of values lists them (issue 13 item 6)."""

from __future__ import annotations

import os
import subprocess

from support import BIN


def help_of(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "100"}
    r = subprocess.run(
        [str(BIN / "ds01"), *args, "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_options_show_what_the_value_is() -> None:
    text = help_of("container", "deploy")
    options = text.split("Options:")[1]
    for shown in ("--gpus N", "--mig PROFILE", "--gpueq X", "--workspace DIR", "KEY=VALUE"):
        assert shown in options, options
    assert "<str>" not in options and "<list[str]>" not in options and "<int" not in options


def test_an_option_with_fixed_values_lists_them() -> None:
    kinds = "alloc|unit|admin|container|gate|grant|host|daemon|notify|queue"
    assert f"--kind <{kinds}>" in help_of("events")


def test_arguments_show_their_name_only() -> None:
    text = help_of("container", "exec")
    assert text.startswith("Usage: ds01 container exec [OPTIONS] NAME CMD...\n"), text
    arguments = text.split("Arguments:")[1].split("Options:")[0]
    assert "NAME " in arguments and "CMD... " in arguments, arguments
    assert "<" not in arguments and "{" not in text, text

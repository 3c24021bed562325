"""docs/containers.md keeps up with `ds01 container`: every subcommand and every option of
every subcommand is in it, and so is every field of the container JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer

from ds01.api.schemas import ContainerAllocationOut, ContainerOut
from ds01.cli.main import app

DOC = (Path(__file__).resolve().parent.parent.parent / "docs" / "containers.md").read_text()
GROUP: Any = typer.main.get_command(app).commands["container"]  # type: ignore[attr-defined]
OPTIONS = [
    (name, opt)
    for name, cmd in sorted(GROUP.commands.items())
    for param in cmd.params
    for opt in param.opts
    if opt.startswith("--") and opt != "--help"
]


@pytest.mark.parametrize("name", sorted(GROUP.commands))
def test_every_container_command_is_in_the_guide(name: str) -> None:
    assert f"ds01 container {name}" in DOC


@pytest.mark.parametrize(("name", "opt"), OPTIONS, ids=[f"{n} {o}" for n, o in OPTIONS])
def test_every_container_option_is_in_the_guide(name: str, opt: str) -> None:
    assert f"`{opt}" in DOC or f" {opt}" in DOC, f"ds01 container {name} {opt} is not documented"


@pytest.mark.parametrize(
    "field", [*ContainerOut.model_fields, *ContainerAllocationOut.model_fields]
)
def test_every_json_field_is_in_the_guide(field: str) -> None:
    assert f"`{field}`" in DOC
